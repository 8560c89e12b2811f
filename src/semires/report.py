"""The report of a ``semires run``: results table, curves, pseudo-label quality, examples.

Written into the run folder: ``results.md`` and ``report.html`` (the same content), figures in
``figures/``, and the numbers in ``results.json`` (by the pipeline).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semires.evaluate.tables import format_metrics_table
from semires.layout import SUPERVISED, RunLayout
from semires.methods import label, method
from semires.train.semi import REPORTED
from semires.utils.io import atomic_write_text


@dataclass
class ReportInputs:
    """What the report needs of a run (the pipeline gives it; nothing else is read)."""

    layout: RunLayout
    name: str
    labeled: str
    val_split: str
    #: qualitative examples to draw
    qualitative: int
    #: the run config as data (saved in results.json)
    config: dict[str, Any]
    #: seconds per stage
    timings: dict[str, float]
    #: the training config of each teacher-student method (data, refinement, proposals)
    stage_configs: dict[str, Any]
    #: the burn-in checkpoint (the teacher of the pseudo-labels shown)
    burn_in: Path
    split_dir: Path


def headline_split(metrics: dict[str, Any], val_split: str) -> str:
    """The split a table reports: all test splits together when there are several."""
    splits = [s for s in metrics["splits"] if s != val_split]
    combined = [s for s in splits if "+" in s]
    if combined:
        return combined[0]
    return splits[0] if splits else val_split


def _history(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


def curve_points(
    hist: list[dict[str, Any]], parent: list[dict[str, Any]], val: str
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (step, val oIoU) points of one run's history.

    ``parent`` is the history of the run it started from (the burn-in, for a teacher-student
    run; empty otherwise): steps continue from its last step, and the val curve starts at its
    last val score. Epochs without a val evaluation are skipped, so the points join up.
    """
    start = parent[-1]["step"] if parent else 0
    loss = [(start + h["step"], h.get("loss", float("nan"))) for h in hist]
    key = f"{val}_oIoU"
    scored = [(start + h["step"], h[key]) for h in hist if key in h]
    if parent and key in parent[-1]:
        scored.insert(0, (start, parent[-1][key]))
    return loss, scored


def plot_curves(inputs: ReportInputs, methods: list[str], path: Path) -> None:
    """Training loss and validation oIoU against optimizer steps for every stage.

    Teacher-student runs start from the burn-in checkpoint, so their steps continue the
    burn-in's (a dashed line marks where it ended); val points are joined across the epochs
    that were not evaluated.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = inputs.val_split
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    burn_in = _history(inputs.layout.supervised.history)
    offset = burn_in[-1]["step"] if burn_in else 0
    for m in methods:
        hist = _history(inputs.layout.stage(m).history)
        if not hist:
            continue
        name = label(m)
        loss, scored = curve_points(hist, burn_in if m != SUPERVISED else [], val)
        axes[0].plot(*zip(*loss, strict=True), marker="o", ms=3, label=name)
        if scored:
            axes[1].plot(*zip(*scored, strict=True), marker="o", ms=3, label=name)
    for ax in axes:
        if offset and len(methods) > 1:
            ax.axvline(offset, color="0.6", ls="--", lw=0.8)
    axes[0].set(title="training loss (teacher-student: supervised + unsupervised)", xlabel="step")
    axes[1].set(title=f"{val} oIoU (%)", xlabel="step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pseudo_label_quality(layout: RunLayout, methods: list[str]) -> dict[str, dict[str, float]]:
    """Last-epoch pseudo-label statistics of each teacher-student run
    (:data:`semires.train.semi.REPORTED`)."""
    out = {}
    for m in methods:
        hist = _history(layout.stage(m).history)
        if hist and "miss_rate" in hist[-1]:
            out[m] = {k: hist[-1][k] for k in REPORTED if k in hist[-1]}
    return out


def plot_pseudo_labels(layout: RunLayout, quality: dict[str, dict[str, float]], path: Path) -> None:
    """Pseudo-label IoU before/after refinement per epoch, and the share of corrections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for m in quality:
        hist = _history(layout.stage(m).history)
        epochs = [h["epoch"] for h in hist]
        line = axes[0].plot(
            epochs,
            [100 * h.get("pl_iou_after", np.nan) for h in hist],
            marker="o",
            ms=3,
            label=f"{label(m)}: refined",
        )
        axes[0].plot(
            epochs,
            [100 * h.get("pl_iou_before", np.nan) for h in hist],
            ls="--",
            color=line[0].get_color(),
            label=f"{label(m)}: teacher",
        )
    axes[0].set(title="pseudo-label IoU with GT (%)", xlabel="epoch")
    axes[0].legend(fontsize=7)
    names = list(quality)
    pos = [100 * quality[m].get("corrections_positive", 0) for m in names]
    neg = [100 * quality[m].get("corrections_negative", 0) for m in names]
    same = [100 * quality[m].get("corrections_no_change", 0) for m in names]
    x = np.arange(len(names))
    axes[1].bar(x, pos, color="#3a3", label="positive")
    axes[1].bar(x, neg, bottom=pos, color="#c33", label="negative")
    axes[1].bar(x, same, bottom=np.add(pos, neg), color="#bbb", label="no change")
    axes[1].set_xticks(x, [label(m) for m in names], fontsize=8)
    axes[1].set(title="refinement corrections, last epoch (%)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(inputs: ReportInputs, name: str, path: Path, n: int) -> int:
    """Unlabeled training samples: image + expression, GT, teacher pseudo-label (burn-in model),
    refined label (the method's rule on the image's candidates), final prediction of the method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from semires.data import load_index
    from semires.data.splits import read_split
    from semires.data.transforms import resize_mask
    from semires.evaluate.predict import load
    from semires.proposals.store import ProposalStore

    cfg = inputs.stage_configs[name]
    index = load_index(cfg.data.spec())
    split = read_split(inputs.split_dir, index)
    refs = split.unlabeled_refs(index)
    if not refs or n <= 0:
        return 0
    rng = np.random.default_rng(0)
    picks = [refs[i] for i in sorted(rng.choice(len(refs), size=min(n, len(refs)), replace=False))]
    teacher = load(inputs.burn_in, device="cpu")
    final = load(inputs.layout.stage(name).best, device="cpu")
    store = ProposalStore.open(cfg.semi.proposals) if cfg.semi.proposals else None
    fig, axes = plt.subplots(len(picks), 5, figsize=(11, 2.3 * len(picks)), squeeze=False)
    titles = [
        "image",
        "ground truth",
        "teacher pseudo-label",
        f"refined ({label(name)})",
        "final prediction",
    ]
    from semires.train.strategies import refine

    for row, ref in zip(axes, picks, strict=True):
        image = index.load_image(ref.image_id)
        sentence = ref.sentences[0].raw
        gt = index.mask(ref.object_id).astype(bool)
        prob = teacher.predict_proba(image, sentence)
        pseudo = prob > 0.5
        refined = pseudo
        if store is not None:
            cands = store.masks(ref.image_id).contiguous()
            hw = tuple(gt.shape)
            cands = resize_mask(cands, hw) if tuple(cands.shape[-2:]) != hw else cands.bool()
            res = refine(
                torch.from_numpy(pseudo)[None],
                torch.from_numpy(prob)[None],
                cands[None],
                torch.ones((1, cands.shape[0]), dtype=torch.bool),
                cfg.semi.refine,
            )
            refined = res.labels[0].numpy()
        pred = final.predict(image, sentence)
        for ax, mask in zip(row, [None, gt, pseudo, refined, pred], strict=True):
            ax.imshow(image)
            if mask is not None:
                tint = np.zeros((*mask.shape, 4))
                tint[mask] = (1.0, 0.1, 0.1, 0.55)
                ax.imshow(tint)
            ax.set_xticks([])
            ax.set_yticks([])
            if ax is row[0]:
                ax.set_xlabel(f'"{sentence}"', fontsize=7, wrap=True)
        if row is axes[0]:
            for ax, title in zip(row, titles, strict=True):
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(picks)


def write_report(
    inputs: ReportInputs, results: dict[str, dict[str, Any]], say: Any = print
) -> dict[str, Any]:
    """Write ``results.md``, ``report.html`` and the figures; return the summary (for results.json)."""

    layout = inputs.layout
    figures = layout.figures
    figures.mkdir(parents=True, exist_ok=True)
    methods = list(results)
    val = inputs.val_split
    first = next(iter(results.values()))
    split = headline_split(first, val)
    rows = {label(m): results[m]["splits"][split] for m in methods}
    table = format_metrics_table(rows, first="method")
    sup = results.get("supervised", {}).get("splits", {}).get(split, {}).get("oIoU")
    ts = results.get("teacher_student", {}).get("splits", {}).get(split, {}).get("oIoU")
    deltas = {}
    for m in methods:
        o = results[m]["splits"][split]["oIoU"]
        deltas[m] = {
            "vs_supervised": None if sup is None else o - sup,
            "vs_teacher_student": None if ts is None else o - ts,
        }
    quality = pseudo_label_quality(layout, methods)
    plot_curves(inputs, methods, figures / "curves.png")
    figs = {"curves": "figures/curves.png"}
    if quality:
        plot_pseudo_labels(layout, quality, figures / "pseudo_labels.png")
        figs["pseudo_labels"] = "figures/pseudo_labels.png"
    refined_methods = [m for m in methods if method(m).needs_proposals]
    if refined_methods and inputs.qualitative > 0:
        best = max(refined_methods, key=lambda m: results[m]["splits"][split]["oIoU"])
        if plot_examples(inputs, best, figures / "examples.png", inputs.qualitative):
            figs["examples"] = "figures/examples.png"
    networks = {
        m: {
            "headline": results[m].get("eval_model", "student"),
            results[m].get("eval_model", "student"): results[m]["splits"][split],
            results[m]["companion"]["model"]: results[m]["companion"]["splits"][split],
        }
        for m in methods
        if results[m].get("companion") and split in results[m]["companion"]["splits"]
    }
    summary = {
        "name": inputs.name,
        "split": split,
        "protocol": first["splits"][split].get("protocol"),
        "methods": {m: results[m]["splits"] for m in methods},
        "eval_model": {m: results[m].get("eval_model", "student") for m in methods},
        "companions": {m: results[m]["companion"] for m in methods if results[m].get("companion")},
        "networks": networks,
        "best_epochs": {m: results[m].get("best") for m in methods},
        "deltas_oIoU": deltas,
        "pseudo_labels": quality,
        "figures": figs,
        "config": inputs.config,
    }
    md = _markdown(inputs, summary, table, quality, figs)
    atomic_write_text(layout.results_md, md)
    atomic_write_text(layout.report_html, _html(md, inputs.name))
    say("\n" + table)
    return summary


def _markdown(
    inputs: ReportInputs, summary: dict[str, Any], table: str, quality: dict, figs: dict[str, str]
) -> str:

    lines = [
        f"# SemiRES run: {inputs.name}",
        "",
        f"Split **{summary['split']}**, protocol **{summary['protocol']}** (docs/method.md section 1); "
        f"checkpoints selected on **{inputs.val_split}**; labeled share {inputs.labeled}.",
        "",
        table,
        "",
        "| method | oIoU vs supervised | oIoU vs teacher-student |",
        "|---|---:|---:|",
    ]
    for m, d in summary["deltas_oIoU"].items():
        fmt = lambda v: "" if v is None else f"{v:+.2f}"  # noqa: E731
        lines.append(f"| {label(m)} | {fmt(d['vs_supervised'])} | {fmt(d['vs_teacher_student'])} |")
    if summary.get("networks"):
        lines += [
            "",
            "## Student and EMA teacher at the selected step",
            "",
            "The tables above report the network named in the headline column (`semi.eval_model`; "
            "the SemiRES scripts select and report the teacher); the other one is scored from the "
            "same checkpoint.",
            "",
            "| method | headline | student oIoU | teacher oIoU | student mIoU | teacher mIoU |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for m, n in summary["networks"].items():
            st, te = n.get("student", {}), n.get("teacher", {})
            lines.append(
                f"| {label(m)} | {n['headline']} | {st.get('oIoU', 0):.2f} | "
                f"{te.get('oIoU', 0):.2f} | {st.get('mIoU', 0):.2f} | {te.get('mIoU', 0):.2f} |"
            )
    if quality:
        lines += [
            "",
            "## Pseudo-labels (last epoch, unlabeled training images)",
            "",
            "IoU with the referred object's mask (never used for training); *grounded*: the share "
            "of samples whose label has IoU >= 0.5 with the referred object.",
            "",
            "| method | IoU teacher | IoU refined | grounded teacher | grounded refined | miss rate | positive | negative | no change |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m, q in quality.items():
            lines.append(
                f"| {label(m)} | {100 * q.get('pl_iou_before', 0):.2f} | {100 * q.get('pl_iou_after', 0):.2f} | "
                f"{100 * q.get('grounding_before', 0):.1f}% | {100 * q.get('grounding_after', 0):.1f}% | "
                f"{100 * q.get('miss_rate', 0):.1f}% | {100 * q.get('corrections_positive', 0):.1f}% | "
                f"{100 * q.get('corrections_negative', 0):.1f}% | {100 * q.get('corrections_no_change', 0):.1f}% |"
            )
    captions = {
        "curves": "Training loss and validation oIoU against optimizer steps (teacher-student runs continue from the burn-in, dashed line).",
        "pseudo_labels": "Pseudo-label IoU with the ground truth before (teacher) and after refinement, and the share of positive / negative corrections.",
        "examples": "Unlabeled training samples: image and expression, ground truth, the burn-in teacher's pseudo-label, the refined label, and the final model's prediction.",
    }
    for key, rel in figs.items():
        lines += ["", f"![{key}]({rel})", "", captions[key]]
    if inputs.timings:
        lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in inputs.timings.items()]
    return "\n".join(lines) + "\n"


def _html(md: str, title: str) -> str:
    """A self-contained HTML rendering of the Markdown report (tables, images, headings)."""
    body: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            rows = [
                r.strip().strip("|").split("|")
                for r in table
                if not set(r.replace("|", "").strip()) <= {"-", ":"}
            ]
            head, *rest = rows
            body.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
                + "</tr>"
            )
            body.extend(
                "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                for r in rest
            )
            body.append("</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : line.rindex(")")]
            body.append(f'<img src="{html.escape(src)}" style="max-width:100%">')
        elif line.strip():
            text = html.escape(line).replace("**", "")
            body.append(f"<p>{text}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
