"""`jointcap.predict` on odd inputs: tiny, grey, alpha, CMYK, BMP, palette, and a text file named .jpg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jointcap.data.realdata import ImageDecodeError
from jointcap.predict import expand, load_image
from tests.conftest import run_cli
from tests.helpers.ckpt import TinyRun  # the `tiny_run` fixture is a plugin of conftest.py


def _odd_images(folder: Path) -> dict[str, Path]:
    """Small images in awkward formats, and one text file with an image name."""
    rng = np.random.default_rng(0)
    rgb = lambda h, w: rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # noqa: E731
    files = {
        "tiny.png": Image.fromarray(rgb(7, 5)),
        "grey.jpg": Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8), "L"),
        "alpha.png": Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA"),
        "cmyk.jpg": Image.fromarray(rgb(50, 40)).convert("CMYK"),
        "bird.bmp": Image.fromarray(rgb(33, 21)),
        "palette.png": Image.fromarray(rgb(20, 90)).convert("P"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, img in files.items():
        img.save(folder / name)
        out[name] = folder / name
    (folder / "x.jpg").write_text("this is not an image\n")
    out["x.jpg"] = folder / "x.jpg"
    return out


def test_load_image_squashes_every_mode_to_rgb(tmp_path: Path) -> None:
    files = _odd_images(tmp_path)
    for name, path in files.items():
        if name == "x.jpg":
            with pytest.raises(ImageDecodeError, match="x.jpg"):
                load_image(path, 64)
            continue
        image = load_image(path, 64)
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8, name
    assert expand([str(tmp_path)]) == sorted(files.values())  # a folder → its files with image suffixes


@pytest.mark.slow
def test_predict_cli_on_odd_inputs(tiny_run: TinyRun, tmp_path: Path) -> None:
    ckpt = torch.load(tiny_run.ckpt, map_location="cpu", weights_only=True)
    assert ckpt["jointcap"]["image_size"] == 64, "the training image size must travel with the checkpoint"
    files = _odd_images(tmp_path / "in")
    out = tmp_path / "out"
    images = "[" + ",".join(str(p) for p in files.values()) + "]"
    proc = run_cli(
        [f"ckpt_path={tiny_run.ckpt}", f"images={images}", f"out_dir={out}"],
        cwd=tmp_path,
        module="jointcap.predict",
        check=False,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # the text file is an error, the rest predicted
    assert "x.jpg" in proc.stderr and "cannot decode" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(tmp_path))]
    assert len(lines) == 6, proc.stdout
    assert all("(0." in ln or "(1.000)" in ln for ln in lines), lines  # class name (probability)
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == sorted(f"{Path(n).stem}.png" for n in files if n != "x.jpg")
    with Image.open(out / "tiny.png") as fig:
        assert fig.size[0] > 300 and fig.size[1] > 150
