"""End-of-job summaries: a table of metrics and where the job's files are (only files that exist)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from rich.console import Console
from rich.table import Table

from jointcap.data.textsafe import clean_text


def print_metrics(metrics: dict[str, float], title: str, paths: Mapping[str, object]) -> None:
    """The metrics as a table (sorted by name), then one `name: path` line per path, never wrapped.

    Paths go through plain `print`: rich wraps at 80 columns when stdout is not a terminal (a log
    file, a pipe), which would break a path copied from there.
    """
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        table.add_row(k, f"{metrics[k]:.4f}")
    Console().print(table)
    for name, path in paths.items():
        print(f"{name}: {path}", flush=True)


def checkpoint_epoch(path: Path | str | None) -> int | None:
    """The epoch a checkpoint was saved at (0-based, as its file name and metrics.csv count), or None."""
    if not path or not Path(path).is_file():
        return None
    from jointcap.runtime.checkpoint import load_checkpoint

    epoch = load_checkpoint(path, mmap=True).get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None  # untrusted: a number or nothing


def print_samples(
    predictions: dict[int, str], references: list[list[str]], keys: list[str] | None = None, n: int = 8
) -> None:
    """A handful of generated captions next to a reference, so a person reads the words and not only the scores."""
    if not predictions:
        return
    chosen = sorted(predictions)[:: max(1, len(predictions) // n)][:n]  # spread over the split
    print("sample captions (generated | first reference):", flush=True)
    for i in chosen:
        name = keys[i] if keys is not None and i < len(keys) else str(i)
        ref = references[i][0] if i < len(references) and references[i] else ""
        print(f"  {clean_text(name)}: {clean_text(predictions[i])} | {clean_text(ref)}", flush=True)


def run_paths(run_dir: Path, trainer: L.Trainer | None = None) -> dict[str, Path]:
    """The files a run left that a user looks for next: checkpoints, metrics.csv, TensorBoard logs, media, results."""
    run_dir = Path(run_dir)
    paths: dict[str, Path] = {}
    cb: Any = trainer.checkpoint_callback if trainer is not None else None  # a ModelCheckpoint or None
    if cb is not None and cb.best_model_path and Path(cb.best_model_path).is_file():
        paths["best checkpoint"] = Path(cb.best_model_path)
    last = Path(cb.dirpath) / "last.ckpt" if cb is not None and cb.dirpath else run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        paths["last checkpoint"] = last
    for name, rel in (
        ("metrics", "metrics.csv"),
        ("results", "results.json"),
        ("TensorBoard logs", "tensorboard"),
        ("media", "media"),
        ("W&B", "wandb"),
    ):
        if (run_dir / rel).exists():
            paths[name] = run_dir / rel
    paths["run folder"] = run_dir
    return paths


def print_summary(metrics: dict[str, float], run_dir: Path, trainer: L.Trainer, source: str = "") -> None:
    """Print test metrics (validation ones when there was no test), where they come from, and the run's files."""
    shown = {k: v for k, v in metrics.items() if k.startswith("test/")} or {
        k: v for k, v in metrics.items() if k.startswith("val/")
    }
    print_metrics(shown, "jointcap: final metrics", run_paths(run_dir, trainer))
    if source:  # plain print: rich would wrap a long title at 80 columns in a log
        print(f"these metrics: {source}", flush=True)
