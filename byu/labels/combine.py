"""Concatenate label tables, and write a result to a path and/or the versioned store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from byu.errors import InputError, InputErrors
from byu.labels.formats import write_labels
from byu.labels.store import LabelStore
from byu.labels.table import CANONICAL_COLUMNS, normalize


def combine_tables(tables: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Concatenate ``(name, table)`` pairs in order; error (naming both sources) on a tomo_id present twice."""
    seen: dict[str, str] = {}
    errs = []
    for name, df in tables:
        for line, tid in enumerate(df["tomo_id"], start=2):
            if tid in seen:
                errs.append(InputError(f"tomo_id {tid!r} is already in {seen[tid]}", file=name, row=line,
                                       field="tomo_id"))
            else:
                seen[tid] = name
    if errs:
        raise InputErrors(errs)
    frames = [df.loc[:, CANONICAL_COLUMNS] for _, df in tables if len(df)]
    if not frames:
        return normalize(pd.DataFrame(columns=CANONICAL_COLUMNS))
    return normalize(pd.concat(frames, ignore_index=True))


def store_or_write(df: pd.DataFrame, *, out: Path | None, version: str | None, store: LabelStore,
                   inputs: Sequence[str | Path], producer: str) -> str:
    """Write ``df`` to ``out`` and/or store it as ``version`` (parents: the inputs that are stored versions)."""
    if out is None and version is None:
        raise InputError("nothing to do: give --out PATH and/or --version NAME")
    done = []
    if version is not None:
        parents = [str(i) for i in inputs if not Path(str(i)).exists() and store.exists(str(i))]
        m = store.put(version, df, parents=parents, producer=producer,
                      extra={"inputs": [str(i) for i in inputs]})
        done.append(f"stored version {m.name} ({m.counts['tomograms']} tomograms, {m.counts['motors']} motors)")
    if out is not None:
        write_labels(df, out)
        done.append(f"wrote {out} ({len(df)} tomograms)")
    return "; ".join(done)
