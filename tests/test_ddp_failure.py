"""Two CPU ranks (gloo, ddp_spawn): only rank 0 builds the cache, and a failing rank ends the job with its error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.conftest import TINY, run_cli


@pytest.mark.slow
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_failing_rank_brings_the_job_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("JOINTCAP_DATA", str(data))
    args = [
        *TINY,
        "++trainer.strategy=ddp_spawn",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "model._target_=tests.helpers.ddp.FailOnRankOne",
        "data.source._target_=tests.helpers.ddp.CountedSynthetic",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    try:
        proc = run_cli(args, cwd=tmp_path, check=False, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung after rank 1 failed")
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr, proc.stderr[-4000:]
    builds = (data / "cache" / "builds.log").read_text().split()
    assert len(builds) == 1, f"the cache must be built once (by rank 0), got {len(builds)} builds"
