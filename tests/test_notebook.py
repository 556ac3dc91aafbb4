"""notebooks/label_versions.ipynb runs headless (nbclient, this interpreter's kernel) on a small data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops_helpers import build_versions_root, execute_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "label_versions.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def _text(nb) -> str:
    parts = []
    for out in _outputs(nb):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        for key in ("text/plain", "text/markdown", "text/html"):
            if key in out.get("data", {}):
                parts.append(out["data"][key])
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebook_runs_on_store_built_root(tmp_path, monkeypatch):
    dr = build_versions_root(tmp_path / "data")
    figures = tmp_path / "figures"
    monkeypatch.setenv("BYU_DATA", str(dr.root))
    nb = execute_notebook(NOTEBOOK, kernels_dir=tmp_path / "kernels", parameters={"figures_dir": str(figures)})

    errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert not errors
    text = _text(nb)
    assert f"data root: {dr.root.resolve()}" in text
    for version in ("gt", "gt_v2", "external_gt", "all_gt"):
        assert version in text
    assert "gt_v2 vs gt" in text
    assert "cv/gt_v2/skf4_rd42.json (labels: gt_v2)" in text and "cv/v1/skf3_rd7.json (labels: gt)" in text
    assert "round1: 2 case image(s)" in text

    pngs = [o["data"]["image/png"] for o in _outputs(nb) if "image/png" in o.get("data", {})]
    # versions, changes per version, gt_v2 vs gt, all_gt vs gt_v2, two splits, one review round
    assert len(pngs) == 7
    saved = sorted(p.name for p in figures.glob("*.png"))
    assert saved == ["changes_all_gt.png", "changes_gt_v2.png", "changes_per_version.png",
                     "review_round1.png", "split_gt_v2_skf4_rd42.png", "split_v1_skf3_rd7.png", "versions.png"]
    for p in figures.glob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebook_runs_on_empty_root(tmp_path, monkeypatch):
    """A data root with nothing in it yet: the notebook says so instead of failing."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("BYU_DATA", str(tmp_path / "empty"))
    nb = execute_notebook(NOTEBOOK, kernels_dir=tmp_path / "kernels")
    text = _text(nb)
    assert "label versions: none" in text
    assert "no CV splits under" in text and "no review images under" in text
