"""``write_report``: a run's summary (the numbers of results.json) and its report files:
``results.md``, ``report.html`` and the figures."""

from __future__ import annotations

from typing import Any

from semires.evaluate.tables import format_metrics_table
from semires.layout import SUPERVISED, RunLayout
from semires.methods import label
from semires.report.figures import draw_figures
from semires.report.html import markdown_to_html
from semires.report.inputs import (
    ReportInputs,
    headline_split,
    pseudo_label_quality,
    stage_samples,
)
from semires.report.markdown import report_markdown
from semires.utils.io import atomic_write_text


def write_report(
    inputs: ReportInputs, results: dict[str, dict[str, Any]], say: Any = print
) -> dict[str, Any]:
    """Write ``results.md``, ``report.html`` and the figures; return the summary (for
    results.json). ``results``: each stage's ``metrics.json``, supervised first."""
    layout = inputs.layout
    methods = list(results)
    first = next(iter(results.values()))
    split = headline_split(first, inputs.val_split)
    table = format_metrics_table(
        {label(m): results[m]["splits"][split] for m in methods}, first="method"
    )
    quality = pseudo_label_quality(layout, methods)
    summary = {
        "name": inputs.name,
        "split": split,
        "protocol": first["splits"][split].get("protocol"),
        "methods": {m: results[m]["splits"] for m in methods},
        "eval_model": {m: results[m].get("eval_model", "student") for m in methods},
        "companions": {m: results[m]["companion"] for m in methods if results[m].get("companion")},
        "networks": network_scores(results, split),
        "best_epochs": {m: results[m].get("best") for m in methods},
        "deltas_oIoU": oiou_deltas(results, split),
        "pseudo_labels": quality,
        "small_objects": small_object_scores(layout, methods, split),
        "figures": draw_figures(inputs, results, split, quality),
        "config": inputs.config,
    }
    md = report_markdown(inputs, summary, table, quality, summary["figures"])
    atomic_write_text(layout.results_md, md)
    atomic_write_text(layout.report_html, markdown_to_html(md, inputs.name))
    say("\n" + table)
    return summary


def small_object_scores(
    layout: RunLayout, methods: list[str], split: str
) -> dict[str, dict[str, float]]:
    """Each method's oIoU on the smallest 5% of referred objects (by mask area) of ``split``
    (the paper's small-object analysis), from the stages' samples.json."""
    from semires.evaluate.compare import small_objects

    out = {}
    for m in methods:
        counts = stage_samples(layout, m, split.split("+"))
        if counts:
            out[m] = small_objects(counts)
    return out


def oiou_deltas(
    results: dict[str, dict[str, Any]], split: str
) -> dict[str, dict[str, float | None]]:
    """Each method's oIoU minus the burn-in's and minus plain teacher-student's."""

    def oiou(m: str) -> float | None:
        return results.get(m, {}).get("splits", {}).get(split, {}).get("oIoU")

    sup, ts = oiou(SUPERVISED), oiou("teacher_student")
    return {
        m: {
            "vs_supervised": None if sup is None else oiou(m) - sup,
            "vs_teacher_student": None if ts is None else oiou(m) - ts,
        }
        for m in results
    }


def network_scores(results: dict[str, dict[str, Any]], split: str) -> dict[str, dict[str, Any]]:
    """Per teacher-student method: the headline network, and student / teacher metrics."""
    out = {}
    for m, r in results.items():
        companion = r.get("companion")
        if companion and split in companion["splits"]:
            head = r.get("eval_model", "student")
            out[m] = {
                "headline": head,
                head: r["splits"][split],
                companion["model"]: companion["splits"][split],
            }
    return out
