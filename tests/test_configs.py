"""Every experiment config composes; the primary config keeps `experiment` out of its defaults."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def test_experiment_not_in_defaults() -> None:
    primary = OmegaConf.load(CONF / "config.yaml")
    assert isinstance(primary, DictConfig)
    defaults = primary["defaults"]
    assert not any("experiment" in (d if isinstance(d, str) else str(list(d.keys()))) for d in defaults)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name: str) -> None:
    cfg = _compose([f"+experiment={name}"])
    OmegaConf.resolve(cfg.data) if "synthetic" in name else None
    assert cfg.model._target_.endswith("JointCaptionModule")
    assert cfg.data._target_.endswith("JointDataModule")
    assert cfg.data.source._target_.startswith("jointcap.data.")


def test_nocam_means_lambda_zero() -> None:
    assert _compose(["+experiment=synthetic_nocam"]).model.loss.cam_weight == 0.0
    assert _compose(["+experiment=synthetic_cam"]).model.loss.cam_weight > 0.0
