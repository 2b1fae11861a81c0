"""Callbacks that make a killed run resume exactly.

* `PreemptionCheckpoint` saves `last.ckpt` when SIGTERM stops a fit (Lightning turns SIGTERM
  into a `SIGTERMException` at the end of the current batch; on SLURM its SLURMEnvironment also
  saves an `hpc_ckpt_*.ckpt` and requeues on SIGUSR1).
* `StepCheckpoint` saves `last.ckpt` every N steps, except right before a validation, and after each
  epoch's validation.
* `RandomStateCheckpoint` carries the global RNG states (dropout uses them) in every
  checkpoint and puts them back when training restarts; Lightning itself does not.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class PreemptionCheckpoint(Callback):
    """Save `<dirpath>/<filename>` when SIGTERM stops a fit; other exceptions save nothing.

    (Not Lightning's OnExceptionCheckpoint: that one saves on any exception, deletes its file
    after a good run, and its mere presence makes `fit(ckpt_path=None)` resume from "last".)
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        if trainer.validating or trainer.sanity_checking:
            # Lightning would resume a validation half-way with its metric states lost: the run
            # resumes from the checkpoint before it instead (and validates in full).
            log.warning("SIGTERM during validation: not saving; the run resumes from its previous checkpoint")
            return
        log.warning("SIGTERM: saving %s before exiting", self.path)
        trainer.save_checkpoint(self.path)


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that saves every N training steps, except at a step that validation follows, and at the end
    of every epoch (after its validation).

    A checkpoint taken before the validation makes Lightning resume *after* that validation without
    running it, so the resumed run would miss its metrics and checkpoint choice; the epoch-end
    checkpoint (after the validation) covers that step instead.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not validation_follows(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    # Lightning (2.6) saves `last` after a validation only where a top-k checkpoint was saved at that step, so
    # the run's best-metric callback leaves last.ckpt mid-epoch whenever the metric did not improve. This one
    # saves it there whatever the metric did: the step skipped above is always covered.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether the fit loop will validate right after the current training batch (Lightning's own test)."""
    loop = trainer.fit_loop
    fetcher = loop._data_fetcher
    return bool(trainer.enable_validation and fetcher is not None and loop.epoch_loop._should_check_val_fx(fetcher))


def collect_rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain containers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys).astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `collect_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomStateCheckpoint(Callback):
    """Save the global RNG states in each checkpoint; restore them when the resumed fit starts training."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
