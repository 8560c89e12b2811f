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
    #: the run's dataset, read once by the pipeline (None: read from the stage configs)
    index: Any = None


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
    """Unlabeled training samples, one row each: image + expression, ground truth, the burn-in
    teacher's pseudo-label, the refined label (the method's rule on the image's candidates), and
    the method's final prediction; columns titled, masks tinted AND outlined (so they stay
    visible on coloured shapes). Returns the number of rows drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semires.data import load_index
    from semires.data.splits import read_split
    from semires.evaluate.predict import load

    cfg = inputs.stage_configs[name]
    index = inputs.index if inputs.index is not None else load_index(cfg.data.spec())
    refs = read_split(inputs.split_dir, index).unlabeled_refs(index)
    if not refs or n <= 0:
        return 0
    rng = np.random.default_rng(0)
    picks = [refs[i] for i in sorted(rng.choice(len(refs), size=min(n, len(refs)), replace=False))]
    teacher = load(inputs.burn_in, device="cpu")
    final = load(inputs.layout.stage(name).best, device="cpu")
    titles = (
        "image",
        "ground truth",
        "teacher pseudo-label",
        f"refined: {label(name)}",
        f"final: {label(name)}",
    )
    fig, axes = plt.subplots(len(picks), 5, figsize=(13, 2.7 * len(picks)), squeeze=False)
    for row, ref in zip(axes, picks, strict=True):
        image, sentence, masks = _example(index, ref, cfg, teacher, final)
        for ax, mask in zip(row, [None, *masks], strict=True):
            ax.imshow(image)
            if mask is not None:
                tint = np.zeros((*mask.shape, 4))
                tint[mask] = (1.0, 0.1, 0.1, 0.45)
                ax.imshow(tint)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=["white"], linewidths=2.2)
                    ax.contour(mask, levels=[0.5], colors=["#d00000"], linewidths=1.1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_xlabel(f'"{sentence}"', fontsize=10, wrap=True)
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(picks)


def _example(index: Any, ref: Any, cfg: Any, teacher: Any, final: Any) -> tuple[Any, str, list]:
    """One row of :func:`plot_examples`: the image, the expression, and the four masks (ground
    truth, pseudo-label, refined label, final prediction) at the image's size."""
    import torch

    from semires.proposals.store import ProposalStore
    from semires.train.strategies import refine

    image = index.load_image(ref.image_id)
    sentence = ref.sentences[0].raw
    gt = index.mask(ref.object_id).astype(bool)
    prob = teacher.predict_proba(image, sentence)
    pseudo = refined = prob > 0.5
    if cfg.semi.proposals:
        cands = (
            ProposalStore.open(cfg.semi.proposals).masks(ref.image_id, size=gt.shape).contiguous()
        )
        valid = torch.ones((1, cands.shape[0]), dtype=torch.bool)
        p = torch.from_numpy(prob)[None]
        refined = refine(p > 0.5, p, cands[None], valid, cfg.semi.refine).labels[0].numpy()
    return image, sentence, [gt, pseudo, refined, final.predict(image, sentence)]


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
        "networks": _networks(results, split),
        "best_epochs": {m: results[m].get("best") for m in methods},
        "deltas_oIoU": _deltas(results, split),
        "pseudo_labels": quality,
        "small_objects": _small_objects(layout, methods, split),
        "figures": _figures(inputs, results, split, quality),
        "config": inputs.config,
    }
    md = _markdown(inputs, summary, table, quality, summary["figures"])
    atomic_write_text(layout.results_md, md)
    atomic_write_text(layout.report_html, _html(md, inputs.name))
    say("\n" + table)
    return summary


def _small_objects(
    layout: RunLayout, methods: list[str], split: str
) -> dict[str, dict[str, float]]:
    """Each method's oIoU on the smallest 5% of referred objects (by mask area) of ``split``
    (the paper's small-object analysis), from the stages' samples.json."""
    from semires.evaluate.compare import small_objects

    out = {}
    for m in methods:
        counts = _samples(layout, m, split.split("+"))
        if counts:
            out[m] = small_objects(counts)
    return out


def _deltas(results: dict[str, dict[str, Any]], split: str) -> dict[str, dict[str, float | None]]:
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


def _networks(results: dict[str, dict[str, Any]], split: str) -> dict[str, dict[str, Any]]:
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


def _figures(
    inputs: ReportInputs, results: dict[str, dict[str, Any]], split: str, quality: dict
) -> dict[str, str]:
    """Draw the figures into ``figures/``; their paths relative to the run folder."""
    figures = inputs.layout.figures
    figures.mkdir(parents=True, exist_ok=True)
    methods = list(results)
    plot_curves(inputs, methods, figures / "curves.png")
    figs = {"curves": "figures/curves.png"}
    if quality:
        plot_pseudo_labels(inputs.layout, quality, figures / "pseudo_labels.png")
        figs["pseudo_labels"] = "figures/pseudo_labels.png"
    refined = [m for m in methods if method(m).needs_proposals]
    if refined and inputs.qualitative > 0:
        best = max(refined, key=lambda m: results[m]["splits"][split]["oIoU"])
        if plot_examples(inputs, best, figures / "examples.png", inputs.qualitative):
            figs["examples"] = "figures/examples.png"
    return figs


_CAPTIONS = {
    "curves": "Training loss and validation oIoU against optimizer steps (teacher-student runs continue from the burn-in, dashed line).",
    "pseudo_labels": "Pseudo-label IoU with the ground truth before (teacher) and after refinement, and the share of positive / negative corrections.",
    "examples": "Unlabeled training samples: image and expression, ground truth, the burn-in teacher's pseudo-label, the refined label, and the final model's prediction.",
}


def _markdown(
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
    lines += _networks_section(summary.get("networks") or {}) + _quality_section(quality)
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
        lines += ["", f"![{key}]({rel})", "", _CAPTIONS[key]]
    if inputs.timings:
        lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in inputs.timings.items()]
    return "\n".join(lines) + "\n"


def _networks_section(networks: dict[str, dict[str, Any]]) -> list[str]:
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


def _quality_section(quality: dict[str, dict[str, float]]) -> list[str]:
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
    return lines


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


# ---------------------------------------------------------------------------- several seeds
def provenance() -> dict[str, Any]:
    """What produced a report: the command, the package version, the git commit of the code
    (when it runs from a checkout), the Python and torch versions."""
    import platform
    import subprocess
    import sys

    import torch

    from semires.version import __version__

    commit = None
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = done.stdout.strip() or None if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "command": " ".join(["semires", *sys.argv[1:]]) if sys.argv else None,
        "version": __version__,
        "commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _samples(layout: RunLayout, stage: str, splits: list[str]) -> dict[str, Any]:
    """A stage's per-sentence counts over ``splits`` together (from its samples.json)."""
    path = layout.stage(stage).samples
    data = json.loads(path.read_text()) if path.is_file() else {}
    out: dict[str, Any] = {}
    for split in splits:
        out.update(data.get(split, {}))
    return out


def seed_comparison(
    layouts: dict[int, RunLayout], methods: list[str], test_splits: list[str]
) -> dict[str, Any]:
    """Every method over the seeds: per-seed test oIoU and its spread, per split, the small
    objects (smallest 5% by area), the last epoch's grounding rates, and every difference that
    matters (vs the burn-in, vs plain teacher-student, ours vs SemiRES-CPI) with its spread and a
    paired bootstrap interval over sentences. Reads each stage's metrics.json / samples.json."""
    from semires.evaluate.compare import paired_bootstrap, small_objects, spread

    seeds = sorted(layouts)
    head = "+".join(test_splits) if len(test_splits) > 1 else test_splits[0]
    counts = {m: [_samples(layouts[s], m, test_splits) for s in seeds] for m in methods}
    out: dict[str, Any] = {"seeds": seeds, "split": head, "methods": {}, "differences": {}}
    for m in methods:
        metrics = [json.loads(layouts[s].stage(m).metrics.read_text()) for s in seeds]
        hist = [_history(layouts[s].stage(m).history) for s in seeds]
        row = {
            split: spread([r["splits"][split]["oIoU"] for r in metrics])
            for split in [head, *test_splits]
            if all(split in r["splits"] for r in metrics)
        }
        row["per_seed"] = [r["splits"][head]["oIoU"] for r in metrics]
        row["headline"] = metrics[0].get("eval_model", "student")
        if all(counts[m]):
            row["small_objects"] = spread([small_objects(c)["oIoU"] for c in counts[m]])
        for key in ("grounding_before", "grounding_after"):
            if all(h and key in h[-1] for h in hist):
                row[key] = spread([100 * h[-1][key] for h in hist])
        out["methods"][m] = row
    for a, b in _pairs(methods):
        if all(counts[a]) and all(counts[b]):
            per_seed = [
                x - y
                for x, y in zip(
                    out["methods"][a]["per_seed"], out["methods"][b]["per_seed"], strict=True
                )
            ]
            boot = paired_bootstrap(counts[a], counts[b])
            holds = (boot["low"] > 0 or boot["high"] < 0) and (
                min(per_seed) > 0 or max(per_seed) < 0
            )
            out["differences"][f"{a} - {b}"] = {
                **boot,
                "per_seed": per_seed,
                "spread": spread(per_seed),
                "holds": holds,
            }
    return out


def _pairs(methods: list[str]) -> list[tuple[str, str]]:
    """The differences a table shows: each method vs the burn-in and vs plain teacher-student,
    and each of our strategies vs SemiRES-CPI."""
    from semires.methods import split_stage, stage_name

    pairs = []
    for m in methods:
        if m == SUPERVISED:
            continue
        base, rnd = split_stage(m)
        previous = [stage_name(base, rnd - 1)] if rnd > 1 else []
        for other in (
            SUPERVISED,
            "teacher_student",
            *(["cpi"] if method(m).ours else []),
            *previous,
        ):
            if m != other and other in methods and (m, other) not in pairs:
                pairs.append((m, other))
    return pairs


def write_seed_report(
    layout: RunLayout, cfg: Any, summaries: dict[int, dict[str, Any]], say: Any = None
) -> dict[str, Any]:
    """``results.md`` / ``results.json`` of a run over several training seeds (see
    :func:`seed_comparison`), next to each seed's own folder and report."""
    seeds = sorted(summaries)
    layouts = {s: RunLayout(layout.root / f"seed-{s}") for s in seeds}
    from semires.methods import stage_name

    rounds = range(1, getattr(cfg, "rounds", 1) + 1)
    methods = [SUPERVISED, *(stage_name(m, r) for r in rounds for m in cfg.methods)]
    comparison = seed_comparison(layouts, methods, list(cfg.data.test_splits))
    walls = {s: sum(summaries[s].get("timings", {}).values()) for s in seeds}
    comparison.update(name=cfg.name, provenance=provenance(), wall_s=walls, config=cfg.to_dict())
    md = _seed_markdown(cfg, comparison)
    atomic_write_text(layout.results_md, md)
    atomic_write_text(layout.report_html, _html(md, f"{cfg.name} (seeds)"))
    from semires.utils.io import atomic_write_json

    atomic_write_json(layout.results_json, comparison)
    if say is not None:
        say("\n" + md)
    return comparison


def _seed_markdown(cfg: Any, c: dict[str, Any]) -> str:
    from semires.evaluate.compare import summarise

    seeds = ", ".join(str(s) for s in c["seeds"])
    splits = [
        k for k in next(iter(c["methods"].values())) if k in (c["split"], *cfg.data.test_splits)
    ]
    lines = [
        f"# SemiRES run over training seeds: {cfg.name}",
        "",
        f"Training seeds {seeds} on the same data, split and proposals; test oIoU (%) on "
        f"**{c['split']}**, LAVT protocol, as mean ± std over seeds (min..max). Each method's "
        "headline network is named (the SemiRES scripts report the EMA teacher).",
        "",
        "| method | headline | "
        + " | ".join(splits)
        + " | smallest 5% | grounded teacher | grounded refined |",
        "|---|---|" + "---:|" * (len(splits) + 3),
    ]
    for m, row in c["methods"].items():
        cells = [summarise(row[s]) for s in splits]
        cells += [
            summarise(row[k]) if k in row else ""
            for k in ("small_objects", "grounding_before", "grounding_after")
        ]
        lines.append(f"| {label(m)} | {row['headline']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Differences",
        "",
        "oIoU points, A - B: the mean over seeds, their spread, and a 95% bootstrap interval over "
        "the test sentences (the same resample for both methods and every seed). A difference "
        "**holds** when the interval excludes 0 and every seed agrees on its sign; otherwise it "
        "is within the noise.",
        "",
        "| A - B | mean | per seed (min..max) | 95% interval | holds |",
        "|---|---:|---:|---:|---|",
    ]
    for pair, d in c["differences"].items():
        a, b = pair.split(" - ")
        s = d["spread"]
        lines.append(
            f"| {label(a)} - {label(b)} | {d['diff']:+.2f} | {s['min']:+.2f}..{s['max']:+.2f} | "
            f"[{d['low']:+.2f}, {d['high']:+.2f}] | {'yes' if d['holds'] else 'no'} |"
        )
    p = c["provenance"]
    lines += [
        "",
        "## Provenance",
        "",
        f"`{p['command']}`; semires {p['version']} (commit {p['commit'] or 'unknown'}), Python "
        f"{p['python']}, torch {p['torch']}; wall time per seed: "
        + ", ".join(f"seed {s}: {w / 60:.1f} min" for s, w in c["wall_s"].items())
        + ". Each seed's own report: `seed-<s>/results.md`.",
    ]
    return "\n".join(lines) + "\n"
