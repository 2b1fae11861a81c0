"""A process killed while building the data cache leaves nothing a later run trusts; the next run rebuilds cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jointcap.data import cache
from jointcap.data.datamodule import JointDataModule
from jointcap.data.synthetic import SyntheticSource, generate_split

ROOT = Path(__file__).resolve().parents[1]
SOURCE = {"n_classes": 6, "n_train": 1200, "n_val": 300, "n_test": 300}


def _datamodule(root: Path) -> JointDataModule:
    return JointDataModule(SyntheticSource(**SOURCE), cache_root=str(root), vocab_size=120, num_workers=0)


@pytest.mark.slow
def test_kill_while_building_cache_then_rebuild(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from tests.test_cache_kill import _datamodule
        from pathlib import Path
        _datamodule(Path({str(tmp_path)!r})).prepare_data()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    dm = _datamodule(tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill as soon as the first split is being written
        if dm.cache_dir.is_dir() and any(p.name.startswith((".train.tmp-", "train")) for p in dm.cache_dir.iterdir()):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL, "the builder finished before it could be killed"
    assert not cache.dataset_complete(dm.cache_dir), "a half-built cache must not look complete"
    assert not dm.tokenizer_path.exists()

    dm.prepare_data()  # the next run: rebuilds, and clears the leftovers of the killed one
    assert cache.dataset_complete(dm.cache_dir) and dm.tokenizer_path.is_file()
    assert not [p.name for p in dm.cache_dir.iterdir() if ".tmp-" in p.name]
    dm.setup("fit")
    train = dm.splits["train"]
    assert len(train) == SOURCE["n_train"]
    source: Any = (
        dm.source
    )  # a SyntheticSource; image i depends on (seed, i) only: a short split is a prefix of the long one
    expected = generate_split(32, source.n_classes, source.image_size, source.split_seed("train"), split="train")
    assert np.array_equal(np.asarray(train.images[:32]), expected.images)
    assert np.array_equal(train.labels[:32], expected.labels)
