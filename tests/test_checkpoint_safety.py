"""Checkpoints are written all-or-nothing and never unpickle arbitrary objects when read."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from jointcap.runtime import checkpoint
from jointcap.runtime.checkpoint import AtomicCheckpointIO, UnsafeCheckpointError, load_checkpoint, load_module

ROOT = Path(__file__).resolve().parents[1]


def _state(value: float) -> dict:
    return {
        "state_dict": {"w": torch.full((256, 256), value)},
        "global_step": int(value),
        "hyper_parameters": {"task": "joint"},
    }


def _half_write_then(fail):
    """A torch.save stand-in that writes half a checkpoint, then calls `fail`."""

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04" + b"\0" * 100_000)
        f.flush()
        fail()

    return save


def test_failure_mid_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_state(1.0), path)

    def boom() -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", _half_write_then(boom))
    with pytest.raises(checkpoint.CheckpointSaveError, match="disk full"):  # named, the OSError as its cause
        io.save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"], "no temporary file is left behind"


def test_sigkill_mid_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A process killed (SIGKILL) while writing last.ckpt leaves the previous one, and a temp file resume ignores."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from jointcap.runtime.checkpoint import AtomicCheckpointIO
        from tests.test_checkpoint_safety import _half_write_then, _state
        io = AtomicCheckpointIO()
        io.save_checkpoint(_state(1.0), {str(path)!r})
        torch.save = _half_write_then(lambda: os.kill(os.getpid(), signal.SIGKILL))
        io.save_checkpoint(_state(2.0), {str(path)!r})
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120
    )
    assert proc.returncode == -9
    assert load_checkpoint(path)["global_step"] == 1
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert leftovers and all(".tmp-" in name for name in leftovers), leftovers

    from jointcap.runtime.resume import resume_path

    assert resume_path("auto", tmp_path) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"], "resuming clears the leftovers"


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({**_state(1.0), "hyper_parameters": {"task": "joint", "x": _Payload(marker)}}, path)
    return path, marker


@pytest.mark.parametrize(
    "loader",
    [
        load_checkpoint,
        load_module,
        lambda p: AtomicCheckpointIO().load_checkpoint(p),  # what trainer.fit/test(ckpt_path=…) use
    ],
)
def test_pickled_objects_are_refused(evil_checkpoint: tuple[Path, Path], loader) -> None:
    path, marker = evil_checkpoint
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        loader(path)
    assert not marker.exists(), "the payload must never run"


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize(
    "content", [b"", b"garbage, not a checkpoint", None], ids=["zero-byte", "garbage", "truncated"]
)
@pytest.mark.parametrize("loader", ["load_checkpoint", "load_module", "io"])
def test_unreadable_checkpoint_names_the_file(tmp_path: Path, content: bytes | None, loader: str) -> None:

    path = tmp_path / "last.ckpt"
    if content is None:
        torch.save(_state(1.0), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    loaders: dict[str, Callable[..., Any]] = {
        "load_checkpoint": checkpoint.load_checkpoint,
        "load_module": checkpoint.load_module,
        "io": AtomicCheckpointIO().load_checkpoint,
    }
    load = loaders[loader]
    expected = (
        checkpoint.CheckpointError if content else checkpoint.UnreadableCheckpointError
    )  # garbage may parse as a pickle
    with pytest.raises(expected, match=f"{path}: "):
        load(path)
