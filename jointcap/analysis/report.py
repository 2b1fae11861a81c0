"""End-of-job summaries: a table of metrics and where the job's files are."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from rich.console import Console
from rich.table import Table


def print_metrics(metrics: dict[str, float], title: str, paths: dict[str, object]) -> None:
    """The metrics as a table (sorted by name), then one `name: path` line per path."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        table.add_row(k, f"{metrics[k]:.4f}")
    console = Console()
    console.print(table)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def print_summary(metrics: dict[str, float], run_dir: Path, trainer: L.Trainer) -> None:
    """Print test metrics (validation ones when there was no test) and the run's paths."""
    shown = {k: v for k, v in metrics.items() if k.startswith("test/")} or {k: v for k, v in metrics.items() if k.startswith("val/")}
    paths: dict[str, object] = {}
    cb = trainer.checkpoint_callback
    if cb is not None:
        paths["best checkpoint"] = cb.best_model_path or "-"
        paths["last checkpoint"] = Path(cb.dirpath) / "last.ckpt" if cb.dirpath else "-"
    paths["run folder (config, metrics.csv, logs)"] = run_dir
    print_metrics(shown, "jointcap: final metrics", paths)
