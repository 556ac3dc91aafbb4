"""What a person sees in the Prefect UI: the hand-off when a run waits for review, and the outcome when it ends.

- :func:`handoff_artifact`: a markdown artifact (and one log line) naming the round, its cases, where the images
  are, the CVAT project and task links (or the CSV to fill), and what to do next.
- :func:`result_artifacts`: a markdown summary (new version, label changes by action and class, cases reviewed,
  splits written, recovery figures when known) with the label-change and split-balance pictures embedded, and a
  table artifact of every change; splits are listed as written by this run or already there (identical).
- :func:`train_artifact`: the train flow's fold models, a table of one row per fold (epochs, validation F-beta,
  checkpoint); :func:`fold_line` says the same of one fold in the train task's log.

Artifact keys are derived from the round name (lowercase letters, digits and dashes, as Prefect requires), so the
UI shows each round's latest hand-off and result under one key.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from byu.labels.store import LabelStore
from byu.review.round import ReviewRound
from flows.base import ReviewSettings, data_root, make_reviewer


def artifact_key(*parts: str) -> str:
    key = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts if p)
    return key[:100] or "byu"


def _md_escape(text: object) -> str:
    return re.sub(r"([\\`*_{}\[\]()<>#+!|])", r"\\\1", str(text))


def handoff_markdown(data_dir: str, round_name: str, review: ReviewSettings, *, note: str | None = None) -> str:
    """``note``: shown first (e.g. why the run waits again after a resume)."""
    rnd = ReviewRound(data_root(data_dir), round_name)
    summary = rnd.summary()
    lines = [f"# Round `{round_name}` waits for review", "", *([f"**{note}**", ""] if note else []),
             f"**{summary['cases']} case(s)** to review: "
             + ", ".join(f"{n} {k}" for k, n in summary["by_kind"].items())
             + (" · classes: " + ", ".join(f"{n} {_md_escape(k)}" for k, n in summary["by_class"].items())
                if len(summary["by_class"]) > 1 else ""), "",
             f"Case images: `{rnd.paths.images}`", ""]
    if review.reviewer == "cvat":
        record = json.loads(rnd.paths.tasks.read_text()) if rnd.paths.tasks.exists() else {"tasks": []}
        server = str(record.get("server", review.cvat_url or "")).rstrip("/")
        project = record.get("project") or {}
        if project.get("id"):
            lines += [f"CVAT project: [{_md_escape(project.get('name'))}]({server}/projects/{project['id']})", ""]
        lines += ["| task | images | link |", "|---|---|---|"]
        for t in record.get("tasks", []):
            lines.append(f"| {_md_escape(t['name'])} | {len(t.get('images', []))} | {server}/tasks/{t.get('id')} |")
        lines += ["", "**Next:** tag every image in CVAT (0 = keep, k = candidate k is real, none = not real, "
                  "unsure = second review) and mark each job *completed*."]
    else:

        csv = make_reviewer(data_dir, round_name, review).csv
        lines += [f"**Next:** write the decisions to `{csv}` — columns `case_id` (or `image`), `tags` "
                  "(0, 1..K, none, unsure; `;`-separated), optional `reviewer`."]
    if review.wait.mode == "poll":
        lines.append("The run checks by itself every "
                     f"{review.wait.poll_interval_s:g} s and continues when the review is done"
                     + (f" (or sooner: `byu review resume {round_name}`)." if review.reviewer == "cvat" else "."))
    else:
        lines.append("When the review is done, **resume this run**: the *Resume* button at the top of the run "
                     "page (an optional note goes to the logs).")
    return "\n".join(lines)


def handoff_artifact(data_dir: str, round_name: str, review: ReviewSettings, *, note: str | None = None) -> str:
    text = handoff_markdown(data_dir, round_name, review, note=note)
    create_markdown_artifact(text, key=artifact_key("review", round_name),
                             description=f"what to do for round {round_name}")
    how = "resume the run in the Prefect UI" if review.wait.mode != "poll" else "the run continues by itself"
    get_run_logger().info("round %s waits for review (%s reviewer): see the 'review-%s' artifact; when done, %s",
                          round_name, review.reviewer, artifact_key(round_name), how)
    return text


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _under_root(path: str | Path, root: Path) -> str:
    """``path`` relative to the data root when it lies inside it (what a person looks for), else as it is."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _load_lines(root, round_name: str, changes) -> list[str]:
    """The round's review load per class (:func:`byu.review.load.review_load`) and what mining chose."""
    from byu.review.load import review_load

    if not round_name:
        return []
    rnd = ReviewRound(root, round_name)
    if not rnd.paths.cases.exists():
        return []
    load = review_load(rnd.cases(), changes)
    lines = ["**Review load** (estimated time: "
             f"{load['seconds_per_image']:g} s per image + {load['seconds_per_item']:g} s per item shown):", "",
             "| class | images | items shown | label changes | images per change | minutes |",
             "|---|---|---|---|---|---|"]
    for name, e in [*load["by_class"].items(), ("all", load["total"])]:
        lines.append(f"| {_md_escape(name)} | {e['images']} | {e['items']} | {e['label_changes']} | "
                     f"{e['images_per_change'] if e['images_per_change'] is not None else '–'} | {e['minutes']} |")
    lines.append("")
    if rnd.paths.quality.exists():
        quality = json.loads(rnd.paths.quality.read_text())
        acc = quality.get("accuracy") or {}
        if acc:
            lines += ["**Reviewers** (accuracy on the known-answer items mixed into the galleries; 95 % interval):", "",
                      "| reviewer | right | of | accuracy | interval |", "|---|---|---|---|---|"]
            lines += [f"| {_md_escape(who or '(unnamed)')} | {a['correct']} | {a['n']} | {a['accuracy']} | "
                      f"{a.get('interval_95')} |" for who, a in acc.items()]
            lines.append("")
        agree = quality.get("agreement") or {}
        if agree:
            pairs = ", ".join(f"{_md_escape(c)} {v['agree']}/{v['items']} agree, Cohen's kappa {v['kappa']}"
                              for c, v in agree.items())
            lines += [f"**Two reviews** (items both decided): {pairs}"
                      + f"; decided {quality.get('decided_by')}, {len(quality.get('held', []))} image(s) held.", ""]
        left = (quality.get("errors_left") or {}).get("classes") or {}
        if left:
            lines += ["**Label errors probably left** (estimate and 90 % interval; "
                      + "; ".join((quality.get("errors_left") or {}).get("assumptions", [])) + "):", "",
                      "| class | estimate | interval | parts |", "|---|---|---|---|"]
            lines += [f"| {_md_escape(c)} | {v['estimate']} | {v['interval_90'][0]}..{v['interval_90'][1]} | "
                      f"{_md_escape(v.get('parts'))} |" for c, v in left.items()]
            lines.append("")
    if rnd.paths.mining.exists():
        mined = json.loads(rnd.paths.mining.read_text()).get("classes") or {}
        if mined:
            lines += ["**What was reviewed** (labels by reason; unlabeled predictions offered and left beyond the "
                      "budget; the label verifier's own out-of-fold separation):", "",
                      "| class | labels reviewed | predictions offered | beyond budget | verifier AUC |",
                      "|---|---|---|---|---|"]
            for name, info in mined.items():
                reasons = ", ".join(f"{n} {r}" for r, n in (info.get("labels_reviewed") or {}).items()) or "–"
                auc = info.get("verifier_auc")
                lines.append(f"| {_md_escape(name)} | {reasons} | {info.get('offered', 0)} | {info.get('hidden', 0)}"
                             f" | {f'{auc:.2f}' if isinstance(auc, (int, float)) else '–'} |")
            lines.append("")
    return lines


def result_markdown(data_dir: str, result: dict[str, Any], *, title: str,
                    figures_dir: Path | None = None) -> str:
    """The outcome of a round: version, changes by action and class, review counts, splits and pictures."""
    from byu.labels.splits import read_split
    from byu.plots import plot_label_diff, plot_split_balance, save_figure

    root = data_root(data_dir)
    store = LabelStore(root.labels)
    version = result.get("version")
    lines = [f"# {title}", ""]
    if version and store.exists(version):
        m = store.manifest(version)
        what = "stored" if result.get("created", True) else "already stored (identical, nothing written)"
        counts = ", ".join(f"{n} {_md_escape(c)}" for c, n in m.class_counts.items())
        lines += [f"**New label version `{version}`** ({what}) ← `{', '.join(m.parents)}`: "
                  f"{m.counts['tomograms']} tomograms, {counts}.", ""]
        lines += [f"Review: {result.get('cases', 0)} case(s), {result.get('decided', 0)} decided, "
                  f"{result.get('unsure', 0)} unsure, {result.get('unreviewed', 0)} not reviewed → "
                  f"**{result.get('label_changes', 0)} label change(s)**.", ""]
        by_class = result.get("changes_by_class") or []
        if by_class:
            lines += ["| class | add | remove | move | relabel |", "|---|---|---|---|---|"]
            lines += [f"| {_md_escape(r['particle'])} | {r.get('add', 0)} | {r.get('remove', 0)} | "
                      f"{r.get('move', 0)} | {r.get('relabel', 0)} |" for r in by_class]
            lines.append("")
        lines += _load_lines(root, str(result.get("round") or ""), store.changes(version))
        fig = plot_label_diff(store.changes(version), title=f"{m.parents[0] if m.parents else ''} → {version}")
        if figures_dir is not None:
            save_figure(fig, figures_dir / f"{version}_changes.png")
        lines += [f"![label changes]({_png_data_uri(fig)})", ""]
    for key in ("recovery",):
        if result.get(key):
            rec = result[key]
            lines += [f"Recovery against the synthetic truth: **{rec.get('errors_fixed')}/{rec.get('planted_errors')}"
                      f"** planted errors fixed, {rec.get('cases_reviewed_per_label_change')} cases reviewed per "
                      "label change.", ""]
    splits = [s for s in result.get("splits") or [] if Path(s).exists()]
    if splits:
        written = set(result.get("splits_written", splits))  # which of them this run wrote (splits_task)
        for what, group in (("written", [s for s in splits if s in written]),
                            ("already there (identical, nothing written)", [s for s in splits if s not in written])):
            if group:
                lines += [f"Splits {what} (under the data root `{root.root}`): "
                          + ", ".join(f"`{_under_root(s, root.root)}`" for s in group), ""]
        if version and store.exists(version):
            split = read_split(splits[0])
            fig = plot_split_balance(store.get(version), split, title=Path(splits[0]).name)
            if figures_dir is not None:
                save_figure(fig, figures_dir / f"{version}_{Path(splits[0]).stem}.png")
            lines += [f"![split balance]({_png_data_uri(fig)})", ""]
    if result.get("combined"):
        c = result["combined"]
        lines += [f"Combined version `{c['version']}`: {c['counts']['tomograms']} tomograms.", ""]
    return "\n".join(lines)


def result_artifacts(data_dir: str, round_name: str, result: dict[str, Any], *, title: str) -> None:
    """Summary markdown and a table of every change of the new version, as artifacts of the current run."""
    create_markdown_artifact(result_markdown(data_dir, result, title=title), key=artifact_key("result", round_name),
                             description=f"outcome of {round_name}")
    version = result.get("version")
    store = LabelStore(data_root(data_dir).labels)
    if version and store.exists(version):
        changes = store.changes(version)
        rows = changes.astype(object).where(changes.notna(), "").to_dict("records")
        create_table_artifact(rows or [{"note": "no changes"}], key=artifact_key("changes", version),
                              description=f"every change of {version} against its parent")


def fold_line(summary: dict[str, Any], root: str | Path) -> str:
    """One fold of a train run in words (``summary``: :func:`byu.model.train.fold_summary`)."""
    score = (f"val score {summary['score']:.3f} ({summary['metric']})" if summary.get("score") is not None
             else "no validation score (no validation tomograms)")
    return (f"fold {summary['fold']}: trained {summary['epochs']} epoch(s), {score}, checkpoint "
            f"{_under_root(summary['checkpoint'], Path(root))}")


def _score(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


def train_markdown(data_dir: str, run_name: str, summaries: list[dict[str, Any]], *, labels: str, split: str,
                   config: str) -> str:
    """A train run's fold models: one table row per fold (epochs, validation scores, checkpoint)."""
    root = data_root(data_dir).root
    lines = [f"# Train run `{_md_escape(run_name)}`", "",
             f"{len(summaries)} fold model(s) of config `{_md_escape(config)}` on labels `{_md_escape(labels)}`, "
             f"split `{_md_escape(_under_root(split, root))}` (paths under the data root `{root}`).", "",
             "| fold | epochs | val F-beta (last) | best val F-beta | best epoch | checkpoint |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        epoch = s.get("best_epoch")
        lines.append(f"| {s['fold']} | {s['epochs']} | {_score(s.get('score'))} | {_score(s.get('best_score'))} | "
                     f"{epoch if epoch is not None else '–'} | `{_under_root(s['checkpoint'], root)}` |")
    lines += ["", "F-beta: the validation tomograms of each fold, at the config's validation threshold; "
              "'–': no validation tomograms in the fold."]
    return "\n".join(lines)


def train_artifact(data_dir: str, run_name: str, summaries: list[dict[str, Any]], *, labels: str, split: str,
                   config: str) -> str:
    """The train flow's outcome as a markdown artifact (key ``train-<run>``)."""
    text = train_markdown(data_dir, run_name, summaries, labels=labels, split=split, config=config)
    create_markdown_artifact(text, key=artifact_key("train", run_name), description=f"fold models of run {run_name}")
    return text


__all__ = ["artifact_key", "fold_line", "handoff_artifact", "handoff_markdown", "result_artifacts", "result_markdown",
           "train_artifact", "train_markdown"]
