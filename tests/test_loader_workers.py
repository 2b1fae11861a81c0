"""DataLoader workers start inside Hydra's joblib launcher (loky worker processes), not only in a plain process."""

from __future__ import annotations

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
