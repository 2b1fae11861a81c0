"""Shared test fixtures: an isolated data cache, and a helper that runs the Hydra CLI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import jointcap.config  # noqa: F401  (registers the schema nodes the YAML configs build on)

# The session-wide TINY checkpoint shared by the evaluate, predict and media tests.
pytest_plugins = ["tests.helpers.ckpt", "tests.helpers.realdata"]

ROOT = Path(__file__).resolve().parents[1]
# Tiny synthetic data and a short fit: enough to exercise every path of a real run.
TINY = [
    "data.source.n_train=96",
    "data.source.n_val=32",
    "data.source.n_test=32",
    "data.source.n_classes=6",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.num_workers=0",
    "data.vocab_size=120",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "model.optim.warmup_steps=2",
    "model.decode.max_len=12",
    "model.encoder.stage=2",
    "model.embedding.dim=32",
    "model.captioner.hidden_dim=32",
    "model.captioner.embed_dim=16",
    "model.captioner.attn_dim=16",
]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets a data cache of the session's own and W&B that never goes online."""
    monkeypatch.setenv("JOINTCAP_DATA", str(tmp_path_factory.getbasetemp() / "jointcap-data"))
    monkeypatch.setenv("WANDB_MODE", "offline")


def _spawn(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float, stdin: int | None = None
) -> subprocess.CompletedProcess:
    """`python -m <module> args…` in a subprocess with its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
    )


def run_cli(
    args: list[str], cwd: Path, timeout: float = 300, module: str = "jointcap.run", check: bool = True
) -> subprocess.CompletedProcess:
    """Run `python -m <module> args…` in a subprocess, as a user would."""
    proc = _spawn(module, args, cwd, dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="1"), timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def run_cli_together(jobs: list[tuple[list[str], Path]], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """`run_cli` for each (args, cwd) at the same time (2 cores: give each job `threads=1`); raises on the first
    failure, after all have ended."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run_cli, args, cwd, timeout) for args, cwd in jobs]
    return [f.result() for f in futures]


def user_cli(
    args: list[str], cwd: Path, module: str = "jointcap.run", timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run `python -m <module> args…` as a user does: no HYDRA_FULL_ERROR, stdin closed, stdout a pipe (not a
    terminal); the result is returned whatever the exit status (the tests read the errors)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "JOINTCAP_DEBUG")}
    env["PYTHONPATH"] = str(ROOT)
    # the timeout: a loaded 2-core machine runs the tiny fits at a few images/s
    return _spawn(module, args, cwd, env, timeout, stdin=subprocess.DEVNULL)


def load_script(name: str) -> Any:
    """An experiments/ script as a module (they are scripts, not a package): experiments/<name>.py."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
