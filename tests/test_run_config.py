"""A run folder's .hydra/config.yaml is untrusted: it may name a preset and what makes the data what it is
(an allow-list); paths, downloads, checksums and resources come from the user's own config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from jointcap.config import SOURCES, DataConfig
from jointcap.runtime import run_config
from jointcap.runtime.run_config import PRESETS, RUN_SOURCE_KEYS, RunConfigError, load_run_data_config
from tests.conftest import ROOT

GOOD = {
    "seed": 5,
    "data": {
        "_target_": "jointcap.data.datamodule.JointDataModule",
        "cache_root": "/tmp/c",
        "batch_size": 4,
        "seed": "${seed}",
        "vocab_size": 300,
        "source": {"_target_": "jointcap.data.synthetic.SyntheticSource", "n_train": 8, "n_classes": 3},
    },
}
# what may never come from a run folder: where data is read, written or downloaded, and how it is checked
USER_SOURCE_KEYS = {
    "root",
    "download",
    "workers",
    "folder",
    *(f"{kind}_{what}" for kind in ("images", "labels", "setid", "captions") for what in ("url", "md5", "archive")),
    "images_folder",
    "captions_folder",
    "captions_gdrive_id",
}


def user_config(preset: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    """The user's own evaluate config with data=<preset> (as jointcap.evaluate composes it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=[*overrides, f"data={preset}"])


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "run" / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path


def _good() -> Any:
    return OmegaConf.to_container(OmegaConf.create(GOOD))  # a plain nested dict


def test_the_run_says_which_data_the_user_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOINTCAP_DATA", str(tmp_path / "mine"))
    data = load_run_data_config(_write(tmp_path, GOOD), user_config)
    assert (data.source.n_train, data.source.n_classes, data.vocab_size, data.seed) == (8, 3, 300, 5)
    assert data.cache_root == str(tmp_path / "mine" / "cache")  # not the run's /tmp/c
    assert data.eval_batch_size == user_config("synthetic").data.eval_batch_size  # a resource: the user's


def test_every_source_setting_is_either_the_runs_or_the_users() -> None:
    """A new schema field must be put on one side: the allow-list or the user's own keys."""
    for target, schema in SOURCES.items():
        fields = {f for f in schema.__dataclass_fields__ if f != "_target_"}
        undecided = fields - RUN_SOURCE_KEYS[PRESETS[target]] - USER_SOURCE_KEYS
        assert not undecided, (
            f"{target}: decide where {sorted(undecided)} may come from (jointcap/runtime/run_config.py)"
        )
        assert not RUN_SOURCE_KEYS[PRESETS[target]] & USER_SOURCE_KEYS
    assert set(PRESETS) == set(SOURCES)


@pytest.mark.parametrize("preset", sorted(set(PRESETS.values())))
def test_each_preset_composes_to_its_source(preset: str) -> None:
    cfg = user_config(preset)
    assert PRESETS[cfg.data.source._target_] == preset and cfg.data._target_ == DataConfig._target_


@pytest.mark.parametrize(
    "where,target",
    [("data", "torch.load"), ("source", "os.system"), ("source", "jointcap.data.synthetic.SyntheticSource.__init__")],
)
def test_unknown_targets_are_refused_before_anything_runs(tmp_path: Path, where: str, target: str) -> None:
    cfg = _good()
    (cfg["data"] if where == "data" else cfg["data"]["source"])["_target_"] = target
    path = _write(tmp_path, cfg)
    with pytest.raises(RunConfigError, match=f"{path}.*refusing to instantiate.*{target}"):
        load_run_data_config(path, user_config)


def test_nested_payload_is_refused(tmp_path: Path) -> None:
    """torch.load(weights_only=False) hidden in an allowed setting: refused, never called."""
    cfg = _good()
    cfg["data"]["source"]["seed"] = {"_target_": "torch.load", "f": str(tmp_path / "evil.pt"), "weights_only": False}
    with pytest.raises(RunConfigError, match="data.source.seed.*torch.load"):
        load_run_data_config(_write(tmp_path, cfg), user_config)


@pytest.mark.parametrize("value", ["${oc.env:HOME}", "${oc.decode:'3'}", "${jointcap.data_root:}", "a${seed}"])
def test_resolvers_in_allowed_settings_are_refused(tmp_path: Path, value: str) -> None:
    cfg = _good()
    cfg["data"]["source"]["n_train"] = value
    with pytest.raises(RunConfigError, match="data.source.n_train.*resolver"):
        load_run_data_config(_write(tmp_path, cfg), user_config)


def test_paths_and_payloads_in_other_settings_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _good()
    cfg["data"]["cache_root"] = "${oc.env:HOME}"
    cfg["data"]["num_workers"] = {"_target_": "os.system", "command": "touch pwned"}
    cfg["data"]["eval_batch_size"] = 10**9
    data = load_run_data_config(_write(tmp_path, cfg), user_config)
    assert "HOME" not in str(data.cache_root) and isinstance(data.num_workers, int) and data.eval_batch_size < 10**9
    assert all(f"data.{k}" in caplog.text for k in ("cache_root", "num_workers", "eval_batch_size"))


def test_invalid_values_are_refused_naming_the_file(tmp_path: Path) -> None:
    cfg = _good()
    cfg["data"]["vocab_size"] = "abc"
    path = _write(tmp_path, cfg)
    with pytest.raises(RunConfigError, match=f"(?s){path}.*data.vocab_size"):
        load_run_data_config(path, user_config)


@pytest.mark.parametrize(
    "key,value",
    [("n_train", 10**9), ("image_size", 100_000), ("captions_per_image", 10**6)],
)
def test_oversized_data_is_refused(tmp_path: Path, key: str, value: int) -> None:
    cfg = _good()
    cfg["data"]["source"][key] = value
    with pytest.raises(
        RunConfigError, match=f"(?s)run folder asks for.*{'captions_per_image' if 'captions' in key else 'GiB'}"
    ):
        load_run_data_config(_write(tmp_path, cfg), user_config)
    assert run_config.MAX_CACHE_BYTES >= 10_000 * 224 * 224 * 3  # the real datasets at their size fit


@pytest.mark.parametrize("text", ["data: [1, 2", "seed: 1\n", ""])
def test_unreadable_or_dataless_config(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, {})
    path.write_text(text)
    with pytest.raises(RunConfigError, match=str(path)):
        load_run_data_config(path, user_config)
