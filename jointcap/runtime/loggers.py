"""A CSVLogger whose metrics.csv survives resuming (Lightning's deletes the file when the run folder is reused).

A resumed run keeps the rows logged before its checkpoint and drops those the killed run logged
after it (it logs them again), so metrics.csv reads as if the run had never been interrupted;
every rewrite of the file is atomic.
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Any, cast

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def _write_rows(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    """Write a whole CSV file atomically (temporary sibling, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ResumingExperimentWriter(ExperimentWriter):
    """Keeps an existing metrics.csv; the first save drops its rows at or after the first new step."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        self._previous: list[dict[str, str]] | None = None
        if path.is_file():
            with open(path, newline="") as f:
                self._previous = list(csv.DictReader(f))

    def save(self) -> None:
        if self._previous is None or not self.metrics:
            return super().save()
        first = min(int(m["step"]) for m in self.metrics)
        kept = [r for r in self._previous if r.get("step") not in (None, "") and int(float(r["step"])) < first]
        self._previous = None
        self._record_new_keys()
        self.metrics_keys = sorted(set(self.metrics_keys).union(*(r.keys() for r in kept)))
        _write_rows(Path(self.metrics_file_path), self.metrics_keys, kept + self.metrics)
        self.metrics = []

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        path = Path(self.metrics_file_path)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows(path, fieldnames, rows)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, writing through `ResumingExperimentWriter`, flushed at every logged step and checkpoint.

    (Rows a killed run held in memory are lost; those logged before its checkpoint are not logged again.)
    """

    def __init__(self, *args: Any, flush_logs_every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "flush_logs_every_n_steps": flush_logs_every_n_steps})

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Rows logged before a checkpoint are on disk whenever it is (a resumed run will not log them again)."""
        self.save()

    @property
    @rank_zero_experiment
    def experiment(self) -> ResumingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumingExperimentWriter(log_dir=self.log_dir)
        return cast(ResumingExperimentWriter, self._experiment)  # the only writer this logger makes
