"""Training guards: stop with a clear error instead of reporting the metrics of a run that did not train.

* `FiniteLossGuard` raises `NonFiniteLossError` (naming epoch, step and the loss) as soon as a
  training step returns a NaN or ±inf loss, and `EmptyTrainingError` when an epoch would run no
  training batch at all (a batch size larger than the training split: Lightning only warns).
  The exception ends `trainer.fit`, so `jointcap.run` exits non-zero and never tests or writes
  results.json for the broken run.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch


class NonFiniteLossError(RuntimeError):
    """A training step produced a NaN or infinite loss."""


class EmptyTrainingError(RuntimeError):
    """An epoch would train on no batch at all."""


class FiniteLossGuard(L.Callback):
    """Fail fast on a non-finite training loss, or on an epoch with no training batch."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning ends a fit whose training loader is empty with an info line; make it an error."""
        if trainer.fit_loop.max_batches == 0:
            size = getattr(getattr(trainer, "datamodule", None), "batch_size", "?")
            raise EmptyTrainingError(
                f"no training batch: the training split is smaller than data.batch_size={size} "
                "(the last partial batch is dropped); use a smaller batch size"
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach().float()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss is {value} at epoch {trainer.current_epoch}, step {trainer.global_step} "
                f"(batch {batch_idx}); "
                "stopping instead of reporting metrics. Lower model.optim.lr or the loss weights, or check the data"
            )
