"""A short fit → test through the Hydra entry point, on tiny synthetic data."""

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, run_cli


@pytest.mark.slow
def test_default_run_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli([*TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    out = proc.stdout
    for key in ("test/acc1", "test/acc5", "test/cider_d", "test/bleu4", "test/disagreement"):
        assert key in out, f"{key} missing from the summary table:\n{out}"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "metrics.csv").is_file()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert any(p.name.startswith("best-") for p in (run_dir / "checkpoints").iterdir())
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["jointcap"]["tokenizer"], "the tokenizer must travel inside the checkpoint"
    assert ckpt["hyper_parameters"]["num_classes"] == 6
    assert "last checkpoint" in out and str(run_dir) in out
    assert "sample captions (generated | first reference):" in out  # the words, not only the scores
    assert "the best checkpoint by val/cider_d: epoch" in out  # where the reported numbers come from


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,present,absent",
    [
        ("classifier", "test/acc1", "test/cider_d"),
        ("captioner", "test/cider_d", "test/acc1"),
    ],
)
def test_single_task_baselines(tmp_path: Path, model: str, present: str, absent: str) -> None:
    proc = run_cli([*TINY, f"model={model}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert present in proc.stdout and absent not in proc.stdout
