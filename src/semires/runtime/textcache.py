"""Text inputs for the model, with a store of frozen text-encoder features.

When the text encoder is frozen (the CPU default), a sentence's word features never change, so
they are computed once - every sentence of the dataset in one pass, sorted by length and padded
only to the longest sentence of each batch - and reused every epoch, by teacher and student, and
in evaluation. The store can be saved to a file and shared by several runs on the same data
(the ``semires run`` pipeline does). Each sentence's features are a view of the batch table it
was encoded in (no copy per sentence), and a saved store is mapped from its file when loaded,
so the processes that use it share its pages instead of each holding a copy. Because the
features are computed in a fixed order that does not depend on training, resumed runs stay
exact.

When the text encoder is trained (the paper's BERT), only tokenisation happens here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semires.utils.io import atomic_write_torch

log = logging.getLogger("semires.train")


def encoder_key(model: nn.Module) -> str:
    """Identifies the frozen text encoder (its config) so that a stored cache is not misused."""
    cfg = model.config_dict() if hasattr(model, "config_dict") else {}
    keep = {k: cfg.get(k) for k in ("text_encoder", "text_kwargs", "max_tokens")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TextInputs:
    """Turns sentences into the keyword arguments of ``RESModel.forward``."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        cfg = getattr(model, "config", None)
        self.cached = bool(getattr(cfg, "freeze_text", False))
        self.max_tokens = int(getattr(cfg, "max_tokens", 20))
        self._feats: dict[str, torch.Tensor] = {}  # sentence -> (L, D) features of its L tokens

    # ------------------------------------------------------------------ the store
    @torch.no_grad()
    def precompute(
        self, sentences: Iterable[str], batch_size: int = 128, progress: bool = False
    ) -> int:
        """Encode every sentence not yet stored, longest first; returns how many were encoded."""
        if not self.cached:
            return 0
        todo = sorted(set(sentences) - set(self._feats))
        if not todo:
            return 0
        tok = self.model.tokenize(todo)
        lengths = tok["attention_mask"].sum(dim=1)
        order = torch.argsort(lengths, descending=True, stable=True).tolist()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="text features", unit="sent", leave=False)
        was_training = self.model.training
        self.model.eval()
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            width = int(lengths[rows].max())
            ids = tok["input_ids"][rows, :width].to(self.device)
            mask = tok["attention_mask"][rows, :width].to(self.device)
            feats = self.model.encode_text(ids, mask).float().cpu()
            for j, r in enumerate(rows):
                self._feats[todo[r]] = feats[j, : int(lengths[r])]  # a view: no copy each
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        self.model.train(was_training)
        return len(todo)

    def prepare(
        self, sentences: Iterable[str], path: str | Path | None, info: Any, progress: bool
    ) -> None:
        """Encode ``sentences`` once for a run of one or more processes (``info``): the main
        process reads the cache file ``path`` (None: none), encodes what it lacks and saves it;
        the others then read it. Nothing happens for an encoder that is trained."""
        from semires.runtime.distributed import barrier

        if not self.cached:
            return
        if path and info.is_main:
            self.load(path)
            if self.precompute(sentences, progress=progress):
                self.save(path)
        barrier(info)
        if path and not info.is_main:
            self.load(path)
        self.precompute(sentences, progress=progress and info.is_main)

    def save(self, path: str | Path) -> None:
        """Write the stored features to ``path`` (atomically): ``{"key", "features": {sentence:
        (L, D) tensor}}``. Each sentence's tensor is a view of the batch it was encoded in, so
        the file holds a few hundred batch tables rather than a tensor per sentence."""
        atomic_write_torch(path, {"key": encoder_key(self.model), "features": self._feats})

    def load(self, path: str | Path) -> bool:
        """Load a stored cache made by the same text encoder; False (and a log line) otherwise.

        The features stay in the file (``torch.load(mmap=True)``): its pages are read when a
        sentence is used and are shared by every process that loads the same file (the
        parallel teacher-student runs of ``semires run``) instead of a copy in each."""
        path = Path(path)
        if not self.cached or not path.is_file():
            return False
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            log.warning("ignoring unreadable text-feature cache %s (%s)", path, exc)
            return False
        if data.get("key") != encoder_key(self.model):
            log.warning("ignoring text-feature cache %s made by another text encoder", path)
            return False
        self._feats.update(data["features"])
        return True

    # ------------------------------------------------------------------ inputs
    def __call__(self, sentences: list[str]) -> dict[str, Any]:
        if not self.cached:
            tok = self.model.tokenize(sentences)
            return {k: v.to(self.device, non_blocking=True) for k, v in tok.items()}
        self.precompute(s for s in sentences if s not in self._feats)
        rows = [self._feats[s] for s in sentences]
        d = rows[0].shape[1]
        feats = torch.zeros((len(rows), self.max_tokens, d), dtype=torch.float32)
        mask = torch.zeros((len(rows), self.max_tokens), dtype=torch.long)
        for i, r in enumerate(rows):
            feats[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1
        return {"attention_mask": mask.to(self.device), "text_feats": feats.to(self.device)}
