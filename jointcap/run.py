"""The Hydra entry point: `python -m jointcap.run [+experiment=NAME] [key=value …]`.

config → DataModule → LightningModule → Trainer (+ loggers, callbacks) → fit → test.
Returns the objective metric, so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from jointcap import cli
from jointcap.analysis.report import (
    checkpoint_epoch,
    data_reference_points,
    print_samples,
    print_summary,
    run_settings,
)
from jointcap.config import check_accelerator, validate
from jointcap.runtime.checkpoint import with_atomic_io
from jointcap.runtime.distributed import sweep_safe
from jointcap.runtime.noise import quiet_known_noise
from jointcap.runtime.resume import hparams_mismatch, job_mismatch, resume_path
from jointcap.runtime.run_folder import RunLock, record_config, recorded_config
from jointcap.runtime.stopping import Stopped, requested, stop_on_signals, stopped_sweep_status, tell_sweep
from jointcap.runtime.threads import apply as apply_threads
from jointcap.runtime.tracking import finish_wandb, finished_results, log_config, write_results

log = logging.getLogger("jointcap")
quiet_known_noise()  # now (a sweeper imports optuna → alembic before any job) and again in main (after Hydra's logging)
# By design the LightningModule, not the DataModule, moves and normalises batches.
warnings.filterwarnings("ignore", message=r".*overridden `on_(before|after)_batch_transfer`")


def build(cfg: DictConfig) -> tuple[Any, Any, L.Trainer]:  # (JointDataModule, JointCaptionModule, Trainer)
    """Instantiate the data module, the model and the trainer from a composed config."""
    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    made = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks = [cb for cb in made if cb is not None]  # a factory may decline (progress: Lightning's own bar)
    configured = cfg.trainer.get("plugins")
    plugins = with_atomic_io(list(instantiate(configured, _convert_="all")) if configured else [])
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=plugins)
    return datamodule, model, trainer


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (from the launcher's environment, before any trainer exists)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def resolve_ckpt(cfg: DictConfig, run_dir: Path) -> str | None:
    """`auto`/`last` → this run folder's newest checkpoint when there is one (a fresh run otherwise).

    Resuming a run folder with a different model configuration is refused: reusing a folder
    for a new experiment must not silently continue (or report) the old one.
    """
    if cfg.ckpt_path is None or cfg.get("debug_run"):  # a debug run never resumes
        return None
    if cfg.ckpt_path not in ("auto", "last"):
        return str(cli.find_checkpoint(cfg.ckpt_path, prefer="last"))
    found = resume_path(cfg.ckpt_path, run_dir)
    if found is None:
        log.info("ckpt_path=%s: no checkpoint in %s, starting fresh", cfg.ckpt_path, run_dir)
        return None
    changed = hparams_mismatch(found, cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True)))
    if changed:
        raise cli.UserError(
            f"ckpt_path={cfg.ckpt_path}: {found} was trained with another model configuration "
            f"({'; '.join(changed)}). Use a new run folder, or pass ckpt_path={found} to resume "
            "it with the new settings."
        )
    log.info("resuming from %s", found)
    return str(found)


def train(cfg: DictConfig, composed: DictConfig | None = None) -> dict[str, float]:
    """Fit (and test) one configuration; returns the final metrics.

    `composed` (the config as Hydra composed it) is recorded in the run folder once the resume check
    has passed: a refused resume leaves the folder's record as it was.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    apply_threads(cfg, HydraConfig.get())  # this job's share of the cores, before any tensor work
    L.seed_everything(cfg.seed, workers=True)
    cfg = sweep_safe(cfg)  # under -m, plain ddp would re-run the whole sweep on every rank
    ckpt_path = resolve_ckpt(cfg, run_dir)
    if is_rank_zero():
        hydra_cfg = HydraConfig.instance().cfg
        record_config(run_dir, composed or cfg, hydra_cfg, HydraConfig.get().overrides.task, "run")
    datamodule, model, trainer = build(cfg)
    log_config(trainer.loggers, cfg)  # the full resolved config in each W&B run
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    source = ""
    if cfg.test_after_fit:
        cb: Any = trainer.checkpoint_callback  # a ModelCheckpoint (best_model_path, monitor) or None
        ckpt = cb.best_model_path if cb is not None and getattr(cb, "monitor", None) else None
        epoch = checkpoint_epoch(ckpt) if ckpt else trainer.current_epoch - 1
        source = (
            f"test split, the best checkpoint by {cb.monitor}: epoch {epoch} of 0–{(trainer.max_epochs or 0) - 1}"
            if ckpt
            else f"test split, the last epoch ({epoch})"
        )
        results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
        metrics["test/epoch"] = float(epoch) if epoch is not None else math.nan  # a checkpoint without its epoch
    if trainer.is_global_zero:
        if not cfg.get("debug_run"):  # a debug run's numbers must never reach a summary
            write_results(run_dir, metrics, cfg.objective)  # what jointcap.analysis.summarize tabulates
        if cfg.test_after_fit and "captions" in model.eval_metrics["test"]:
            print_samples(
                model.eval_metrics["test"]["captions"].last_predictions,
                datamodule.references("test"),
                list(datamodule.splits["test"].keys),
            )
        stage = "test" if cfg.test_after_fit else "val"
        # after a ddp_spawn fit this process never set the data up: no class count, no splits, no reference points
        num_classes = (getattr(datamodule, "info", None) or {}).get("num_classes")
        references = data_reference_points(datamodule, stage, num_classes)
        settings = run_settings(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
        settings["threads"] = f"{torch.get_num_threads()} (threads={cfg.get('threads')})"  # numbers depend on it
        config = " · ".join(f"{k} {v}" for k, v in settings.items())
        print_summary(metrics, run_dir, trainer, source, references, config)
    return metrics


def log_start(cfg: DictConfig) -> None:
    """The command line's overrides, the config groups chosen and where the full composed config is."""
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not str(k).startswith("hydra/") and v}
    log.info("overrides: %s", " ".join(hydra_cfg.overrides.task) or "(none)")
    log.info("config groups: %s", " ".join(f"{k}={v}" for k, v in sorted(choices.items())))
    log.info("full config: %s", recorded_config(Path(hydra_cfg.runtime.output_dir)))


def checkpoint_folder_to_file(cfg: DictConfig) -> None:
    """`ckpt_path=<run folder>` → that folder's last checkpoint (said which), before validation sees it."""
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "auto", "last") and Path(str(ckpt)).expanduser().is_dir():
        cfg.ckpt_path = str(cli.find_checkpoint(ckpt, prefer="last"))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@cli.user_errors
def main(cfg: DictConfig) -> float | None:
    quiet_known_noise()  # after Hydra's logging setup
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    composed = copy.deepcopy(cfg)  # what the run folder records (as Hydra composed it)
    checkpoint_folder_to_file(cfg)
    validate(cfg)  # before any data work: a bad key or value fails here, naming itself
    check_accelerator(cfg, torch.cuda.is_available())  # a GPU preset on a CPU machine: say what to do, exit 2
    log_start(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    lock = RunLock(run_dir) if is_rank_zero() else contextlib.nullcontext()  # one training per folder
    try:
        with stop_on_signals(), lock:
            done = finished_results(run_dir) if cfg.get("skip_if_done") else None
            if done is not None:  # a resumable sweep's rerun: this job's folder already holds its results
                changed = job_mismatch(recorded_config(run_dir), composed)
                if changed:  # another job's results must never stand in for this one's (e.g. another budget)
                    raise cli.UserError(
                        f"skip_if_done: {run_dir} holds a finished run of another job ({'; '.join(changed)}). "
                        "Give this job its own hydra.run.dir, or move that folder away to rerun it here."
                    )
                log.info("skip_if_done: %s/results.json exists, skipping this job", run_dir)
                return done.get("objective_value")
            metrics = train(cfg, composed)
    except (SIGTERMException, Stopped) as stop:
        # in a fit, jointcap.runtime.callbacks.checkpointing.PreemptionCheckpoint saved last.ckpt
        signum = stop.signum if isinstance(stop, Stopped) else requested() or 15  # SIGINT reaches Lightning as SIGTERM
        log.warning("stopped by signal %d; %s", signum, resume_hint(run_dir))
        if in_launcher_worker():  # joblib would kill its other workers mid-save on an error: return, tell the sweep
            tell_sweep(signum)
            return None
        raise Stopped(signum) from None
    finally:
        finish_wandb(exit_code=1 if sys.exc_info()[0] else 0)  # the next sweep job must start a run of its own
    value = metrics.get(cfg.objective)
    return value if value is not None and math.isfinite(value) else None


def in_launcher_worker() -> bool:
    """Whether this job runs in a worker process of a local parallel launcher (joblib), not in the sweep's own."""
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower()


def resume_hint(run_dir: Path) -> str:
    """How to continue a stopped run or sweep: the same command in the same folder."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return (
            f"resume the sweep with the same command and hydra.sweep.dir={hydra_cfg.sweep.dir} "
            "(skip_if_done=true skips its finished jobs)"
        )
    return f"resume with the same command and hydra.run.dir={run_dir}"


CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"

if __name__ == "__main__":
    cli.strip_debug_flag()
    # misspelt keys and GPU presets on a CPU machine, answered before Hydra makes the run folder
    cli.precheck(CONFIG_DIR, "config", sys.argv[1:], (lambda c: check_accelerator(c, torch.cuda.is_available()),))
    with stopped_sweep_status():  # a sweep told to stop exits 128 + signal even where a job's worker died of it
        main()
