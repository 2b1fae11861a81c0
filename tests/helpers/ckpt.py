"""One short TINY training run per test session, shared by the evaluate, predict and media tests.

Two training batches, then validation (which draws the media callback's figures) with the CSV
and TensorBoard loggers; no test pass. Import `tiny_run` into a test module to use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli


@dataclass
class TinyRun:
    """The run folder and its last checkpoint."""

    run_dir: Path
    ckpt: Path
    data_root: Path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Train once (≈20 s alone on 2 CPU cores) with the session's own data cache."""
    base = tmp_path_factory.getbasetemp()
    run_dir = tmp_path_factory.mktemp("tiny-run") / "run"
    data_root = base / "jointcap-data"  # the cache the autouse _isolated_env fixture points at
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOINTCAP_DATA", str(data_root))
        mp.setenv("WANDB_MODE", "offline")
        run_cli(
            [
                *TINY,
                "++trainer.limit_train_batches=2",
                "test_after_fit=false",
                "logger=[csv,tensorboard]",
                f"hydra.run.dir={run_dir}",
            ],
            cwd=run_dir.parent,
        )
    return TinyRun(run_dir, run_dir / "checkpoints" / "last.ckpt", data_root)
