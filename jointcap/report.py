"""The end-of-run summary: a table of the test metrics and where the run's files are."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from rich.console import Console
from rich.table import Table


def print_summary(metrics: dict[str, float], run_dir: Path, trainer: L.Trainer) -> None:
    """Print test metrics (validation ones when there was no test) and the run's paths."""
    shown = {k: v for k, v in metrics.items() if k.startswith("test/")} or {k: v for k, v in metrics.items() if k.startswith("val/")}
    table = Table(title="jointcap: final metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(shown):
        table.add_row(k, f"{shown[k]:.4f}")
    console = Console()
    console.print(table)
    cb = trainer.checkpoint_callback
    if cb is not None:
        console.print(f"best checkpoint: {cb.best_model_path or '-'}")
        console.print(f"last checkpoint: {Path(cb.dirpath) / 'last.ckpt' if cb.dirpath else '-'}")
    console.print(f"run folder (config, metrics.csv, logs): {run_dir}")
