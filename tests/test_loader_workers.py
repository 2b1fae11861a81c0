"""DataLoader workers start inside Hydra's joblib launcher (loky worker processes), not only in a plain process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from joblib import Parallel, delayed

from jointcap.data.datamodule import worker_context


def _load_in_job() -> int | str:
    """One sweep job's loader: two workers with the context the data module gives them."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    try:
        data = TensorDataset(torch.arange(8))
        loader: DataLoader = DataLoader(data, batch_size=2, num_workers=2, multiprocessing_context=worker_context())
        return sum(int(b.sum()) for (b,) in loader)
    except Exception as err:  # returned, so the assertion shows it
        return repr(err)


def test_loader_workers_start_inside_joblib_workers() -> None:
    """Inside loky's processes the default start method cannot start workers ("no attribute 'env'")."""
    assert Parallel(n_jobs=2, backend="loky")(delayed(_load_in_job)() for _ in range(2)) == [28, 28]


def test_plain_process_keeps_pythons_default() -> None:
    assert worker_context() is None


_KEPT_ITERATOR = """
import os, signal
from torch.utils.data import DataLoader
from jointcap.data.datamodule import init_worker
from jointcap.runtime import stopping
kept = []
with stopping.stop_on_signals():
    loader = DataLoader(list(range(64)), batch_size=2, num_workers=2, persistent_workers=True,
                        worker_init_fn=init_worker)
    kept.append(iter(loader))
    next(kept[0])
    if os.environ["STOP"] == "1":
        os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.parametrize("stop", ["0", "1"])
def test_a_process_exits_with_loader_workers_still_running(stop: str) -> None:
    """Loader workers ignore SIGTERM, and multiprocessing's exit hook SIGTERMs daemonic children and then joins
    them: a process whose loader iterator was still referenced at exit (persistent workers after a stop during
    validation) hung there forever. It must exit, with 143 (128 + SIGTERM) after a stop."""
    env = {**os.environ, "STOP": stop}
    try:
        done = subprocess.run([sys.executable, "-c", _KEPT_ITERATOR], env=env, timeout=90, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung at exit with its loader workers alive")
    assert done.returncode == (143 if stop == "1" else 0), done.stderr.decode()[-2000:]
    assert b"killed by signal" not in done.stderr  # the workers were shut down, not killed
