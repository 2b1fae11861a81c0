"""prepare → fit → test through the Hydra entry point on the fake CUB / Flowers archives (local HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_cli
from tests.helpers.realdata import cub_kwargs, flowers_kwargs, make_cub, make_flowers

# TINY without the synthetic source's own arguments; batches small enough for 10 images.
MODEL_TINY = [
    a for a in TINY if not a.startswith(("data.source.", "data.batch_size", "data.eval_batch_size", "data.vocab_size"))
]
DATA_TINY = ["data.batch_size=2", "data.eval_batch_size=4", "data.vocab_size=60", "data.source.image_size=32"]


def _overrides(kwargs: dict) -> list[str]:
    """Source constructor arguments as Hydra overrides (strings quoted, None as null)."""
    out = []
    for key, value in kwargs.items():
        text = "null" if value is None else f"'{value}'" if isinstance(value, str) else str(value)
        out.append(f"data.source.{key}={text}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cub", "flowers"])
def test_prepare_fit_test(serve, tmp_path: Path, dataset: str) -> None:
    if not (ROOT / "conf" / "data" / f"{dataset}.yaml").is_file():
        pytest.skip(f"conf/data/{dataset}.yaml not written yet")
    make, kwargs = (make_cub, cub_kwargs) if dataset == "cub" else (make_flowers, flowers_kwargs)
    ds = make(tmp_path / "files")
    server = serve(ds.dir)
    run_dir = tmp_path / "run"
    roots = [f"data.source.root='{tmp_path / 'data'}'", f"data.cache_root='{tmp_path / 'cache'}'"]
    args = [f"data={dataset}", *MODEL_TINY, *DATA_TINY, *roots, *_overrides(kwargs(server, ds))]
    args.append(f"hydra.run.dir={run_dir}")
    proc = run_cli(args, cwd=tmp_path)
    assert "top-1 accuracy" in proc.stdout and "CIDEr-D" in proc.stdout
    assert server.requests, "the archives were not fetched from the local server"
    cache_dirs = list((tmp_path / "cache").glob(f"{dataset}-official-s32-*"))
    assert cache_dirs, "no cache folder named by the source's cache_key"
