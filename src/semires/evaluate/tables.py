"""Result tables: the standard RES table (oIoU, mIoU, Prec@0.5..0.9) as Markdown text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

THRESHOLDS = ("0.5", "0.6", "0.7", "0.8", "0.9")


def metrics_row(metrics: Mapping[str, Any]) -> list[str]:
    """oIoU, mIoU, Prec@X of one metrics report (values in percent), formatted to 2 decimals."""
    prec = metrics.get("precision", {})
    values = [metrics["oIoU"], metrics["mIoU"], *(prec.get(t, float("nan")) for t in THRESHOLDS)]
    return [f"{v:.2f}" for v in values]


def format_metrics_table(
    rows: Mapping[str, Mapping[str, Any]], title: str | None = None, first: str = "split"
) -> str:
    """A Markdown table with one row per entry of ``rows`` (e.g. per split or per method)."""
    header = [first, "oIoU", "mIoU", *(f"P@{t}" for t in THRESHOLDS), "n"]
    lines = []
    if title:
        lines += [title, ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for name, m in rows.items():
        lines.append("| " + " | ".join([name, *metrics_row(m), str(m.get("n", ""))]) + " |")
    return "\n".join(lines)
