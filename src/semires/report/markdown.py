"""The run report as Markdown: the results table, the gains, student vs teacher, the
pseudo-labels, small objects, figures with captions, stage times."""

from __future__ import annotations

from typing import Any

from semires.methods import label
from semires.report.inputs import ReportInputs

CAPTIONS = {
    "curves": "Training loss and validation oIoU against optimizer steps (teacher-student runs continue from the burn-in, dashed line).",
    "pseudo_labels": "Pseudo-label IoU with the ground truth before (teacher) and after refinement, and the share of positive / negative corrections.",
    "examples": "Unlabeled training samples: image and expression, ground truth, the burn-in teacher's pseudo-label, the refined label, and the final model's prediction.",
}


def report_markdown(
    inputs: ReportInputs, summary: dict[str, Any], table: str, quality: dict, figs: dict[str, str]
) -> str:
    """The report as Markdown: results, gains, student vs teacher, pseudo-labels, figures,
    stage times."""
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
    lines += networks_section(summary.get("networks") or {}) + quality_section(quality)
    small = summary.get("small_objects") or {}
    if small:
        first = next(iter(small.values()))
        lines += [
            "",
            "## Small objects",
            "",
            f"oIoU on the smallest 5% of referred objects by mask area ({first['sentences']} "
            f"sentences, objects up to {first['max_area']:.0f} pixels at the protocol's resolution).",
            "",
            "| method | oIoU, smallest 5% |",
            "|---|---:|",
            *(f"| {label(m)} | {v['oIoU']:.2f} |" for m, v in small.items()),
        ]
    for key, rel in figs.items():
        lines += ["", f"![{key}]({rel})", "", CAPTIONS[key]]
    if inputs.timings:
        lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in inputs.timings.items()]
    return "\n".join(lines) + "\n"


def networks_section(networks: dict[str, dict[str, Any]]) -> list[str]:
    """The student / EMA teacher table (none without teacher-student runs)."""
    if not networks:
        return []
    lines = [
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
    for m, n in networks.items():
        st, te = n.get("student", {}), n.get("teacher", {})
        lines.append(
            f"| {label(m)} | {n['headline']} | {st.get('oIoU', 0):.2f} | "
            f"{te.get('oIoU', 0):.2f} | {st.get('mIoU', 0):.2f} | {te.get('mIoU', 0):.2f} |"
        )
    return lines


def quality_section(quality: dict[str, dict[str, float]]) -> list[str]:
    """The pseudo-label quality table of the last epoch (none without teacher-student runs)."""
    if not quality:
        return []
    lines = [
        "",
        "## Pseudo-labels (last epoch, unlabeled training images)",
        "",
        "IoU with the referred object's mask (never used for training); *grounded*: the share "
        "of samples whose label has IoU >= 0.5 with the referred object.",
        "",
        "| method | IoU teacher | IoU refined | grounded teacher | grounded refined | miss rate | positive | negative | no change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("pl_iou_before", "pl_iou_after", "grounding_before", "grounding_after", "miss_rate")
    shares = ("corrections_positive", "corrections_negative", "corrections_no_change")
    for m, q in quality.items():
        cells = [f"{100 * q.get(k, 0):.2f}" for k in keys[:2]]
        cells += [f"{100 * q.get(k, 0):.1f}%" for k in (*keys[2:], *shares)]
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return lines + _signal_lines(quality)


def _signal_lines(quality: dict[str, dict[str, float]]) -> list[str]:
    """The object-level table: the share of unlabeled samples the loss kept (``semi.select``),
    their grounding, and each signal's precision (docs/refinement.md)."""
    from semires.train.pseudo import SIGNALS

    if not any("kept_share" in q for q in quality.values()):
        return []
    lines = [
        "",
        "Object-level signals: *kept*, the share of unlabeled samples the loss learned from "
        "(`semi.select`); *precision*, the grounding of the top half of each batch by a signal "
        "(against *grounded refined* above: a useful signal is well above it).",
        "",
        "| method | kept | grounded (kept) | "
        + " | ".join(f"precision: {s}" for s in SIGNALS)
        + " |",
        "|---|" + "---:|" * (2 + len(SIGNALS)),
    ]
    for m, q in quality.items():
        cells = [f"{100 * q[k]:.1f}%" if k in q else "-" for k in ("kept_share", "grounding_kept")]
        cells += [f"{100 * q[f'precision_{s}']:.1f}%" if f"precision_{s}" in q else "-"
                  for s in SIGNALS]  # fmt: skip
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return lines
