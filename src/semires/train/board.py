"""A run's TensorBoard (``<run>/tb``): training scalars, per-epoch records, evaluations.

Opened on first use in the main process (``output.tensorboard``), purging events past the step
it starts at, so a resumed run continues its curves without a fold-back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Board:
    """Writes a run's TensorBoard events; a disabled board writes nothing."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.folder, self.enabled = folder, enabled
        self._writer: Any = None

    def _open(self, step: int) -> Any:
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder), purge_step=step or None)
        return self._writer

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        """``<prefix>/<key>`` for every number in ``values`` (ints and floats)."""
        writer = self._open(step)
        if writer is None:
            return
        for k, v in values.items():
            if isinstance(v, int | float):
                writer.add_scalar(f"{prefix}/{k}", v, step)

    def evaluation(self, split: str, result: dict[str, Any], step: int) -> None:
        """oIoU, mIoU, precision at each threshold and the image panels of an evaluation."""
        writer = self._open(step)
        if writer is None:
            return
        m = result["metrics"]
        writer.add_scalar(f"{split}/oIoU", m["oIoU"], step)
        writer.add_scalar(f"{split}/mIoU", m["mIoU"], step)
        for t, v in m["precision"].items():
            writer.add_scalar(f"{split}/prec@{t}", v, step)
        if result.get("panels") is not None:
            writer.add_image(f"{split}/panels", result["panels"], step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
