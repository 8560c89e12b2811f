"""The seam between the training loop and what it trains: a :class:`Method`.

The loop (:class:`semires.train.engine.Trainer`) runs data iteration, the optimizer step,
gradient accumulation, the schedule, checkpoints and resume, the evaluation cadence and logging.
A method owns the rest: its data streams, its networks (which one is evaluated and saved as
``best``), its loss, what happens after an optimizer step, its statistics and its part of a
checkpoint. Two ship with the package:

- ``supervised`` (:class:`Supervised`): the labeled refs, the class-weighted pixel CE (the burn-in);
- ``teacher_student`` (:class:`semires.train.teacher_student.TeacherStudent`): adds the unlabeled
  stream, the EMA teacher, the refinement strategy and the unsupervised loss.

The trainer calls, in order: :meth:`~Method.build_data` -> :meth:`~Method.model_overrides` (the
model is built) -> :meth:`~Method.init_model` -> :meth:`~Method.attach` (losses and text
inputs ready); then per step :meth:`~Method.begin_step`, :meth:`~Method.loss` for each micro-batch and
:meth:`~Method.after_step`; per epoch :meth:`~Method.epoch_record`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from semires.data.dataset import LABELED, LabeledDataset
from semires.data.flip import flip_sentence
from semires.data.index import Ref, RESIndex
from semires.runtime.textcache import TextInputs
from semires.train.config import Config
from semires.train.losses import PixelLosses
from semires.utils.registry import Registry

#: ``forward(images, sentences)``: the trained network's logits for raw images [B, 3, H, W] in
#: [0, 1] (the trainer normalises, moves to the device and runs DDP)
Forward = Callable[[Tensor, list[str]], Tensor]


@dataclass
class Stream:
    """One data stream of a method: a dataset sampled ``batch_size`` items per process and
    optimizer step, on its own sampling stream; ``epoch``: one pass over it is an epoch."""

    dataset: Any
    batch_size: int
    stream: int
    epoch: bool = False


class Method:
    """Supervised training of the RES model on the labeled refs (the burn-in); the base of
    every method. A subclass overrides the steps it changes."""

    def __init__(self, cfg: Config, *, device: Any, progress: bool = True) -> None:
        self.cfg, self.device, self.progress = cfg, device, progress
        self.model: nn.Module | None = None
        self.text: TextInputs | None = None
        self.losses: PixelLosses | None = None

    # ------------------------------------------------------------------ set-up
    def build_data(self, index: RESIndex, labeled: list[Ref], unlabeled: list[Ref]) -> None:
        """The datasets of its streams."""
        cfg = self.cfg
        self.labeled_ds = LabeledDataset(
            index,
            labeled,
            cfg.data.img_size,
            cfg.seed,
            cache_images=cfg.data.cache_images,
            augment=cfg.data.labeled_augment,
            jitter=cfg.semi.augment.jitter(),
            flip=cfg.data.flip,
        )

    def model_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The model's settings (``model.overrides`` as given)."""
        return overrides

    def init_model(self, model: nn.Module) -> None:
        """Initial weights beyond the model's own (none here)."""

    def make_losses(self) -> PixelLosses:
        """The run's pixel losses (``train.class_weights``, ``train.ce_mean``) when none is
        injected."""
        cfg = self.cfg
        weights = torch.tensor(cfg.train.class_weights, device=self.device, dtype=torch.float32)
        return PixelLosses(weights, cfg.train.ce_mean)

    def attach(self, model: nn.Module, text: TextInputs, losses: PixelLosses) -> None:
        """The trained network, its text inputs and the run's pixel losses."""
        self.model, self.text, self.losses = model, text, losses

    # ------------------------------------------------------------------ the loop
    def streams(self) -> list[Stream]:
        """Its data streams; the loop draws one batch of each per step, in this order."""
        return [Stream(self.labeled_ds, self.cfg.train.batch_size, LABELED, epoch=True)]

    def loss(self, batches: list[dict[str, Any]], forward: Forward) -> tuple[Tensor, dict]:
        """The loss of one micro-batch (one batch per stream) and its logged parts."""
        (lab,) = batches
        logits = forward(lab["image"], lab["sentence"])
        loss = self.losses.ce(logits, lab["gt"].to(self.device))
        return loss, {"loss_sup": float(loss.detach())}

    def begin_step(self, step: int, total: int) -> None:
        """Before optimizer step ``step`` of ``total`` (nothing here; a method whose loss
        follows a schedule reads it here)."""

    def extra_sentences(self, sentences: set[str]) -> set[str]:
        """Sentences it will encode beyond the run's ``sentences`` (e.g. flipped expressions),
        so that a frozen text encoder's features are made once with the rest: with
        ``data.flip``, the mirrored expressions."""
        return flipped_sentences(sentences) if self.cfg.data.flip > 0 else set()

    def after_step(self) -> None:
        """After each optimizer step (nothing here)."""

    def epoch_record(self, info: Any) -> dict[str, float]:
        """Its statistics of the epoch, summed over processes (none here)."""
        return {}

    # ------------------------------------------------------------------ networks
    def networks(self) -> dict[str, nn.Module]:
        """Its networks by role; ``student`` is the one the optimizer trains."""
        return {"student": self.model}

    @property
    def eval_role(self) -> str:
        """The role of the network evaluated, selected as ``best`` and exported."""
        return "student"

    def text_for(self, role: str) -> TextInputs:
        """The text inputs of the network ``role``."""
        return self.text

    def state_dict(self) -> dict[str, Any]:
        """Its part of a resumable checkpoint (beyond the trained model)."""
        return {}

    def load_state_dict(self, ck: dict[str, Any], path: Any, from_source: bool) -> None:
        """Restore :meth:`state_dict` from the checkpoint ``ck`` read from ``path``."""


def flipped_sentences(sentences: set[str]) -> set[str]:
    """The mirrored expressions of ``sentences`` that are not among them."""
    return {flip_sentence(s) for s in sentences} - sentences


Supervised = Method

#: training method name -> class, or "module:Class" imported when first built
TRAINING_METHODS: Registry[type[Method] | str] = Registry("training method")
TRAINING_METHODS.add("supervised", Supervised)
TRAINING_METHODS.add("teacher_student", "semires.train.teacher_student:TeacherStudent")


def method_name(cfg: Config) -> str:
    """The method a config trains: ``teacher_student`` with ``semi.enabled``, else
    ``supervised``."""
    return "teacher_student" if cfg.semi.enabled else "supervised"


def build_method(cfg: Config, **kwargs: Any) -> Method:
    """The method of ``cfg`` (see :func:`method_name`)."""
    cls = TRAINING_METHODS.get(method_name(cfg))
    if isinstance(cls, str):
        module, _, name = cls.partition(":")
        cls = getattr(importlib.import_module(module), name)
    return cls(cfg, **kwargs)
