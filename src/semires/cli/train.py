"""``semires train``, ``semires evaluate`` and ``semires predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from semires.cli.options import with_data_overrides

_CONFIG_HELP = "YAML config (a file, or the name of a shipped config such as synth_tiny)."


def train(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, e.g. train.lr=1e-4 output.dir=runs/x"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a RES model (supervised burn-in, or teacher-student with semi.enabled=true).

    Resumes from <output.dir>/latest.pt when it exists. Works under torchrun (DDP).
    """
    from semires.cli.options import main_process
    from semires.cli.run import refuse_empty_config
    from semires.evaluate.tables import format_metrics_table
    from semires.run_config import check_config_kind
    from semires.runtime.logs import worker_count_note
    from semires.train.config import load_config, resolve_config_path
    from semires.train.engine import train as run_training
    from semires.utils.io import disk_full_in
    from semires.utils.typed_config import read_yaml

    path = resolve_config_path(config)
    data = read_yaml(path)
    refuse_empty_config(data, path, "train")
    check_config_kind(data, path, "train")
    cfg = load_config(path, overrides or [])
    note = worker_count_note(cfg.data.num_workers)  # once, not per loader
    if note and main_process():
        typer.echo(note, err=True)
    with disk_full_in(cfg.output.dir):
        result = run_training(cfg, progress=not quiet)  # bars: only on a terminal (cli.entry)
    if result.get("splits") and main_process():  # under torchrun: once, by rank 0
        typer.echo(
            format_metrics_table(
                result["splits"], title=f"{cfg.name} (best epoch {result['best']['epoch']})"
            )
        )


@with_data_overrides
def evaluate(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="A semires checkpoint (best.pt / latest.pt)."
    ),
    split: str = typer.Option("val", "--split", help="The split to evaluate."),
    protocol: str = typer.Option(
        "lavt", "--protocol", help="lavt (480x480 resize) or original (original resolution)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write metrics and per-sample IoUs as json."
    ),
    pred_dir: Path | None = typer.Option(
        None, "--pred-dir", help="Write prediction PNGs (re-score with `semires score`)."
    ),
    gt_dir: Path | None = typer.Option(
        None, "--gt-dir", help="Write the matching ground-truth PNGs."
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Sentences per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    weights: str = typer.Option(
        "model",
        "--weights",
        help="model (the network best.pt was selected for) or companion (the other network of "
        "a teacher-student best.pt).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    data: dict[str, str] | None = None,
) -> None:
    """Evaluate a checkpoint on every sentence of every ref of a split (oIoU, mIoU, Prec@X).

    The dataset is the one stored in the checkpoint, with the dataset options given overriding
    it (--ann alone: the format its file ending names, e.g. .json: semires, .jsonl: jsonl); a
    checkpoint made by `semires model import-lavt` needs them, e.g. --format refer --root
    data/refer --dataset refcoco --split-by unc.
    """
    from semires.cli.options import output_file, output_folder, progress
    from semires.evaluate.evaluate import evaluate_checkpoint
    from semires.evaluate.tables import format_metrics_table

    output_file(json_out, "--json", report=True)
    output_folder(pred_dir, "--pred-dir")
    output_folder(gt_dir, "--gt-dir")
    result = evaluate_checkpoint(
        checkpoint,
        split,
        protocol=protocol,
        batch_size=batch_size,
        device=device,
        weights=weights,
        data_overrides=checkpoint_data_options(checkpoint, data or {}),
        pred_dir=pred_dir,
        gt_dir=gt_dir,
        json_out=json_out,
        progress=progress(quiet),
    )
    title = f"{checkpoint} ({protocol} protocol)"
    typer.echo(format_metrics_table({split: result["metrics"]}, title=title))


def checkpoint_data_options(checkpoint: Path, given: dict[str, str]) -> dict[str, str]:
    """``evaluate``'s dataset options completed from the checkpoint's own dataset, checked
    before the model is loaded: :func:`semires.evaluate.evaluate.checkpoint_data_options`
    (which :func:`~semires.evaluate.evaluate.evaluate_checkpoint` applies for Python callers)."""
    from semires.evaluate.evaluate import checkpoint_data_options as complete

    return complete(checkpoint, given)


def predict(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A semires checkpoint."),
    image: Path = typer.Option(..., "--image", help="The image file."),
    text: str = typer.Option(..., "--text", help="The referring expression."),
    out: Path = typer.Option(
        Path("mask.png"), "--out", help="Binary mask PNG (0/255) at the image size."
    ),
    overlay_out: Path | None = typer.Option(
        None, "--overlay", help="Also write the image with the mask drawn."
    ),
    prob_out: Path | None = typer.Option(
        None,
        "--prob-out",
        help="Also write the foreground probability (float32 HxW .npy at the image's size).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Segment the object a sentence refers to in one image. The mask and the files asked for
    (--overlay, --prob-out) are written together: all of them, or none (a full disk)."""
    from semires.cli.options import output_file
    from semires.data.images import read_image
    from semires.evaluate.predict import check_expression, load
    from semires.utils.io import atomic_write_files

    check_expression(text)
    for path, option in ((out, "--out"), (overlay_out, "--overlay"), (prob_out, "--prob-out")):
        output_file(path, option)
    rgb = read_image(image)
    seg = load(checkpoint, device=device)
    prob = seg.predict_proba(rgb, text)
    mask = prob > 0.5
    atomic_write_files(_prediction_files(rgb, prob, mask, out, overlay_out, prob_out))
    typer.echo(f"mask: {out} ({int(mask.sum())} of {mask.size} pixels)")
    if prob_out is not None:
        typer.echo(f"probability: {prob_out} (float32 {prob.shape[0]}x{prob.shape[1]})")
    if overlay_out is not None:
        typer.echo(f"overlay: {overlay_out}")


def _prediction_files(
    rgb: Any, prob: Any, mask: Any, out: Path, overlay_out: Path | None, prob_out: Path | None
) -> dict[Path, bytes]:
    """The bytes of each file ``predict`` writes: the mask PNG (0/255), the probability
    ``.npy`` and the overlay PNG."""
    import io

    import numpy as np
    from PIL import Image

    from semires.evaluate.predict import overlay

    def png(array: Any) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    files = {out: png((mask > 0).astype(np.uint8) * 255)}
    if prob_out is not None:
        buf = io.BytesIO()
        np.save(buf, prob.astype(np.float32))
        files[prob_out] = buf.getvalue()
    if overlay_out is not None:
        files[overlay_out] = png(overlay(rgb, mask))
    return files


def register(app: typer.Typer) -> None:
    """Add train / evaluate / predict to the main app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
