"""Reading a run folder's saved config (`<run>/.hydra/config.yaml`) as untrusted input: an allow-list.

A run folder from someone else may say *which* data it was trained on, never *where* data lives:
* which preset: `data.source._target_` must be one of jointcap's sources (`PRESETS`); it picks the
  user's own `data=<preset>` config, composed from the user's files and command line;
* what changes the data's content: the keys of `RUN_DATA_KEYS` and `RUN_SOURCE_KEYS` (generator
  options, split, image size, seeds, tokenizer settings) are taken from the run folder, as plain
  values or plain references to other keys (`${seed}`), never through a resolver (`${oc.env:…}`);
  they must pass the schema and the size limits below;
* everything else (data roots, cache_root, archives, folders, URLs, md5s, download, workers, batch
  sizes) comes from the user's config: the run folder's values are ignored, with a warning naming
  the keys where they differ from the user's.
A value that is not allowed where it stands (an unknown source, a resolver, a mapping, an
out-of-range or oversized value) is refused with `RunConfigError`, naming the file and the key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jointcap.config import (
    ConfigError,
    CUBSourceConfig,
    DataConfig,
    FlowersSourceConfig,
    HardSyntheticSourceConfig,
    SyntheticSourceConfig,
    validate,
)

log = logging.getLogger("jointcap")

# the data preset (conf/data/<name>.yaml) of each source a run folder may name
PRESETS = {
    SyntheticSourceConfig._target_: "synthetic",
    HardSyntheticSourceConfig._target_: "synthetic_hard",
    CUBSourceConfig._target_: "cub",
    FlowersSourceConfig._target_: "flowers",
}
# JointDataModule settings a run folder may give: they decide the tokenizer and the samples (batch_size is the
# training batch, checked against the training split; evaluation batches are the user's eval_batch_size)
RUN_DATA_KEYS = frozenset({"vocab_size", "tokenizer_type", "max_caption_len", "seed", "augment", "batch_size"})
# per source: the settings that say what the data is (a name listed here that a schema lacks is skipped)
RUN_SOURCE_KEYS = {
    "synthetic": frozenset(
        {"n_classes", "image_size", "n_train", "n_val", "n_test", "seed", "captions_per_image", "clutter"}
    ),
    "synthetic_hard": frozenset(
        {
            "n_classes",
            "image_size",
            "per_class",
            "val_per_class",
            "test_per_class",
            "seed",
            "captions_per_image",
            "clutter",
            "occlusion",
            "lighting",
            "shortcut",
            "shortcut_p",
            "captions",
        }
    ),
    "cub": frozenset({"image_size", "split", "val_fraction", "seed", "skip_bad", "min_captions"}),
    "flowers": frozenset({"image_size", "split", "skip_bad", "min_captions"}),
}
# Sizes a run folder may ask for (they reach the disk and memory when the cache is built); larger data
# needs the user's own data=… on the command line.
MAX_CACHE_BYTES = 16 * 2**30  # images × image_size² × 3 (the uint8 cache)
MAX_CAPTIONS_PER_IMAGE = 100
MAX_VOCAB_SIZE = 2**16
MAX_CAPTION_LEN = 512
REAL_IMAGES = {"cub": 11_788, "flowers": 8_189}
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}$")


class RunConfigError(ConfigError):
    """A run folder's saved config is unreadable, invalid or says something it may not."""


def run_preset(path: Path) -> str:
    """The data preset a run folder's config names (by its source's `_target_`); RunConfigError otherwise."""
    raw = _raw(path)
    data = raw.get("data")
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: no data section to evaluate with; pass data=… on the command line")
    target = data.get("_target_")
    if target != DataConfig._target_:
        raise RunConfigError(
            f"{path}: refusing to instantiate data._target_={target!r}: a run folder's config may only name "
            f"jointcap's data module ({DataConfig._target_}); pass data=… instead"
        )
    source = data.get("source")
    target = source.get("_target_") if isinstance(source, dict) else None
    if target not in PRESETS:
        raise RunConfigError(
            f"{path}: refusing to instantiate data.source._target_={target!r}: a run folder's config may only name "
            f"one of jointcap's data sources ({', '.join(sorted(PRESETS))}); pass data=… instead"
        )
    return PRESETS[target]


def load_run_data_config(path: Path, user_config: Callable[[str], DictConfig]) -> DictConfig:
    """The data config for evaluating a run folder's checkpoint: the user's own `data=<preset>` config
    (`user_config(preset)` composes it, with `data` and what it interpolates) with the run's allowed
    settings put in. Resolved and validated; RunConfigError names the file and key otherwise."""
    preset = run_preset(path)
    raw = _raw(path)
    user = user_config(preset)
    run_data: dict[str, Any] = raw["data"]
    taken = {f"data.{k}": _allowed(raw, path, f"data.{k}") for k in sorted(RUN_DATA_KEYS) if k in run_data}
    taken |= {
        f"data.source.{k}": _allowed(raw, path, f"data.source.{k}")
        for k in sorted(RUN_SOURCE_KEYS[preset])
        if k in run_data["source"]
    }
    _warn_ignored(path, run_data, OmegaConf.to_container(user.data, resolve=False), preset)
    if user.data.get("eval_batch_size") is None:  # null means batch_size: keep it the user's
        user.data.eval_batch_size = user.data.batch_size
    for key, value in taken.items():
        OmegaConf.update(user, key, value, force_add=True)
    try:
        data = OmegaConf.to_container(user.data, resolve=True)
        validate(OmegaConf.create({"data": data}))
    except ConfigError as e:
        raise RunConfigError(f"{path}: {e}") from None
    except OmegaConfBaseException as e:
        raise RunConfigError(f"{path}: {str(e).splitlines()[0]}") from None
    assert isinstance(data, dict)
    _check_sizes(path, preset, cast(dict[str, Any], data))
    return OmegaConf.create(data)


def _raw(path: Path) -> dict[str, Any]:
    """The run folder's config as plain, unresolved YAML data."""
    try:
        run = OmegaConf.load(path)
        raw = OmegaConf.to_container(run, resolve=False) if isinstance(run, DictConfig) else None
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as e:
        raise RunConfigError(f"{path}: unreadable run config ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise RunConfigError(f"{path}: no data section to evaluate with; pass data=… on the command line")
    return cast(dict[str, Any], raw)


def _allowed(raw: dict[str, Any], path: Path, key: str, hops: int = 0) -> Any:
    """A plain value for `key`: a scalar, or a plain reference (`${seed}`) followed to one; never a resolver."""
    value = _select(raw, key)
    if isinstance(value, str) and "${" in value:
        m = _REFERENCE.match(value)
        if m is None or hops >= 8:
            raise RunConfigError(
                f"{path}: {key}={value!r}: a run folder's config may give this setting as a plain value or a "
                "plain ${{key}} reference, not through a resolver; pass data=… instead"
            )
        return _allowed(raw, path, m.group(1), hops + 1)
    if isinstance(value, (dict, list)):
        raise RunConfigError(f"{path}: refusing {key}={value!r}: a run folder's config may only give a plain value")
    return value


def _select(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RunConfigError(f"{key}: referenced but missing")
        node = node[part]
    return node


def _warn_ignored(path: Path, run_data: dict[str, Any], user_data: Any, preset: str) -> None:
    """Warn about the run folder's settings that are not taken and differ from the user's own."""
    user_data = user_data if isinstance(user_data, dict) else {}
    user_source = user_data.get("source") if isinstance(user_data.get("source"), dict) else {}
    ignored = [
        f"data.{k}"
        for k, v in run_data.items()
        if k not in RUN_DATA_KEYS and k not in ("_target_", "source") and user_data.get(k) != v
    ]
    ignored += [
        f"data.source.{k}"
        for k, v in run_data["source"].items()
        if k not in RUN_SOURCE_KEYS[preset] and k != "_target_" and user_source.get(k) != v
    ]
    if ignored:
        log.warning(
            "%s: not taken from the run folder (paths, downloads, checksums and resources come from your own "
            "config): %s",
            path,
            ", ".join(ignored),
        )


def _check_sizes(path: Path, preset: str, data: dict[str, Any]) -> None:
    """Refuse data a run folder would make too large to build (cache bytes, captions, vocabulary)."""
    s = data["source"]
    size = int(s.get("image_size", 0))
    images = {
        "synthetic": lambda: s["n_train"] + s["n_val"] + s["n_test"],
        "synthetic_hard": lambda: s["n_classes"] * (s["per_class"] + s["val_per_class"] + s["test_per_class"]),
    }.get(preset, lambda: REAL_IMAGES[preset])()
    problems = []
    if images * size * size * 3 > MAX_CACHE_BYTES:
        problems.append(
            f"a cache of {images} images at {size} px ({images * size * size * 3 / 2**30:.0f} GiB; "
            f"at most {MAX_CACHE_BYTES // 2**30} GiB)"
        )
    if int(s.get("captions_per_image", 0)) > MAX_CAPTIONS_PER_IMAGE:
        problems.append(f"data.source.captions_per_image={s['captions_per_image']} (at most {MAX_CAPTIONS_PER_IMAGE})")
    if int(data.get("vocab_size", 0)) > MAX_VOCAB_SIZE:
        problems.append(f"data.vocab_size={data['vocab_size']} (at most {MAX_VOCAB_SIZE})")
    if int(data.get("max_caption_len", 0)) > MAX_CAPTION_LEN:
        problems.append(f"data.max_caption_len={data['max_caption_len']} (at most {MAX_CAPTION_LEN})")
    if problems:
        raise RunConfigError(
            f"{path}: the run folder asks for {'; '.join(problems)}; pass data=… yourself to build data this large"
        )
