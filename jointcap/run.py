"""The Hydra entry point: `python -m jointcap.run [+experiment=NAME] [key=value …]`.

config → DataModule → LightningModule → Trainer (+ loggers, callbacks) → fit → test.
Returns the objective metric, so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jointcap.report import print_summary

log = logging.getLogger("jointcap")


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Instantiate the data module, the model and the trainer from a composed config."""
    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    return datamodule, model, trainer


def resolve_ckpt(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` → this run folder's last.ckpt when there is one (a fresh run otherwise)."""
    if ckpt_path != "last":
        return ckpt_path
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    log.info("ckpt_path=last but %s does not exist: starting fresh", last)
    return None


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) one configuration; returns the final metrics."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_ckpt(cfg.ckpt_path, run_dir))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test_after_fit:
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    if trainer.is_global_zero:
        print_summary(metrics, run_dir, trainer)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    metrics = train(cfg)
    value = metrics.get(cfg.objective)
    return value if value is not None and math.isfinite(value) else None


if __name__ == "__main__":
    main()
