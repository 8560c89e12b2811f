"""``semires model list|pretrain``: the model registry and backbone pretraining."""

from __future__ import annotations

from pathlib import Path

import typer

model_app = typer.Typer(help="Model registry and backbone pretraining.", no_args_is_help=True)


@model_app.command("list")
def list_cmd() -> None:
    """Print the registered model configs and the packaged backbone weights."""
    from semires.model.backbone import PACKAGED_PREFIX, packaged_weights
    from semires.model.registry import MODEL_CONFIGS

    for name, cfg in sorted(MODEL_CONFIGS.items()):
        weights = cfg.backbone_weights or "random (or model.overrides.backbone_weights=FILE)"
        typer.echo(
            f"{name:20s} {cfg.backbone} @ {cfg.img_size}px, text {cfg.text_encoder}, "
            f"backbone weights: {weights}"
        )
    for name, path in packaged_weights().items():
        typer.echo(f"packaged weights: {PACKAGED_PREFIX}{name} ({path})")


@model_app.command("pretrain")
def pretrain_cmd(
    out: Path = typer.Option(..., "--out", help="Weights file to write (timm layout, .pth)."),
    model: str = typer.Option(
        "tiny", "--model", help="Registered model whose backbone to pretrain."
    ),
    data_dir: Path = typer.Option(
        ..., "--data", help="Folder for the pretraining benchmark (synthesised if missing)."
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        help="Seed of the pretraining benchmark (default: as for the packaged weights).",
    ),
    images: int | None = typer.Option(
        None,
        "--images",
        help="Training images to synthesise (default: as for the packaged weights).",
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Optimiser steps (default: as for the packaged weights)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Default: as for the packaged weights."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Default: as for the packaged weights."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: all)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pretrain a backbone on dense synthetic labels (shape, colour, pattern per pixel).

    The packaged semires:convnext-atto-synth weights of the tiny model were made with the
    defaults (PretrainConfig and PRETRAIN_DATA in semires.model.pretrain; docs/model.md).

    Use the file in a training config with model.overrides.backbone_weights=PATH.
    """
    from semires.cli.options import at_least, output_file, progress
    from semires.model.pretrain import PretrainConfig, pretrain_on_synth
    from semires.model.registry import get_model_config

    output_file(out, "--out")
    for value, option in ((steps, "--steps"), (batch_size, "--batch-size"), (images, "--images")):
        at_least(value, 1, option)
    at_least(threads, 1, "--threads")
    at_least(lr, 0, "--lr", strict=True)
    cfg = get_model_config(model).replace(backbone_weights=None)
    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "threads": threads}
    data = {"seed": seed, "images_train": images}
    summary = pretrain_on_synth(
        cfg,
        out,
        data_dir,
        PretrainConfig(**{k: v for k, v in given.items() if v is not None}),
        data={k: v for k, v in data.items() if v is not None},
        progress=progress(quiet),
    )
    typer.echo(
        f"wrote {out} ({summary['steps']} steps, {summary['seconds']:.0f} s); "
        f"val pixel accuracy: {summary.get('val_accuracy')}"
    )


@model_app.command("import-lavt")
def import_lavt_cmd(
    checkpoint: Path = typer.Argument(..., help="A LAVT or SemiRES checkpoint (.pth)."),
    out: Path = typer.Option(..., "--out", help="The semires checkpoint to write (.pt)."),
    tokenizer: str | None = typer.Option(
        None,
        "--tokenizer",
        help="A folder with BERT's vocab.txt (e.g. a bert-base-uncased download). Default: the "
        "checkpoint's args.bert_tokenizer from the Hugging Face hub or its local cache.",
    ),
) -> None:
    """Convert an official LAVT / SemiRES checkpoint (lavt or lavt_one) into a semires one.

    The result loads in `semires evaluate`, `semires predict`, `semires.load` and as the
    burn-in of `semires run` (config key burn_in_checkpoint). The sizes come from the tensors,
    the PWAM heads (--mha), fusion dropout and input size from the stored args.
    """
    from semires.cli.options import output_file
    from semires.runtime.lavt_import import import_lavt

    output_file(out, "--out")
    summary = import_lavt(checkpoint, out, tokenizer=tokenizer)
    swin, bert = summary["swin"], summary["bert"]
    typer.echo(
        f"{checkpoint}: {summary['variant']}, epoch {summary['epoch']}; Swin embed "
        f"{swin['embed_dim']}, depths {swin['depths']}, window {swin['window_size']}; BERT "
        f"{bert['num_hidden_layers']} layers x {bert['hidden_size']} ({bert['num_attention_heads']} "
        f"heads); PWAM heads {summary['fusion_heads']}; decoder {summary['decoder_dim']}; "
        f"{summary['img_size']} px; tokenizer {summary['tokenizer']}"
    )
    typer.echo(f"wrote {out} ({summary['tensors']} tensors)")


def register(app: typer.Typer) -> None:
    """Add ``semires model ...`` to the main app."""
    app.add_typer(model_app, name="model")
