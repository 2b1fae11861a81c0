"""`python -m jointcap.tools.bench` runs end to end at tiny sizes (no timing is asserted)."""

import json
import math
from pathlib import Path

import pytest
import torch

from jointcap.config import cpu_precision
from jointcap.tools import bench
from tests.conftest import TINY

TINY_BENCH = [
    "--steps",
    "1",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--beam-images",
    "2",
    "--beam-repeats",
    "1",
    "--caption-images",
    "20",
    "--caption-refs",
    "3",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--no-jobs",
]  # one intra-op thread: steady on a busy machine; rows 8-9 (fresh processes) have their own test


def test_bench_end_to_end(tmp_path: Path, capsys) -> None:
    threads = torch.get_num_threads()
    report = bench.main([*TINY_BENCH, "--out", str(tmp_path / "bench.md"), *TINY])
    names = [r.name for r in report.rows]
    assert [n.split(".")[0] for n in names] == ["1", "2", "3", "4", "5", "7"], names
    for row in report.rows:
        assert math.isfinite(row.ratio) and row.ratio > 0, row
        assert row.result in ("pass", "miss", "report")
    assert report.rows[2].result == "report"  # the captioning-cost target is a GPU one
    assert report.memory["rss_peak_mb"] > 0
    launches = report.rows[-1]  # row 7: the captioner's time loop dispatches many more ops than the classifier alone
    assert launches.a > launches.b > 0 and launches.result == "report"
    printed = capsys.readouterr().out
    table = (tmp_path / "bench.md").read_text()
    for name in names:
        assert name in printed and name in table
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["rows"]) == 6 and all(isinstance(r["ratio"], float) for r in data["rows"])
    assert data["machine"]["device"] == "cpu" and data["machine"]["torch_threads"] == 1
    assert torch.get_num_threads() == threads  # restored


def test_paper_profile_composes_the_experiments_model(tmp_path: Path) -> None:
    """`--profile paper` takes model and optimizer from conf/experiment/cub_cam.yaml, on synthetic 224-px data."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    args = bench.parse_args(["--profile", "paper", "--device", "cpu", "model.optim.lr=0.5"])
    cfg = bench.compose_config([*bench.profile_overrides(args, "cpu"), *args.overrides], "cpu", tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(bench.CONF_DIR), version_base="1.3"):
        exp = compose("config", overrides=[f"+experiment={bench.PAPER_EXPERIMENT}"])
    for key in (
        "encoder.name",
        "encoder.stage",
        "encoder.output_stride",
        "embedding.dim",
        "captioner.hidden_dim",
        "optim.encoder_lr_mult",
        "optim.warmup_steps",
        "decode.max_len",
        "channels_last",
        "loss.cam_weight",
    ):
        a, b = (c.model for c in (cfg, exp))
        for part in key.split("."):
            a, b = a[part], b[part]
        assert a == b, key
    assert (cfg.model.encoder.name, cfg.model.encoder.output_stride) == ("resnet50", 16) and cfg.model.channels_last
    assert cfg.model.encoder.weights is None  # no download
    assert cfg.model.optim.lr == 0.5  # the command line's overrides still win
    assert cfg.data.source._target_.endswith("SyntheticSource") and cfg.data.source.image_size == 224
    assert cfg.data.batch_size == 64 and cfg.trainer.precision == cpu_precision() and cfg.trainer.accelerator == "cpu"
    assert cfg.data.source.n_train == (args.warmup + args.steps) * 64  # only the images the fits use
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_bench_paper_profile_end_to_end(tmp_path: Path) -> None:
    """The paper profile at a tiny size produces every row, the torchvision ceiling too (~15 s: five ResNet-50s)."""
    report = bench.main(
        [
            "--profile",
            "paper",
            "--batch-size",
            "2",
            "--image-size",
            "32",
            *TINY_BENCH,
            "--out",
            str(tmp_path / "paper.md"),
            "data.num_workers=0",
            "data.vocab_size=120",
            "model.decode.max_len=8",
        ]
    )
    assert [r.name.split(".")[0] for r in report.rows] == ["1", "2", "3", "3b", "4", "5", "7"]
    for row in report.rows:
        assert math.isfinite(row.ratio) and row.ratio > 0, row
    settings = report.settings
    assert settings["profile"] == "paper" and settings["image_size"] == 32 and settings["batch_size"] == 2
    assert report.settings["model"]["name"] == "resnet50" and report.settings["model"]["output_stride"] == 16
    table = (tmp_path / "paper.md").read_text()
    assert "Profile: paper (resnet50" in table and "Machine: device: cpu" in table and "3b. classifier step" in table


@pytest.mark.slow
def test_fresh_run_rows(tmp_path: Path) -> None:
    """Rows 8, 8b and 9 on a tiny setting: a lone run, a two-job multirun, two independent runs (no timing asserted)."""
    from jointcap.runtime import threads

    # the bench's own default step count: with only a few steps past the 20th, two processes whose start-up differs
    # by a few seconds on a busy machine never run their steady steps at the same time
    args = bench.parse_args(["--device", "cpu", *TINY])
    report = bench.Report()
    bench.bench_jobs(args, "cpu", report)
    rows = {r.name.split(".")[0]: r for r in report.rows}
    assert sorted(rows) == ["8", "8b", "9"]
    for row in rows.values():
        assert math.isfinite(row.ratio) and row.ratio > 0 and row.result in ("pass", "miss"), row
    assert rows["9"].a > 0 and rows["9"].b > 0 and "first step" in rows["9"].note
    # the launcher's jobs took their half share (threads=auto under joblib n_jobs=2), the lone run all of its own
    cores = threads.available_cores()
    lone = threads.share(cores, 1, 0, threads.omp_threads())
    half = threads.share(cores, 2, 0, threads.omp_threads())
    assert rows["8"].note.startswith(f"threads={half}/{half} in the pair, {lone} alone"), rows["8"].note


@pytest.mark.parametrize("native", [True, False])
def test_cpu_trainer_bf16_only_with_bf16_kernels(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """conf/trainer/cpu.yaml resolves its precision from the CPU: emulated bf16 (AVX2 only) is ~9x slower than fp32."""
    from omegaconf import OmegaConf

    import jointcap.config  # noqa: F401  (registers the resolver)

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    trainer = OmegaConf.load("conf/trainer/cpu.yaml")
    assert trainer.precision == ("bf16-mixed" if native else "32-true")
