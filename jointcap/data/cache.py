"""The decode-once image cache: every source (synthetic, CUB, Flowers) writes its splits here.

A split is a folder holding
  images.npy  uint8 (N, S, S, 3)   decoded and resized once, memory-mapped by the workers
  meta.json   keys, labels, captions (10 per image), image size, optional-array flags
  masks.npy   uint8 (N, P, S, S)   optional: one binary mask per part (synthetic data)
  boxes.npy   float32 (N, 4)       optional: object box x, y, w, h in cached pixels (CUB)
  parts.npy   float32 (N, P, 3)    optional: part x, y, visible in cached pixels (CUB)
and is written into a temporary sibling folder that is renamed into place only when it is
complete, so a run killed while caching never leaves a split that a later run trusts.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

CACHE_VERSION = 1
SPLITS = ("train", "val", "test")


class CacheError(RuntimeError):
    """A cache folder is missing, incomplete or inconsistent."""


@dataclass
class SplitData:
    """One split of a dataset, as arrays; `images` is usually a read-only memmap."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64, 0-based
    captions: list[list[str]]  # N lists of reference captions
    keys: list[str]  # N stable image names (file names for the real datasets)
    masks: np.ndarray | None = None  # (N, P, S, S) uint8 {0, 1}
    boxes: np.ndarray | None = None  # (N, 4) float32, x, y, w, h
    parts: np.ndarray | None = None  # (N, P, 3) float32, x, y, visible
    extra: dict = field(default_factory=dict)  # free-form, JSON-serialisable

    def __getstate__(self) -> dict:
        """Pickle read-only memmaps as their file, so spawned DataLoader workers map it again instead of copying it."""
        state = dict(self.__dict__)
        for name in _MAPPED:
            path = _mapped_file(state[name])
            if path is not None:
                state[name] = _MappedFile(path, tuple(state[name].shape), str(state[name].dtype))
        return state

    def __setstate__(self, state: dict) -> None:
        for name in _MAPPED:
            ref = state.get(name)
            if isinstance(ref, _MappedFile):
                state[name] = ref.open()
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.labels)

    def validate(self, where: str = "split") -> None:
        """Check that every array agrees on N and on the image size."""
        n = len(self.labels)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise CacheError(f"{where}: images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}")
        for name in ("images", "masks", "boxes", "parts"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise CacheError(f"{where}: {name} has {len(arr)} rows but there are {n} labels")
        if len(self.captions) != n or len(self.keys) != n:
            raise CacheError(f"{where}: {len(self.captions)} caption lists / {len(self.keys)} keys for {n} labels")


_MAPPED = ("images", "masks")  # the arrays read_split memory-maps


@dataclass(frozen=True)
class _MappedFile:
    """A pickled stand-in for a read-only memmap of a whole .npy file."""

    path: str
    shape: tuple[int, ...]
    dtype: str

    def open(self) -> np.memmap:
        arr = np.load(self.path, mmap_mode="r")
        if tuple(arr.shape) != self.shape or str(arr.dtype) != self.dtype:
            raise CacheError(
                f"{self.path}: changed on disk since it was opened "
                f"({arr.dtype} {arr.shape}, was {self.dtype} {self.shape})"
            )
        return arr


def _mapped_file(arr: np.ndarray | None) -> str | None:
    """The file `arr` maps whole and read-only (as np.load(mmap_mode="r") opens it), else None (pickled by value)."""
    if isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap) and arr.mode == "r" and arr.filename:
        return str(arr.filename)
    return None


def is_complete(directory: Path) -> bool:
    """True when `directory` holds a finished split of the current cache version."""
    meta = Path(directory) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("version") == CACHE_VERSION
    except (OSError, json.JSONDecodeError):
        return False


@contextmanager
def atomic_dir(directory: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces `directory` only if the block succeeds."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_split(directory: Path, data: SplitData) -> None:
    """Write a whole in-memory split atomically."""
    data.validate(str(directory))
    with atomic_dir(directory) as tmp:
        np.save(tmp / "images.npy", np.ascontiguousarray(data.images))
        _write_optional_and_meta(tmp, data)


class SplitWriter:
    """Fill a split image by image (for datasets too large to hold decoded in memory).

    Usage: ``with SplitWriter(dir, n, size) as w: w.images[i] = ...; w.finish(labels, ...)``.
    The images go straight into a memory-mapped file inside the temporary folder.
    """

    def __init__(self, directory: Path, n: int, image_size: int) -> None:
        self.directory = Path(directory)
        self._ctx = atomic_dir(self.directory)
        self._tmp: Path | None = None
        self.n, self.image_size = n, image_size
        self.images: np.memmap | None = None
        self._finished = False

    def __enter__(self) -> SplitWriter:
        self._tmp = self._ctx.__enter__()
        self.images = np.lib.format.open_memmap(
            self._tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(self.n, self.image_size, self.image_size, 3)
        )
        return self

    def finish(self, labels, captions, keys, masks=None, boxes=None, parts=None, extra=None) -> None:
        """Record the non-image fields; the split becomes visible when the `with` block exits."""
        assert self._tmp is not None and self.images is not None
        self.images.flush()
        data = SplitData(
            self.images, np.asarray(labels, dtype=np.int64), captions, keys, masks, boxes, parts, extra or {}
        )
        data.validate(str(self.directory))
        _write_optional_and_meta(self._tmp, data)
        self._finished = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.images = None  # release the memmap before the rename
        if exc_type is None and not self._finished:
            exc = CacheError(f"{self.directory}: SplitWriter closed without finish()")
            self._ctx.__exit__(type(exc), exc, None)
            raise exc
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def _write_optional_and_meta(tmp: Path, data: SplitData) -> None:
    has = {}
    for name, dtype in (("masks", np.uint8), ("boxes", np.float32), ("parts", np.float32)):
        arr = getattr(data, name)
        has[name] = arr is not None
        if arr is not None:
            np.save(tmp / f"{name}.npy", np.asarray(arr, dtype=dtype))
    meta = {
        "version": CACHE_VERSION,
        "n": len(data),
        "image_size": int(data.images.shape[1]),
        "labels": [int(x) for x in data.labels],
        "captions": data.captions,
        "keys": data.keys,
        "has": has,
        "extra": data.extra,
    }
    # meta.json is written last: its presence marks the split as complete.
    (tmp / "meta.json").write_text(json.dumps(meta))


def read_split(directory: Path, mmap: bool = True) -> SplitData:
    """Open a finished split; images (and masks) are memory-mapped read-only by default."""
    directory = Path(directory)
    if not is_complete(directory):
        raise CacheError(f"{directory}: no complete cached split here (run prepare_data first, or delete the folder)")
    meta = json.loads((directory / "meta.json").read_text())
    mode: Literal["r"] | None = "r" if mmap else None
    try:
        images = np.load(directory / "images.npy", mmap_mode=mode)
        opt = {
            name: (
                np.load(directory / f"{name}.npy", mmap_mode=mode if name == "masks" else None)
                if meta["has"][name]
                else None
            )
            for name in ("masks", "boxes", "parts")
        }
    except (OSError, ValueError) as e:
        raise CacheError(f"{directory}: unreadable cache array ({e}); delete the folder to rebuild it") from e
    data = SplitData(
        images,
        np.asarray(meta["labels"], dtype=np.int64),
        meta["captions"],
        meta["keys"],
        extra=meta.get("extra", {}),
        **opt,
    )
    data.validate(str(directory))
    return data


def write_info(root: Path, info: dict) -> None:
    """Write the dataset-level facts (class names, part names…) next to the splits, atomically."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".info.json.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, root / "info.json")


def read_info(root: Path) -> dict:
    path = Path(root) / "info.json"
    if not path.is_file():
        raise CacheError(f"{path}: missing dataset info (run prepare_data first)")
    return json.loads(path.read_text())


def remove_paths(paths: list[Path]) -> list[Path]:
    """Delete files and folders (a link is removed, never followed); returns `paths`."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return paths


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete the `.NAME.tmp-*` leftovers of killed writers in `root`; call only as its sole writer."""
    root = Path(root)
    return remove_paths(sorted(root.glob(".*.tmp-*")) if root.is_dir() else [])


def dataset_complete(root: Path) -> bool:
    """True when info.json and every split of a dataset cache are finished."""
    root = Path(root)
    return (root / "info.json").is_file() and all(is_complete(root / s) for s in SPLITS)
