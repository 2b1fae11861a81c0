"""The media callback: a PNG with the CSV logger, an image summary in TensorBoard, W&B images and a table."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from jointcap.analysis import viz
from jointcap.runtime.callbacks.media import MediaSample, _send_one
from tests.helpers.ckpt import TinyRun  # the `tiny_run` fixture is a plugin of conftest.py


@pytest.mark.slow
def test_media_png_with_csv_logger(tiny_run: TinyRun) -> None:
    png = tiny_run.run_dir / "media" / "epoch_00.png"
    assert png.is_file()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 800  # 8 rows of image, CAM, attention
    with open(tiny_run.run_dir / "media" / "epoch_00.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and set(rows[0]) == {"true", "predicted", "generated", "reference"}


@pytest.mark.slow
def test_media_image_in_tensorboard(tiny_run: TinyRun) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tiny_run.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    tags = set()
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    assert "val/media" in tags, tags


class _FakeWandb(WandbLogger):
    """A WandbLogger that records what it is asked to log (no wandb run)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def log_image(self, key: str, images: list, step: int | None = None, **kwargs) -> None:
        self.calls.append(("image", {"key": key, "images": images, **kwargs}))

    def log_table(
        self, key: str, columns: list | None = None, data: list | None = None, dataframe=None, step=None
    ) -> None:
        self.calls.append(("table", {"key": key, "columns": columns, "data": data}))


def test_media_to_wandb_images_and_table() -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    panels = viz.explanation_panels(None, None, [], None)
    samples = [MediaSample(image, panels, "a", "b (0.50)", "gen", "ref")] * 2
    fig = viz.grid_figure([s.image for s in samples], [s.panels for s in samples], [s.text for s in samples])
    logger = _FakeWandb()
    _send_one(logger, fig, samples, epoch=3, step=7, tag="val/media")
    (kind1, img), (kind2, table) = logger.calls
    assert kind1 == "image" and len(img["images"]) == 2 and img["images"][0].ndim == 3 and len(img["caption"]) == 2
    assert kind2 == "table" and table["columns"][0] == "epoch" and table["data"][0][3:] == ["gen", "ref"]
