"""What a run prints while it trains, readable in a log file as well as on a terminal.

* `progress_bar(...)`: Lightning's own bar on a terminal; when stdout is a file or a pipe (nohup,
  SLURM, `make run > log`), a `LineProgress` instead: Lightning's Rich bar writes nothing there
  until the run ends, so a long run looked hung.
* `LineProgress`: one plain log line every N training steps (epoch, step, loss, images/s, ETA) and
  one per epoch (its time and the epoch's metrics), through the `jointcap.progress` logger (so the
  lines also reach the run's `run.log`). Speed and ETA come from the current epoch's batches plus the
  last validation's time: a self-critical epoch is ~3× as slow as a cross-entropy one, and a rate
  averaged over the whole fit promised the end too early once the phase changed. A run resumed in the middle
  of an epoch gets no `on_train_epoch_start`: its clock starts at the first batch it sees, and until a
  second batch is timed the speed and ETA read "?" (they read 0.0 img/s and "14 days" before).
* `CompactModelSummary`: Lightning's model summary as plain text, without the FLOPs column and
  "Total FLOPs: 0" (FLOPs are counted only for a model with an `example_input_array`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger("jointcap.progress")
# the epoch line's metrics, in this order, when logged (others are in metrics.csv)
EPOCH_KEYS = ("train/loss", "val/loss", "val/acc1", "val/cider_d", "val/disagreement")


def progress_bar(every_n_steps: int = 50, enabled: bool = True, stream: Any = None) -> ProgressBar | None:
    """Plain progress lines when `stream` (stdout) is not a terminal; None (Lightning's bar) on a terminal or if off."""
    stream = sys.stdout if stream is None else stream
    if not enabled or stream.isatty():
        return None
    return LineProgress(every_n_steps)


def _duration(seconds: float) -> str:
    """Seconds as H:MM:SS ('?' when not yet known)."""
    return str(timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


class LineProgress(ProgressBar):
    """Log a line every `every_n_steps` training batches and at each epoch's end: no carriage returns, no colours."""

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps}: must be ≥ 1")
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._clock = time.perf_counter  # a test may put a fake clock here
        self._fit_start = 0.0
        self._epoch_start = math.nan  # NaN: this epoch's clock not started (a mid-epoch resume skips the hook)
        self._epoch_batches = self._epoch_images = 0  # this epoch's training batches and images (this process)
        self._epoch_val = 0.0  # seconds of validation inside this epoch (before its last batch: val_check_interval)
        self._val_start = math.nan
        self._last_val = 0.0  # seconds the last full validation took (0 until one ran)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = self._clock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._clock()
        self._epoch_batches = self._epoch_images = 0
        self._epoch_val = 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = self._clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not math.isfinite(self._val_start):
            return
        self._last_val = self._clock() - self._val_start
        self._epoch_val += self._last_val
        self._val_start = math.nan

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not math.isfinite(self._epoch_start):  # resumed mid-epoch: time from here; this batch's start is unknown
            self._epoch_start = self._clock()
            self._epoch_batches = self._epoch_images = 0
            self._epoch_val = 0.0
        else:
            self._count(batch)
        if self._enabled and trainer.is_global_zero and (batch_idx + 1) % self.every_n_steps == 0:
            log.info(self.step_line(trainer, batch_idx))

    def _count(self, batch: Any) -> None:
        """Add one timed training batch and its images to this epoch's speed."""
        self._epoch_batches += 1
        image = batch.get("image") if isinstance(batch, dict) else getattr(batch, "image", None)
        self._epoch_images += int(image.shape[0]) if image is not None else 0

    def step_line(self, trainer: L.Trainer, batch_idx: int) -> str:
        """`epoch 3/12 · batch 50/125 · step 300 · train/loss 2.345 · 41.2 img/s · ETA epoch 0:00:40, fit 0:09:58`:
        the speed of this epoch's batches so far; each epoch left at that speed plus the last validation's time."""
        training = max(self._clock() - self._epoch_start - self._epoch_val, 1e-9)  # this epoch's batches only
        per_batch = training / self._epoch_batches if self._epoch_batches else math.nan  # NaN: no batch timed yet
        total = self.total_train_batches
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else math.nan
        every = trainer.check_val_every_n_epoch or 1
        val = self._last_val / every  # a validation's time per epoch, from the last one (0 before any ran)
        left_epoch = (total - batch_idx - 1) * per_batch + val if math.isfinite(total) else math.nan
        left_fit = left_epoch + (epochs - trainer.current_epoch - 1) * (total * per_batch + val)
        loss = trainer.callback_metrics.get("train/loss")
        parts = [
            f"epoch {trainer.current_epoch + 1}/{epochs if math.isfinite(epochs) else '?'}",
            f"batch {batch_idx + 1}/{total if math.isfinite(total) else '?'}",
            f"step {trainer.global_step}",
            f"train/loss {float(loss):.4f}" if loss is not None else "train/loss ?",
            f"{self._epoch_images / training:.1f} img/s" if self._epoch_batches else "? img/s",
            f"ETA epoch {_duration(left_epoch)}, fit {_duration(left_fit)}",
        ]
        return " · ".join(parts)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation runs before this hook, so the epoch's val/* metrics are in callback_metrics already
        started, self._epoch_start = self._epoch_start, math.nan  # the next epoch's clock starts afresh
        if not (self._enabled and trainer.is_global_zero):
            return
        metrics = trainer.callback_metrics
        shown = " · ".join(f"{k} {float(metrics[k]):.4f}" for k in EPOCH_KEYS if k in metrics)
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else "?"
        log.info(
            "epoch %d/%s done in %s (fit so far %s) · %s",
            trainer.current_epoch + 1,
            epochs,
            _duration(self._clock() - started),
            _duration(self._clock() - self._fit_start),
            shown or "no metrics yet",
        )

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            log.info("test: %d batches done", int(sum(trainer.num_test_batches)))


class CompactModelSummary(ModelSummary):
    """Lightning's plain-text model summary, without the FLOPs column and total when nothing counted them."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = summary_data if total_flops else [c for c in summary_data if c[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        lines = table.splitlines() if total_flops else [x for x in table.splitlines() if "total flops" not in x.lower()]
        logging.getLogger("jointcap").info("model:\n%s", "\n".join(lines))
