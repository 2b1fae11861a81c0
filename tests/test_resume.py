"""Killed runs resume exactly: loader position, per-sample randomness and RNG states travel in checkpoints."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from jointcap.data.sampling import EpochSampler, ResumableLoader
from jointcap.runtime.callbacks.checkpointing import (
    PreemptionCheckpoint,
    StepCheckpoint,
    collect_rng_states,
    set_rng_states,
)
from jointcap.runtime.loggers import ResumableCSVLogger
from jointcap.runtime.resume import hparams_mismatch, resume_path
from jointcap.tools.soak import SOAK_OVERRIDES, final_test_metrics, kill_and_resume, logged_rows, start


class Keys(Dataset):
    """Returns the key it was asked for, and one random draw made from the key's seed."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        i, seed = key
        return torch.tensor([i, int(torch.randint(1000, (), generator=torch.Generator().manual_seed(seed)))])


def _loader(epoch: int = 0) -> ResumableLoader:
    sampler = EpochSampler(Keys(), seed=3)
    sampler.set_epoch(epoch)
    return ResumableLoader(Keys(), batch_size=4, sampler=sampler, drop_last=True)


def test_loader_resumes_mid_epoch_with_the_same_batches() -> None:
    full = [b.tolist() for b in _loader(epoch=2)]
    first = _loader(epoch=2)
    it = iter(first)
    seen = [next(it).tolist() for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    resumed = _loader(epoch=0)  # the epoch comes from the state
    resumed.load_state_dict(state)
    rest = [b.tolist() for b in resumed]
    assert seen + rest == full
    assert resumed.state_dict()["batches"] == len(resumed)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in _loader(epoch=2)], "the skip applies to one pass only"


def test_loader_order_depends_on_seed_and_epoch_only() -> None:
    torch.manual_seed(1)
    a = [b.tolist() for b in _loader(epoch=1)]
    torch.manual_seed(2)
    assert [b.tolist() for b in _loader(epoch=1)] == a, "the global RNG must not matter"
    assert [b.tolist() for b in _loader(epoch=2)] != a


def test_finished_epoch_state_skips_nothing() -> None:
    loader = _loader(epoch=4)
    loader.load_state_dict({"epoch": 4, "batches": len(loader)})
    assert len(list(loader)) == len(loader)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    torch.save({"rng": collect_rng_states()}, tmp_path / "rng.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_states(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_resume_path_and_config_guard(tmp_path: Path) -> None:
    assert resume_path("auto", tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    hparams = {"task": "joint", "loss": {"cam_weight": 1.0, "divergence": "js"}, "num_classes": 6}
    torch.save({"hyper_parameters": hparams}, tmp_path / "checkpoints" / "last.ckpt")
    stale = tmp_path / "checkpoints" / ".last.ckpt.tmp-deadbeef"
    stale.write_bytes(b"half a checkpoint")
    assert resume_path("last", tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert not stale.exists(), "temporary files of killed saves are cleaned up"
    same = {"task": "joint", "loss": {"cam_weight": 1.0, "divergence": "js"}, "num_classes": None, "_target_": "x"}
    assert hparams_mismatch(tmp_path / "checkpoints" / "last.ckpt", same) == []
    changed = {**same, "loss": {"cam_weight": 0.0, "divergence": "js"}}
    assert hparams_mismatch(tmp_path / "checkpoints" / "last.ckpt", changed) == ["model.loss.cam_weight: 1.0 → 0.0"]
    # an option added to the code after the checkpoint was saved: at its default it is the same model, not else
    loss = {"cam_weight": 1.0, "divergence": "js", "cam_start_epoch": 0}
    added = {**same, "captioner": {"coverage": False}, "loss": loss}
    assert hparams_mismatch(tmp_path / "checkpoints" / "last.ckpt", added) == []
    added_on = {**same, "captioner": {"coverage": True}}
    assert hparams_mismatch(tmp_path / "checkpoints" / "last.ckpt", added_on) == [
        "model.captioner.coverage: None → True"
    ]


class _RecordingStepCheckpoint(StepCheckpoint):
    saves: list[tuple[int, int]]  # (global step, validations run so far) at each save
    validations = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validations += 1
        super().on_validation_end(trainer, pl_module)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        self.saves.append((trainer.global_step, self.validations))
        super()._save_checkpoint(trainer, filepath)


@pytest.mark.parametrize(
    "val_batches,expected",
    [(2, [(2, 0), (4, 0), (6, 1), (8, 1), (10, 1), (12, 2)]), (0, [(2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0)])],
)
def test_step_checkpoint_skips_the_step_before_a_validation_and_saves_after_it(
    tmp_path: Path, val_batches: int, expected: list[tuple[int, int]]
) -> None:
    """A checkpoint taken just before a validation would make Lightning resume past that validation; the epoch's
    end (steps 6 and 12) is saved after it instead, even where no best-metric checkpoint is (Lightning 2.6 saves
    `last` there only beside a top-k one)."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    cb = _RecordingStepCheckpoint(dirpath=tmp_path, monitor=None, save_top_k=0, save_last=True, every_n_train_steps=2)
    cb.saves = []
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=6,
        limit_val_batches=val_batches,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert cb.saves == expected
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 12


def test_sigterm_during_validation_saves_nothing(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    saved: list[Path] = []
    no_module: Any = None
    trainer: Any = SimpleNamespace(
        state=SimpleNamespace(fn="fit"), validating=True, sanity_checking=False, save_checkpoint=saved.append
    )
    cb = PreemptionCheckpoint(str(tmp_path))
    cb.on_exception(trainer, no_module, SIGTERMException())
    assert saved == [], "a checkpoint taken mid-validation cannot resume exactly"
    trainer.validating = False
    cb.on_exception(trainer, no_module, RuntimeError("a bug"))
    assert saved == [], "only SIGTERM saves"
    cb.on_exception(trainer, no_module, SIGTERMException())
    assert saved == [tmp_path / "last.ckpt"]


def test_csv_logger_keeps_rows_before_the_resume_point(tmp_path: Path) -> None:
    first = ResumableCSVLogger(tmp_path, name="", version="")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.log_metrics({"val/acc1": 0.5}, step=3)
    first.save()
    resumed = ResumableCSVLogger(tmp_path, name="", version="")  # killed after step 5, resumed from step 4
    for step in range(4, 7):
        resumed.log_metrics({"train/loss": 10.0 + step}, step=step)
    resumed.save()
    resumed.log_metrics({"test/acc1": 0.25}, step=7)
    resumed.save()
    rows = logged_rows(tmp_path)
    assert [(r["step"], r["train/loss"]) for r in rows if r["train/loss"]] == [
        ("0", "0.0"),
        ("1", "1.0"),
        ("2", "2.0"),
        ("3", "3.0"),
        ("4", "14.0"),
        ("5", "15.0"),
        ("6", "16.0"),
    ]
    assert [r["val/acc1"] for r in rows if r["val/acc1"]] == ["0.5"] and rows[-1]["test/acc1"] == "0.25"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"], "no temporary file is left behind"


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_test_metrics(tmp_path: Path) -> None:
    """SIGTERM (pre-emption) then SIGKILL mid-training, resumed each time: metrics equal a run never killed."""
    ref = tmp_path / "reference"
    assert start(ref, SOAK_OVERRIDES).wait(600) == 0, (ref / "soak.log").read_text()[-3000:]
    reference = final_test_metrics(ref)
    assert "test/acc1" in reference and "test/loss" in reference

    run = tmp_path / "killed"
    cycle = kill_and_resume(run, SOAK_OVERRIDES, [(signal.SIGTERM, 0.0), (signal.SIGKILL, 0.3)], timeout=600)
    log = (run / "soak.log").read_text()
    assert cycle.kills[0].endswith("→143"), f"SIGTERM must save and exit 143: {cycle.kills}\n{log[-3000:]}"
    assert "SIGTERM: saving" in log
    assert cycle.kills[1].endswith("→-9"), cycle.kills
    assert log.count("resuming from") == 2, log[-3000:]
    assert cycle.exit_code == 0, log[-3000:]
    assert cycle.metrics == reference, {k: (cycle.metrics.get(k), v) for k, v in reference.items()}
    assert logged_rows(run) == logged_rows(ref), "every logged value (train loss per step, val, lr) as if never killed"

    # the checkpoints of a real run load without unpickling objects, as a module ready to use
    from jointcap.runtime.checkpoint import load_module

    module = load_module(run / "checkpoints" / "last.ckpt")
    assert module.tokenizer is not None and module.info["num_classes"] == 6 and not module.training
