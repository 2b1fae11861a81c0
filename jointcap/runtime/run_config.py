"""Reading a run folder's saved config (`<run>/.hydra/config.yaml`) as untrusted input.

A shared run folder can hold any YAML. Its `data` section is only used when it passes the
config schema (`jointcap.config`) and every `_target_` in it is one jointcap knows (the data
module and the dataset sources); anything else, e.g. `_target_: torch.load` with
`weights_only: false`, is refused before anything is instantiated, with an error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jointcap.config import SOURCES, ConfigError, DataConfig, validate

TRUSTED_DATA_TARGETS = frozenset({DataConfig._target_, *SOURCES})


class RunConfigError(ConfigError):
    """A run folder's saved config is unreadable, invalid or names code jointcap does not trust."""


def _targets(node: Any, where: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every `_target_` (and Hydra instantiation key) anywhere under `node`."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if key in ("_target_", "_partial_", "_args_", "_call_"):
                found.append((here, value))
            found += _targets(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _targets(value, f"{where}[{i}]")
    return found


def load_run_data_config(path: Path) -> DictConfig:
    """The resolved, validated `data` section of a run folder's config.yaml; RunConfigError names the file otherwise."""
    try:
        run = OmegaConf.load(path)
        data = OmegaConf.to_container(run.data, resolve=True) if isinstance(run, DictConfig) and "data" in run else None
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as e:
        raise RunConfigError(f"{path}: unreadable run config ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: no data section to evaluate with; pass data=… on the command line")
    raw = OmegaConf.to_container(run.data, resolve=False)
    bad = [
        f"{key}={value!r}"
        for key, value in _targets(raw, "data")
        if not (key.endswith("._target_") and value in TRUSTED_DATA_TARGETS)
    ]
    if bad:
        raise RunConfigError(
            f"{path}: refusing to instantiate {', '.join(bad)}: a run folder's config may only name "
            f"jointcap's data targets ({', '.join(sorted(TRUSTED_DATA_TARGETS))}); pass data=… instead"
        )
    try:
        validate(OmegaConf.create({"data": data}))
    except ConfigError as e:
        raise RunConfigError(f"{path}: {e}") from None
    return OmegaConf.create(data)
