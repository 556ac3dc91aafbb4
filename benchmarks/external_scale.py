"""The external round's ingest at scale: the flow's streamed, fanned-out ingest against a loopback fake portal.

    python benchmarks/external_scale.py                      # N=100 small tomograms, 1 and 2 Dask workers
    python benchmarks/external_scale.py --n 200 --workers 1 2 4 --shape 48 128 128
    python benchmarks/external_scale.py --kill-half          # also: SIGKILL a run half-way, rerun, count the redone

For each worker count it runs the first half of the ``external`` flow — find → one task per tomogram (download →
verify → preprocess → delete the raw file, at most ``max_inflight`` = workers at once) → the label version — on a
``distributed.LocalCluster`` of that many single-threaded worker processes (``BYU_TASK_RUNNER=dask``), against a
fake portal on 127.0.0.1 serving N tomograms, and prints: wall time, tomograms per second, the most raw files and
raw bytes on disk at any moment (sampled every 2 ms), and the peak RSS of each worker process. Then it projects a
portal-sized round (1,288 tomograms, 180 GB) from the measured per-tomogram costs and a link speed.

With ``--kill-half`` it then runs the same flow in a child process on a fresh data root, kills its whole process
group (flow and Dask workers, SIGKILL) once half the tomograms are stored, reruns the flow here and prints how many
tomograms the rerun skipped, how many it fetched again, and the most raw files on disk across both runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

PORTAL_TOMOGRAMS, PORTAL_BYTES = 1288, 180e9


class DiskWatcher(threading.Thread):
    """The most raw tomogram files (and their bytes) present at once under ``raw``."""

    def __init__(self, raw: Path) -> None:
        super().__init__(daemon=True)
        self.raw, self.files, self.bytes, self.stop = raw, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                entries = [p for p in self.raw.iterdir() if p.name.endswith((".mrc", ".mrc.part", ".zarr"))]
                size = sum(p.stat().st_size for p in entries if p.is_file())
            except (FileNotFoundError, OSError):
                entries, size = [], 0
            self.files, self.bytes = max(self.files, len(entries)), max(self.bytes, size)
            time.sleep(0.002)


class RssWatcher(threading.Thread):
    """Peak RSS of every process below this one (the Dask worker processes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, tuple[str, int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.is_set():
            for p in me.children(recursive=True):
                try:
                    cmd = " ".join(p.cmdline()[-3:])
                    rss = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                old = self.peaks.get(p.pid, (cmd, 0))
                self.peaks[p.pid] = (cmd, max(old[1], rss))
            time.sleep(0.05)


def ingest_flow():
    from prefect import flow

    from byu.portal.query import Selection
    from flows.base import data_root
    from flows.external import find_task, ingest_streamed, labels_task
    from flows.task_runners import task_runner_from_env

    @flow(name="external-ingest-benchmark", task_runner=task_runner_from_env())
    def run(data_dir: str, portal_url: str, max_inflight: int) -> list[dict]:
        selection = find_task(data_dir, portal_url, [9], [], None, ["motor"], 16.0)
        ids = [t.tomo_id for t in Selection.read(selection).tomograms]
        results = ingest_streamed(str(data_root(data_dir).root), selection, ids, max_inflight=max_inflight,
                                  keep_raw=False)
        labels_task(data_dir, selection, "external_gt_v0", False)
        return results

    return run


CHILD = """
import os, sys
sys.path.insert(0, {repo!r})
os.environ.update({{"BYU_TASK_RUNNER": "dask", "BYU_TASK_WORKERS": sys.argv[3]}})
os.environ.pop("BYU_DASK_ADDRESS", None)
from benchmarks.external_scale import ingest_flow
ingest_flow()(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def kill_half_and_resume(portal, data: Path, n: int, workers: int) -> dict:
    """Run the flow in a child, SIGKILL its process group once n/2 tomograms are stored, rerun it here."""
    import signal
    import subprocess

    from byu.tomo.io import iter_tomograms

    def stored() -> set[str]:
        return set(dict(iter_tomograms(data / "tomograms"))) if (data / "tomograms").exists() else set()

    (data / "raw").mkdir(parents=True)
    disk = DiskWatcher(data / "raw")
    disk.start()
    repo = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=repo), str(data), portal.graphql_url,
                             str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while len(stored()) < n // 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    before = stored()
    with portal._lock:
        portal.requests.clear()
    os.environ.update({"BYU_TASK_RUNNER": "dask", "BYU_TASK_WORKERS": str(workers)})
    try:
        results = ingest_flow()(str(data), portal.graphql_url, workers)
    finally:
        disk.stop.set()
        disk.join()
    fetched = {r.path.rsplit("/", 1)[-1] for r in portal.requests if r.path.endswith(".mrc")}
    skipped = {r["tomo_id"] for r in results if r["status"] == "skipped"}
    return {"stored_at_kill": len(before), "skipped_on_rerun": len(skipped),
            "skipped_are_the_stored": skipped == before,
            "fetched_again": len(fetched), "stored_after": len(stored()), "peak_raw_files": disk.files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="tomograms served")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask worker counts to compare")
    ap.add_argument("--shape", type=int, nargs=3, default=(40, 96, 96), help="Z Y X of each tomogram (10 Å)")
    ap.add_argument("--link-gbit", type=float, default=1.0, help="download speed assumed for the projection")
    ap.add_argument("--infer-s", type=float, default=12.8, help="inference s per portal tomogram per model (tiny, "
                    "CPU, flip TTA, 300x600x600 at 16 Å: benchmarks/infer.py)")
    ap.add_argument("--prep-gb-s", type=float, default=None, help="preprocessing throughput (GB/s of float32 input "
                    "per worker) for the projection; default: the rate measured here, which small test volumes make "
                    "overhead-bound (benchmarks/preprocess.py measures full-size volumes)")
    ap.add_argument("--models", type=int, default=3, help="models in the external round's ensemble")
    ap.add_argument("--kill-half", action="store_true", help="also kill a run half-way and measure its resume")
    args = ap.parse_args(argv)

    from flows.local_api import temporary_api
    from tests.fakes.portal import SeedRun, SeedTomogram, build_seed, start_fake_portal

    work = Path(tempfile.mkdtemp(prefix="byu-external-scale-"))
    seed = build_seed(work / "files", [
        SeedRun(dataset_id=9, run_name=f"r{i:04d}", motors_A=[(150.0, 300.0, 300.0)], seed=i,
                tomograms=[SeedTomogram(voxel_spacing=10.0, shape=tuple(args.shape))]) for i in range(args.n)])
    raw_bytes_each = int(4 * args.shape[0] * args.shape[1] * args.shape[2])
    rows = []
    try:
        with start_fake_portal(seed) as portal, temporary_api():
            for workers in args.workers:
                os.environ.update({"BYU_TASK_RUNNER": "dask", "BYU_TASK_WORKERS": str(workers)})
                os.environ.pop("BYU_DASK_ADDRESS", None)
                data = work / f"data_{workers}"
                (data / "raw").mkdir(parents=True)
                disk, rss = DiskWatcher(data / "raw"), RssWatcher()
                disk.start()
                rss.start()
                t0 = time.perf_counter()
                try:
                    results = ingest_flow()(str(data), portal.graphql_url, workers)
                finally:
                    wall = time.perf_counter() - t0
                    disk.stop.set()
                    rss.stop.set()
                    disk.join()
                    rss.join()
                stored = sum(r["status"] == "stored" for r in results)
                per_tomo = [r["download_s"] + r["preprocess_s"] for r in results if r["status"] == "stored"]
                workers_rss = sorted((v[1] for v in rss.peaks.values() if "distributed" in v[0] or "dask" in v[0]
                                      or "spawn" in v[0] or "multiprocessing" in v[0]), reverse=True)[:workers]
                rows.append({"workers": workers, "stored": stored, "wall_s": wall, "tomo_per_s": stored / wall,
                             "peak_raw_files": disk.files, "peak_raw_MB": disk.bytes / 1e6,
                             "worker_rss_MB": [round(r / 2**20) for r in workers_rss],
                             "s_per_tomo_in_task": sum(per_tomo) / max(1, len(per_tomo)),
                             "download_s": sum(r["download_s"] for r in results) / max(1, stored),
                             "preprocess_s": sum(r["preprocess_s"] for r in results) / max(1, stored)})
                r = rows[-1]
                print(f"workers={workers}: {stored}/{args.n} stored in {wall:.1f} s "
                      f"({r['tomo_per_s']:.2f} tomograms/s);"
                      f" peak raw files {disk.files} (max_inflight {workers}), peak raw {disk.bytes / 1e6:.1f} MB;"
                      f" worker peak RSS {r['worker_rss_MB']} MiB; per tomogram in its task: download "
                      f"{r['download_s']:.2f} s + preprocess {r['preprocess_s']:.2f} s", flush=True)
            if args.kill_half:
                workers = args.workers[-1]
                k = kill_half_and_resume(portal, work / "data_killed", args.n, workers)
                print(f"killed half-way ({workers} workers): {k['stored_at_kill']}/{args.n} stored at the kill; the "
                      f"rerun skipped {k['skipped_on_rerun']} (exactly those: {k['skipped_are_the_stored']}), fetched "
                      f"{k['fetched_again']} again, ended with {k['stored_after']}/{args.n}; peak raw files across "
                      f"both runs {k['peak_raw_files']} (max_inflight {workers})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(rows) >= 2:
        print(f"speed-up {rows[0]['workers']} -> {rows[-1]['workers']} workers: "
              f"{rows[0]['wall_s'] / rows[-1]['wall_s']:.2f}x")
    # projection for a portal-sized round from the measured preprocessing rate (bytes per second of a worker)
    one = rows[0]
    prep_rate = (args.prep_gb_s * 1e9 if args.prep_gb_s else
                 raw_bytes_each / max(one["preprocess_s"], 1e-6))  # bytes/s of one worker
    each = PORTAL_BYTES / PORTAL_TOMOGRAMS
    dl = each / (args.link_gbit * 1e9 / 8)
    prep = each / prep_rate
    infer = args.infer_s * args.models
    print(f"projection, {PORTAL_TOMOGRAMS} tomograms / {PORTAL_BYTES / 1e9:.0f} GB ({each / 1e6:.0f} MB each): "
          f"download {dl:.1f} s at {args.link_gbit:g} Gbit/s, preprocess {prep:.1f} s at "
          f"{prep_rate / 1e9:.2f} GB/s{'' if args.prep_gb_s else ' (measured here)'}, inference {infer:.0f} s "
          f"({args.models} models x {args.infer_s:g} s, CPU)")
    for w in (1, 4, 16):
        # one worker downloads then preprocesses; several overlap, and the link is shared by all of them
        per_tomo = dl + prep if w == 1 else max(dl, prep / w)
        ingest_h = PORTAL_TOMOGRAMS * per_tomo / 3600
        infer_h = PORTAL_TOMOGRAMS * infer / w / 3600
        print(f"  {w:>2} worker(s): ingest ≈ {ingest_h:.1f} h (the link is shared), inference ≈ {infer_h:.1f} h on CPU;"
              f" raw disk ≤ {w} x {each / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
