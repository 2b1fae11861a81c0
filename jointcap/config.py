"""The configuration's schema, checked at the start of `jointcap.run` before any data work.

Typed dataclasses mirror `conf/model/*.yaml` (the arguments of `JointCaptionModule`) and
`conf/data/datamodule.yaml` (those of `JointDataModule`); field metadata carries the allowed
values and ranges. `validate(cfg)` reports every problem at once, each naming its key and
what is allowed:
* a key the schema does not know, unless the section's `_target_` accepts it as an argument
  (so a new constructor argument works before the schema learns its type);
* a value of the wrong type (OmegaConf's conversion rules), outside its range, or not one of
  its choices;
* for `data.source`, `trainer`, `callbacks.*` and `logger.*`: a key their `_target_` does not
  take; at the top level: a key neither this schema nor `conf/config.yaml` declares.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jointcap.losses import DIVERGENCES, GRAD_TO
from jointcap.models.encoder import _RESNETS as ENCODERS
from jointcap.models.joint import TASKS

PRIMARY_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "config.yaml"
TOKENIZER_TYPES = ("unigram", "bpe", "char", "word")  # SentencePiece model types
SCHEDULERS = ("cosine", "none")


class ConfigError(ValueError):
    """The composed configuration is invalid; the message lists every problem."""


def choice(default: Any, options: tuple) -> Any:
    """A field whose value must be one of `options`."""
    return field(default=default, metadata={"choices": tuple(options)})


def at_least(default: Any, low: float) -> Any:
    """A field whose value must be ≥ `low`."""
    return field(default=default, metadata={"min": low})


def above(default: Any, low: float) -> Any:
    """A field whose value must be > `low`."""
    return field(default=default, metadata={"above": low})


def fraction(default: float) -> Any:
    """A field whose value must lie in [0, 1)."""
    return field(default=default, metadata={"min": 0.0, "below": 1.0})


# -- model (conf/model/*.yaml → jointcap.lit_module.JointCaptionModule) -----------------------
@dataclass
class EncoderConfig:
    name: str = choice("resnet18", ENCODERS)
    weights: Optional[str] = None
    stage: int = choice(3, (1, 2, 3, 4))
    output_stride: int = choice(8, (8, 16, 32))


@dataclass
class EmbeddingConfig:
    dim: int = at_least(256, 1)
    dropout: float = fraction(0.0)


@dataclass
class ClassifierConfig:
    dropout: float = fraction(0.2)


@dataclass
class CaptionerConfig:
    embed_dim: int = at_least(128, 1)
    hidden_dim: int = at_least(256, 1)
    attn_dim: int = at_least(128, 1)
    dropout: float = fraction(0.3)


@dataclass
class LossConfig:
    caption_weight: float = at_least(1.0, 0)
    cam_weight: float = at_least(1.0, 0)
    divergence: str = choice("js", DIVERGENCES)
    grad_to: str = choice("both", GRAD_TO)
    warmup_epochs: float = at_least(1.0, 0)
    doubly_stochastic: float = at_least(0.0, 0)
    label_smoothing: float = fraction(0.0)


@dataclass
class OptimConfig:
    lr: float = above(1e-3, 0)
    weight_decay: float = at_least(1e-4, 0)
    encoder_lr_mult: float = at_least(1.0, 0)
    warmup_steps: int = at_least(100, 0)
    scheduler: str = choice("cosine", SCHEDULERS)


@dataclass
class DecodeConfig:
    beam_size: int = at_least(1, 1)
    test_beam_size: int = at_least(3, 1)
    max_len: int = at_least(24, 1)
    length_penalty: float = 0.0


@dataclass
class ModelConfig:
    _target_: str = "jointcap.lit_module.JointCaptionModule"
    task: str = choice("joint", TASKS)
    monitor: str = "val/acc1"
    encoder: Optional[EncoderConfig] = field(default_factory=EncoderConfig)
    embedding: Optional[EmbeddingConfig] = field(default_factory=EmbeddingConfig)
    classifier: Optional[ClassifierConfig] = field(default_factory=ClassifierConfig)
    captioner: Optional[CaptionerConfig] = field(default_factory=CaptionerConfig)
    loss: Optional[LossConfig] = field(default_factory=LossConfig)
    optim: Optional[OptimConfig] = field(default_factory=OptimConfig)
    decode: Optional[DecodeConfig] = field(default_factory=DecodeConfig)
    channels_last: bool = False
    num_classes: Optional[int] = at_least(None, 1)
    vocab_size: Optional[int] = at_least(None, 1)


# -- data (conf/data/*.yaml → jointcap.data.datamodule.JointDataModule) -----------------------
@dataclass
class DataConfig:
    _target_: str = "jointcap.data.datamodule.JointDataModule"
    source: Any = None  # checked against its own _target_'s arguments
    cache_root: str = "~/.cache/jointcap/cache"
    batch_size: int = at_least(64, 1)
    eval_batch_size: Optional[int] = at_least(None, 1)
    num_workers: int = at_least(2, 0)
    vocab_size: int = at_least(1000, 8)
    tokenizer_type: str = choice("unigram", TOKENIZER_TYPES)
    max_caption_len: int = at_least(32, 3)
    augment: bool = True
    pin_memory: bool = True
    persistent_workers: bool = True
    seed: int = at_least(0, 0)
    prepare_data_per_node: bool = False


# -- top level (conf/config.yaml) -------------------------------------------------------------
@dataclass
class RunConfig:
    seed: int = at_least(0, 0)
    ckpt_path: Optional[str] = "auto"  # auto | last | null | a checkpoint file
    skip_if_done: bool = False  # return at once when the run folder holds results.json
    test_after_fit: bool = True
    objective: str = "val/acc1"
    objective_mode: str = choice("max", ("min", "max"))


GROUPS = ("data", "model", "trainer", "logger", "callbacks")  # checked section by section below


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of a composed config; return quietly if none."""
    errors = _top_level_errors(cfg)
    if "model" in cfg:
        errors += _section_errors(cfg.model, ModelConfig, "model")
    if "data" in cfg:
        errors += _section_errors(cfg.data, DataConfig, "data")
        source = cfg.data.get("source")
        if source is None or "_target_" not in source:
            errors.append("data.source: missing (a dataset source with a _target_, e.g. data=synthetic)")
        else:
            errors += _target_key_errors(source, "data.source")
    if cfg.get("trainer") is not None:
        errors += _target_key_errors(cfg.trainer, "trainer")
    for group in ("callbacks", "logger"):
        for name, entry in (cfg.get(group) or {}).items():
            if entry is not None:
                errors += _target_key_errors(entry, f"{group}.{name}")
    if errors:
        raise ConfigError(f"invalid configuration ({len(errors)} problem{'s' * (len(errors) > 1)}):\n  - " + "\n  - ".join(errors))


def _top_level_errors(cfg: DictConfig) -> list[str]:
    """Unknown top-level keys, and the typed run settings."""
    declared = set(OmegaConf.load(PRIMARY_CONFIG).keys()) if PRIMARY_CONFIG.is_file() else set()
    known = declared | set(GROUPS) | {f.name for f in dataclasses.fields(RunConfig)}
    errors = [f"{key}: unknown top-level key (known: {', '.join(sorted(known - {'defaults'}))}); declare new ones in conf/config.yaml"
              for key in cfg if key not in known]
    run = {k: cfg[k] for k in (f.name for f in dataclasses.fields(RunConfig)) if k in cfg}
    errors += _value_errors(run, RunConfig, "")
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "auto", "last") and not Path(str(ckpt)).expanduser().is_file():
        errors.append(f"ckpt_path={ckpt}: no such checkpoint file (use auto, last, null or an existing .ckpt)")
    return errors


def _section_errors(section: DictConfig, schema: type, prefix: str) -> list[str]:
    """Type/value errors of a `_target_` section, and keys neither the schema nor the target takes."""
    target = section.get("_target_", None)
    params = _target_params(target) if target else set()
    if isinstance(params, str):
        return [f"{prefix}._target_={target}: {params}"]
    names = {f.name for f in dataclasses.fields(schema)}
    extra = {k for k in section if k not in names}
    unknown = sorted(extra - params) if params is not None else []
    errors = [_unknown(prefix, k, names | (params or set())) for k in unknown]
    try:
        values = OmegaConf.to_container(section, resolve=True)
    except OmegaConfBaseException as e:
        return [*errors, f"{prefix}: {str(e).splitlines()[0]}"]
    return errors + _value_errors({k: v for k, v in values.items() if k in names}, schema, prefix)


def _value_errors(values: dict[str, Any], schema: type, prefix: str) -> list[str]:
    """Type, range and choice errors of `values` against a dataclass schema (recursing into nested ones)."""
    errors: list[str] = []
    fields = {f.name: f for f in dataclasses.fields(schema)}
    node = OmegaConf.structured(schema)
    dotted = f"{prefix}." if prefix else ""
    for key, value in values.items():
        if key not in fields:
            errors.append(_unknown(prefix, key, set(fields)))
            continue
        nested = _dataclass_of(fields[key].type)
        if nested is not None and value is not None:
            if not isinstance(value, dict):
                errors.append(f"{dotted}{key}={value!r}: must be a mapping with keys {', '.join(f.name for f in dataclasses.fields(nested))}")
            else:
                errors += _value_errors(value, nested, f"{dotted}{key}")
            continue
        try:
            node[key] = value
        except OmegaConfBaseException as e:
            errors.append(f"{dotted}{key}={value!r}: {str(e).splitlines()[0]}")
            continue
        problem = _range_problem(node[key], fields[key].metadata)
        if problem:
            errors.append(f"{dotted}{key}={value!r}: {problem}")
    return errors


def _range_problem(value: Any, meta: Any) -> str | None:
    """What is wrong with `value` given a field's `choices` / `min` / `above` / `below` metadata."""
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"must be one of: {', '.join(str(c) for c in meta['choices'])}"
    if "min" in meta and value < meta["min"]:
        return f"must be ≥ {meta['min']}" + (f" and < {meta['below']}" if "below" in meta else "")
    if "above" in meta and value <= meta["above"]:
        return f"must be > {meta['above']}"
    if "below" in meta and value >= meta["below"]:
        return f"must be < {meta['below']}" + (f" and ≥ {meta['min']}" if "min" in meta else "")
    return None


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass inside `X` or `Optional[X]` (annotations are strings here), else None."""
    name = str(annotation).removeprefix("Optional[").removesuffix("]")
    obj = globals().get(name)
    return obj if isinstance(obj, type) and dataclasses.is_dataclass(obj) else None


def _target_key_errors(section: DictConfig, prefix: str) -> list[str]:
    """Keys of an instantiable section that its `_target_` does not accept."""
    target = section.get("_target_", None)
    if target is None:
        return [f"{prefix}: no _target_ to instantiate"]
    params = _target_params(target)
    if isinstance(params, str):
        return [f"{prefix}._target_={target}: {params}"]
    if params is None:
        return []
    return [_unknown(prefix, k, params) for k in section if not str(k).startswith("_") and k not in params]


def _target_params(target: str) -> set[str] | None | str:
    """Argument names `target` takes; None if it takes **kwargs; a message if it cannot be imported."""
    try:
        obj = get_object(target)
        sig = inspect.signature(obj)
    except Exception as e:  # ImportError, AttributeError, ValueError from inspect…
        return f"cannot import it ({type(e).__name__}: {e})"
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {name for name, p in sig.parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _unknown(prefix: str, key: str, allowed: set[str]) -> str:
    where = prefix or "the top level"
    keys = ", ".join(sorted(k for k in allowed if not k.startswith("_")))
    return f"{prefix + '.' if prefix else ''}{key}: unknown key in {where} (allowed: {keys})"
