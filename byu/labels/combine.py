"""Concatenate label versions (``all_gt = gt_v2 + external_gt``), and write a result to a file and/or the store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from byu.errors import InputError, InputErrors
from byu.labels.formats import write_export
from byu.labels.model import LabelSet, merge_classes
from byu.labels.store import LabelStore


def combine_labels(parts: Sequence[tuple[str, LabelSet]]) -> LabelSet:
    """Concatenate ``(name, labels)`` pairs in order; a tomo_id present twice is an error naming both sources."""
    seen: dict[str, str] = {}
    errs = []
    for name, labels in parts:
        for line, tid in enumerate(labels.tomograms["tomo_id"], start=2):
            if tid in seen:
                errs.append(InputError(f"tomo_id {tid!r} is already in {seen[tid]}", file=name, row=line,
                                       field="tomo_id"))
            else:
                seen[tid] = name
    if errs:
        raise InputErrors(errs)
    if not parts:
        raise InputError("nothing to combine", field="inputs")
    tomos = pd.concat([p.tomograms for _, p in parts], ignore_index=True)
    picks = pd.concat([p.picks for _, p in parts], ignore_index=True)
    return LabelSet.build(tomos, picks, merge_classes(*(p.classes for _, p in parts)))


def describe_put(manifest) -> str:
    """What a put did, in words (``stored …`` or ``… already stored with identical content``)."""
    counts = manifest.counts
    what = ", ".join(f"{v} {k}" for k, v in manifest.class_counts.items()) or f"{counts.get('picks', 0)} picks"
    if manifest.created:
        return f"stored version {manifest.name} ({counts['tomograms']} tomograms; {what})"
    return f"version {manifest.name} was already stored with identical content; nothing written"


def store_or_write(labels: LabelSet, *, out: Path | None, version: str | None, store: LabelStore,
                   inputs: Sequence[str | Path], producer: str, form: str | None = None) -> str:
    """Write ``labels`` to ``out`` (in ``form``: canonical for motor versions, picks otherwise) and/or store it as
    ``version`` (parents: the inputs that are stored versions). Outputs inside the store are refused."""
    if out is None and version is None:
        raise InputError("nothing to do: give --out PATH and/or --version NAME")
    if out is not None:
        store.check_output(out)
    done = []
    if version is not None:
        parents = [str(i) for i in inputs if not Path(str(i)).exists() and store.exists(str(i))]
        m = store.put(version, labels, parents=parents, producer=producer,
                      extra={"inputs": [str(i) for i in inputs]})
        done.append(describe_put(m))
    if out is not None:
        chosen = form or ("canonical" if labels.is_motor_only else "picks")
        write_export(labels, chosen, out)
        done.append(f"wrote {out} ({len(labels.tomograms)} tomograms, {chosen} form)")
    return "; ".join(done)
