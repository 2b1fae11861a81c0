"""Resuming killed runs: which checkpoint to resume from, and whether its model matches the config.

`resume_path(mode, run_dir)` picks the checkpoint for `ckpt_path=auto|last`. With the callbacks
of `jointcap.runtime.callbacks.checkpointing`, the stateful training loader
(`jointcap.data.sampling`) and deterministic kernels, a run killed at any point and resumed from
its last checkpoint ends with the same weights and metrics as a run never interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    return [f"model.{key}: {old!r} → {new!r}" for key, old, new in _diff(saved, model_cfg, "")]


def _diff(saved: dict[str, Any], now: dict[str, Any], prefix: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) for keys whose values differ."""
    out = []
    for key in sorted(set(saved) | set(now)):
        if not prefix and key in IGNORED_HPARAMS:
            continue
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _diff(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append((f"{prefix}{key}", old, new))
    return out
