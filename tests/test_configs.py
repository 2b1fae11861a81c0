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


def test_paper_setting_is_stated_once_and_shared_by_cub_and_flowers() -> None:
    cub, flowers = _compose(["+experiment=cub_cam"]), _compose(["+experiment=flowers_cam"])
    assert cub.model == flowers.model and cub.trainer == flowers.trainer  # only the data differs
    enc = cub.model.encoder
    assert (enc.name, enc.stage, enc.output_stride, cub.data.source.image_size) == ("resnet50", 4, 16, 224)
    own = OmegaConf.load(CONF / "experiment" / "cub_cam.yaml")
    assert isinstance(own, DictConfig) and "model" not in own and "trainer" not in own  # all in _paper.yaml


def _values(node: object) -> list[str]:
    """Every string value of a YAML file's content (comments left out)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in _values(v)]
    if isinstance(node, list):
        return [s for v in node for s in _values(v)]
    return [node] if isinstance(node, str) else []


def test_data_root_is_spelled_in_one_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spelled = [
        str(p.relative_to(CONF))
        for p in CONF.rglob("*.yaml")
        if any(
            "JOINTCAP_DATA" in v or ".cache/jointcap" in v for v in _values(OmegaConf.to_container(OmegaConf.load(p)))
        )
    ]
    assert spelled == []  # the root is conf/paths/default.yaml's resolver, i.e. jointcap/data/download.py
    monkeypatch.setenv("JOINTCAP_DATA", str(tmp_path))
    cfg = _compose(["data=cub"])
    assert (cfg.data.cache_root, cfg.data.source.root) == (f"{tmp_path}/cache", str(tmp_path))
    cfg = _compose(["data=flowers", "paths.data_root=/elsewhere"])
    assert (cfg.data.cache_root, cfg.data.source.root) == ("/elsewhere/cache", "/elsewhere")
    monkeypatch.delenv("JOINTCAP_DATA")
    assert _compose([]).data.cache_root == "~/.cache/jointcap/cache"


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    """Every leaf of a config as a dotted key → value (interpolations left as written)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def test_describe_preset_is_the_default_run_with_only_its_named_levers() -> None:
    """+experiment=synthetic_describe (issue 25) changes exactly the options its file names; a drift in the
    default run (or a lever set twice) would make its measurements describe something else."""
    from jointcap.config import validate

    base, describe = _compose([]), _compose(["+experiment=synthetic_describe"])
    validate(describe)
    changed = {k: v for k, v in _leaves(describe).items() if _leaves(base).get(k) != v}
    assert changed == {
        "data.captions_per_step": 5,
        "model.embedding.skip_dim": 64,
        "model.captioner.deep_output": True,
        "model.captioner.input_norm": True,
        "model.loss.scst_samples": 16,
        "model.loss.scst_epochs": 2,
        "model.optim.scst_lr": 3e-5,
        "model.optim.cosine_epochs": 12,
        "trainer.max_epochs": 10,
    }
    assert describe.model.embedding.skip_from == "stem"  # the default source, stated in the preset
