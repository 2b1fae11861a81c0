"""Resuming killed runs: which checkpoint to resume from, and whether its model matches the config;
whether a finished run in a folder is the job asked for (`skip_if_done`).

`resume_path(mode, run_dir)` picks the checkpoint for `ckpt_path=auto|last`. With the callbacks
of `jointcap.runtime.callbacks.checkpointing`, the stateful training loader
(`jointcap.data.sampling`) and deterministic kernels, a run killed at any point and resumed from
its last checkpoint ends with the same weights and metrics as a run never interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from jointcap.config import DataConfig, ModelConfig, schema_defaults
from jointcap.runtime.checkpoint import load_checkpoint, remove_stale_temps

RESUME_MODES = ("auto", "last")
# filled in from the data, or how (not what) the model computes: a resume may change these
IGNORED_HPARAMS = ("_target_", "num_classes", "vocab_size", "compile", "channels_last")


def resume_path(mode: str, run_dir: Path) -> Path | None:
    """The newest checkpoint a run folder can resume from: `checkpoints/last.ckpt` or a SLURM `hpc_ckpt_*.ckpt`."""
    if mode not in RESUME_MODES:
        raise ValueError(f"resume mode must be one of {RESUME_MODES}, got {mode!r}")
    remove_stale_temps(run_dir / "checkpoints")
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def hparams_mismatch(ckpt_path: Path, model_cfg: dict[str, Any]) -> list[str]:
    """`key: saved → now` for every model setting that differs between a checkpoint and the config."""
    saved = load_checkpoint(ckpt_path, mmap=True).get("hyper_parameters", {})
    defaults = schema_defaults(ModelConfig)
    return [f"model.{key}: {old!r} → {new!r}" for key, old, new in _diff(saved, model_cfg, "", defaults)]


_ABSENT = object()


def _diff(saved: dict[str, Any], now: dict[str, Any], prefix: str, defaults: Any = None) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) for keys whose values differ. A key the saved side lacks (an
    option added to the code since) is no difference while its current value is the schema's default (`defaults`,
    the same level of the schema), which by the rule for new options is the behaviour from before the option."""
    out = []
    defaults = defaults if isinstance(defaults, dict) else {}
    for key in sorted(set(saved) | set(now)):
        if not prefix and key in IGNORED_HPARAMS:
            continue
        old, new = saved.get(key), now.get(key)
        default = defaults.get(key, _ABSENT)
        if key not in saved and key in now and default == new:
            continue
        if key not in saved and isinstance(new, dict) and isinstance(default, dict):  # a whole section added
            old = {}
        if isinstance(old, dict) and isinstance(new, dict):
            out += _diff(old, new, f"{prefix}{key}.", default)
        elif old != new:
            out.append((f"{prefix}{key}", old, new))
    return out


# what makes a finished run the same job as this one (skip_if_done): the settings that change its results
JOB_KEYS = ("seed", "model", "data", "trainer.max_epochs", "trainer.precision")
# how (not what) a job computes: another value here is still the same job (the model's compile and channels_last
# are skipped by `_diff`'s IGNORED_HPARAMS already)
JOB_IGNORED = ("data.num_workers",)
JOB_SCHEMAS = {"model": schema_defaults(ModelConfig), "data": schema_defaults(DataConfig)}  # new options' defaults


def job_mismatch(recorded: Path, cfg: DictConfig) -> list[str]:
    """`key: recorded → now` for every JOB_KEYS setting in which the job recorded in a run folder (its first
    `.hydra/config.yaml`) differs from `cfg` (both as composed, interpolations unresolved); [] when they agree or
    when the folder has no readable record (a run from before records were kept)."""
    try:
        saved = OmegaConf.load(recorded)
    except (OSError, ValueError, yaml.YAMLError):
        return []
    if not isinstance(saved, DictConfig):
        return []
    out = []
    for key in JOB_KEYS:
        old, new = _plain(OmegaConf.select(saved, key)), _plain(OmegaConf.select(cfg, key))
        if isinstance(old, dict) and isinstance(new, dict):
            diffs = [(f"{key}.{k}", a, b) for k, a, b in _diff(old, new, "", JOB_SCHEMAS.get(key))]
        else:
            diffs = [(key, old, new)] if old != new else []
        out += [f"{k}: {a!r} → {b!r}" for k, a, b in diffs if not k.startswith(JOB_IGNORED)]
    return out


def _plain(node: Any) -> Any:
    """A config node as plain Python values, interpolations left as written."""
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node
