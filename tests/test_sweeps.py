"""Experiments at scale: ladder/sweep/launcher configs, W&B offline runs, the summary script, DDP.

The end-to-end tests run the CLI in subprocesses (stdin closed, with timeouts) on TINY data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from jointcap.analysis import summarize
from jointcap.runtime import distributed, tracking
from tests.conftest import ROOT, TINY

CONF = ROOT / "conf"
DATASETS = ("synthetic", "cub", "flowers")
QUIET = ["trainer.enable_progress_bar=false"]


def _compose(overrides: list[str], hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def _cli(args: list[str], cwd: Path, timeout: float = 300, **env_changes: str | None) -> subprocess.CompletedProcess:
    """`python -m jointcap.run args…` with stdin closed; env_changes=None removes a variable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="1")
    for k, v in env_changes.items():
        env.pop(k, None) if v is None else env.__setitem__(k, v)
    proc = subprocess.run(
        [sys.executable, "-m", "jointcap.run", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


# -- configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", DATASETS)
def test_ladder_rungs_for_every_dataset(dataset: str) -> None:
    """classifier · captioner · nocam · cam, all on the dataset's own setting."""
    rungs = {r: _compose([f"+experiment={dataset}_{r}"]) for r in ("classifier", "captioner", "nocam", "cam")}
    assert [c.model.task for c in rungs.values()] == ["classifier", "captioner", "joint", "joint"]
    assert [c.model.loss.cam_weight for c in rungs.values()] == [0.0, 0.0, 0.0, 1.0]
    assert rungs["captioner"].model.monitor == "val/cider_d" and rungs["classifier"].model.monitor == "val/acc1"
    assert len({c.data.source._target_ for c in rungs.values()}) == 1
    assert len({OmegaConf.to_yaml(c.model.encoder) for c in rungs.values()}) == 1  # same backbone on every rung


@pytest.mark.parametrize(
    "name,key",
    [
        ("ladder", "+experiment"),
        ("lambda", "model.loss.cam_weight"),
        ("divergence", "model.loss.divergence"),
        ("grad_to", "model.loss.grad_to"),
    ],
)
def test_sweep_configs(name: str, key: str) -> None:
    params = _compose([f"+sweep={name}"], hydra=True).hydra.sweeper.params
    assert key in params and len(str(params[key]).split(",")) >= 3 and len(str(params.seed).split(",")) >= 3


def test_launchers_compose() -> None:
    local = _compose(["hydra/launcher=local"], hydra=True).hydra.launcher
    assert local._target_.endswith("JoblibLauncher") and local.n_jobs == 2
    slurm = _compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], hydra=True)
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert slurm.trainer.strategy == "ddp" and slurm.trainer.precision == "bf16-mixed"


def test_study_budget_is_smaller_than_the_default() -> None:
    full, study = _compose([]), _compose(["+budget=study"])
    assert study.data.source.n_train < full.data.source.n_train and study.trainer.max_epochs <= full.trainer.max_epochs


def test_job_folder_names_are_capped() -> None:
    long = ",".join(f"key{i}.sub=value{i}/x" for i in range(40))
    name = tracking.short_dirname(long)
    assert len(name) <= tracking.DIRNAME_LIMIT and "/" not in name
    assert name != tracking.short_dirname(long + ",z=1")  # distinct overrides, distinct names
    assert tracking.short_dirname("a=1,b=2") == "a-1__b-2"


# -- W&B never prompts -----------------------------------------------------------------------
def test_wandb_mode_without_credentials_is_offline(tmp_path: Path) -> None:
    bare = {"HOME": str(tmp_path)}
    assert tracking.wandb_mode(None, bare) == "offline"
    assert tracking.wandb_mode("online", bare) == "offline"  # never online (and prompting) without a key
    assert tracking.wandb_mode(None, {**bare, "WANDB_MODE": "disabled"}) == "disabled"
    assert tracking.wandb_mode(None, {**bare, "WANDB_MODE": "dryrun"}) == "offline"
    assert tracking.wandb_mode(None, {**bare, "WANDB_API_KEY": "x" * 40}) == "online"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert tracking.wandb_mode(None, bare) == "online"
    assert tracking.wandb_mode(None, {**bare, "WANDB_MODE": "offline"}) == "offline"


# -- the ddp-under-multirun guard ------------------------------------------------------------
def _trainer(**kw):
    import lightning as L

    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, **kw)


def test_plain_ddp_relaunches_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.relaunches_command_line(_trainer(devices=2, strategy="ddp"))
    assert not distributed.relaunches_command_line(_trainer(devices=2, strategy="ddp_spawn"))
    assert not distributed.relaunches_command_line(_trainer(devices=1, strategy="ddp"))
    # under SLURM srun has started the ranks: Lightning does not re-launch, plain ddp stays
    for k, v in {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_JOB_NAME": "jc",
        "SLURM_JOB_ID": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "n1",
    }.items():
        monkeypatch.setenv(k, v)
    assert not distributed.relaunches_command_line(_trainer(devices=2, strategy="ddp"))


class PopenOnlyStrategy(DDPStrategy):
    """A strategy that re-launches the command line and that the guard knows no spawn variant of."""


def test_sweep_guard_switches_plain_ddp_to_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = OmegaConf.create(
        {
            "trainer": {
                "_target_": "lightning.pytorch.Trainer",
                "accelerator": "cpu",
                "devices": 2,
                "strategy": "ddp",
                "logger": False,
            }
        }
    )
    assert distributed.sweep_safe(cfg) is cfg  # a single run: Lightning's re-launch is fine
    monkeypatch.setattr(distributed, "in_multirun", lambda: True)
    assert distributed.sweep_safe(cfg).trainer.strategy == "ddp_spawn" and cfg.trainer.strategy == "ddp"
    cfg.trainer.strategy = "ddp_find_unused_parameters_true"
    assert distributed.sweep_safe(cfg).trainer.strategy == "ddp_spawn_find_unused_parameters_true"
    cfg.trainer.strategy = {"_target_": "lightning.pytorch.strategies.DDPStrategy", "process_group_backend": "gloo"}
    assert distributed.sweep_safe(cfg).trainer.strategy.start_method == "spawn"
    cfg.trainer.devices, cfg.trainer.strategy = 1, "ddp"
    assert distributed.sweep_safe(cfg) is cfg  # one process: nothing is re-launched
    cfg.trainer.devices, cfg.trainer.strategy = 2, {"_target_": f"{__name__}.PopenOnlyStrategy"}
    with pytest.raises(distributed.SweepStrategyError, match="hydra/launcher=slurm"):
        distributed.sweep_safe(cfg)


# -- the summary script ----------------------------------------------------------------------
def _fake_job(folder: Path, overrides: list[str], config: dict, metrics: dict) -> None:
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    tracking.write_results(folder, metrics, "val/acc1")


def test_summary_groups_settings_over_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    n = 0
    for lam in (0.0, 1.0, 2.0):
        for seed in (1, 2, 3):
            cfg = {"seed": seed, "model": {"task": "joint", "monitor": "val/acc1", "loss": {"cam_weight": lam}}}
            _fake_job(
                sweep / f"{n}_x",
                [f"model.loss.cam_weight={lam}", f"seed={seed}"],
                cfg,
                {"test/acc1": 0.5 + 0.1 * lam + 0.01 * seed, "test/cider_d": 1.0, "val/acc1": 0.4},
            )
            n += 1
    _fake_job(
        sweep / "other" / "9_cls",
        ["+experiment=synthetic_classifier", "seed=1"],
        {"seed": 1, "model": {"task": "classifier", "monitor": "val/acc1", "loss": {"cam_weight": 0.0}}},
        {"test/acc1": 0.3},
    )
    files = summarize.summarize([sweep], tmp_path / "out", "Test")
    md = files["summary"].read_text()
    assert md.count("* **S") == 4 and "cam_weight=0, task=classifier" in md
    assert "| test/acc1 | 0.3000 (1) | 0.5200 ± 0.0100 (3) | 0.6200 ± 0.0100 (3) | 0.7200 ± 0.0100 (3) |" in md
    assert "val/acc1" not in md  # test metrics only when there are some
    assert (tmp_path / "out" / "cam_weight_all.png").stat().st_size > 1000
    assert len((tmp_path / "out" / "jobs.csv").read_text().splitlines()) == 11


def test_a_key_missing_from_older_jobs_splits_no_setting() -> None:
    """A schema key added mid-study (absent from the older jobs' configs, one value in the newer) is no setting."""
    old = summarize.Job(Path("a"), {"seed": 1, "model.loss.cam_weight": 1.0}, [], {})
    new = summarize.Job(Path("b"), {"seed": 2, "model.loss.cam_weight": 1.0, "model.decode.no_repeat_ngram": 0}, [], {})
    other = summarize.Job(Path("c"), {"model.loss.cam_weight": 0.0, "model.decode.no_repeat_ngram": 0}, [], {})
    assert summarize.setting_keys([old, new, other]) == ["model.loss.cam_weight"]
    differs = summarize.Job(Path("d"), {"model.loss.cam_weight": 0.0, "model.decode.no_repeat_ngram": 3}, [], {})
    assert summarize.setting_keys([old, new, differs]) == ["model.decode.no_repeat_ngram", "model.loss.cam_weight"]


def test_a_loss_option_older_jobs_lack_reads_as_its_default() -> None:
    """Jobs from before `model.loss.scst_cam` existed ran with the CAM loss in SCST: one setting with the new jobs
    that say scst_cam=true, another than the new jobs that set it false."""
    old = summarize.Job(Path("o"), {"model.loss.cam_weight": 1.0}, [], {})
    new = summarize.Job(Path("n"), {"model.loss.cam_weight": 1.0, "model.loss.scst_cam": True}, [], {})
    off = summarize.Job(Path("f"), {"model.loss.cam_weight": 1.0, "model.loss.scst_cam": False}, [], {})
    assert summarize.assign_settings([old, new, off]) == ["model.loss.scst_cam"]
    assert old.setting == new.setting != off.setting
    assert summarize.setting_name(off.setting + (("model.loss.cam_weight", 1.0),)) == (
        "joint, λ = 1, no CAM loss in the SCST epochs"
    )
    assert summarize.setting_name(old.setting + (("model.loss.cam_weight", 1.0),)) == "joint, λ = 1"


def test_panels_leave_out_a_metric_equal_to_another_in_every_job() -> None:
    """Mean per-class accuracy on a (near-)balanced test split is top-1 accuracy: one panel, not two."""
    jobs = [
        summarize.Job(Path(str(i)), {}, [], {"test/acc1": a, "test/acc_per_class": a + 1e-4, "test/cider_d": 0.5 + a})
        for i, a in enumerate((0.6, 0.7))
    ]
    names = ["test/acc1", "test/acc_per_class", "test/cider_d"]
    assert summarize.panel_metrics(names, jobs) == ["test/acc1", "test/cider_d"]
    jobs[1].metrics["test/acc_per_class"] = 0.68  # 20 % of the range apart in one job: a panel of its own
    assert summarize.panel_metrics(names, jobs) == names
    jobs[0].metrics.pop("test/acc_per_class")  # missing in one job is no proof of equality
    assert summarize.panel_metrics(names, jobs) == names


def test_panels_prefer_the_js_disagreement_that_compares_across_divergences() -> None:
    """`disagreement` is each run's own divergence (KL, L1, …); where `disagreement_js` is there it replaces it,
    as `cider_d` replaces `cider`; a study from before disagreement_js keeps its disagreement panel."""
    names = ["test/cider", "test/cider_d", "test/disagreement", "test/disagreement_js", "val/disagreement"]
    assert summarize.panel_metrics(names) == ["test/cider_d", "test/disagreement_js", "val/disagreement"]
    assert summarize.panel_metrics(["test/cider", "test/disagreement"]) == ["test/cider", "test/disagreement"]


def test_a_setting_run_at_one_lambda_is_a_point_and_a_single_task_rung_a_reference_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    def job(i: int, task: str, lam: float, div: str = "js") -> summarize.Job:
        cfg = {"seed": i % 2, "model.task": task, "model.loss.cam_weight": lam, "model.loss.divergence": div}
        return summarize.Job(Path(f"{task}{lam}{div}{i}"), cfg, [], {"test/acc1": 0.5 + 0.1 * lam + 0.01 * i})

    jobs = [job(i, "joint", lam) for lam in (0.0, 1.0) for i in (0, 1)]
    jobs += [job(i, "joint", 0.18, "kl") for i in (0, 1)] + [job(i, "classifier", 0.0) for i in (0, 1)]
    summarize.assign_settings(jobs)
    drawn: dict[str, str] = {}
    real_savefig = plt.Figure.savefig

    def spy(fig: Any, *args: Any, **kwargs: Any) -> None:  # record each legend entry's artist before writing
        for text, handle in zip(fig.legends[0].texts, fig.legends[0].legend_handles, strict=True):
            drawn[text.get_text()] = type(handle).__name__
        real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    assert summarize.plot_against(jobs, summarize.LAMBDA, tmp_path / "p.png") is not None
    assert set(drawn) == {"joint", "joint, KL divergence", "classifier alone"}, drawn
    assert drawn["classifier alone"] == "Line2D"  # a dashed reference line across the λ axis
    assert drawn["joint, KL divergence"] != "Line2D" and drawn["joint"] != "Line2D"  # points with error bars


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.slow
def test_wandb_sweep_gives_one_offline_run_per_job_and_a_summary(tmp_path: Path) -> None:
    """A 2-job multirun with logger=wandb, no credentials and stdin closed: two offline runs, then a table."""
    sweep = tmp_path / "sweep"
    proc = _cli(
        ["-m", *TINY, *QUIET, "logger=wandb", "model.loss.cam_weight=0,1", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        timeout=400,
        WANDB_MODE=None,
        WANDB_API_KEY=None,
        HOME=str(tmp_path),
    )
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 2 and proc.stdout.count("wandb sync") == 2
    runs = []
    for lam, job in zip((0, 1), jobs, strict=False):
        assert f"model.loss.cam_weight={lam}" in OmegaConf.load(job / ".hydra" / "overrides.yaml")
        results = json.loads((job / "results.json").read_text())
        assert (
            results["objective"] == "val/cider_d" and 0 <= results["metrics"]["test/acc1"] <= 1
        )  # the joint model is selected on captions
        (offline,) = (job / "wandb").glob("offline-run-*")  # exactly one W&B run per job, in its own folder
        record = next(offline.glob("run-*.wandb")).read_bytes()
        assert b"cam_weight" in record and b"n_train=96" in record and sweep.name.encode() in record
        runs.append(offline.name)
    assert runs[0] != runs[1]
    files = summarize.summarize([sweep], tmp_path / "summary")
    md = files["summary"].read_text()
    assert "cam_weight=0" in md and "cam_weight=1" in md and "| test/acc1 |" in md
    assert files["cam_weight_main.png"].is_file()


DDP_EVAL = textwrap.dedent("""
    import json, sys
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from jointcap.lit_module import JointCaptionModule

    run = sys.argv[1]
    cfg = OmegaConf.load(run + "/.hydra/config.yaml")
    out = {}
    for devices in (1, 2):
        dm = instantiate(cfg.data, _convert_="all")
        model = JointCaptionModule.load_from_checkpoint(run + "/checkpoints/last.ckpt", weights_only=False)
        trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                            logger=False, enable_progress_bar=False, enable_model_summary=False)
        out[devices] = trainer.test(model, datamodule=dm, verbose=False)[0]
    print("RESULTS" + json.dumps(out))
""")


@pytest.mark.slow
def test_ddp_two_processes(tmp_path: Path) -> None:
    """Plain `ddp` over 2 CPU processes through the CLI, then one checkpoint evaluated with 1 and 2 processes.

    A 2-process fit cannot match a 1-process fit (each rank sees half the data per step, so the
    optimiser takes half the steps with other batches), so the fit is only checked for finishing
    with sane metrics, one shared run folder (rank 1 re-runs the command line: Lightning passes
    it rank 0's hydra.run.dir) and one W&B run. What must match is evaluation: the same weights
    on the same test split give the same metrics whether one process sees every image or two
    processes each see half (the distributed sampler splits 32 images evenly, every metric
    syncs its states across ranks, caption scores de-duplicate by image index).
    """
    _cli(
        [*TINY, *QUIET, "trainer=ddp_cpu", "logger=wandb", "trainer.precision=32-true"],
        tmp_path,
        timeout=400,
        WANDB_MODE=None,
        WANDB_API_KEY=None,
        HOME=str(tmp_path),
    )
    runs = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    assert len(runs) == 1, f"the ranks must share one run folder, got {runs}"
    run = runs[0]
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert 0 <= metrics["test/acc1"] <= 1 and 0 <= metrics["test/bleu1"] <= 1 and metrics["test/loss"] > 0
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # rank 1 logs nothing of its own
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", DDP_EVAL, str(run)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    one, two = json.loads(proc.stdout.split("RESULTS", 1)[1]).values()
    assert one.keys() == two.keys() and "test/cider_d" in one
    for k in one:
        assert one[k] == pytest.approx(two[k], rel=1e-4, abs=1e-5), k


@pytest.mark.slow
def test_ddp_under_multirun_runs_each_job_once_with_spawn(tmp_path: Path) -> None:
    """`-m trainer=ddp_cpu`: the guard swaps plain ddp for ddp_spawn, so the sweep runs once, not once per rank."""
    sweep = tmp_path / "sweep"
    proc = _cli(
        [
            "-m",
            *TINY,
            *QUIET,
            "trainer=ddp_cpu",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "test_after_fit=false",
            "seed=1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=300,
    )
    assert "using ddp_spawn for this sweep job" in proc.stdout + proc.stderr
    jobs = [p for p in sweep.iterdir() if p.is_dir()]
    assert len(jobs) == 1 and (jobs[0] / "results.json").is_file()
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()  # no rank re-ran the sweep
