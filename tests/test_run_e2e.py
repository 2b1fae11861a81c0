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
    table = out.split("jointcap: final metrics")[-1]
    for name in ("top-1 accuracy", "top-5 accuracy", "CIDEr-D", "BLEU-4", "CAM–attention JS divergence"):
        assert name in table, f"{name} missing from the summary table:\n{out}"
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
        ("classifier", "top-1 accuracy", "CIDEr-D"),
        ("captioner", "CIDEr-D", "top-1 accuracy"),
    ],
)
def test_single_task_baselines(tmp_path: Path, model: str, present: str, absent: str) -> None:
    proc = run_cli([*TINY, f"model={model}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    table = proc.stdout.split("jointcap: final metrics")[-1]
    assert present in table and absent not in table
