"""The researcher's day (issue 13): errors, job folder names, checkpoint folders, debug presets, W&B naming,
predict's inputs and warnings, figures, report.html, the Optuna preset."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from jointcap import cli
from jointcap.analysis import html_report, viz
from jointcap.config import ConfigError, validate
from jointcap.data.download import MissingFileError, Remote, ensure_file, gather_missing
from jointcap.data.realdata import ImageDecodeError
from jointcap.predict import confidence_note, display_image, domain_warning, expand, load_image
from jointcap.runtime import tracking
from tests.conftest import ROOT, TINY, user_cli

CONF = ROOT / "conf"


def _compose(overrides: list[str], name: str = "config", hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=hydra)


# -- job folders and run names ---------------------------------------------------------------
def test_job_folder_names_pass_back_through_the_command_line() -> None:
    raw = "+experiment=synthetic_cam,data.source.n_test=64,model.loss.cam_weight=0.5,hydra/launcher=local,model.x=[1,2]"
    name = tracking.short_dirname(raw)
    assert name == "experiment-synthetic_cam__n_test-64__cam_weight-0.5__hydra-launcher-local__x-1-2"
    assert not set("=,+/") & set(name)
    path = f"multirun/lambda/2025-01-31_12-00-00-000000/3_{name}/checkpoints/last.ckpt"
    parser = OverridesParser.create()
    assert parser.parse_override(f"ckpt_path={path}").value() == path  # unquoted, as a user pastes it
    assert parser.parse_override(f"hydra.run.dir={Path(path).parent.parent}").value() == str(Path(path).parent.parent)


def test_wandb_run_names_skip_where_and_how_a_job_logs() -> None:
    overrides = [
        "+experiment=synthetic_cam",
        "logger=wandb",
        "model.loss.cam_weight=1",
        "seed=2",
        "hydra/launcher=local",
        "trainer.enable_progress_bar=false",
    ]
    assert tracking.run_name(overrides) == "experiment=synthetic_cam cam_weight=1 seed=2"
    assert tracking.run_name(["logger=wandb"]) == "default"


def test_wandb_logger_logs_config_once_with_tags_and_job_type(tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = _compose(["+experiment=synthetic_nocam", "logger=wandb", f"hydra.run.dir={tmp_path}"], hydra=True)
    HydraConfig.instance().set_config(cfg)  # the config resolves ${hydra:runtime.output_dir}, as in a job
    with open_dict(cfg):
        cfg.pop("hydra")
    logger = tracking.wandb_logger(save_dir=str(tmp_path), mode="disabled")
    assert "anonymous" not in logger._wandb_init  # wandb warns about that setting
    tracking.log_config([logger], cfg)
    init = logger._wandb_init
    assert init["job_type"] == "train" and {"synthetic", "joint", "nocam"} <= set(init["tags"])
    assert init["config"]["model"]["loss"]["cam_weight"] == 0 and "_target_" not in init["config"]["model"]
    logger.log_hyperparams({"loss": {"cam_weight": 0}})  # what Lightning does at fit start: dropped, not duplicated
    assert "loss" not in init["config"]
    HydraConfig.instance().cfg = None


# -- user errors -------------------------------------------------------------------------------
def test_user_errors_print_one_message_and_exit_2(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("JOINTCAP_DEBUG", raising=False)

    @cli.user_errors
    def task() -> None:
        raise ConfigError("invalid configuration (1 problem):\n  - model.x: bad")

    with pytest.raises(SystemExit) as e:
        task()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration") and "Traceback" not in err
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):  # the debug switch shows the real exception
        task()


def test_debug_flag_is_taken_off_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOINTCAP_DEBUG", raising=False)
    argv = ["jointcap.run", "--debug", "seed=1"]
    cli.strip_debug_flag(argv)
    assert argv == ["jointcap.run", "seed=1"] and os.environ["JOINTCAP_DEBUG"] == "1" and cli.debugging()


def test_failed_job_folder_is_removed_only_when_empty(tmp_path: Path) -> None:
    (tmp_path / "a" / ".hydra").mkdir(parents=True)
    (tmp_path / "a" / "run.log").write_text("x")
    assert cli.remove_if_empty(tmp_path / "a") and not (tmp_path / "a").exists()
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    assert not cli.remove_if_empty(tmp_path / "b") and (tmp_path / "b").exists()


def test_checkpoint_from_a_run_folder(tmp_path: Path) -> None:
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"l")
    assert cli.find_checkpoint(tmp_path / "run") == ckpts / "last.ckpt"  # no best: the last
    (ckpts / "best-epoch03.ckpt").write_bytes(b"b")
    assert cli.find_checkpoint(tmp_path / "run") == ckpts / "best-epoch03.ckpt"
    assert cli.find_checkpoint(tmp_path / "run", prefer="last") == ckpts / "last.ckpt"
    assert cli.find_checkpoint(ckpts / "last.ckpt") == ckpts / "last.ckpt"
    with pytest.raises(cli.UserError, match="no such file"):
        cli.find_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.UserError, match="without checkpoints"):
        cli.find_checkpoint(tmp_path / "empty")


def test_every_missing_dataset_file_is_named(tmp_path: Path) -> None:
    a, b = Remote("a.tgz", "0" * 32), Remote("b.tar.gz", None, gdrive_id="xyz")
    with pytest.raises(MissingFileError) as e:
        gather_missing(
            lambda: ensure_file(a, tmp_path / a.filename, False), lambda: ensure_file(b, tmp_path / b.filename, False)
        )
    assert "2 dataset files are missing" in str(e.value) and "a.tgz" in str(e.value) and "b.tar.gz" in str(e.value)
    assert gather_missing(lambda: 1, lambda: 2) == [1, 2]


# -- debug presets and the Optuna preset ---------------------------------------------------------
@pytest.mark.parametrize("preset", ["fdr", "overfit", "limit", "profiler"])
def test_debug_presets_leave_nothing_trusted(preset: str) -> None:
    cfg = _compose([f"debug={preset}"], hydra=True)
    assert cfg.debug_run is True and cfg.ckpt_path is None
    assert all(cfg.callbacks[k] is None for k in ("checkpoint", "step_checkpoint", "preemption"))
    assert cfg.hydra.run.dir.startswith("debug/")
    validate(_compose([f"debug={preset}"]))


def test_optuna_preset_searches_lambda_and_lr() -> None:
    cfg = _compose(["+sweep=optuna"], hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert (
        set(sweeper.params) == {"model.loss.cam_weight", "model.optim.lr"} and "log" in sweeper.params["model.optim.lr"]
    )


# -- predict -------------------------------------------------------------------------------------
def test_predict_inputs(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(np.zeros((30, 90, 3), np.uint8)).save(tmp_path / "a" / "b" / "wide.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "top.jpg")
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert expand([str(tmp_path / "a")]) == [tmp_path / "a" / "b" / "wide.png", tmp_path / "a" / "top.jpg"]  # recursive
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(cli.UserError, match="no image files"):
        expand([str(tmp_path / "empty")])
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image(tmp_path / "missing.jpg", 64)
    assert display_image(tmp_path / "a" / "b" / "wide.png", 120).shape == (3, 40, 120)  # aspect ratio kept


def test_predict_warns_about_synthetic_checkpoints() -> None:
    class M:
        info = {"name": "synthetic"}

    assert "synthetic birds" in (domain_warning(cast(Any, M())) or "")
    M.info = {"name": "synthetic_hard"}  # the hard benchmark's drawings too
    assert "synthetic birds" in (domain_warning(cast(Any, M())) or "")
    M.info = {"name": "cub"}
    assert domain_warning(cast(Any, M())) is None
    assert confidence_note(0.058, 24) == "low confidence" and confidence_note(0.9, 24) == ""


# -- figures -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", viz.FORMATS)
def test_figures_have_a_colour_bar_and_save_in_each_format(tmp_path: Path, fmt: str) -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    panels = viz.explanation_panels(torch.rand(4, 4), torch.rand(4, 4), ["red"], torch.rand(1, 4, 4))
    fig = viz.image_figure(image, panels, "title")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert viz.BAR_LABEL in labels  # the colour bar, with the normalisation
    path = viz.save_figure(fig, tmp_path / f"f.{fmt}")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="format"):
        viz.save_figure(fig, tmp_path / "f.gif")


# -- report.html -----------------------------------------------------------------------------------
def _rows() -> list[dict]:
    return [
        {"index": 0, "key": "ok_sure", "true_class": "a", "pred_class": "a", "prob": 0.9, "correct": 1},
        {"index": 1, "key": "wrong_unsure", "true_class": "a", "pred_class": "b", "prob": 0.4, "correct": 0},
        {"index": 2, "key": "ok_unsure", "true_class": "b", "pred_class": "b", "prob": 0.5, "correct": 1},
        {"index": 3, "key": "wrong_sure", "true_class": "b", "pred_class": "a", "prob": 0.8, "correct": 0},
    ]


def test_gallery_shows_worst_errors_first() -> None:
    rows = _rows()
    assert [rows[i]["key"] for i in html_report.gallery_order(rows)] == [
        "wrong_sure",
        "wrong_unsure",
        "ok_unsure",
        "ok_sure",
    ]
    assert html_report.gallery_order([{"key": "x"}, {"key": "y"}]) == [0, 1]  # a captioner alone: as given


def test_report_html_is_self_contained_and_well_formed(tmp_path: Path) -> None:
    from tests.test_evaluate import _module

    module, _ = _module()
    rows = [_rows()[i] for i in html_report.gallery_order(_rows())]  # as jointcap.evaluate orders them
    images = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)
    refs = [[f"a bird <{i}> & a crown"] for i in range(4)]  # by dataset index
    items = html_report.gallery(module, images, rows, refs, beam_size=1)
    assert len(items) == 4 and items[1].references == ["a bird <1> & a crown"] and items[0].jpeg[:2] == b"\xff\xd8"
    report: dict[str, Any] = {
        "checkpoint": "/x/last.ckpt",
        "split": "test",
        "dataset": "synthetic",
        "n_images": 4,
        "task": "joint",
        "beam_size": 1,
        "metrics": {"acc1": 0.5, "cider_d": 0.25, "attr_f1": 0.7, "cam_pointing_class": 0.3},
    }
    per_class = [
        {"label": 0, "class": "a", "n_images": 2, "accuracy": 0.5},
        {"label": 1, "class": "b", "n_images": 0, "accuracy": None},
    ]
    path = html_report.write_html(tmp_path / "report.html", report, per_class, items)
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text.split("\n", 1)[1])  # well-formed (XHTML), after the doctype
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    srcs = [img.get("src") for img in root.iterfind(".//h:img", ns)]
    assert len(srcs) == 4 and all((s or "").startswith("data:image/jpeg;base64,") for s in srcs)  # nothing to fetch
    assert "http://" not in text.replace("http://www.w3.org/1999/xhtml", "") and "https://" not in text
    for name in report["metrics"]:  # whatever metrics the report has
        assert f">{name}<" in text
    assert "&lt;1&gt; &amp;" in text  # captions escaped
    assert text.index("wrong_sure") < text.index("wrong_unsure") < text.index("ok_unsure") < text.index("ok_sure")


# -- through the command line (no HYDRA_FULL_ERROR, as a user runs it) ------------------------
@pytest.mark.slow
def test_cli_user_errors_without_traceback_or_folders(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = user_cli(["model.loss.cam_weight=-1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 2 and "model.loss.cam_weight=-1" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    assert not run_dir.exists()
    ev = tmp_path / "ev"
    proc = user_cli([f"hydra.run.dir={ev}"], tmp_path, module="jointcap.evaluate")
    assert proc.returncode == 2 and "ckpt_path is required" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    assert not ev.exists()
    proc = user_cli([f"ckpt_path={tmp_path}", f"hydra.run.dir={ev}"], tmp_path, module="jointcap.evaluate")
    assert proc.returncode == 2 and "without checkpoints" in proc.stderr and not ev.exists(), proc.stderr
    proc = user_cli(["--help"], tmp_path, module="jointcap.evaluate")
    assert (
        proc.returncode == 0
        and "report.html" in proc.stdout
        and "Examples" in proc.stdout
        and "model:" not in proc.stdout
    )


@pytest.mark.slow
def test_debug_fdr_leaves_no_checkpoint_or_results(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = user_cli([*TINY, "debug=fdr", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_dir.is_dir() and not (run_dir / "results.json").exists() and not list(run_dir.rglob("*.ckpt"))
    assert "checkpoint:" not in proc.stdout  # the final message names only files that exist


# -- study plots -----------------------------------------------------------------------------------
def test_study_plots_titled_in_words_with_honest_axes() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jointcap.analysis import summarize

    assert (
        summarize.metric_title("test/cider_d") == "CIDEr-D (test)"
        and summarize.metric_title("test/new_thing") == "new thing (test)"
    )
    assert summarize.panel_metrics(["test/cider", "test/cider_d", "val/cider"]) == ["test/cider_d", "val/cider"]
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0.992, 0.998, 1.0])
    summarize.honest_ylim(ax, "test/acc1")
    lo, hi = ax.get_ylim()
    assert hi - lo >= summarize.MIN_SPAN and hi <= 1.01  # not a 0.992–1.000 axis
    plt.close(fig)
