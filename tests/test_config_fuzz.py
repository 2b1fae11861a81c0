"""Fuzz the config validator over the whole schema: every field refuses a wrong type, an out-of-range value,
NaN/±inf (numbers) and its neighbour key misspelt; a new field that lets one through fails here."""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Union

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from jointcap import config as schema
from jointcap.config import ConfigError, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
# Where each schema lives in a composed config, and the data= choice that composes it.
SECTIONS = [
    (schema.RunConfig, "", "synthetic"),
    (schema.ModelConfig, "model", "synthetic"),
    (schema.DataConfig, "data", "synthetic"),
    (schema.TrainerConfig, "trainer", "synthetic"),
    (schema.SyntheticSourceConfig, "data.source", "synthetic"),
    (schema.HardSyntheticSourceConfig, "data.source", "synthetic_hard"),
    (schema.CUBSourceConfig, "data.source", "cub"),
    (schema.FlowersSourceConfig, "data.source", "flowers"),
]


@functools.cache
def _composed(data: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[f"data={data}"])


def _base(ann: Any) -> Any:
    """X of Optional[X]."""
    union = typing.get_origin(ann) in (Union, types.UnionType)
    args = [a for a in typing.get_args(ann) if a is not type(None)] if union else [ann]
    return args[0]


def _fields(cls: type, prefix: str) -> list[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) of every leaf field of a schema, nested dataclasses included."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "_target_":
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        base = _base(hints[f.name])
        if isinstance(base, type) and dataclasses.is_dataclass(base):
            out.append((key, f, base))
            out += _fields(base, key)
        else:
            out.append((key, f, base))
    return out


def _bad_values(f: dataclasses.Field, base: Any) -> list[tuple[str, Any]]:
    """(what, value) pairs that the field must refuse."""
    meta = f.metadata
    if dataclasses.is_dataclass(base) or base is Any:  # Any: data.source, checked by its own schema above
        return [("scalar for a section", 5)]
    if base is bool:
        return [("string", "maybe"), ("truthy string", "no"), ("integer", 2)]
    if base is str:
        return [("mapping", {"a": 1})] + ([("not a choice", "zzz-no-such-choice")] if "choices" in meta else [])
    if typing.get_origin(base) is list:
        return [("scalar", 5)] + ([("bad item", ["zzz-no-such-choice"])] if "each" in meta else [])
    if base in (int, float):
        bad: list[tuple[str, Any]] = [("string", "abc")]
        bad += (
            [("fraction", 1.5)]
            if base is int
            else [("NaN", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]
        )
        if "choices" in meta:
            bad.append(("not a choice", max(meta["choices"]) + 1))
        if "min" in meta:
            bad.append(("below min", meta["min"] - 1))
        if "above" in meta:
            bad.append(("at the open bound", meta["above"]))
        if "below" in meta:
            bad.append(("at the upper bound", meta["below"]))
        if "max" in meta:
            bad.append(("above max", meta["max"] + 1))
        return bad
    raise AssertionError(f"{f.name}: a field type the fuzz test does not know ({base}); teach it, and the validator")


CASES = [
    (section, data, key, _bad_values(f, base))
    for cls, section, data in SECTIONS
    for key, f, base in _fields(cls, section)
]


def _with(data: str, key: str, value: Any) -> DictConfig:
    cfg = copy.deepcopy(_composed(data))
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def test_the_composed_defaults_are_valid() -> None:
    for data in ("synthetic", "cub", "flowers"):
        validate(_composed(data))


@pytest.mark.parametrize(
    "section,data,key,bad", CASES, ids=[c[2] + (f"[{c[1]}]" if c[0] == "data.source" else "") for c in CASES]
)
def test_every_field_refuses_bad_values(section: str, data: str, key: str, bad: list[tuple[str, Any]]) -> None:
    for what, value in bad:
        with pytest.raises(ConfigError) as err:
            validate(_with(data, key, value))
        assert key in str(err.value), f"{key}={value!r} ({what}) refused without naming the key:\n{err.value}"


@pytest.mark.parametrize("cls,section,data", [(c, s, d) for c, s, d in SECTIONS])
def test_every_section_refuses_unknown_keys(cls: type, section: str, data: str) -> None:
    for key, _f, _base in _fields(cls, section):
        typo = f"{key}_typo"
        with pytest.raises(ConfigError, match=typo.replace(".", r"\.")):
            validate(_with(data, typo, 1))


@pytest.mark.parametrize("cls,section,data", SECTIONS)
def test_every_numeric_field_declares_its_range(cls: type, section: str, data: str) -> None:
    """A new int/float field must say what is allowed (or declare `unbounded()`), so out-of-range values are caught."""
    for key, f, base in _fields(cls, section):
        if base in (int, float):
            assert {"min", "above", "below", "max", "choices", "unbounded"} & set(f.metadata), (
                f"{key}: no range declared"
            )


@pytest.mark.parametrize(
    "source",
    [
        schema.CUBSourceConfig,
        schema.FlowersSourceConfig,
        schema.SyntheticSourceConfig,
        schema.HardSyntheticSourceConfig,
    ],
)
def test_source_schemas_match_their_constructors(source: Any) -> None:
    import inspect

    from hydra.utils import get_object

    params = set(inspect.signature(get_object(source._target_)).parameters)
    fields = {f.name for f in dataclasses.fields(source)} - {"_target_"}
    assert fields == params, f"{source.__name__}: schema {sorted(fields ^ params)} differ from the constructor's"
