"""A run you can watch and numbers a reader can use (issue 29): progress lines in logs, debug presets that run,
GPU presets and misspelt keys answered before any folder exists, the grouped metric table, report.html, noise."""

from __future__ import annotations

import html
import io
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from jointcap import cli
from jointcap.analysis import html_report, viz
from jointcap.analysis.report import metric_table, run_settings
from jointcap.config import ConfigError, check_accelerator
from jointcap.metrics.baselines import class_template, reference_points
from jointcap.metrics.catalogue import CATALOGUE, grouped
from jointcap.runtime.callbacks.progress import LineProgress, progress_bar
from jointcap.runtime.noise import quiet_known_noise
from tests.conftest import ROOT, TINY, user_cli
from tests.helpers.ckpt import TinyRun

CONF = ROOT / "conf"


def _compose(overrides: list[str], hydra: bool = False) -> Any:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


# -- 1. progress -----------------------------------------------------------------------------------
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_plain_progress_lines_only_off_a_terminal() -> None:
    assert isinstance(progress_bar(10, stream=_Stream(tty=False)), LineProgress)
    assert progress_bar(10, stream=_Stream(tty=True)) is None  # Lightning's own bar on a terminal
    assert progress_bar(10, enabled=False, stream=_Stream(tty=False)) is None  # trainer.enable_progress_bar=false
    with pytest.raises(ValueError, match="every_n_steps"):
        LineProgress(0)


class _Clock:
    """A fake perf_counter that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _eta_seconds(line: str, which: str) -> int:
    h, m, sec = re.search(rf"{which} (\d+):(\d\d):(\d\d)", line).groups()  # type: ignore[union-attr]
    return int(h) * 3600 + int(m) * 60 + int(sec)


def _timed_bar(every_n_steps: int, max_epochs: int, current_epoch: int = 0) -> tuple[LineProgress, _Clock, Any]:
    """A LineProgress on a fake clock and a stand-in trainer of 10 training batches an epoch, already started."""
    from types import SimpleNamespace

    bar, clock = LineProgress(every_n_steps=every_n_steps), _Clock()
    bar._clock = clock
    trainer = SimpleNamespace(
        num_training_batches=10,
        max_epochs=max_epochs,
        current_epoch=current_epoch,
        global_step=0,
        check_val_every_n_epoch=1,
        sanity_checking=False,
        callback_metrics={},
        is_global_zero=True,
    )
    bar._trainer = trainer  # type: ignore[assignment]
    bar.on_train_start(trainer, None)  # type: ignore[arg-type]
    return bar, clock, trainer


def test_progress_speed_and_eta_follow_the_current_phase() -> None:
    """Two cross-entropy epochs at 1 s a batch (5 s of validation each), then self-critical ones at 3 s a batch:
    the ETA in the slow phase is its own speed times what is left, not the fit's average (which promised the end
    ~2x too early in a real run: 2:39 left, 5 min taken)."""
    bar, clock, trainer = _timed_bar(every_n_steps=2, max_epochs=4)
    batch = {"image": torch.zeros(8, 3, 4, 4)}
    for epoch, seconds in ((0, 1.0), (1, 1.0), (2, 3.0)):
        trainer.current_epoch = epoch
        bar.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
        for i in range(10 if epoch < 2 else 4):
            clock.now += seconds
            bar.on_train_batch_end(trainer, None, None, batch, i)  # type: ignore[arg-type]
        if epoch < 2:
            bar.on_validation_start(trainer, None)  # type: ignore[arg-type]
            clock.now += 5.0
            bar.on_validation_end(trainer, None)  # type: ignore[arg-type]
    line = bar.step_line(trainer, batch_idx=3)  # epoch 3 of 4, 4 of 10 batches done at 3 s each
    assert "epoch 3/4 · batch 4/10" in line and "2.7 img/s" in line, line  # 8 images / 3 s
    assert _eta_seconds(line, "ETA epoch") == 6 * 3 + 5, line  # 6 batches left + the validation
    assert _eta_seconds(line, "fit") == 6 * 3 + 5 + (10 * 3 + 5), line  # and one more such epoch


def test_progress_after_a_mid_epoch_resume_says_unknown_then_times_from_the_resume() -> None:
    """A run resumed in the middle of an epoch gets no `on_train_epoch_start`: its first line must not time the
    epoch from the clock's zero (a real resume printed "0.0 img/s · ETA epoch 21:00:44, fit 14 days")."""
    bar, clock, trainer = _timed_bar(every_n_steps=1, max_epochs=2, current_epoch=1)
    clock.now = 75_000.0  # perf_counter counts from boot, not from the fit
    batch = {"image": torch.zeros(8, 3, 4, 4)}
    clock.now += 2.0
    bar.on_train_batch_end(trainer, None, None, batch, 5)  # type: ignore[arg-type]  # the first batch after the resume
    first = bar.step_line(trainer, batch_idx=5)
    assert "? img/s" in first and "ETA epoch ?, fit ?" in first, first
    clock.now += 2.0
    bar.on_train_batch_end(trainer, None, None, batch, 6)  # type: ignore[arg-type]
    line = bar.step_line(trainer, batch_idx=6)
    assert "4.0 img/s" in line, line  # 8 images in the 2 s timed since the resume
    assert _eta_seconds(line, "ETA epoch") == 3 * 2, line  # 3 batches left at 2 s, no validation yet


# -- 2. debug presets, run end to end ---------------------------------------------------------------
STEP_LINE = re.compile(
    r"epoch 1/2 · batch 2/4 · step \d+ · train/loss \d+\.\d+ · \d+\.\d img/s · ETA epoch \d:\d\d:\d\d"
)


@pytest.mark.slow
def test_debug_limit_in_a_log_file_prints_progress_and_keeps_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "debug=limit",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "callbacks.progress.every_n_steps=2",
    ]
    proc = user_cli([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # progress while it runs, in the output and in run.log, and the config it runs with at the start
    assert STEP_LINE.search(out), out[-4000:]
    assert "epoch 2/2 done in" in out and "val/cider_d" in out
    log = (run_dir / "run.log").read_text()
    assert STEP_LINE.search(log) and "epoch 2/2 done in" in log
    assert "overrides: " in log and "debug=limit" in log and "full config:" in log
    # a debug run keeps no checkpoint and names none
    assert not list(run_dir.rglob("*.ckpt")) and not (run_dir / "results.json").exists()
    assert "checkpoint" not in proc.stdout.split("jointcap: final metrics")[-1]
    # the final table: grouped, named, with directions and reference points, no duplicates
    table = proc.stdout.split("jointcap: final metrics")[-1]
    for text in ("classification", "captions: overlap", "captions: correctness", "localisation", "agreement"):
        assert f"\n{text}" in table, table
    assert re.search(r"top-1 accuracy +acc1 +↑ +\d\.\d{4} +chance 0\.167", table), table
    assert re.search(r"CIDEr-D +cider_d +↑ +\d\.\d{4} +constant \d\.\d{3} · 1 ref vs 9 \d\.\d{3} · template", table)
    assert not re.search(r"\bcider\b +↑", table) and not re.search(r"\bdisagreement\b +↓", table), table
    assert "settings: data Synthetic" in table and "λ (CAM loss weight) 1.0" in table
    # known noise is gone, precisely
    for noise in ("💡 Tip", "LeafSpec", "Total FLOPs", "Total Flops", "Trainer already configured"):
        assert noise not in out, noise


@pytest.mark.slow
def test_debug_overfit_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, "debug=overfit", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"]
    proc = user_cli([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]  # was: ResumableLoader needs EpochSampler
    assert "epoch 2/2 done in" in proc.stdout + proc.stderr
    assert not list(run_dir.rglob("*.ckpt"))


@pytest.mark.slow
def test_debug_profiler_shows_and_names_its_table(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = user_cli([*TINY, "debug=profiler", "trainer.limit_train_batches=2", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    profile = run_dir / "fit-profile.txt"
    assert profile.is_file()
    assert f"the whole table is in {profile}" in proc.stdout and "run_training_epoch" in proc.stdout
    assert not list(run_dir.rglob("*.ckpt"))


def test_debug_sweeps_land_under_debug_whatever_the_sweep_preset() -> None:
    for sweep in ([], ["+sweep=lambda"], ["+sweep=optuna"]):
        debug = _compose(["debug=fdr", *sweep], hydra=True)
        real = _compose(sweep, hydra=True)
        assert str(debug.hydra.sweep.dir).startswith("debug/multirun/"), sweep
        assert str(real.hydra.sweep.dir).startswith("multirun/"), sweep


# -- 3. a GPU preset on a CPU machine, 4. a misspelt key: before Hydra makes a folder ----------------
def test_gpu_preset_without_a_gpu_says_what_to_do() -> None:
    cfg = _compose(["+experiment=flowers_cam"])
    with pytest.raises(ConfigError, match=r"no CUDA GPU .*add trainer=cpu"):
        check_accelerator(cfg, cuda_available=False)
    check_accelerator(cfg, cuda_available=True)
    check_accelerator(_compose(["+experiment=flowers_cam", "trainer=cpu"]), cuda_available=False)


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "model.loss.cam_wieght=0.5",
            "model.loss.cam_wieght: unknown key in model.loss; did you mean model.loss.cam_weight?",
        ),
        ("seeed=1", "seeed: unknown key in the top level; did you mean seed?"),
        ("data.source.n_trian=5", "did you mean data.source.n_train?"),
        ("trainer.max_time=00:00:01:00", "lightning.pytorch.Trainer takes it; add it with +trainer.max_time="),
    ],
)
def test_misspelt_key_gets_the_projects_answer(
    override: str, expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("JOINTCAP_DEBUG", raising=False)
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_:
        cli.precheck(CONF, "config", [override])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and expected in err, err
    assert "To append to your config" not in err


def test_precheck_leaves_good_command_lines_and_hydra_flags_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    GlobalHydra.instance().clear()
    cli.precheck(CONF, "config", ["model.loss.cam_weight=0.5", "+experiment=synthetic_nocam"])
    cli.precheck(CONF, "config", ["-m", "model.loss.cam_weight=0,1", "seed=1,2"])  # sweeps: Hydra's to expand
    cli.precheck(CONF, "config", ["--cfg", "job", "model.loss.cam_wieght=1"])  # Hydra's flags: Hydra's
    assert not GlobalHydra.instance().is_initialized()  # nothing left for @hydra.main to trip over


@pytest.mark.slow
def test_gpu_preset_and_misspelt_key_leave_no_folder(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = user_cli(["+experiment=flowers_cam"], tmp_path)
    assert proc.returncode == 2 and "add trainer=cpu" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = user_cli(["model.loss.cam_wieght=0.5"], tmp_path)
    assert proc.returncode == 2 and "did you mean model.loss.cam_weight?" in proc.stderr, proc.stderr
    assert not (tmp_path / "outputs").exists()


# -- 6. the numbers a reader needs ---------------------------------------------------------------------
def test_metric_groups_name_each_metric_once_with_its_direction() -> None:
    metrics = {f"test/{k}": 0.5 for k in CATALOGUE} | {"test/cider": 0.5, "test/bleu2": 0.1, "test/epoch": 3.0}
    metrics["test/disagreement"] = metrics["test/disagreement_js"]  # the default divergence is JS
    groups = grouped(metrics)
    keys = [r.key for rows in groups.values() for r in rows]
    assert "test/cider" not in keys and "test/disagreement" not in keys and "test/epoch" not in keys
    assert "test/cider_d" in keys and "test/disagreement_js" in keys and len(keys) == len(set(keys))
    assert list(groups)[:3] == ["classification", "captions: overlap with the references", "captions: correctness"]
    metrics["test/disagreement"] = 0.9  # another divergence was trained: both are shown
    assert "test/disagreement" in [r.key for rows in grouped(metrics).values() for r in rows]
    lines = metric_table({"test/acc1": 0.25, "test/rep3": 0.1}, {"chance": {"acc1": 1 / 24}})
    assert any(re.search(r"top-1 accuracy +acc1 +↑ +0\.2500 +chance 0\.042", ln) for ln in lines), lines
    assert any(re.search(r"repeated trigram +rep3 +↓", ln) for ln in lines), lines


def test_reference_points_score_the_constant_the_held_out_reference_and_the_template() -> None:
    refs = [["a red bird", "a red bird with wings", "red bird"], ["a blue bird", "blue bird here", "a blue bird"]]
    train = [["a red bird"], ["a red bird"], ["a blue bird"]]
    points = reference_points(train, refs, templates=["a red bird", "a blue bird"])
    assert set(points) == {"constant", "1 ref vs 2", "template"}
    assert points["constant"]["distinct_captions"] == 0.5  # one caption for both images
    assert points["template"]["cider_d"] > points["constant"]["cider_d"]
    assert class_template({"head": "red", "wing": "blue", "pattern": "plain"}) == (
        "this bird has blue plain wings and a red head"
    )
    assert class_template({"beak": "long"}) is None


def test_run_settings_name_data_model_lambda_epochs_seed() -> None:
    cfg = OmegaConf.to_container(_compose(["seed=3", "model.loss.cam_weight=0.5"]), resolve=False)
    settings = run_settings(cfg)  # type: ignore[arg-type]
    assert settings["seed"] == "3" and settings["epochs"] == "12" and settings["λ (CAM loss weight)"].startswith("0.5")
    assert settings["data"].startswith("Synthetic (n_train=4000") and settings["model"] == "joint, resnet18"


def test_report_html_states_settings_definitions_and_reference_points() -> None:
    report = {
        "split": "test",
        "metrics": {"acc1": 0.5, "cider_d": 1.2, "cider": 1.2, "rep3": 0.1},
        "settings": {"seed": "3", "λ (CAM loss weight)": "0.5 (js, gradient to both)"},
        "references": {"constant": {"cider_d": 0.544}, "chance": {"acc1": 0.042}},
    }
    text = html_report.render(report, [], [])
    assert "Run settings" in text and "λ (CAM loss weight)" in text and "0.5 (js, gradient to both)" in text
    assert html.escape(CATALOGUE["cider_d"].definition) in text and "constant 0.544" in text and "chance 0.042" in text
    assert ">cider<" not in text  # the alias is not a metric of its own
    assert "constant = the best of the 30 most frequent training captions" in text


def test_gallery_panel_titles_are_legible_when_printed() -> None:
    image = torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8).numpy()
    panels = [viz.Panel("image"), *(viz.Panel(f'"word{i}"', torch.rand(8, 8)) for i in range(9))]
    fig = viz.image_figure(
        image,
        panels,
        "",
        columns=html_report.GALLERY_COLUMNS,
        inch=html_report.GALLERY_INCH,
        fontsize=html_report.GALLERY_FONTSIZE,
    )
    printed_width_in = 7.0  # an A4 page's text width
    scale = printed_width_in / fig.get_figwidth()
    sizes = [float(ax.title.get_fontsize()) * scale for ax in fig.axes if ax.get_title()]
    assert sizes and min(sizes) >= 8.5, sizes  # points on paper (the old gallery: 8 pt × 7/10.6 ≈ 5.3 pt)


# -- 9. noise -------------------------------------------------------------------------------------------
def test_known_noise_is_filtered_precisely() -> None:
    quiet_known_noise()
    quiet_known_noise()  # idempotent
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len(logger.filters) == 1

    def passes(msg: str) -> bool:
        record = logging.LogRecord(logger.name, logging.INFO, __file__, 1, msg, None, None)
        return all(f.filter(record) for f in logger.filters if isinstance(f, logging.Filter))

    assert not passes("💡 Tip: For seamless cloud logging … litlogger")
    assert passes("GPU available: False, used: False")
    with warnings.catch_warnings(record=True) as caught:
        quiet_known_noise()
        warnings.simplefilter("default")  # what a run sees, with the filters above it kept first
        quiet_known_noise()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use …", DeprecationWarning, stacklevel=1)
        warnings.warn("some other deprecation", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["some other deprecation"]
    assert logging.getLogger("alembic").level == logging.WARNING


@pytest.mark.slow
def test_predict_out_dir_holds_its_log_and_nothing_goes_to_outputs(tiny_run: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    image = tmp_path / "bird.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    proc = user_cli([f"ckpt_path={tiny_run.ckpt}", f"images=[{image}]", f"out_dir={out}"], tmp_path, "jointcap.predict")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "bird.png").is_file() and (out / "predict.log").is_file()
    assert not (tmp_path / "outputs").exists()


# -- 5. docs that agree with the tools --------------------------------------------------------------
def test_usage_docs_state_the_optuna_objective_and_how_to_resume() -> None:
    cfg = _compose(["+sweep=optuna"])
    usage = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    assert cfg.objective == "val/cider_d" and "`val/cider_d` for the joint model (the default)" in usage
    assert "## Resuming a killed run" in usage and "hydra.run.dir=outputs/" in usage
    assert "debug/multirun/" in usage
