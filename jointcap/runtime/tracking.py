"""Experiment tracking for sweeps: W&B runs that never prompt, and each job's `results.json`.

* `wandb_logger(...)` is `logger=wandb`'s target: a Lightning `WandbLogger` named by the job's
  overrides and grouped by its multirun folder. Without credentials (no `WANDB_API_KEY`, no
  `~/.netrc` entry for the W&B host) it runs offline; it never calls `wandb.login()`.
* `log_config(loggers, cfg)` records the full resolved config in every W&B run.
* `finish_wandb()` closes the job's W&B run (called in `jointcap.run`'s `finally`, so the next
  sweep job starts a run of its own) and prints how to upload an offline one.
* `write_results(run_dir, ...)` writes the final metrics that `jointcap.analysis.summarize` reads;
  `finished_results(run_dir)` reads them back (a resumable study's rerun skips such a job).
* the `jointcap.dirname` resolver names sweep job folders (`conf/config.yaml`): the overrides,
  with `/` made safe and capped in length (many overrides would exceed the file-name limit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import netrc
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"
WANDB_MODES = ("online", "offline", "disabled")
DIRNAME_LIMIT = 120


def short_dirname(override_dirname: str, limit: int = DIRNAME_LIMIT) -> str:
    """A folder name from a job's override_dirname: `/` replaced, longer than `limit` cut and suffixed with a hash of the whole."""
    name = str(override_dirname).replace("/", "_")
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


if not OmegaConf.has_resolver("jointcap.dirname"):
    OmegaConf.register_new_resolver("jointcap.dirname", short_dirname)


def has_wandb_credentials(env: Mapping[str, str] = os.environ) -> bool:
    """An API key in the environment or a ~/.netrc entry for the W&B host (what `wandb login` writes)."""
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = env.get("NETRC") or str(Path(env.get("HOME") or Path.home()) / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_mode(requested: str | None, env: Mapping[str, str] = os.environ) -> str:
    """online | offline | disabled: the request (else $WANDB_MODE, else online iff credentials); never online without them."""
    mode = (requested or env.get("WANDB_MODE") or "").lower().replace("dryrun", "offline")
    if mode not in WANDB_MODES:
        mode = "online" if has_wandb_credentials(env) else "offline"
    if mode == "online" and not has_wandb_credentials(env):
        log.warning("W&B: no credentials (WANDB_API_KEY or `wandb login`): logging offline instead")
        mode = "offline"
    return mode


def job_identity() -> tuple[str, str | None]:
    """(run name, group): the job's overrides, and its multirun folder (None outside a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return "jointcap", None
    hc = HydraConfig.get()
    name = ",".join(hc.overrides.task) or "default"
    group = "/".join(Path(hc.sweep.dir).parts[-2:]) if hc.mode == RunMode.MULTIRUN else None
    return name, group


def wandb_logger(project: str = "jointcap", save_dir: str = ".", entity: str | None = None, name: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, mode: str | None = None,
                 log_model: bool | str = False, **kwargs: Any):
    """A Lightning WandbLogger that never prompts: named by the job's overrides, grouped per sweep, offline without credentials."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    mode = wandb_mode(mode)
    auto_name, auto_group = job_identity()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, entity=entity, name=name or auto_name, group=group or auto_group,
                       tags=list(tags or []), mode=mode, log_model=log_model if mode == "online" else False,
                       settings=wandb.Settings(silent=True), **kwargs)


def log_config(loggers: list[Any], cfg: DictConfig) -> None:
    """Record the full resolved config in each W&B logger's run (other loggers keep the module's hyper-parameters)."""
    wandb_loggers = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
    if wandb_loggers:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        for lg in wandb_loggers:
            lg.log_hyperparams(resolved)


def finish_wandb(exit_code: int = 0) -> None:
    """Close this process's W&B run, if any, and say how to upload it when it was offline."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    offline = run.settings.mode in ("offline", "dryrun")
    sync_dir = run.settings.sync_dir
    wandb.finish(exit_code=exit_code)
    if offline:
        print(f"W&B run saved offline; upload it with: wandb sync {shlex.quote(str(sync_dir))}")


def write_results(run_dir: Path, metrics: Mapping[str, float], objective: str | None = None,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """`<run_dir>/results.json`: the final metrics (finite ones), the objective's name and value."""
    finite = {k: float(v) for k, v in sorted(metrics.items()) if math.isfinite(float(v))}
    record = {"objective": objective, "objective_value": finite.get(objective) if objective else None,
              "metrics": finite, **(extra or {})}
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def finished_results(run_dir: Path | str) -> dict[str, Any] | None:
    """The job's `results.json` record when the job finished (a readable file with metrics), else None."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None
