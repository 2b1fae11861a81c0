"""When the CAM loss acts: it starts once the heads mean something (an epoch, a validation accuracy), then warms up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jointcap.losses import warmup


@dataclass
class CamSchedule:
    """λ over training: 0 until the start (epoch ≥ `start_epoch` and, if `start_acc1` > 0, a validation top-1 ≥
    `start_acc1` seen), then ramped linearly over `warmup_epochs` from the start. With both at 0 it starts at
    step 0, so λ ramps over the first epochs as before. Its state travels in checkpoints (resumes exactly)."""

    cam_weight: float
    warmup_epochs: float
    start_epoch: float = 0.0
    start_acc1: float = 0.0
    acc_reached: bool = False  # a validation top-1 ≥ start_acc1 has been seen
    started_at: float | None = None  # the fractional epoch at which the loss started

    def __post_init__(self) -> None:
        if self.start_epoch <= 0 and self.start_acc1 <= 0:
            self.started_at = 0.0  # no condition: started at step 0 (also for checkpoints saved without this state)

    def observe_val_acc1(self, acc1: float) -> None:
        """A finished validation's top-1 (not the sanity check's)."""
        if acc1 >= self.start_acc1:
            self.acc_reached = True

    def ready(self, progress: float) -> bool:
        return progress >= self.start_epoch and (self.start_acc1 <= 0 or self.acc_reached)

    def weight(self, progress: float) -> float:
        """λ at `progress` (fractional epochs of training); starts the loss the first time it is ready."""
        if self.started_at is None:
            if not self.ready(progress):
                return 0.0
            self.started_at = progress
        return warmup(self.cam_weight, progress - self.started_at, self.warmup_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"acc_reached": self.acc_reached, "started_at": self.started_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved state; keys a checkpoint lacks (saved before the schedule existed) keep their defaults."""
        reached, started = state.get("acc_reached", self.acc_reached), state.get("started_at", self.started_at)
        if not isinstance(reached, bool) or not (started is None or isinstance(started, (int, float))):
            raise ValueError(f"checkpoint's jointcap.cam_schedule is not a CAM-loss schedule state: {state!r:.200}")
        self.acc_reached, self.started_at = reached, None if started is None else float(started)
