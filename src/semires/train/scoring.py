"""Scoring a run's networks at its settings: during training (checkpoint selection) and at the
end (``metrics.json``, ``samples.json``).

:class:`Scorer` evaluates a network on a split with the run's image size, batch size, precision,
protocol and device (:func:`semires.evaluate.evaluate.evaluate_model`); :func:`final_metrics`
scores the selected network on the final splits - val (unless ``train.final_val`` is off) and
every test split - and, where a method has a second network, that one beside it. The trainer's
final evaluation and the pipeline's scoring of a given burn-in checkpoint both use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from semires.data.index import RESIndex
from semires.layout import StageLayout
from semires.runtime.distributed import DistInfo
from semires.runtime.textcache import TextInputs
from semires.train.config import DataConfig, TrainConfig
from semires.utils.io import atomic_write_json

log = logging.getLogger("semires.train")


def check_scored_splits(index: RESIndex, data: DataConfig, train: TrainConfig) -> None:
    """The splits a run scores (``data.val_split`` while training and at the end, every
    ``data.test_splits``) exist and have masks: checked at the start, not at the first
    evaluation, after the run folder was written."""
    from semires.errors import DataError

    scored = list(data.test_splits)
    if not train.skip_eval or train.final_val or not data.test_splits:
        scored.insert(0, data.val_split)
    why = "data.val_split and data.test_splits are scored against masks: give those refs masks"
    for split in dict.fromkeys(scored):
        try:
            index.require_masks(split, why)
        except DataError as err:
            key = "data.val_split" if split == data.val_split else "data.test_splits"
            raise DataError(f"config key {key!r}: {err}") from None


class Scorer:
    """Evaluation of networks at a run's settings; ``on_result(tag, result)`` sees each result
    (e.g. for TensorBoard)."""

    def __init__(
        self,
        *,
        index: RESIndex,
        data: DataConfig,
        train: TrainConfig,
        device: Any,
        info: DistInfo,
        progress: bool = True,
        on_result: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.index, self.data, self.train = index, data, train
        self.device, self.info, self.progress = device, info, progress
        self.on_result = on_result

    def evaluate(
        self,
        net: nn.Module,
        text: TextInputs | None,
        split: str,
        *,
        max_sentences: int | None = None,
        pred_dir: str | Path | None = None,
    ) -> dict[str, Any]:
        """:func:`~semires.evaluate.evaluate.evaluate_model` of ``net`` on ``split``."""
        from semires.evaluate.evaluate import evaluate_model

        return evaluate_model(
            net,
            self.index,
            split,
            size=self.data.img_size,
            batch_size=self.train.eval_batch_size,
            device=self.device,
            info=self.info,
            text=text,
            amp=self.train.amp,
            max_sentences=max_sentences,
            pred_dir=pred_dir,
            cache_images=self.data.cache_images,
            progress=self.progress,
            num_panels=self.train.num_panels,
            protocol=self.train.protocol,
        )

    def final_splits(
        self,
        net: nn.Module,
        text: TextInputs | None,
        *,
        role: str,
        tag: str = "final",
        counts: dict | None = None,
    ) -> dict[str, Any]:
        """Metrics of ``net`` on the final splits (and all test splits together); ``counts``
        receives the per-sentence counts of each split."""
        from semires.evaluate.evaluate import score_splits

        def run(split: str) -> dict[str, Any]:
            result = self.evaluate(net, text, split)
            if self.on_result is not None:
                self.on_result(f"{tag}_{split}", result)
            if self.info.is_main:
                m = result["metrics"]
                log.info("final %s (%s): oIoU %.2f mIoU %.2f", split, role, m["oIoU"], m["mIoU"])
            return result

        data, train = self.data, self.train
        splits = [data.val_split] if train.final_val or not data.test_splits else []
        return score_splits(run, splits, data.test_splits, train.protocol, counts)


def final_metrics(
    scorer: Scorer,
    networks: list[tuple[str, nn.Module, TextInputs | None]],
    layout: StageLayout,
    head: dict[str, Any],
) -> dict[str, Any]:
    """Score ``networks`` ((role, network, text inputs), the selected one first) on the final
    splits; write ``samples.json`` (the first one's per-sentence counts) and ``metrics.json``:
    ``head``, ``eval_model`` (the first one's role), ``splits`` (the headline), and where there
    is a second network ``companion`` ``{"model", "splits"}``."""
    (role, net, text), *others = networks
    counts: dict[str, Any] = {}
    out = {**head, "eval_model": role}
    out["splits"] = scorer.final_splits(net, text, role=role, counts=counts)
    if scorer.info.is_main:
        atomic_write_json(layout.samples, counts, indent=None)
    for other, other_net, other_text in others[:1]:
        splits = scorer.final_splits(other_net, other_text, role=other, tag=f"final_{other}")
        out["companion"] = {"model": other, "splits": splits}
    if scorer.info.is_main:
        atomic_write_json(layout.metrics, out)
    return out
