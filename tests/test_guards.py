"""Training that hits a non-finite loss, or has no training batch, stops with an error instead of reporting metrics."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from jointcap.runtime.callbacks.guards import EmptyTrainingError, FiniteLossGuard, NonFiniteLossError


class _Tiny(L.LightningModule):
    """One weight; the loss turns NaN from step `bad_step` on."""

    def __init__(self, bad_step: int | None = None, value: float = float("nan")) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.bad_step, self.value = bad_step, value

    def training_step(self, batch, batch_idx):
        loss = (self.w * batch[0]).mean()
        if self.bad_step is not None and self.global_step >= self.bad_step:
            loss = loss * self.value
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(module: L.LightningModule, tmp_path: Path, n: int = 8, batch: int = 2) -> L.Trainer:
    loader = DataLoader(TensorDataset(torch.ones(n, 1)), batch_size=batch, drop_last=True)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[FiniteLossGuard()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=loader)
    return trainer


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_training(tmp_path: Path, value: float) -> None:
    with pytest.raises(NonFiniteLossError, match=r"training loss is (nan|inf) at epoch 0, step 3 \(batch 2\)"):
        _fit(_Tiny(bad_step=2, value=value), tmp_path)


def test_finite_loss_trains_to_the_end(tmp_path: Path) -> None:
    assert _fit(_Tiny(), tmp_path).global_step == 8


def test_no_training_batch_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EmptyTrainingError, match="no training batch"):
        _fit(_Tiny(), tmp_path, n=3, batch=4)


def test_guard_is_in_the_default_callbacks() -> None:
    from omegaconf import OmegaConf

    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "callbacks" / "default.yaml")
    assert conf.guards._target_ == "jointcap.runtime.callbacks.guards.FiniteLossGuard"
