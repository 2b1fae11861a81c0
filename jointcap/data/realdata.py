"""The caching step shared by the downloaded datasets (CUB, Flowers): image files → decode-once cache.

A `Record` is one image file with its label, captions and (CUB) box and part locations in
original pixels. `build_cache` decodes every image once with PIL, turns it upright by its EXIF
orientation (boxes and parts turn with it), converts it to RGB (grey, CMYK, palette, alpha over
white, and 16-bit grey scaled to 8 bits rather than clipped), SQUASHES it to `size`×`size` (no
crop, the aspect ratio is not kept, so the whole object stays in view and boxes/parts scale by a
plain per-axis factor), scales boxes and parts by the same factors, and writes the splits and
`info.json`. An image that cannot be decoded, or is over Pillow's decompression-bomb limit,
raises ImageDecodeError naming its file (skipped with `skip_bad`).
If anything fails, the splits this call wrote are removed, so no complete cache is left.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from jointcap.data import cache
from jointcap.data.captions import Skipped
from jointcap.data.download import DataFileError, Remote

log = logging.getLogger(__name__)


class ImageDecodeError(DataFileError):
    """An image file cannot be read or decoded; the message names the file."""


@dataclass
class Record:
    """One image to cache: file, 0-based label, captions, optional box (x,y,w,h) and parts (P,3)."""

    key: str
    path: Path
    label: int
    captions: list[str]
    box: np.ndarray | None = None
    parts: np.ndarray | None = None


ORIENTATION = 0x0112  # the EXIF tag; 1 = upright, 2…8 = mirrored and/or rotated
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """`img` as 8-bit RGB: 16-bit grey scaled (Pillow's own conversion clips it to white), alpha over white."""
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        arr = np.asarray(img, dtype=np.int64)  # (H, W)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageDecodeError(f"{path}: {img.mode} image with values outside 0..65535; cannot map it to 8 bits")
        return Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise ImageDecodeError(f"{path}: floating-point image (mode F) has no defined 8-bit range; convert it first")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int], int]:
    """Decode `path` upright to RGB uint8 squashed to (size, size, 3); also the stored (w, h) and EXIF orientation."""
    try:
        with Image.open(path) as img:
            original = img.size
            orientation = int(img.getexif().get(ORIENTATION, 1) or 1)
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale (never below `size`)
            upright = ImageOps.exif_transpose(img) if orientation in range(2, 9) else img
            rgb = to_rgb(upright, path).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"{path}: image too large to decode safely ({e})") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    return np.asarray(rgb, dtype=np.uint8), original, orientation if orientation in range(2, 9) else 1


def decode_resized(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode `path` (upright) to RGB uint8 squashed to (size, size, 3); also return its upright (w, h)."""
    array, (w, h), orientation = decode_image(path, size)
    return array, ((h, w) if orientation >= 5 else (w, h))


def orient_points(xy: np.ndarray, orientation: int, original: tuple[int, int]) -> np.ndarray:
    """(K, 2) x, y in the stored image's pixels → the same points in the upright image (EXIF orientation 1…8)."""
    w, h = original
    x, y = xy[:, 0], xy[:, 1]
    out = {
        1: (x, y),
        2: (w - x, y),
        3: (w - x, h - y),
        4: (x, h - y),
        5: (y, x),
        6: (h - y, x),
        7: (h - y, w - x),
        8: (y, w - x),
    }[orientation]
    return np.stack(out, axis=1).astype(np.float32)


def scale_annotations(
    record: Record, original: tuple[int, int], size: int, orientation: int = 1
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Box and part locations of `record` moved from original (stored, pre-EXIF) to cached pixels."""
    upright = (original[1], original[0]) if orientation >= 5 else original
    sx, sy = size / upright[0], size / upright[1]
    box = None
    if record.box is not None:
        x, y, bw, bh = np.asarray(record.box, np.float32)
        corners = orient_points(np.array([[x, y], [x + bw, y + bh]], np.float32), orientation, original)
        lo, hi = corners.min(0), corners.max(0)
        scale = np.array([sx, sy, sx, sy], np.float32)
        box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float32) * scale
    parts = None
    if record.parts is not None:
        parts = np.array(record.parts, dtype=np.float32)
        visible = parts[:, 2] > 0  # invisible parts stay at CUB's (0, 0)
        parts[visible, :2] = orient_points(parts[visible, :2], orientation, original)
        parts[:, 0] *= sx
        parts[:, 1] *= sy
    return box, parts


def _decode_or_error(item: tuple[Path, int]) -> tuple[np.ndarray, tuple[int, int], int] | ImageDecodeError:
    try:
        return decode_image(*item)
    except ImageDecodeError as e:
        return e


def _decoded(
    records: Sequence[Record], size: int, workers: int
) -> Iterator[tuple[np.ndarray, tuple[int, int], int] | ImageDecodeError]:
    """Decode images in order, on a few threads (PIL releases the GIL while decoding)."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        yield from pool.map(_decode_or_error, [(r.path, size) for r in records])
    finally:  # on an error, do not decode the rest of the split first
        pool.shutdown(wait=True, cancel_futures=True)


def _fill(images: np.ndarray, records: Sequence[Record], size: int, skip_bad: bool, workers: int, desc: str):
    """Write decoded images into `images` (compacted); return kept records, annotations, skipped."""
    kept: list[Record] = []
    boxes: list[Any] = []
    parts: list[Any] = []
    skipped: list[Skipped] = []
    for record, result in tqdm(
        zip(records, _decoded(records, size, workers), strict=False), total=len(records), desc=desc, leave=False
    ):
        if isinstance(result, ImageDecodeError):
            if not skip_bad:
                raise result
            skipped.append(Skipped(record.key, str(record.path), str(result)))
            continue
        array, original, orientation = result
        images[len(kept)] = array
        box, part = scale_annotations(record, original, size, orientation)
        kept.append(record)
        boxes.append(box)
        parts.append(part)
    return kept, boxes, parts, skipped


def _finish(writer: cache.SplitWriter, kept: list[Record], boxes: list, parts: list) -> None:
    has_box = bool(kept) and kept[0].box is not None
    has_parts = bool(kept) and kept[0].parts is not None
    writer.finish(
        labels=[r.label for r in kept],
        captions=[r.captions for r in kept],
        keys=[r.key for r in kept],
        boxes=np.stack(boxes).astype(np.float32) if has_box else None,
        parts=np.stack(parts).astype(np.float32) if has_parts else None,
    )


class _Superseded(Exception):
    """Internal: the full-size writer was replaced by a smaller one after skipping images."""


def write_records(
    directory: Path, records: Sequence[Record], size: int, skip_bad: bool = False, workers: int = 4
) -> list[Skipped]:
    """Cache one split; with `skip_bad`, undecodable images are left out and returned."""
    try:
        with cache.SplitWriter(directory, len(records), size) as writer:
            assert writer.images is not None  # opened by `with`
            kept, boxes, parts, skipped = _fill(
                writer.images, records, size, skip_bad, workers, f"cache {directory.name}"
            )
            if not skipped:
                _finish(writer, kept, boxes, parts)
                return skipped
            with cache.SplitWriter(directory, len(kept), size) as smaller:
                assert smaller.images is not None
                for start in range(0, len(kept), 256):
                    stop = min(start + 256, len(kept))
                    smaller.images[start:stop] = writer.images[start:stop]
                _finish(smaller, kept, boxes, parts)
            raise _Superseded
    except _Superseded:
        pass
    return skipped


def report_skipped(name: str, skipped: Sequence[Skipped]) -> dict:
    """Warn about skipped images (count and first few) and return the info.json entry."""
    if skipped:
        first = ", ".join(s.key for s in skipped[:5])
        log.warning("%s: skipped %d bad image(s) (skip_bad=True), e.g. %s", name, len(skipped), first)
    return {"count": len(skipped), "items": [asdict(s) for s in skipped]}


def files_digest(*parts: object) -> str:
    """8 hex digits naming which files a source reads (its Remotes' names and md5s, folder names): part of a cache key.

    URLs are left out: a mirror of the same (md5-checked) file gives the same cache.
    """
    named = [(p.filename, p.md5) if isinstance(p, Remote) else p for p in parts]
    return hashlib.sha1(repr(named).encode()).hexdigest()[:8]


def check_arguments(owner: str, **values: object) -> None:
    """Type and range checks shared by the real sources' constructors (a YAML 'no' is a string, not False)."""
    for name in ("download", "skip_bad"):
        if name in values and not isinstance(values[name], bool):
            raise ValueError(f"{owner}: {name} must be true or false, got {values[name]!r}")
    lows = {"image_size": 1, "min_captions": 1, "seed": 0, "workers": 1}
    for name, low in lows.items():
        value = values.get(name)
        if name not in values or (value is None and name == "workers"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{owner}: {name} must be an integer ≥ {low}, got {value!r}")


def default_workers() -> int:
    """Decoding threads: a few, never more than the CPUs."""
    return min(8, os.cpu_count() or 1)


def build_cache(
    out: Path,
    splits: Mapping[str, Sequence[Record]],
    size: int,
    info: dict,
    skipped: Sequence[Skipped] = (),
    skip_bad: bool = False,
    workers: int | None = None,
) -> None:
    """Write `out/{train,val,test}` and then `out/info.json`; on failure remove what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    all_skipped = list(skipped)
    try:
        for name in cache.SPLITS:
            written.append(out / name)
            all_skipped += write_records(out / name, splits[name], size, skip_bad, workers or default_workers())
        cache.write_info(out, {**info, "skipped": report_skipped(info["name"], all_skipped)})
    except BaseException:
        for directory in written:
            shutil.rmtree(directory, ignore_errors=True)
        raise
