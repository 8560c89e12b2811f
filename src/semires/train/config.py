"""The training configuration: one YAML file, validated into typed dataclasses.

Sections: ``data`` (where the dataset and the labeled split are), ``model`` (a registry name plus
overrides), ``train`` (optimisation, schedule, evaluation, checkpoints), ``semi`` (the
teacher-student stage: EMA, augmentations, proposals and the refinement strategy) and ``output``.
Unknown keys and wrong types are errors that name the key. See ``configs/train/*.yaml`` for examples (``configs/run/`` holds ``semires run`` configs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from semires.data import DataSpec
from semires.errors import ConfigError
from semires.train.strategies import RefineConfig, needs_proposals
from semires.utils.typed_config import (
    apply_overrides,
    invalid,
    load_dataclass,
    numeric,
    read_yaml,
    shown,
    to_dict,
)

#: what a seed may be (numpy and torch both take it)
SEED_MAX = 2**32 - 1


@dataclass
class DataConfig(DataSpec):
    """Where the dataset is (the fields of :class:`semires.data.DataSpec`: ``format``, ``root``,
    ``dataset``, ``split_by``, ``ann``, ``image_root``, ``mask_root``) and how it is used."""

    #: folder written by ``semires data split`` (labeled.txt / unlabeled.txt); None = all labeled
    split_dir: str | None = None
    train_split: str = "train"
    #: the split used to select the ``best`` checkpoint (never a test split)
    val_split: str = "val"
    #: splits evaluated at the end of training (reported, never used for selection)
    test_splits: list[str] = field(default_factory=list)
    img_size: int = 480
    #: keep decoded, resized training images in memory (small datasets)
    cache_images: bool = False
    num_workers: int = numeric(0, ge=0)
    #: augmentation of labeled images: "none" (the paper) or "photometric"
    labeled_augment: Literal["none", "photometric"] = "none"
    #: probability of a text-aligned horizontal flip of a labeled sample (image and mask
    #: mirrored, "left" and "right" swapped in the expression: semires.data.flip; ours, 0 in the
    #: paper)
    flip: float = numeric(0.0, ge=0, le=1)
    #: evaluate on at most this many sentences of the val split during training (None = all)
    max_val_sentences: int | None = numeric(None, ge=1)

    def spec(self) -> DataSpec:
        """Just the location."""
        return DataSpec(**{f.name: getattr(self, f.name) for f in fields(DataSpec)})

    def validate(self) -> None:
        if not 32 <= self.img_size <= 8192 or self.img_size % 32:
            raise invalid(
                "img_size", f"expected a multiple of 32 in [32, 8192], got {shown(self.img_size)}"
            )
        if self.val_split in self.test_splits:
            raise invalid(
                "val_split",
                f"{self.val_split!r} is also a test split; checkpoints must not be selected on a "
                "reported test split",
            )


@dataclass
class ModelSection:
    """A named model config from :mod:`semires.model` plus field overrides."""

    name: str = "tiny"
    #: overrides of ModelConfig fields, e.g. {backbone_weights: path, text_encoder: path}
    overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """The model name and every override are checked when the config is read, and errors
        name the keys as written (``model.overrides.fusion_heads``), not as the model config
        calls them."""
        import dataclasses

        from semires.model.config import ModelConfig
        from semires.model.registry import get_model_config

        try:
            base = get_model_config(self.name)
        except ConfigError as err:
            raise invalid("name", str(err)) from None
        known = sorted(f.name for f in dataclasses.fields(ModelConfig))
        unknown = sorted(set(self.overrides) - set(known))
        if unknown:
            raise invalid(
                f"overrides.{unknown[0]}", f"not a model setting; valid: {', '.join(known)}"
            )
        try:
            base.replace(**self.overrides)
        except ConfigError as err:  # "[model ]config key '[model.]<field>': <what is wrong>"
            found = re.search(r"config key '(?:model\.)?([^']+)': (.*)", str(err))
            if found is None:
                raise invalid("overrides", str(err)) from None
            raise invalid(f"overrides.{found.group(1)}", found.group(2)) from None


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (the paper: AdamW 5e-5, wd 1e-2, poly 0.9, 40 epochs)."""

    epochs: int = numeric(40, ge=1)
    #: per-process batch size of labeled samples
    batch_size: int = numeric(8, ge=1)
    lr: float = numeric(5e-5, gt=0)
    weight_decay: float = numeric(1e-2, ge=0)
    #: the exponent of the poly schedule (0: a constant learning rate)
    poly_power: float = numeric(0.9, ge=0)
    #: linear warm-up steps (0 = none, as the paper)
    warmup_steps: int = numeric(0, ge=0)
    #: cross-entropy class weights (background, foreground)
    class_weights: tuple[float, float] = numeric((0.9, 1.1), gt=0)
    #: clip the gradient norm to this value (None: no clipping)
    grad_clip: float | None = numeric(None, gt=0)
    #: mixed precision: "none" = fp32 (LAVT and SemiRES train in fp32), "bf16" / "fp16" autocast
    #: (an explicit choice, measured against fp32 in docs/results.md), "auto" = bf16 on CUDA
    amp: Literal["auto", "bf16", "fp16", "none"] = "none"
    #: optimizer steps accumulate this many micro-batches of ``batch_size`` (fewer GPUs reach the
    #: paper's global batch: global = batch_size x grad_accum x processes)
    grad_accum: int = numeric(1, ge=1)
    #: how the pixel cross-entropy is averaged: "weighted" = divided by the sum of the pixels'
    #: class weights (LAVT's burn-in, torch's default), "plain" = a plain mean of the weighted
    #: per-pixel CE (the SemiRES teacher-student scripts)
    ce_mean: Literal["weighted", "plain"] = "weighted"
    #: AdamW weight-decay groups: "default" (no decay on norms, biases, position tables) or
    #: "lavt" (no decay only on backbone norms / position tables, LAVT's train.py)
    decay_rule: Literal["default", "lavt"] = "default"
    #: SyncBatchNorm across processes under DDP on CUDA (LAVT and SemiRES convert the model);
    #: off, with a note, on CPU / gloo or in a single process
    sync_bn: bool = False
    #: dropout inside the text encoder while training: LAVT's burn-in keeps its separate BERT
    #: in eval mode (from_pretrained), the SemiRES teacher-student scripts call .train() on it
    text_dropout: bool = True
    #: steps per epoch (None = one pass over the labeled refs, or the unlabeled refs in the
    #: teacher-student stage)
    steps_per_epoch: int | None = numeric(None, ge=1)
    eval_every: int = numeric(1, ge=1)
    log_every: int = numeric(20, ge=1)
    #: also write a resumable checkpoint every N optimizer steps (0 = only at epoch ends)
    checkpoint_every: int = numeric(0, ge=0)
    #: image panels written to TensorBoard per evaluation
    num_panels: int = numeric(4, ge=0)
    #: evaluation batch size
    eval_batch_size: int = numeric(16, ge=1)
    device: str = "auto"
    #: torch CPU threads (None = torch default)
    threads: int | None = numeric(None, ge=1)
    #: skip evaluation at epoch ends (final evaluation still runs)
    skip_eval: bool = False
    #: the final evaluation of ``best`` also scores the whole val split (the test splits always);
    #: off saves an evaluation where val only selects the checkpoint (the demo pipeline)
    final_val: bool = True
    #: evaluation protocol (docs/method.md section 1): "lavt" (480x480) or "original" resolution
    protocol: Literal["lavt", "original"] = "lavt"
    #: the metric that selects ``best``
    select_metric: Literal["oIoU", "mIoU"] = "oIoU"
    #: file of precomputed features of a FROZEN text encoder, shared by runs on the same data
    #: (created when missing); None = compute them in memory at start
    text_cache: str | None = None

    def validate(self) -> None:
        """The numbers are checked by their fields' domains (:func:`numeric`) when the config
        is read; here what a domain cannot say."""
        from semires.runtime.distributed import resolve_device

        try:  # the spelling only: whether this machine has the device is checked at start
            resolve_device(self.device, available=False)
        except ConfigError:
            raise invalid(
                "device", f"unknown device {self.device!r}; expected auto, cpu, cuda or cuda:N"
            ) from None


@dataclass
class AugmentConfig:
    """Weak (teacher) and strong (student) views of unlabeled images (pixel-aligned)."""

    blur_p: float = numeric(0.5, ge=0, le=1)
    #: the range the blur's sigma is drawn from (min, max), in pixels
    blur_sigma: tuple[float, float] = numeric((0.1, 2.0), gt=0)
    jitter_p: float = numeric(0.5, ge=0, le=1)
    brightness: float = numeric(0.25, ge=0, le=1)
    contrast: float = numeric(0.25, ge=0, le=1)
    saturation: float = numeric(0.25, ge=0, le=1)
    hue: float = numeric(0.25, ge=0, le=0.5)

    def validate(self) -> None:
        low, high = self.blur_sigma
        if low > high:
            raise invalid("blur_sigma", f"expected (min, max) with min <= max, got {[low, high]}")

    def blur(self) -> Any:
        """The weak view (:class:`semires.data.transforms.Blur`)."""
        from semires.data.transforms import Blur

        return Blur(self.blur_p, tuple(self.blur_sigma))

    def jitter(self) -> Any:
        """The strong view (:class:`semires.data.transforms.Jitter`)."""
        from semires.data.transforms import Jitter

        return Jitter(self.jitter_p, self.brightness, self.contrast, self.saturation, self.hue)


@dataclass
class SelectConfig:
    """Object-level selection (ours): the unsupervised loss of a batch keeps the share of its
    samples whose pseudo-label is most likely on the right object by ``signal``, the share
    rising from ``start`` to ``end`` over the first ``ramp`` of the stage
    (:mod:`semires.train.objects`)."""

    #: none (every sample), confidence (teacher's mean probability inside the label), agreement
    #: (the object's expressions agree; needs semi.consensus), flip (the weak view agrees with
    #: the flipped one; needs semi.flip_view), margin (how much more the sample's referent
    #: covers its label's candidates than the image's other referents do; one more teacher
    #: pass per other referent), mean (the mean of the signals the run has)
    signal: Literal["none", "confidence", "agreement", "flip", "margin", "mean"] = "none"
    start: float = numeric(0.5, gt=0, le=1)
    end: float = numeric(1.0, gt=0, le=1)
    ramp: float = numeric(1.0, gt=0, le=1)

    def validate(self) -> None:
        if self.start > self.end:
            raise invalid("start", f"expected start <= end, got {self.start} > {self.end}")


@dataclass
class SemiConfig:
    """The teacher-student stage (the paper's mutual-learning training)."""

    enabled: bool = False
    #: checkpoint of the supervised burn-in that teacher and student start from
    burn_in: str | None = None
    #: proposal store (``semires propose``) with the candidates of the unlabeled images
    proposals: str | None = None
    #: use a proposal store whose candidates were made for images of another size (resized) or
    #: from other image files (not checked); off by default: both are errors
    allow_proposal_mismatch: bool = False
    unlabeled_batch_size: int = numeric(8, ge=1)
    ema: float = numeric(0.9996, ge=0, le=1)
    sup_weight: float = numeric(1.0, ge=0)
    unsup_weight: float = numeric(1.0, ge=0)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: pseudo-label refinement (docs/method.md section 4), see
    #: :class:`semires.train.strategies.RefineConfig`
    refine: RefineConfig = field(default_factory=RefineConfig)
    #: at most this many candidates per image (the highest-scoring ones)
    max_candidates: int = numeric(256, ge=1)
    #: which network is evaluated, selected as ``best`` and exported (the SemiRES scripts:
    #: the EMA teacher); the other one is scored at the same step too and reported beside it
    eval_model: Literal["student", "teacher"] = "student"
    #: class weights in the PWA loss of unmatched samples (the SemiRES scripts: none)
    pwa_class_weights: bool = True
    #: the teacher labels an unlabeled object from ALL its expressions: the mean of its
    #: probabilities over them, then refinement (ours, beyond the paper; one teacher forward
    #: pass per expression)
    consensus: bool = False
    #: candidates of an image's referred objects: "independent" (each referent alone, the
    #: paper) or "exclusive" (each candidate to the referent covering it most; ours, one more
    #: teacher pass per other referent of the image)
    assign: Literal["independent", "exclusive"] = "independent"
    #: the teacher also labels the mirrored weak view with the mirrored expression and averages
    #: the two probabilities (ours; one more teacher pass)
    flip_view: bool = False
    #: probability that an unlabeled sample's student side (strong view, expression, label and
    #: its weights) is mirrored with the expression's left / right swapped (ours; the teacher's
    #: side is not: its label is mirrored with the view; no extra pass)
    flip_student: float = numeric(0.0, ge=0, le=1)
    #: object-level selection of the samples the unsupervised loss learns from (ours)
    select: SelectConfig = field(default_factory=SelectConfig)

    def validate(self) -> None:
        needs = {"agreement": ("consensus", self.consensus), "flip": ("flip_view", self.flip_view)}
        if self.select.signal in needs and not needs[self.select.signal][1]:
            key = needs[self.select.signal][0]
            raise invalid(
                "select.signal",
                f"signal {self.select.signal!r} needs semi.{key}: true",
            )
        if self.sup_weight == 0 and self.unsup_weight == 0:
            raise invalid(
                "unsup_weight", "sup_weight and unsup_weight are both 0: nothing to learn"
            )


@dataclass
class OutputConfig:
    dir: str = "runs/default"
    #: resume from ``<dir>/latest.pt`` when it exists
    resume: bool = True
    tensorboard: bool = True


@dataclass
class Config:
    """The whole training configuration."""

    name: str = "run"
    seed: int = numeric(0, ge=0, le=SEED_MAX)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def validate(self) -> None:
        if (
            self.semi.enabled
            and not self.semi.proposals
            and needs_proposals(self.semi.refine.strategy)
        ):
            raise invalid(
                "semi.proposals",
                f"strategy {self.semi.refine.strategy!r} needs a proposal store",
            )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply ``key=value`` overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return load_dataclass(Config, data)


def config_from_dict(data: dict[str, Any]) -> Config:
    return load_dataclass(Config, data)


#: the kinds of shipped configs, each in its own folder of ``configs/``
CONFIG_KINDS = {"train": "semires train", "run": "semires run"}


def shipped_configs_dir(kind: str = "train") -> Path:
    """The folder of the shipped configs of ``kind`` (``configs/train``, ``configs/run``)."""
    return Path(__file__).resolve().parents[1] / "configs" / kind


def resolve_config_path(name_or_path: str | Path, kind: str = "train") -> Path:
    """A config file path, or the name of a shipped config of ``kind`` (``synth_tiny`` ->
    ``configs/train/synth_tiny.yaml``). The name of a shipped config of the other kind is an
    error that says which command takes it."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    file = path.name if path.suffix else f"{path.name}.yaml"
    if (shipped_configs_dir(kind) / file).is_file():
        return shipped_configs_dir(kind) / file
    for other, command in CONFIG_KINDS.items():
        if other != kind and (shipped_configs_dir(other) / file).is_file():
            raise ConfigError(
                f"{path.stem} is a `{command}` config, not one for `{CONFIG_KINDS[kind]}`: "
                f"use `{command} -c {path.stem}`"
            )
    names = sorted(p.stem for p in shipped_configs_dir(kind).glob("*.yaml"))
    raise ConfigError(
        f"config file not found: {name_or_path} (shipped {kind} configs: "
        f"{', '.join(names) or 'none'})"
    )
