"""The report of a ``semires run``: results table, curves, pseudo-label quality, examples.

Written into the run folder: ``results.md`` and ``report.html`` (the same content), figures in
``figures/``, and the numbers in ``results.json`` (by the pipeline). One module per job:

- :mod:`.inputs`: what the report reads of a run (``ReportInputs``, histories, curve points)
- :mod:`.figures`: the figures (curves, pseudo-label quality, qualitative examples)
- :mod:`.markdown`: the Markdown text of a run's report (tables and sections)
- :mod:`.summary`: ``write_report``, the summary numbers and the report's files
- :mod:`.html`: the HTML page of a Markdown report
- :mod:`.provenance`: what produced a report (command, versions, commit)
- :mod:`.seeds`: the comparison of a run over several training seeds
"""

from __future__ import annotations

from semires.report.figures import plot_curves, plot_examples, plot_pseudo_labels
from semires.report.html import markdown_to_html
from semires.report.inputs import (
    ReportInputs,
    curve_points,
    headline_split,
    pseudo_label_quality,
)
from semires.report.provenance import provenance
from semires.report.seeds import seed_comparison, write_seed_report
from semires.report.summary import write_report

__all__ = [
    "ReportInputs",
    "curve_points",
    "headline_split",
    "markdown_to_html",
    "plot_curves",
    "plot_examples",
    "plot_pseudo_labels",
    "provenance",
    "pseudo_label_quality",
    "seed_comparison",
    "write_report",
    "write_seed_report",
]
