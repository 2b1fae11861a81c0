"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

* `AtomicCheckpointIO` is the Trainer's CheckpointIO plugin (`jointcap.run` adds it): it writes
  into a temporary file in the checkpoint's own folder, fsyncs, and `os.replace`s it into place,
  so a run killed while saving leaves the previous `last.ckpt` intact. (Lightning's default
  writes through a temporary file in $TMPDIR and `shutil.move`s it, which is a plain copy onto
  the final path when $TMPDIR is another file system, e.g. a node-local /tmp and a shared
  output folder.) It loads with `weights_only=True`, so `trainer.fit/test(ckpt_path=…)` never
  unpickles arbitrary objects.
* `load_checkpoint(path)` / `load_module(path)` are what commands that read a checkpoint use.
"""

from __future__ import annotations

import os
import pickle
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _MAP_LOCATION_TYPE, _PATH
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from torch.serialization import MAP_LOCATION

from jointcap.lit_module import JointCaptionModule


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names it."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds objects other than tensors and plain containers."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint file is empty, truncated or not a torch checkpoint at all."""


_UNREADABLE = (
    EOFError,
    RuntimeError,
    ValueError,
    OSError,
    zipfile.BadZipFile,
)  # what torch.load raises on a broken file


def _unreadable(path: _PATH, error: Exception) -> UnreadableCheckpointError:
    size = Path(path).stat().st_size if Path(path).is_file() else None
    what = "empty file" if size == 0 else f"{type(error).__name__}: {error}"
    return UnreadableCheckpointError(
        f"{path}: not a readable checkpoint ({what}); was its save interrupted? "
        "Use another checkpoint (e.g. best-*.ckpt) or start fresh"
    )


def _refuse(path: _PATH, error: Exception) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path}: refusing to load; it contains objects other than tensors and plain containers, which "
        f"could run code when unpickled (a jointcap checkpoint never does). Torch said: {error}"
    )


def load_checkpoint(path: _PATH, map_location: MAP_LOCATION = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict at `path`, read with `weights_only=True` (UnsafeCheckpointError otherwise).

    `mmap=True` maps the tensors instead of reading them (cheap when only metadata is wanted).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise _refuse(path, e) from None
    except _UNREADABLE as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise _unreadable(path, e) from None


def load_module(path: _PATH, map_location: _MAP_LOCATION_TYPE = "cpu") -> JointCaptionModule:
    """The trained module (weights, tokenizer, dataset facts) in eval mode, read with `weights_only=True`."""
    try:
        module = JointCaptionModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refuse(path, e) from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise _unreadable(path, e) from None
    except RuntimeError as e:  # torch: "PytorchStreamReader failed reading zip archive" and the like
        if "zip" not in str(e) and "archive" not in str(e):
            raise
        raise _unreadable(path, e) from None
    return module.eval()


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """torch.save to a temporary sibling, fsync, then rename over `path` (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(directory: _PATH) -> list[Path]:
    """Delete `.NAME.ckpt.tmp-*` files that killed saves left in `directory`."""
    stale = sorted(Path(directory).glob(".*.ckpt.tmp-*")) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints saved atomically and loaded with `weights_only=True` by default."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if "://" in str(path):  # remote storage: Lightning's own transactional write
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False or "://" in str(path):  # an explicit opt-out, or remote storage
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only is not False)
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return load_checkpoint(path, map_location=map_location)


def with_atomic_io(plugins: list[Any]) -> list[Any]:
    """`plugins` plus an AtomicCheckpointIO, unless a CheckpointIO is already configured."""
    if any(isinstance(p, CheckpointIO) for p in plugins):
        return plugins
    return [*plugins, AtomicCheckpointIO()]
