"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

* `AtomicCheckpointIO` is the Trainer's CheckpointIO plugin (`jointcap.run` adds it): it writes
  into a temporary file in the checkpoint's own folder, fsyncs, and `os.replace`s it into place,
  so a run killed while saving leaves the previous `last.ckpt` intact. (Lightning's default
  writes through a temporary file in $TMPDIR and `shutil.move`s it, which is a plain copy onto
  the final path when $TMPDIR is another file system, e.g. a node-local /tmp and a shared
  output folder.) It loads with `weights_only=True`, so `trainer.fit/test(ckpt_path=…)` never
  unpickles arbitrary objects.
* `load_checkpoint(path)` / `load_module(path)` are what commands that read a checkpoint use.
  A checkpoint is untrusted input (a download, a colleague's file): `load_module` checks its layout,
  its hyper-parameters against the schema (`jointcap.config.ModelConfig`, decode settings range-checked
  so a beam of 10**6 cannot exhaust the machine), builds the network on the meta device first so the
  hyper-parameters cannot allocate more than the state dict holds (a checkpoint of another model shape
  is named), refuses NaN/inf weights, never lets `encoder.weights` download anything (the weights come
  from the state dict), and names a corrupt tokenizer. Every refusal is a `CheckpointError` naming the file.
* A save that fails (disk full, no permission) is a `CheckpointSaveError` naming the file; the
  previous file at that path is unchanged.
"""

from __future__ import annotations

import errno
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

from jointcap.config import ModelConfig, schema_problems
from jointcap.data.tokenizer import TokenizerError
from jointcap.lit_module import JointCaptionModule


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names it."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds objects other than tensors and plain containers."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint file is empty, truncated or not a torch checkpoint at all."""


class InvalidCheckpointError(CheckpointError):
    """A readable checkpoint that is not a usable jointcap model (layout, hyper-parameters, shapes, weights)."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written (disk full, permissions); the previous file is intact."""


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
        loaded = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise _refuse(path, e) from None
    except FileNotFoundError:
        raise
    except RuntimeError as e:
        if mmap and "mmap" in str(e):  # the legacy (pre-zip) format cannot be mapped: read it instead
            return load_checkpoint(path, map_location=map_location)
        raise _unreadable(path, e) from None
    except (*_UNREADABLE, KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as e:
        # a text file or random bytes read as a legacy pickle stream: KeyError: 101, IndexError: pop from empty list
        raise _unreadable(path, e) from None
    if not isinstance(loaded, dict):
        raise InvalidCheckpointError(f"{path}: not a jointcap checkpoint (a {type(loaded).__name__}, not a dict)")
    return loaded


def load_module(path: _PATH, map_location: _MAP_LOCATION_TYPE = "cpu") -> JointCaptionModule:
    """The trained module (weights, tokenizer, dataset facts) in eval mode, checked as untrusted input (see above)."""
    ckpt = load_checkpoint(path)
    hparams, state = _layout(path, ckpt)
    _check_finite(path, state)
    _check_shapes(path, hparams, state)
    module = JointCaptionModule(**hparams)
    try:
        module.on_load_checkpoint(ckpt)
    except TokenizerError as e:
        raise InvalidCheckpointError(f"{path}: its tokenizer is unusable ({e})") from None
    module.load_state_dict(state, strict=True)  # keys and shapes checked above
    if map_location not in (None, "cpu"):
        module = module.to(torch.device(map_location) if isinstance(map_location, str) else map_location)
    return module.eval()


def _layout(path: _PATH, ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checked hyper-parameters (with `encoder.weights` cleared: no download) and the state dict."""
    hparams, state = ckpt.get("hyper_parameters"), ckpt.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise InvalidCheckpointError(
            f"{path}: not a jointcap model checkpoint (no hyper_parameters and state_dict; keys: "
            f"{', '.join(map(str, list(ckpt)[:8])) or 'none'})"
        )
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidCheckpointError(f"{path}: its state_dict holds values other than tensors")
    hparams = {k: v for k, v in hparams.items() if k != "_target_"}
    problems = schema_problems(hparams, ModelConfig, "model")
    for key in ("num_classes", "vocab_size"):
        if not isinstance(hparams.get(key), int):
            problems.append(f"model.{key}={hparams.get(key)!r}: must be recorded (an integer ≥ 1)")
    if problems:
        raise InvalidCheckpointError(f"{path}: bad hyper-parameters:\n  - " + "\n  - ".join(problems))
    if isinstance(hparams.get("encoder"), dict):  # the trained weights are in the state dict: never download
        hparams["encoder"] = {**hparams["encoder"], "weights": None}
    return hparams, state


def _check_finite(path: _PATH, state: dict[str, torch.Tensor]) -> None:
    """Refuse NaN/inf weights: they would give `probability nan` answers that look like results."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise InvalidCheckpointError(f"{path}: NaN or infinite weights in {', '.join(bad[:3])}{more}")


def _check_shapes(path: _PATH, hparams: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Build the network on the meta device (no memory) and compare its tensors with the state dict's."""
    try:
        with torch.device("meta"):
            expected = JointCaptionModule(**hparams).state_dict()
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise InvalidCheckpointError(f"{path}: its hyper-parameters do not build a model ({e})") from None
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = [
            f"{what} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes for", wrong))
            if keys
        ]
        raise InvalidCheckpointError(
            f"{path}: its weights do not fit the model its hyper-parameters describe ({'; '.join(parts)}); "
            "a checkpoint of another model shape or version"
        )


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
    except OSError as e:
        hint = "the disk is full: free some space" if e.errno == errno.ENOSPC else "check the folder's permissions"
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing was written"
        raise CheckpointSaveError(f"{path}: cannot save the checkpoint ({e.strerror or e}); {hint}; {kept}") from e
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
