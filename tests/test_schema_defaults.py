"""One source of defaults: the schema (jointcap/config.py) is the base of the YAML configs, which state only
what differs from it, so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from jointcap import config as schema

CONF = Path(__file__).resolve().parents[1] / "conf"

# (overrides, section of the composed config, its schema, the YAML files that state its values, in order)
CHAINS: list[tuple[list[str], str, type, list[str]]] = [
    (["model=joint"], "model", schema.ModelConfig, ["model/joint.yaml"]),
    (["model=classifier"], "model", schema.ModelConfig, ["model/joint.yaml", "model/classifier.yaml"]),
    (["model=captioner"], "model", schema.ModelConfig, ["model/joint.yaml", "model/captioner.yaml"]),
    (["data=synthetic"], "data", schema.DataConfig, ["data/datamodule.yaml", "data/synthetic.yaml"]),
    (["data=cub"], "data", schema.DataConfig, ["data/datamodule.yaml", "data/cub.yaml"]),
    (["data=flowers"], "data", schema.DataConfig, ["data/datamodule.yaml", "data/flowers.yaml"]),
    (["data=synthetic"], "data.source", schema.SyntheticSourceConfig, []),
    (["data=synthetic_hard"], "data.source", schema.HardSyntheticSourceConfig, []),
    (["data=cub"], "data.source", schema.CUBSourceConfig, ["data/source/cub.yaml"]),
    (["data=flowers"], "data.source", schema.FlowersSourceConfig, ["data/source/flowers.yaml"]),
]


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key → value of every leaf (lists are leaves); the defaults list and data.source are left out."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "defaults" or (prefix == "" and key == "source"):
            continue
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _stated(path: str) -> dict[str, Any]:
    """The values a YAML file states itself (interpolations unresolved)."""
    raw = OmegaConf.load(CONF / path)
    assert isinstance(raw, DictConfig)
    return _leaves(OmegaConf.to_container(raw, resolve=False))


def _composed(overrides: list[str], section: str) -> dict[str, Any]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    node = OmegaConf.select(cfg, section)
    return _leaves(OmegaConf.to_container(node, resolve=False))


@pytest.mark.parametrize("overrides,section,cls,files", CHAINS, ids=lambda v: str(v))
def test_composed_config_is_the_schema_where_yaml_is_silent(
    overrides: list[str], section: str, cls: type, files: list[str]
) -> None:
    defaults = _leaves(schema.schema_defaults(cls))
    composed = _composed(overrides, section)
    stated = {k for f in files for k in _stated(f)}
    assert set(defaults) <= set(composed), f"{section}: the schema is not the base of {files}"
    silent = {k: composed[k] for k in defaults if k not in stated}
    assert silent == {k: defaults[k] for k in silent}


@pytest.mark.parametrize("overrides,section,cls,files", CHAINS, ids=lambda v: str(v))
def test_yaml_states_no_value_it_would_get_anyway(
    overrides: list[str], section: str, cls: type, files: list[str]
) -> None:
    inherited = _leaves(schema.schema_defaults(cls))
    for path in files:
        stated = _stated(path)
        same = sorted(k for k, v in stated.items() if k in inherited and inherited[k] == v)
        assert not same, f"conf/{path} restates {same}: the schema (or the file it builds on) already says so"
        inherited.update(stated)


def test_schema_nodes_are_registered() -> None:
    for (group, name), cls in schema.SCHEMA_NODES.items():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            node = compose(config_name=f"{group}/{name}" if group else name)  # "": a primary config's base
        for part in filter(None, group.split("/")):
            node = node[part]
        assert OmegaConf.to_container(node) == dataclasses.asdict(cls())
