"""A run folder's .hydra/config.yaml is untrusted: validated, and only jointcap's data targets instantiated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from jointcap.runtime.run_config import RunConfigError, load_run_data_config

GOOD = {
    "data": {
        "_target_": "jointcap.data.datamodule.JointDataModule",
        "cache_root": "/tmp/c",
        "batch_size": 4,
        "source": {"_target_": "jointcap.data.synthetic.SyntheticSource", "n_train": 8, "n_classes": 3},
    }
}


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "run" / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path


def test_a_good_run_config_is_loaded(tmp_path: Path) -> None:
    data = load_run_data_config(_write(tmp_path, GOOD))
    assert data.source.n_train == 8 and data.batch_size == 4


@pytest.mark.parametrize(
    "where,target",
    [("data", "torch.load"), ("source", "os.system"), ("source", "jointcap.data.synthetic.SyntheticSource.__init__")],
)
def test_unknown_targets_are_refused_before_anything_runs(tmp_path: Path, where: str, target: str) -> None:
    cfg: Any = OmegaConf.to_container(OmegaConf.create(GOOD))  # a plain nested dict
    (cfg["data"] if where == "data" else cfg["data"]["source"])["_target_"] = target
    path = _write(tmp_path, cfg)
    with pytest.raises(RunConfigError, match=f"{path}.*refusing to instantiate.*{target}"):
        load_run_data_config(path)


def test_nested_payload_is_refused(tmp_path: Path) -> None:
    """torch.load(weights_only=False) hidden in an argument: refused, never called."""
    cfg: Any = OmegaConf.to_container(OmegaConf.create(GOOD))  # a plain nested dict
    cfg["data"]["source"]["seed"] = {"_target_": "torch.load", "f": str(tmp_path / "evil.pt"), "weights_only": False}
    with pytest.raises(RunConfigError, match="torch.load"):
        load_run_data_config(_write(tmp_path, cfg))


def test_invalid_values_are_refused_naming_the_file(tmp_path: Path) -> None:
    cfg: Any = OmegaConf.to_container(OmegaConf.create(GOOD))  # a plain nested dict
    cfg["data"]["batch_size"] = "abc"
    path = _write(tmp_path, cfg)
    with pytest.raises(RunConfigError, match=f"(?s){path}.*data.batch_size"):
        load_run_data_config(path)


@pytest.mark.parametrize("text", ["data: [1, 2", "seed: 1\n", ""])
def test_unreadable_or_dataless_config(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, {})
    path.write_text(text)
    with pytest.raises(RunConfigError, match=str(path)):
        load_run_data_config(path)


def test_evaluate_reads_run_configs_through_the_guard() -> None:
    import inspect

    from jointcap import evaluate

    assert "load_run_data_config(run_cfg)" in inspect.getsource(evaluate.data_config)
