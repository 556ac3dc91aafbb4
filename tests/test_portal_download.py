"""Downloads against the fake portal's file server, with injected faults (status codes, drops, lengths,
timeouts) and resume; OME-Zarr through a local S3 (moto server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from byu.atomic import sha256_file
from byu.portal.download import (
    DownloadError,
    download_file,
    download_point_files,
    download_tomograms,
    read_record,
)
from byu.portal.query import select
from byu.tomo.preprocess import open_volume
from tests.fakes.portal import SeedRun, SeedTomogram, build_seed, start_fake_portal

FAST = {"backoff": 0.01, "timeout": (2.0, 2.0)}
MRC = "10001/TS_002/Reconstructions/VoxelSpacing8.000/Tomograms/502/TS_002.mrc"  # 2 MB, 8 Å copy of TS_002



def source(portal, rel: str = MRC) -> Path:
    return portal.files_dir / rel


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_plain_download_is_verified_and_atomic(portal, tmp_path):
    dest = tmp_path / "a.mrc"
    size, digest = download_file(portal.url_of(MRC), dest, expected_size=source(portal).stat().st_size, **FAST)
    assert size == source(portal).stat().st_size and digest == sha256_file(source(portal))
    assert dest.read_bytes() == source(portal).read_bytes()
    assert leftovers(tmp_path) == ["a.mrc"]


def test_404_is_final_and_leaves_nothing(portal, tmp_path):
    dest = tmp_path / "a.mrc"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(portal.url_of("10001/nope.mrc"), dest, **FAST)
    assert leftovers(tmp_path) == []
    assert len(portal.file_requests("10001/nope.mrc")) == 1  # not retried


def test_500_then_success(portal, tmp_path):
    portal.fault(MRC, "500", "503")
    dest = tmp_path / "a.mrc"
    _, digest = download_file(portal.url_of(MRC), dest, **FAST)
    assert digest == sha256_file(source(portal))
    assert [r.status for r in portal.file_requests(MRC)] == [500, 503, 200]


def test_dropped_connection_resumes_with_only_the_missing_bytes(portal, tmp_path):
    size = source(portal).stat().st_size
    portal.fault(MRC, "drop:300000", "drop:700000")
    dest = tmp_path / "a.mrc"
    _, digest = download_file(portal.url_of(MRC), dest, expected_size=size, chunk_size=1 << 16, **FAST)
    assert digest == sha256_file(source(portal))
    reqs = portal.file_requests(MRC)
    assert [r.range for r in reqs] == [None, "bytes=300000-", "bytes=1000000-"]
    assert sum(r.sent for r in reqs) == size  # nothing sent twice


def test_wrong_content_length_is_caught_either_way(portal, tmp_path):
    size = source(portal).stat().st_size
    portal.fault(MRC, "length:+5000")  # announces more than it sends: body cut short -> resume
    _, digest = download_file(portal.url_of(MRC), tmp_path / "a.mrc", expected_size=size, **FAST)
    assert digest == sha256_file(source(portal))
    portal.fault(MRC, "length:-5000")  # announces (and sends) less: the portal's size says it is short
    _, digest = download_file(portal.url_of(MRC), tmp_path / "b.mrc", expected_size=size, **FAST)
    assert digest == sha256_file(source(portal))
    assert portal.file_requests(MRC)[-1].range == f"bytes={size - 5000}-"


def test_server_ignoring_range_restarts_cleanly(portal, tmp_path):
    size = source(portal).stat().st_size
    portal.fault(MRC, "drop:100000", "norange")
    _, digest = download_file(portal.url_of(MRC), tmp_path / "a.mrc", expected_size=size, **FAST)
    assert digest == sha256_file(source(portal))
    assert [r.status for r in portal.file_requests(MRC)] == [200, 200]


def test_slow_server_times_out_then_recovers(portal, tmp_path):
    portal.fault(MRC, "slow:3", "stall:50000:3")  # silent before the headers, then in the middle of the body
    _, digest = download_file(portal.url_of(MRC), tmp_path / "a.mrc", backoff=0.01, timeout=(2.0, 0.5))
    # gave up on the silent request (the server logs it only once it answers, 3 s on) and asked again; how fast
    # it gives up on each stall is printed by benchmarks/timeouts.py
    assert [r.fault for r in portal.file_requests(MRC) if r.fault != "slow:3"] == ["stall:50000:3", None]
    assert digest == sha256_file(source(portal))
    assert ("bytes=50000-", 206) in [(r.range, r.status) for r in portal.file_requests(MRC)]  # resumed


def test_slow_server_every_time_fails_cleanly(portal, tmp_path):
    portal.fault(MRC, "slow:2", "slow:2")
    with pytest.raises(DownloadError, match="gave up after 2 attempt.*ReadTimeout"):
        download_file(portal.url_of(MRC), tmp_path / "a.mrc", retries=1, backoff=0.01, timeout=(2.0, 0.3))
    assert leftovers(tmp_path) == []


def test_persistent_failure_reports_and_keeps_a_resumable_prefix(portal, tmp_path):
    size = source(portal).stat().st_size
    portal.fault(MRC, "drop:200000", "500", "500")
    dest = tmp_path / "a.mrc"
    with pytest.raises(DownloadError, match=r"gave up after 3 attempt\(s\): HTTP 500.*200000 bytes kept"):
        download_file(portal.url_of(MRC), dest, expected_size=size, retries=2, **FAST)
    assert leftovers(tmp_path) == ["a.mrc.part"]  # never the final name
    portal.requests.clear()
    _, digest = download_file(portal.url_of(MRC), dest, expected_size=size, **FAST)  # the rerun resumes
    assert digest == sha256_file(source(portal))
    assert [r.range for r in portal.file_requests(MRC)] == ["bytes=200000-"]
    assert leftovers(tmp_path) == ["a.mrc"]


def test_a_part_longer_than_expected_is_discarded(portal, tmp_path):
    size = source(portal).stat().st_size
    (tmp_path / "a.mrc.part").write_bytes(b"x" * (size + 10))
    _, digest = download_file(portal.url_of(MRC), tmp_path / "a.mrc", expected_size=size, **FAST)
    assert digest == sha256_file(source(portal))


def test_many_tomograms_failures_are_reported_and_skipped(portal, portal_data):
    sel = select(portal.graphql_url, dataset_ids=[10001, 10002])
    bad = sel.by_tomo_id()["10001_TS_003"]
    portal.fault(bad.https_mrc_file.split("/files/", 1)[1], *["500"] * 10)
    done = []
    report = download_tomograms(sel.tomograms, portal_data.raw, workers=4, retries=2,
                                on_done=lambda k, r: done.append(k), **FAST)
    assert [f.key for f in report.failures] == ["10001_TS_003"]
    assert "HTTP 500" in report.failures[0].error
    assert sorted(r.tomo_id for r in report.records) == ["10001_TS_001", "10001_TS_002", "10002_cell_4"]
    assert sorted(done) == sorted(t.tomo_id for t in sel.tomograms)
    assert not (portal_data.raw / "10001_TS_003.mrc").exists() and read_record(portal_data.raw, "10001_TS_003") is None
    for r in report.records:
        assert sha256_file(portal_data.raw / r.path) == r.sha256 and r.portal["tomogram_id"]
    portal.faults.clear()
    again = download_tomograms(sel.tomograms, portal_data.raw, workers=4, **FAST)  # fetches only the missing one
    assert again.failures == [] and sorted(again.skipped) == ["10001_TS_001", "10001_TS_002", "10002_cell_4"]


def test_point_files_download(portal, portal_data):
    sel = select(portal.graphql_url, dataset_ids=[10001])
    paths, failures = download_point_files(sel.point_files, portal_data.raw, **FAST)
    assert failures == [] and len(paths) == 3
    assert all(p.read_text().count("\n") == p.read_text().count('"location"') for p in paths.values())


@pytest.mark.slow
def test_omezarr_over_local_s3(tmp_path, monkeypatch):
    vol = np.random.default_rng(0).normal(size=(20, 40, 48)).astype(np.float32)
    seed = build_seed(tmp_path / "files", [
        SeedRun(dataset_id=3, run_name="z1", annotated=False,
                tomograms=[SeedTomogram(voxel_spacing=12.0, formats=("zarr",), volume=vol, zarr_chunks=(8, 16, 16))]),
    ])
    with start_fake_portal(seed, s3=True) as portal:
        for k, v in portal.s3_env.items():
            monkeypatch.setenv(k, v)
        sel = select(portal.graphql_url, dataset_ids=[3], object_name=None)
        t = sel.tomograms[0]
        assert t.https_mrc_file is None and t.s3_omezarr_dir.endswith("z1.zarr")
        raw = tmp_path / "raw"
        report = download_tomograms(sel.tomograms, raw, **FAST)
        assert report.failures == []
        rec = report.records[0]
        assert rec.format == "zarr" and rec.path == "3_z1.zarr"
        assert rec.size == int(t.file_size_omezarr)
        with open_volume(raw / rec.path) as src:
            assert src.shape == (20, 40, 48) and src.voxel_spacing == 12.0
            np.testing.assert_array_equal(src.read(0, 20), vol)
        assert not (raw / f"{rec.path}.part").exists()
        again = download_tomograms(sel.tomograms, raw, **FAST)
        assert again.skipped == [t.tomo_id]


def test_a_web_page_served_as_the_tomogram_is_fetched_again_then_refused(tmp_path):
    """The portal gives no size, and the file server answers an HTML page with 200: never kept as the .mrc."""
    seed = build_seed(tmp_path / "files", [
        SeedRun(dataset_id=4, run_name="w1", annotated=False,
                tomograms=[SeedTomogram(voxel_spacing=10.0, shape=(16, 32, 32), report_size=False)]),
    ])
    with start_fake_portal(seed) as portal:
        sel = select(portal.graphql_url, dataset_ids=[4], object_name=None)
        assert sel.tomograms[0].file_size_mrc is None
        raw = tmp_path / "raw"
        portal.fault("w1.mrc", "html200")  # once: the second fetch is the real file
        report = download_tomograms(sel.tomograms, raw, **FAST)
        assert report.failures == [] and read_record(raw, "4_w1") is not None
        with open_volume(raw / "4_w1.mrc") as src:
            assert src.shape == (16, 32, 32)
        assert [r.fault for r in portal.requests if r.path.endswith("w1.mrc")] == ["html200", None]

        raw2 = tmp_path / "raw2"
        portal.fault("w1.mrc", "html200", "html200")  # twice: a clear failure, nothing kept under the final name
        report = download_tomograms(sel.tomograms, raw2, **FAST)
        (failure,) = report.failures
        assert "did not give a tomogram" in failure.error and "web page" in failure.error
        assert not (raw2 / "4_w1.mrc").exists() and read_record(raw2, "4_w1") is None
