"""`semires run`: the whole pipeline on the tiny synthetic preset, caching, config checks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from semires.errors import ConfigError
from semires.pipeline import load_run_config
from semires.pipeline import run as run_pipeline
from semires.plan import RunPlan

TINY = [
    "synth.preset=tiny",
    "labeled=34%",
    "model.name=test-tiny",
    "data.img_size=64",
    "data.test_splits=[testA, testB]",
    "data.cache_images=true",
    "proposals.workers=1",
    "burn_in.epochs=2",
    "burn_in.steps_per_epoch=2",
    "burn_in.batch_size=4",
    "burn_in.threads=null",
    "teacher_student.epochs=1",
    "teacher_student.steps_per_epoch=2",
    "teacher_student.batch_size=2",
    "teacher_student.threads=null",
    "semi.unlabeled_batch_size=2",
    "report.qualitative=2",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    cfg = load_run_config(preset="demo", overrides=[f"out={out}", *TINY])
    return out, cfg, run_pipeline(cfg, progress=False)


def test_pipeline_runs_every_stage_and_reports(tiny_run):
    out, _cfg, summary = tiny_run
    assert set(summary["methods"]) == {"supervised", "teacher_student", "iom", "cpi", "objects"}
    assert summary["split"] == "testA+testB"
    for method, splits in summary["methods"].items():
        # the demo preset scores test only at the end (val selected the checkpoint)
        assert set(splits) == {"testA", "testB", "testA+testB"}, method
        m = splits["testA+testB"]
        assert m["n"] == splits["testA"]["n"] + splits["testB"]["n"]
        assert 0.0 <= m["oIoU"] <= 100.0
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"] == summary["methods"]
    # the small-object analysis: oIoU over the smallest 5% of objects, from samples.json
    from semires.evaluate.compare import oiou, small_objects

    samples = json.loads((out / "cpi" / "samples.json").read_text())
    counts = {**samples["testA"], **samples["testB"]}
    assert len(counts) == summary["methods"]["cpi"]["testA+testB"]["n"]
    assert oiou(counts) == pytest.approx(summary["methods"]["cpi"]["testA+testB"]["oIoU"])
    assert summary["small_objects"]["cpi"] == small_objects(counts)
    assert "## Small objects" in (out / "results.md").read_text()
    # the demo trains the four teacher-student methods at once, in worker processes
    assert set(saved["timings"]) == {
        "data",
        "split",
        "proposals",
        "supervised",
        "teacher-student runs",
        "teacher_student",
        "iom",
        "cpi",
        "objects",
        "report",
    }
    for name in (
        "results.md",
        "report.html",
        "figures/curves.png",
        "figures/pseudo_labels.png",
        "figures/examples.png",
    ):
        assert (out / name).is_file(), name
    md = (out / "results.md").read_text()
    assert "SemiRES-CPI" in md and "teacher-student (no SAM)" in md and "testA+testB" in md
    html = (out / "report.html").read_text()
    assert "<table>" in html and "figures/examples.png" in html
    # pseudo-label statistics are logged for every teacher-student run
    assert set(saved["pseudo_labels"]) == {"teacher_student", "iom", "cpi", "objects"}
    assert saved["pseudo_labels"]["teacher_student"]["miss_rate"] == 1.0  # no refinement
    # every sample kept without selection, about half at the start with it (2 steps of 2)
    assert all(q["kept_share"] == 1.0 for m, q in saved["pseudo_labels"].items() if m != "objects")
    assert saved["pseudo_labels"]["objects"]["kept_share"] == 0.75  # 1 of 2, then 2 of 2
    assert "| SemiRES-CPI | 100.0% |" in md and "precision: confidence" in md
    d = saved["deltas_oIoU"]["cpi"]["vs_supervised"]
    assert d == pytest.approx(
        summary["methods"]["cpi"]["testA+testB"]["oIoU"]
        - summary["methods"]["supervised"]["testA+testB"]["oIoU"]
    )


def test_rerun_is_cached(tiny_run):
    out, cfg, summary = tiny_run
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/latest.pt")}
    again = run_pipeline(cfg, progress=False)
    assert again["methods"] == summary["methods"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/latest.pt")} == stamps


def test_a_finished_stage_keeps_only_what_resume_and_report_read(tiny_run, tmp_path, capsys):
    """Each finished stage's latest.pt is the run's record (no weights, optimizer, RNG or
    teacher); best.pt keeps the networks. Resumed from the record, a stage trains nothing and
    scores best.pt to the same metrics; one asked to train further is refused in one line, and
    so is evaluating the record."""
    import shutil

    from semires.cli import main
    from semires.errors import CheckpointError
    from semires.runtime.checkpoint import load_checkpoint
    from semires.train.config import config_from_dict
    from semires.train.engine import train

    out, _cfg, _ = tiny_run
    for stage in ("supervised", "teacher_student", "iom", "cpi"):
        latest = load_checkpoint(out / stage / "latest.pt")
        assert latest["finished"] is True and latest["step"] > 0, stage
        assert not {"model", "optimizer", "scaler", "rng", "teacher"} & set(latest), stage
        assert "model" in load_checkpoint(out / stage / "best.pt"), stage
        assert (out / stage / "best.pt").stat().st_size > 20 * (out / stage / "latest.pt").stat().st_size  # fmt: skip
    copy = tmp_path / "cpi"
    shutil.copytree(out / "cpi", copy)
    cfg = config_from_dict(yaml.safe_load((copy / "config.yaml").read_text()))
    cfg.output.dir = str(copy)
    again = train(cfg, progress=True)
    said = capsys.readouterr().out
    assert "resumed from" in said and "nothing left to train" in said and "epoch=" not in said
    assert again["splits"] == json.loads((out / "cpi" / "metrics.json").read_text())["splits"]
    cfg.train.epochs += 1
    with pytest.raises(CheckpointError, match="the record of a finished run of 2 steps"):
        train(cfg, progress=False)
    assert main(["evaluate", "--checkpoint", str(copy / "latest.pt"), "-q"]) == 2
    assert "keeps no weights (dropped to save disk): use" in capsys.readouterr().err


def test_open_plan_of_a_finished_run_reads_run_yaml_only(tiny_run, tmp_path, monkeypatch):
    """`semires serve` and `--seeds` read a run through its plan: open_plan makes no folder, starts
    no process group and reads no dataset, and its stage configs are those the run trained with.
    (Before the refused reruns below: a rerun with another training config rewrites run.yaml.)"""
    import torch.distributed

    import semires.data as data_mod
    import semires.runtime.distributed as dist_mod
    from semires.errors import DataError
    from semires.plan import open_plan

    out, cfg, _ = tiny_run

    def refuse(*args, **kwargs):
        raise AssertionError("a plan must not initialise a process group or read a dataset")

    monkeypatch.setattr(dist_mod, "init_distributed", refuse)
    monkeypatch.setattr(data_mod, "load_index", refuse)

    def listing(root):
        return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))

    before, top = listing(out), out.stat().st_mtime_ns
    plan = open_plan(out)
    assert plan.stage_names == ["supervised", *cfg.methods]
    for name in plan.stage_names:
        used = yaml.safe_load((out / name / "config.yaml").read_text())
        assert plan.train_config(name).to_dict() == used, name
    assert set(plan.stage_configs()) == set(cfg.methods)
    assert plan.burn_in_path == out / "supervised" / "best.pt"
    assert (plan.split_dir, plan.proposals_dir) == (out / "split", out / "proposals")
    assert plan.recorded_config() == yaml.safe_load((out / "run.yaml").read_text())
    assert listing(out) == before and out.stat().st_mtime_ns == top
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    # a moved run folder opens with its own paths; a missing one is an error, not made
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "run.yaml").write_bytes((out / "run.yaml").read_bytes())
    plan = open_plan(moved)
    assert plan.train_config("cpi").semi.burn_in == str(moved / "supervised" / "best.pt")
    assert plan.data_config().root == str(moved / "data")
    assert [p.name for p in moved.iterdir()] == ["run.yaml"]
    with pytest.raises(DataError, match="run folder not found"):
        open_plan(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ConfigError, match="not a semires run folder"):
        open_plan(tmp_path)


def test_changed_config_in_the_same_folder_is_refused(tiny_run):
    out, _cfg, _ = tiny_run
    changed = load_run_config(preset="demo", overrides=[f"out={out}", *TINY, "burn_in.lr=0.5"])
    with pytest.raises(
        ConfigError, match=r"supervised was trained with another config .*train\.lr"
    ):
        run_pipeline(changed, progress=False)
    # a folder trained before a setting existed trained with its default: the same config
    import yaml

    saved = out / "supervised" / "config.yaml"
    text = saved.read_text()
    older = yaml.safe_load(text)
    del older["semi"]["flip_student"], older["data"]["flip"]
    saved.write_text(yaml.safe_dump(older))
    run_yaml = out / "run.yaml"
    run_text = run_yaml.read_text()
    older_run = yaml.safe_load(run_text)
    del older_run["data"]["train_split"]  # a data setting (default "train") it predates
    run_yaml.write_text(yaml.safe_dump(older_run))
    try:
        same = load_run_config(preset="demo", overrides=[f"out={out}", *TINY])
        assert (
            run_pipeline(same, progress=False)["methods"]
            == json.loads((out / "results.json").read_text())["methods"]
        )
        assert yaml.safe_load(saved.read_text()) == older  # taken as it is, not retrained
        flips = load_run_config(preset="demo", overrides=[f"out={out}", *TINY, "data.flip=0.5"])
        with pytest.raises(ConfigError, match=r"supervised was trained with another config .*flip"):
            run_pipeline(flips, progress=False)  # not the default: another config
    finally:
        saved.write_text(text)
        run_yaml.write_text(run_text)
    other_split = load_run_config(preset="demo", overrides=[f"out={out}", *TINY, "labeled=50%"])
    with pytest.raises(ConfigError, match=r"other data / split / proposals settings \(labeled: "):
        run_pipeline(other_split, progress=False)


def test_other_synthetic_data_in_the_same_folder_is_refused_before_any_stage(tiny_run):
    """Another synthetic seed has the same image ids and sizes: rerunning into a finished run
    folder must not overwrite its data under the finished burn-in and proposals."""
    import yaml

    out, _cfg, _ = tiny_run
    recorded = yaml.safe_load((out / "run.yaml").read_text())
    assert recorded["synth"]["seed"] == 0 and recorded["labeled"] == "34%"
    files = sorted(p for p in (out / "data").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    for change, needle in [
        ("synth.seed=1", 'synth: .*"seed": 0.* -> .*"seed": 1'),
        ("proposals.params={max_candidates: 5}", "proposals.params: {} -> "),
    ]:
        other = load_run_config(preset="demo", overrides=[f"out={out}", *TINY, change])
        with pytest.raises(ConfigError, match=needle):
            run_pipeline(other, progress=False)
    assert sorted(p for p in (out / "data").rglob("*") if p.is_file()) == files
    assert {p: p.read_bytes() for p in files} == before
    assert yaml.safe_load((out / "run.yaml").read_text()) == recorded


@pytest.mark.parametrize(
    ("config", "labeled", "tag", "dataset", "tests"),
    [
        ("semires_refcoco", None, "1pct", "refcoco", ["testA", "testB"]),
        ("semires_refcoco", "0.5%", "0p5pct", "refcoco", ["testA", "testB"]),
        ("semires_refcocop", "10%", "10pct", "refcoco+", ["testA", "testB"]),
        ("semires_refcocog", "2%", "2pct", "refcocog", ["test"]),
    ],
)
def test_paper_configs_expand_to_the_paper_settings(config, labeled, tag, dataset, tests, tmp_path):
    extra = [f"labeled={labeled}"] if labeled else []
    cfg = load_run_config(config=config, overrides=extra)
    # one file per dataset; the ratio is an override and names the run folder
    assert cfg.labeled == (labeled or "1%")
    assert cfg.out == f"runs/{config}_{tag}" and cfg.name == f"{config}_{tag}"
    cfg.out = str(tmp_path)
    plan = RunPlan(cfg)
    sup = plan.train_config("supervised")
    assert sup.model.name == "lavt-swin-b" and sup.data.img_size == 480
    assert sup.data.dataset == dataset and sup.data.test_splits == tests
    assert sup.train.lr == pytest.approx(5e-5) and sup.train.epochs == 40 and not sup.semi.enabled
    # the authors' training, stage by stage (docs/reproduce.md)
    assert (sup.train.batch_size, sup.train.amp, sup.train.ce_mean) == (2, "none", "weighted")
    assert sup.train.decay_rule == "lavt" and sup.train.sync_bn and not sup.train.text_dropout
    iom, cpi, ts = (plan.train_config(m) for m in ("iom", "cpi", "teacher_student"))
    assert iom.semi.sup_weight == 10.0 and cpi.semi.sup_weight == 1.0  # as the paper's two scripts
    assert iom.semi.refine.strategy == "iom" and cpi.semi.refine.strategy == "cpi"
    assert ts.semi.refine.strategy == "none" and ts.semi.proposals is None
    assert cpi.semi.ema == pytest.approx(0.9996) and cpi.semi.unlabeled_batch_size == 3
    assert cpi.semi.eval_model == "teacher" and not cpi.semi.pwa_class_weights
    assert cpi.train.ce_mean == "plain" and cpi.train.text_dropout and cpi.train.batch_size == 3
    assert cpi.semi.burn_in == str(tmp_path / "supervised" / "best.pt")
    assert cpi.semi.proposals == str(tmp_path / "proposals")
    assert cpi.data.val_split == "val"
    # a given burn-in replaces the supervised stage
    cfg.burn_in_checkpoint = str(tmp_path / "authors_burn_in.pt")
    assert RunPlan(cfg).train_config("cpi").semi.burn_in == cfg.burn_in_checkpoint


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["semi.refine.tau=1.5"], "refine.tau"),
        (["semi.refine.t2=-1"], "refine.t2"),
        (["methods=[cpi, magic]"], "methods"),
        (["method_overrides={magic: {sup_weight: 1}}"], "method_overrides.magic"),
        (["labeled=150%"], "150%"),
    ],
)
def test_bad_run_configs(overrides, needle, tmp_path):
    from semires.errors import SemiresError

    with pytest.raises(SemiresError, match=needle):
        load_run_config(preset="demo", overrides=[f"out={tmp_path}", *overrides])


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="demo"):
        load_run_config(preset="nope")


def test_the_hard_preset_is_the_demo_on_the_hard_synthetic_benchmark():
    demo = load_run_config(preset="demo").to_dict()
    hard = load_run_config(preset="hard").to_dict()
    assert (demo["synth"]["preset"], hard["synth"]["preset"]) == ("demo", "hard")
    differ = {k for k in demo if demo[k] != hard[k]}
    assert differ == {"name", "out", "synth"}


def test_curve_points_continue_from_the_burn_in():
    from semires.report import curve_points

    burn_in = [
        {"step": 16, "loss": 0.5},
        {"step": 32, "loss": 0.3, "val_oIoU": 20.0},
    ]
    ts = [
        {"step": 100, "loss": 0.2},  # not evaluated: skipped on the val curve
        {"step": 200, "loss": 0.1, "val_oIoU": 25.0},
    ]
    loss, scored = curve_points(ts, burn_in, "val")
    assert loss == [(132, 0.2), (232, 0.1)]
    assert scored == [(32, 20.0), (232, 25.0)]  # starts where the burn-in ended
    loss, scored = curve_points(burn_in, [], "val")
    assert loss == [(16, 0.5), (32, 0.3)] and scored == [(32, 20.0)]


WORKERS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from semires.pipeline import run_in_workers

    def work(x):
        from tqdm import tqdm
        tqdm.get_lock()  # a multiprocessing lock (a semaphore), as tqdm bars take in training
        if x < 0:
            raise ValueError(f"bad job {x}")
        return 2 * x

    if __name__ == "__main__":
        ticks = []
        jobs = {name: (int(name),) for name in sys.argv[1:]}
        out = run_in_workers(work, jobs, processes=2, poll=lambda: ticks.append(1), interval=0.01)
        print(json.dumps(out), bool(ticks))
    """
)


def test_worker_processes_return_results_raise_errors_and_leak_nothing(tmp_path):
    """The demo's three teacher-student runs go through run_in_workers; its workers must exit
    cleanly (a terminated pool left Python warning of leaked semaphores after `make demo`)."""
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)
    ok = subprocess.run(
        [sys.executable, str(script), "1", "2", "3"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ['{"1":', "2,", '"2":', "4,", '"3":', "6}", "True"]
    assert "leaked" not in ok.stderr and "Warning" not in ok.stderr, ok.stderr
    bad = subprocess.run(
        [sys.executable, str(script), "1", "-5"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "ValueError: bad job -5" in bad.stderr


def test_seeds_share_the_data_and_seed_0_is_the_plain_run(tiny_run, tmp_path):
    """``semires run --seeds 0,1``: every seed trains on the first seed's data, split and
    proposals; seed 0 gives exactly the plain run's numbers; the top report holds the spread."""
    from semires.pipeline import run_seeds

    _out, _cfg, plain = tiny_run
    cfg = load_run_config(preset="demo", overrides=[f"out={tmp_path / 'seeds'}", *TINY])
    comparison = run_seeds(cfg, [0, 1], progress=False)
    assert comparison["seeds"] == [0, 1]
    seed0 = json.loads((tmp_path / "seeds" / "seed-0" / "results.json").read_text())
    assert seed0["methods"] == plain["methods"]  # the same training on the same data
    second = yaml.safe_load((tmp_path / "seeds" / "seed-1" / "run.yaml").read_text())
    first = tmp_path / "seeds" / "seed-0"
    assert second["synth"] is None and second["data"]["root"] == str(first / "data")
    assert second["proposals"]["store"] == str(first / "proposals")
    assert second["split_dir"] == str(first / "split") and second["seed"] == 1
    assert not (tmp_path / "seeds" / "seed-1" / "data").exists()
    cpi = comparison["methods"]["cpi"]
    assert cpi["per_seed"][0] == plain["methods"]["cpi"]["testA+testB"]["oIoU"]
    assert cpi["testA+testB"]["n"] == 2 and "small_objects" in cpi and "grounding_after" in cpi
    diff = comparison["differences"]["cpi - supervised"]
    assert diff["per_seed"] == pytest.approx(
        [
            c - s
            for c, s in zip(
                cpi["per_seed"], comparison["methods"]["supervised"]["per_seed"], strict=True
            )
        ]
    )
    assert diff["low"] <= diff["diff"] <= diff["high"]
    assert "supervised - teacher_student" not in comparison["differences"]
    text = (tmp_path / "seeds" / "results.md").read_text()
    assert "## Differences" in text and "holds" in text and "Provenance" in text


def test_self_training_rounds_start_from_the_previous_round(tmp_path):
    out = tmp_path / "rounds"
    extra = ["rounds=2", "methods=[teacher_student]", "parallel=1", "report.qualitative=0"]
    cfg = load_run_config(preset="demo", overrides=[f"out={out}", *TINY, *extra])
    summary = run_pipeline(cfg, progress=False)
    assert list(summary["methods"]) == ["supervised", "teacher_student", "teacher_student-round2"]
    second = yaml.safe_load((out / "teacher_student-round2" / "config.yaml").read_text())
    assert second["semi"]["burn_in"] == str(out / "teacher_student" / "best.pt")
    first = yaml.safe_load((out / "teacher_student" / "config.yaml").read_text())
    assert first["semi"]["burn_in"] == str(out / "supervised" / "best.pt")
    assert "teacher-student (no SAM), round 2" in (out / "results.md").read_text()
    with pytest.raises(ConfigError, match="rounds"):
        load_run_config(preset="demo", overrides=[f"out={out}", "rounds=0"])


def test_method_variants_vary_the_refinement_from_one_burn_in(tmp_path):
    from semires.methods import label, method

    cfg = load_run_config(
        config="semires_refcoco",
        overrides=[f"out={tmp_path}", 'methods=[cpi, "cpi[t1=0.5,t2=0.9]", "iom[tau=0.3]"]'],
    )
    plan = RunPlan(cfg)
    variant = plan.train_config("cpi[t1=0.5,t2=0.9]")
    assert (variant.semi.refine.t1, variant.semi.refine.t2) == (0.5, 0.9)
    assert variant.semi.refine.strategy == "cpi" and variant.semi.proposals is not None
    assert variant.semi.burn_in == str(tmp_path / "supervised" / "best.pt")  # the one burn-in
    assert variant.output.dir == str(tmp_path / "cpi[t1=0.5,t2=0.9]")
    iom = plan.train_config("iom[tau=0.3]")
    assert iom.semi.refine.tau == 0.3 and iom.semi.sup_weight == 10.0  # iom's own overrides too
    assert label("iom[tau=0.3]") == "SemiRES-IOM (tau=0.3)"
    assert method("cpi[t1=0.5]").needs_proposals
    for bad, needle in (
        ("cpi[t1]", "expected base"),
        ("supervised[t1=0.5]", "no refinement"),
        ("cpi[]", "no refinement setting"),
    ):
        with pytest.raises(ConfigError, match=needle):
            method(bad)
    with pytest.raises(ConfigError, match=r"semi\.refine\.t9"):
        plan.train_config("cpi[t9=1]")


def test_a_read_dataset_is_read_once_by_the_run(synth_tiny, tmp_path, monkeypatch):
    """check_data, the split, the proposals, the in-process training stages and the report's
    examples share one index (a RefCOCO-size one takes seconds to read; docs/scale.md)."""
    import semires.data as data_mod

    reads = []
    real = data_mod.load_index
    monkeypatch.setattr(data_mod, "load_index", lambda spec: reads.append(spec) or real(spec))
    given = ["synth=null", f"data.root={synth_tiny}", "data.dataset=synthref"]
    given += ["data.split_by=synth", "methods=[cpi]", "parallel=1"]
    cfg = load_run_config(preset="demo", overrides=[f"out={tmp_path / 'run'}", *TINY, *given])
    summary = run_pipeline(cfg, progress=False)
    assert set(summary["methods"]) == {"supervised", "cpi"}
    assert list((tmp_path / "run" / "figures").glob("examples*"))  # drawn from the same index
    assert len(reads) == 1, reads
