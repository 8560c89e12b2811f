"""A run over several training seeds: every method's spread over the seeds and the
differences that matter, with paired bootstrap intervals (``results.md`` / ``results.json``
of ``semires run --seeds``)."""

from __future__ import annotations

import json
from typing import Any

from semires.layout import SUPERVISED, RunLayout
from semires.methods import label, method, split_stage, stage_name
from semires.report.html import markdown_to_html
from semires.report.inputs import read_history, stage_samples
from semires.report.provenance import provenance
from semires.utils.io import atomic_write_json, atomic_write_text


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
    counts = {m: [stage_samples(layouts[s], m, test_splits) for s in seeds] for m in methods}
    out: dict[str, Any] = {"seeds": seeds, "split": head, "methods": {}, "differences": {}}
    for m in methods:
        metrics = [json.loads(layouts[s].stage(m).metrics.read_text()) for s in seeds]
        hist = [read_history(layouts[s].stage(m).history) for s in seeds]
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
    rounds = range(1, getattr(cfg, "rounds", 1) + 1)
    methods = [SUPERVISED, *(stage_name(m, r) for r in rounds for m in cfg.methods)]
    comparison = seed_comparison(layouts, methods, list(cfg.data.test_splits))
    walls = {s: sum(summaries[s].get("timings", {}).values()) for s in seeds}
    comparison.update(name=cfg.name, provenance=provenance(), wall_s=walls, config=cfg.to_dict())
    md = _seed_markdown(cfg, comparison)
    atomic_write_text(layout.results_md, md)
    atomic_write_text(layout.report_html, markdown_to_html(md, f"{cfg.name} (seeds)"))
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
