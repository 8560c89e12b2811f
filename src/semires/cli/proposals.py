"""``semires propose`` and ``semires proposals import|verify|show|quality`` (candidate masks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from semires.cli.options import (
    QuietOpt,
    at_least,
    main_process,
    output_file,
    progress,
    with_data_options,
)
from semires.data import DataSpec

proposals_app = typer.Typer(
    help="Candidate-mask stores: import SAM outputs, verify, show, quality report.",
    no_args_is_help=True,
)

StoreArg = Annotated[Path, typer.Argument(help="The proposal store folder.")]


def _knobs(generator: str, assignments: list[str], checkpoint: Path | None, model_type: str | None):
    """Generator knobs from ``--set`` plus ``--checkpoint`` / ``--model-type``."""
    import dataclasses

    from semires.errors import ConfigError
    from semires.proposals.base import generator_class, parse_knobs

    knobs = parse_knobs(generator, assignments)
    names = {f.name for f in dataclasses.fields(generator_class(generator).config_class)}
    if checkpoint is not None:
        if "checkpoint" not in names:
            raise ConfigError(f"generator {generator!r} takes no --checkpoint")
        knobs["checkpoint"] = str(checkpoint)
    if model_type is not None:
        key = next((k for k in ("model_type", "config") if k in names), None)
        if key is None:
            raise ConfigError(f"generator {generator!r} takes no --model-type")
        knobs[key] = model_type
    return knobs


def _generator_help() -> str:
    """``--generator``'s help: the registered generators."""
    from semires.proposals.base import GENERATORS

    return (
        f"A registered generator: {', '.join(GENERATORS)} (classical: CPU, no weights), "
        "or a plugin's (--plugin)."
    )


GeneratorOpt = Annotated[str, typer.Option("--generator", help=_generator_help())]
SplitOpt = Annotated[
    str, typer.Option("--split", help="Dataset split whose images to propose for / import.")
]
SplitDirOpt = Annotated[
    Path | None,
    typer.Option("--split-dir", help="A labeled/unlabeled split folder: its unlabeled images."),
]
AllImagesOpt = Annotated[
    bool, typer.Option("--all-images", help="Every image of --split (not only unlabeled).")
]
CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", help="sam / sam2: the weights file.")
]
ModelTypeOpt = Annotated[
    str | None,
    typer.Option("--model-type", help="sam: vit_h, vit_l, vit_b; sam2: a config name."),
]
KnobOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Generator knob key=value (repeatable), e.g. min_size=16 (classical), points_per_side=16 (sam); docs/proposals.md lists each generator's knobs.",
    ),
]
ShardSizeOpt = Annotated[int, typer.Option("--shard-size", help="Images per shard file.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Delete the store at --out first and make it again (e.g. it was made for other "
        "images or with other settings).",
    ),
]


@with_data_options
def propose(
    out: Annotated[
        Path, typer.Option("--out", help="The proposal store folder to create / complete.")
    ],
    generator: GeneratorOpt = "classical",
    split: SplitOpt = "train",
    split_dir: SplitDirOpt = None,
    all_images: AllImagesOpt = False,
    checkpoint: CheckpointOpt = None,
    model_type: ModelTypeOpt = None,
    knob: KnobOpt = None,
    workers: Annotated[int, typer.Option("--workers", help="CPU processes (classical).")] = 1,
    shard_size: ShardSizeOpt = 64,
    overwrite: OverwriteOpt = False,
    location: DataSpec = DataSpec(),
    quiet: QuietOpt = False,
) -> None:
    """Generate candidate masks for the training images (resumable; torchrun-aware)."""
    from semires.data import load_index
    from semires.proposals.base import build_generator
    from semires.proposals.generate import cpu_note, generate_store, image_paths, select_images

    at_least(workers, 1, "--workers")
    at_least(shard_size, 1, "--shard-size")
    knobs = _knobs(generator, knob or [], checkpoint, model_type)
    index = load_index(location)
    ids = select_images(index, split, split_dir, all_images)
    gen = build_generator(generator, **knobs)
    note = cpu_note(gen)
    if note and main_process():
        typer.echo(note, err=True)
    report = generate_store(
        gen,
        image_paths(index, ids),
        out,
        shard_size=shard_size,
        workers=workers,
        overwrite=overwrite,
        progress=progress(quiet),
    )
    _echo_generation(out, report)


def _echo_generation(out: Path, report: Any) -> None:
    """What ``propose`` did: counts on stdout, the images it skipped on stderr. Under torchrun
    rank 0 says it once, with the totals over every rank; without a process group (no
    ``MASTER_ADDR``) each rank can only say its own share, and says so."""
    from semires.proposals.generate import Rank

    rank = Rank.from_env()
    share = ""
    if rank.world_size > 1 and not report.gathered:
        share = f" (rank {rank.rank} of {rank.world_size}: this rank's share)"
    elif not main_process():
        return
    elif report.ranks > 1:
        share = f" (over {report.ranks} processes)"
    per_image = report.candidates / report.generated if report.generated else 0.0
    typer.echo(
        f"{out}: {report.wanted} images wanted, {report.already_done} already done, "
        f"{report.generated} generated ({per_image:.1f} candidates / image, "
        f"{report.images_per_second:.2f} images/s){share}"
    )
    if report.failed:
        typer.echo(f"{len(report.failed)} image(s) skipped (unreadable):", err=True)
        for image_id, reason in sorted(report.failed.items()):
            typer.echo(f"  {image_id}: {reason}", err=True)


SourceFormatOpt = Annotated[
    str,
    typer.Option(
        "--source-format",
        help="auto (detected), amg-png (amg.py's PNG folders + metadata.csv), sam-json "
        "(amg.py --convert-to-rle, SAM 2 records) or coco-json (records with a COCO RLE "
        "segmentation, optional score).",
    ),
]


@proposals_app.command("import")
@with_data_options
def import_masks(
    src: Annotated[
        Path, typer.Argument(help="The folder segment-anything's amg.py (or SAM 2) wrote.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The proposal store folder to create / complete.")
    ],
    split: SplitOpt = "train",
    split_dir: SplitDirOpt = None,
    all_images: AllImagesOpt = False,
    source_format: SourceFormatOpt = "auto",
    shard_size: ShardSizeOpt = 64,
    overwrite: OverwriteOpt = False,
    location: DataSpec = DataSpec(),
    quiet: QuietOpt = False,
) -> None:
    """Import masks made with SAM / SAM 2 (matched to the images by file stem) into a store."""
    from semires.data import load_index
    from semires.proposals.generate import image_paths, select_images
    from semires.proposals.importer import import_store

    at_least(shard_size, 1, "--shard-size")
    index = load_index(location)
    ids = select_images(index, split, split_dir, all_images)
    report = import_store(
        src,
        image_paths(index, ids),
        index.image_size,
        out,
        source_format=source_format,
        shard_size=shard_size,
        overwrite=overwrite,
        progress=progress(quiet),
    )
    per_image = report.candidates / report.imported if report.imported else 0.0
    typer.echo(
        f"{out}: {report.wanted} images wanted, {report.already_done} already imported, "
        f"{report.imported} imported from {src} ({report.source_format}; {per_image:.1f} "
        f"candidates / image, {report.dropped_empty} empty masks dropped)"
    )


@proposals_app.command("verify")
@with_data_options
def verify(
    store_dir: StoreArg,
    location: DataSpec = DataSpec(),
    quiet: QuietOpt = False,
) -> None:
    """Check every shard and entry (with data options: also against the images' sizes and files)."""
    from semires.errors import ProposalError
    from semires.proposals.store import verify_store

    image_size = image_path = None
    if location.root is not None or location.ann is not None:
        from semires.data import load_index

        index = load_index(location)

        def image_size(image_id: int) -> tuple[int, int] | None:
            return index.image_size(image_id) if image_id in index.images else None

        def image_path(image_id: int) -> Path | None:
            return index.image_path(image_id) if image_id in index.images else None

    report = verify_store(store_dir, image_size, progress=progress(quiet), image_path=image_path)
    for problem in report.problems:  # the report on stdout; the one-line error on stderr
        typer.echo(f"problem: {problem}")
    if not report.ok:
        raise ProposalError(
            f"{len(report.problems)} problem(s) in proposal store {store_dir}; "
            f"first: {report.problems[0]}"
        )
    typer.echo(
        f"ok: {store_dir}: {report.images} images, {report.shards} shards, "
        f"{report.candidates} candidates"
    )


@proposals_app.command("show")
@with_data_options
def show(
    store_dir: StoreArg,
    image: Annotated[int, typer.Option("--image", help="Image id.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    max_masks: Annotated[
        int | None, typer.Option("--max", help="Draw only the best N candidates.")
    ] = None,
    location: DataSpec = DataSpec(),
) -> None:
    """Draw an image's candidates over it (and each referred object with its best candidate)."""
    from semires.data import load_index
    from semires.proposals.checks import check_store_images
    from semires.proposals.show import figure
    from semires.proposals.store import ProposalStore
    from semires.train.proposal_quality import object_quality
    from semires.utils.io import atomic_write_bytes

    output_file(out, "--out")
    at_least(max_masks, 1, "--max")
    index = load_index(location)
    store = ProposalStore.open(store_dir)
    check_store_images(store, index, [image])
    pixels = index.load_image(image)
    props = store.read(image, expect_size=pixels.shape[:2])
    objects = sorted({r.object_id for r in index.refs.values() if r.image_id == image})
    gt = [index.mask(o) for o in objects] if index.has_masks() else []
    candidates = props.masks().astype(bool)
    matches = [(m, *object_quality(candidates, m.astype(bool))[:2]) for m in gt]
    title = f"image {image}: {store.generator} candidates"
    atomic_write_bytes(out, figure(pixels, props, title, matches, max_masks))
    typer.echo(f"wrote {out} ({len(props)} candidates)")


@proposals_app.command("quality")
@with_data_options
def quality(
    store_dir: StoreArg,
    split: Annotated[
        str, typer.Option("--split", help="Split whose referred objects to score ('all': every).")
    ] = "train",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the numbers here.")] = None,
    plot_out: Annotated[Path | None, typer.Option("--plot", help="Write histograms (PNG).")] = None,
    t1: Annotated[
        float | None,
        typer.Option("--t1", help="CPI: share of the object covered. Default: training's t1."),
    ] = None,
    t2: Annotated[
        float | None,
        typer.Option("--t2", help="CPI: share of the candidate inside. Default: training's t2."),
    ] = None,
    split_dir: Annotated[
        Path | None,
        typer.Option(
            "--split-dir",
            help="Count the unlabeled images of this split folder (what `propose --split-dir` "
            "made the store for). Default: the images in the store and those it could not read.",
        ),
    ] = None,
    location: DataSpec = DataSpec(),
    quiet: QuietOpt = False,
) -> None:
    """Best IoU and CPI-union IoU per ground-truth object, candidates per image, on the images
    the store was made for (the split's other images, e.g. the labeled ones, are left out and
    counted apart)."""
    from semires.data import load_index
    from semires.proposals.store import ProposalStore
    from semires.train.proposal_quality import (
        DEFAULT_T1,
        DEFAULT_T2,
        check_threshold,
        evaluate_quality,
        format_summary,
        plot_quality,
        summarise,
    )
    from semires.utils.io import atomic_write_json

    t1 = check_threshold("t1", DEFAULT_T1 if t1 is None else t1)
    t2 = check_threshold("t2", DEFAULT_T2 if t2 is None else t2)
    output_file(json_out, "--json", report=True)
    output_file(plot_out, "--plot", report=True)
    index = load_index(location)
    store = ProposalStore.open(store_dir)
    chosen = None if split == "all" else split
    ids = counted = None
    if split_dir is not None:
        from semires.data.splits import read_split
        from semires.proposals.generate import select_images

        if chosen is None:
            ids = sorted(read_split(split_dir, index).unlabeled_images)
        else:
            ids = select_images(index, chosen, split_dir)
        counted = f"the {len(ids)} unlabeled images of {split_dir}"
    report = evaluate_quality(
        store, index, chosen, t1, t2, progress=progress(quiet), image_ids=ids, counted=counted
    )
    summary = summarise(report)
    typer.echo(format_summary(summary))
    if json_out is not None:
        atomic_write_json(json_out, summary)
        typer.echo(f"wrote {json_out}")
    if plot_out is not None:
        plot_quality(summary, str(plot_out))
        typer.echo(f"wrote {plot_out}")


def register(app: typer.Typer) -> None:
    """Add ``semires propose`` and the ``semires proposals`` sub-app to the main app."""
    app.command("propose")(propose)
    app.add_typer(proposals_app, name="proposals")
