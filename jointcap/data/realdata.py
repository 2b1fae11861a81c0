"""The caching step shared by the downloaded datasets (CUB, Flowers): image files → decode-once cache.

A `Record` is one image file with its label, captions and (CUB) box and part locations in
original pixels. `build_cache` decodes every image once with PIL, converts it to RGB (grey,
CMYK and palette images included), SQUASHES it to `size`×`size` (no crop, the aspect ratio is
not kept, so the whole object stays in view and boxes/parts scale by a plain per-axis
factor), scales boxes and parts by the same factors, and writes the splits and `info.json`.
If anything fails, the splits this call wrote are removed, so no complete cache is left.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from jointcap.data import cache
from jointcap.data.captions import Skipped
from jointcap.data.download import DataFileError

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


def decode_resized(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode `path` to RGB uint8 squashed to (size, size, 3); also return the original (w, h)."""
    try:
        with Image.open(path) as img:
            original = img.size
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale (never below `size`)
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    return np.asarray(rgb, dtype=np.uint8), original


def scale_annotations(record: Record, original: tuple[int, int], size: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Box and part locations of `record` moved from original to cached pixels."""
    sx, sy = size / original[0], size / original[1]
    box = None if record.box is None else np.asarray(record.box, np.float32) * np.float32([sx, sy, sx, sy])
    parts = None
    if record.parts is not None:
        parts = np.array(record.parts, dtype=np.float32)
        parts[:, 0] *= sx
        parts[:, 1] *= sy
    return box, parts


def _decode_or_error(item: tuple[Path, int]) -> tuple[np.ndarray, tuple[int, int]] | ImageDecodeError:
    try:
        return decode_resized(*item)
    except ImageDecodeError as e:
        return e


def _decoded(records: Sequence[Record], size: int, workers: int) -> Iterator[tuple[np.ndarray, tuple[int, int]] | ImageDecodeError]:
    """Decode images in order, on a few threads (PIL releases the GIL while decoding)."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        yield from pool.map(_decode_or_error, [(r.path, size) for r in records])
    finally:  # on an error, do not decode the rest of the split first
        pool.shutdown(wait=True, cancel_futures=True)


def _fill(images: np.ndarray, records: Sequence[Record], size: int, skip_bad: bool, workers: int, desc: str):
    """Write decoded images into `images` (compacted); return kept records, annotations, skipped."""
    kept, boxes, parts, skipped = [], [], [], []
    for record, result in tqdm(zip(records, _decoded(records, size, workers)), total=len(records), desc=desc, leave=False):
        if isinstance(result, ImageDecodeError):
            if not skip_bad:
                raise result
            skipped.append(Skipped(record.key, str(record.path), str(result)))
            continue
        array, original = result
        images[len(kept)] = array
        box, part = scale_annotations(record, original, size)
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


def write_records(directory: Path, records: Sequence[Record], size: int, skip_bad: bool = False, workers: int = 4) -> list[Skipped]:
    """Cache one split; with `skip_bad`, undecodable images are left out and returned."""
    try:
        with cache.SplitWriter(directory, len(records), size) as writer:
            kept, boxes, parts, skipped = _fill(writer.images, records, size, skip_bad, workers, f"cache {directory.name}")
            if not skipped:
                _finish(writer, kept, boxes, parts)
                return skipped
            with cache.SplitWriter(directory, len(kept), size) as smaller:
                for start in range(0, len(kept), 256):
                    stop = min(start + 256, len(kept))
                    smaller.images[start:stop] = writer.images[start:stop]
                _finish(smaller, kept, boxes, parts)
            raise _Superseded
    except _Superseded:
        return skipped


def report_skipped(name: str, skipped: Sequence[Skipped]) -> dict:
    """Warn about skipped images (count and first few) and return the info.json entry."""
    if skipped:
        first = ", ".join(s.key for s in skipped[:5])
        log.warning("%s: skipped %d bad image(s) (skip_bad=True), e.g. %s", name, len(skipped), first)
    return {"count": len(skipped), "items": [asdict(s) for s in skipped]}


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
