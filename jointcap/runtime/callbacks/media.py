"""Log a fixed set of validation images with their CAM/attention overlays and captions.

Each `every_n_epochs` validation, on global rank 0 only: the first `n_images` of the split are
explained in one no-grad batch (`jointcap.analysis.explain`) and drawn by `jointcap.analysis.viz`, then sent to
every logger that can show them: CSV → `<log_dir>/media/epoch_XX.png` (+ `epoch_XX.csv` of
captions), TensorBoard → an image and a text table, W&B → `wandb.Image`s and a `wandb.Table`.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure

from jointcap.analysis import viz
from jointcap.analysis.explain import Explanation, explain

log = logging.getLogger(__name__)


@dataclass
class MediaSample:
    """One explained image, ready to draw and to tabulate."""

    image: np.ndarray  # (S, S, 3) uint8
    panels: list[viz.Panel]
    truth: str
    predicted: str
    generated: str
    reference: str

    @property
    def text(self) -> str:
        return f"true: {self.truth}\npred: {self.predicted}\ngen: {self.generated}\nref: {self.reference}"


class MediaLogger(L.Callback):
    """CAM/attention overlays and reference-vs-generated captions of fixed validation images."""

    def __init__(
        self, every_n_epochs: int = 1, n_images: int = 8, split: str = "val", beam_size: int | None = 1
    ) -> None:
        self.every_n_epochs, self.n_images, self.split, self.beam_size = (
            int(every_n_epochs),
            int(n_images),
            split,
            beam_size,
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.every_n_epochs <= 0 or self.n_images <= 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs and trainer.current_epoch + 1 != trainer.max_epochs:
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or self.split not in getattr(datamodule, "datasets", {}):
            return
        samples = self.samples(pl_module, datamodule)
        if samples:
            self.send(trainer, samples)

    def samples(self, pl_module: Any, datamodule: Any) -> list[MediaSample]:  # a JointCaptionModule, its data
        """Explain the split's first n_images in one batch."""
        dataset = datamodule.datasets[self.split]
        items = [dataset[i] for i in range(min(self.n_images, len(dataset)))]
        if not items:
            return []
        images = torch.stack([it["image"] for it in items])  # (B, 3, S, S) uint8
        ex = explain(pl_module, images, self.beam_size)
        refs = datamodule.references(self.split)
        names = pl_module.info.get("class_names") or []
        return [
            _sample(ex, b, images[b], int(it["label"]), refs[int(it["index"])], names) for b, it in enumerate(items)
        ]

    def send(self, trainer: L.Trainer, samples: list[MediaSample]) -> None:
        """Draw the grid once and hand it to every logger that shows media."""
        fig = viz.grid_figure([s.image for s in samples], [s.panels for s in samples], [s.text for s in samples])
        epoch, step, tag = trainer.current_epoch, trainer.global_step, f"{self.split}/media"
        for logger in trainer.loggers:
            try:
                _send_one(logger, fig, samples, epoch, step, tag)
            except Exception as e:  # media must never stop training
                log.warning("media logging to %s failed: %s", type(logger).__name__, e)


def _sample(ex: Explanation, b: int, image: torch.Tensor, label: int, refs: list[str], names: list[str]) -> MediaSample:
    """Image b of an explanation as panels and caption texts."""
    name = lambda k: names[k] if k < len(names) else str(k)  # noqa: E731
    predicted = (
        f"{name(int(ex.pred[b]))} ({float(ex.probs[b].max()):.2f})"
        if ex.pred is not None and ex.probs is not None
        else "-"
    )
    mean = ex.mean_attention()
    panels = viz.explanation_panels(
        ex.cam[b] if ex.cam is not None else None, mean[b] if mean is not None else None, [], None
    )
    return MediaSample(
        image.permute(1, 2, 0).numpy(), panels, name(label), predicted, ex.captions[b], refs[0] if refs else ""
    )


def _send_one(logger: Logger, fig: Figure, samples: list[MediaSample], epoch: int, step: int, tag: str) -> None:
    """The grid to one logger, in the form it shows best."""
    if isinstance(logger, CSVLogger):
        folder = Path(logger.log_dir) / "media"
        viz.save_figure(fig, folder / f"epoch_{epoch:02d}.png")
        with open(folder / f"epoch_{epoch:02d}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["true", "predicted", "generated", "reference"])
            w.writerows([[s.truth, s.predicted, s.generated, s.reference] for s in samples])
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, viz.figure_array(fig), global_step=step, dataformats="HWC")
        rows = "\n".join(f"| {s.truth} | {s.predicted} | {s.generated} | {s.reference} |" for s in samples)
        logger.experiment.add_text(
            f"{tag}_captions",
            "| true | predicted | generated | reference |\n|---|---|---|---|\n" + rows,
            global_step=step,
        )
    elif isinstance(logger, WandbLogger):
        arrays = [viz.figure_array(viz.image_figure(s.image, s.panels, s.generated, inch=1.6)) for s in samples]
        logger.log_image(key=tag, images=arrays, step=step, caption=[s.text for s in samples])
        logger.log_table(
            key=f"{tag}_captions",
            columns=["epoch", "true", "predicted", "generated", "reference"],
            data=[[epoch, s.truth, s.predicted, s.generated, s.reference] for s in samples],
            step=step,
        )
