"""Every decode case of the cache builder: decoded correctly, or reported by file name and skippable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jointcap.data import cache
from jointcap.data.realdata import ImageDecodeError, Record, decode_resized, write_records

SIZE = 16


def _record(path: Path, **kw) -> Record:
    return Record(path.name, path, 0, ["a caption"], **kw)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((20, 30), 32768, np.uint16)).save(path)  # mid-grey in 16 bits
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    array, _ = decode_resized(path, SIZE)
    assert abs(int(array.mean()) - 128) <= 1  # Pillow's own I;16 → RGB gives 255


def test_float_image_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    with pytest.raises(ImageDecodeError, match="float.tif"):
        decode_resized(path, SIZE)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "CMYK", "L", "1"])
def test_other_modes_decode_to_rgb(tmp_path: Path, mode: str) -> None:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    img = rgb.convert("RGBA").convert(mode) if mode != "P" else rgb.quantize(8)
    path = tmp_path / f"img.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    array, original = decode_resized(path, SIZE)
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8 and original == (10, 12)


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert decode_resized(path, SIZE)[0].min() == 255


def test_decompression_bomb_is_named_and_skippable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb, good = tmp_path / "bomb.png", tmp_path / "good.png"
    Image.new("RGB", (40, 40)).save(bomb)
    Image.new("RGB", (8, 8)).save(good)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 40² > 2 × 500: Pillow's DecompressionBombError
    with pytest.raises(ImageDecodeError, match="bomb.png"):
        write_records(tmp_path / "split", [_record(good), _record(bomb)], SIZE, skip_bad=False, workers=1)
    skipped = write_records(tmp_path / "split", [_record(good), _record(bomb)], SIZE, skip_bad=True, workers=1)
    assert [s.key for s in skipped] == ["bomb.png"]
    assert cache.read_split(tmp_path / "split").keys == ["good.png"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_image_and_annotations_together(tmp_path: Path, orientation: int) -> None:
    """A marked pixel, stored sideways with an EXIF orientation: in the cache, the part lies on the mark."""
    w, h, px, py = 40, 24, 30, 5
    stored = np.zeros((h, w, 3), np.uint8)
    stored[py - 2 : py + 3, px - 2 : px + 3] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.png"
    img.save(path, exif=exif)
    parts = np.array([[px + 0.5, py + 0.5, 1], [0, 0, 0]], np.float32)
    box = np.array([px - 2, py - 2, 5, 5], np.float32)
    write_records(tmp_path / "split", [_record(path, box=box, parts=parts)], 48, workers=1)
    data = cache.read_split(tmp_path / "split")
    upright_w, upright_h = (h, w) if orientation >= 5 else (w, h)
    assert data.parts is not None and data.boxes is not None
    x, y, _ = data.parts[0, 0]
    cached = np.asarray(data.images[0]).mean(-1)  # (48, 48)
    assert cached[int(y), int(x)] > 200, "the part must land on the mark"
    bx, by, bw, bh = data.boxes[0]
    assert bw == pytest.approx(5 * 48 / upright_w) and bh == pytest.approx(5 * 48 / upright_h)
    assert bx <= x <= bx + bw and by <= y <= by + bh
    assert data.parts[0, 1].tolist() == [0, 0, 0]  # an invisible part stays at (0, 0)
