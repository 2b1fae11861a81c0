"""When the CAM loss starts: an epoch and/or a validation accuracy, then a warm-up; resumed exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from jointcap.lit_module import JointCaptionModule
from jointcap.training.cam_schedule import CamSchedule
from tests.conftest import TINY, run_cli


def test_no_start_condition_ramps_from_the_first_step_as_before() -> None:
    s = CamSchedule(cam_weight=2.0, warmup_epochs=2.0)
    assert [s.weight(p) for p in (0.0, 1.0, 2.0, 5.0)] == [0.0, 1.0, 2.0, 2.0]


def test_start_epoch_waits_then_warms_up_from_the_start() -> None:
    s = CamSchedule(cam_weight=1.0, warmup_epochs=1.0, start_epoch=3.0)
    assert s.weight(0.0) == s.weight(2.99) == 0.0
    assert s.weight(3.0) == 0.0 and s.started_at == 3.0  # started: λ ramps from here
    assert s.weight(3.5) == pytest.approx(0.5)
    assert s.weight(4.0) == 1.0


def test_accuracy_start_waits_for_a_validation_that_reaches_it() -> None:
    s = CamSchedule(cam_weight=1.0, warmup_epochs=0.0, start_acc1=0.5)
    assert s.weight(1.0) == 0.0
    s.observe_val_acc1(0.49)
    assert s.weight(2.0) == 0.0
    s.observe_val_acc1(0.5)
    assert s.weight(2.0) == 1.0 and s.started_at == 2.0
    s.observe_val_acc1(0.1)  # once started it stays started
    assert s.weight(3.0) == 1.0


def test_both_conditions_must_hold() -> None:
    s = CamSchedule(cam_weight=1.0, warmup_epochs=0.0, start_epoch=2.0, start_acc1=0.5)
    s.observe_val_acc1(0.9)
    assert s.weight(1.0) == 0.0 and s.weight(2.0) == 1.0


def test_a_resumed_schedule_continues_where_it_stopped() -> None:
    """The state (accuracy seen, start) travels in the module's checkpoint: a fresh module loading it gives the
    λ of the uninterrupted run (a fresh one without it would start over, later)."""
    loss = {"cam_weight": 1.0, "warmup_epochs": 2.0, "cam_start_acc1": 0.5}
    first = JointCaptionModule(loss=loss)
    first.cam_loss.schedule.observe_val_acc1(0.6)
    assert first.cam_loss.schedule.weight(3.0) == 0.0  # starts at epoch 3
    checkpoint: dict = {}
    first.on_save_checkpoint(checkpoint)
    resumed = JointCaptionModule(loss=loss)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.cam_loss.schedule.weight(4.0) == first.cam_loss.schedule.weight(4.0) == pytest.approx(0.5)
    assert JointCaptionModule(loss=loss).cam_loss.schedule.weight(4.0) == 0.0  # without the state: not started
    plain = JointCaptionModule(loss={"cam_weight": 1.0, "warmup_epochs": 2.0})
    plain.on_load_checkpoint({"jointcap": {}})  # a checkpoint from before the schedule: no start condition
    assert plain.cam_loss.schedule.weight(4.0) == 1.0  # started at step 0, not restarted at the resume


@pytest.mark.slow
def test_a_run_logs_lambda_zero_before_the_start_and_p_entropy_beside_the_loss(tmp_path: Path) -> None:
    """model.loss.cam_start_epoch=1: λ is 0 through epoch 0 and positive in epoch 1; P's normalised entropy is
    logged at every step beside the disagreement (train) and per validation."""
    run_dir = tmp_path / "run"
    args = [*TINY, "trainer.max_epochs=2", "model.loss.scst_epochs=0", "model.loss.cam_start_epoch=1"]
    run_cli(
        [*args, "model.loss.warmup_epochs=0", "callbacks.media.every_n_epochs=0", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r.get("train/dis")]
    lam = {e: {float(r["train/cam_weight"]) for r in train if r["epoch"] == e} for e in "01"}
    assert lam == {"0": {0.0}, "1": {1.0}}
    entropies = [float(r["train/cam_entropy"]) for r in train]
    assert entropies and all(0.0 < h <= 1.0 for h in entropies)
    assert any(r.get("val/cam_entropy") for r in rows)
