"""Per-image test results of a training run: `<run>/test_predictions.csv`, for paired study statistics.

`PerImagePredictions` collects the records `JointCaptionModule._eval_step` returns during the test
after fitting: one row per test image with its key, label, prediction, correctness, confidence
and generated caption, the image's group when the split stores one (`extra["group"]`, the
shortcut split's aligned/conflicting), and any other per-image score in the record (a 1-D
tensor with one value per image, e.g. a caption-correctness score), so new per-image scores
reach the file without changing it. Written atomically, on global rank 0 only (a DDP test
would give each rank part of the images: the file is then rank 0's share).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

PREDICTIONS_FILE = "test_predictions.csv"
_SKIP = {"index", "label", "pred", "prob"}  # written under their own columns


class PerImagePredictions(L.Callback):
    """Write one CSV row per test image (key, label, pred, correct, prob, caption, group, per-image scores)."""

    def __init__(self, dirpath: str, filename: str = PREDICTIONS_FILE) -> None:
        self.path = Path(dirpath) / filename
        self.rows: dict[int, dict[str, Any]] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = {}

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "index" not in outputs:
            return
        dm = getattr(trainer, "datamodule", None)
        split = dm.splits["test"] if dm is not None else None
        keys = split.keys if split is not None else None
        groups = split.extra.get("group") if split is not None else None
        tokenizer = getattr(pl_module, "tokenizer", None)
        index = outputs["index"].tolist()
        scores = {
            k: v.detach().float().cpu().tolist()
            for k, v in outputs.items()
            if k not in _SKIP and isinstance(v, torch.Tensor) and v.ndim == 1 and len(v) == len(index)
        }
        for b, i in enumerate(index):
            label = int(outputs["label"][b])
            row: dict[str, Any] = {"index": i, "key": keys[i] if keys is not None else i, "label": label}
            if "pred" in outputs:
                pred = int(outputs["pred"][b])
                row.update(pred=pred, correct=int(pred == label), prob=round(float(outputs["prob"][b]), 6))
            if "tokens" in outputs and tokenizer is not None:
                row["caption"] = tokenizer.decode(outputs["tokens"][b].tolist())
            if groups is not None:
                row["group"] = int(groups[i])
            row.update({k: v[b] for k, v in scores.items()})
            self.rows.setdefault(i, row)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            write_rows(self.path, [self.rows[i] for i in sorted(self.rows)])


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows of dicts as CSV (header: the union of keys, first-seen order), via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path
