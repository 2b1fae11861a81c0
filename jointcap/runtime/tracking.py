"""Experiment tracking for sweeps: W&B runs that never prompt, and each job's `results.json`.

* `wandb_logger(...)` is `logger=wandb`'s target: a `JointcapWandbLogger` named by the job's
  meaningful overrides and grouped by its multirun folder. Without credentials (no
  `WANDB_API_KEY`, no `~/.netrc` entry for the W&B host) it runs offline; it never calls
  `wandb.login()`. Checkpoints become artifacts (`log_model`) online and offline alike, so a
  cluster run synced later still has its model.
* `log_config(loggers, cfg)` hands every W&B logger the resolved config (once, `_target_`s
  left out), its tags and job type before its run starts; Lightning's own hyper-parameter
  logging (the module's arguments again, as `loss.*` beside `model.loss.*`) is dropped.
* `finish_wandb()` closes the job's W&B run (called in `jointcap.run`'s `finally`, so the next
  sweep job starts a run of its own) and prints how to upload an offline one.
* `write_results(run_dir, ...)` writes the final metrics that `jointcap.analysis.summarize` reads;
  `finished_results(run_dir)` reads them back (a resumable study's rerun skips such a job).
* the `jointcap.dirname` resolver names sweep job folders (`conf/config.yaml`): the overrides as
  `key-value` pairs joined by `__`, keys shortened to their last part, every character outside
  `[A-Za-z0-9._-]` replaced, capped in length, so a job folder passes back through Hydra's
  command line unquoted (the full overrides stay in `.hydra/overrides.yaml`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import netrc
import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"
WANDB_MODES = ("online", "offline", "disabled")
WandbMode = Literal["online", "offline", "disabled"]
DIRNAME_LIMIT = 120
# overrides that say where or how a job logs, not what it computes: left out of W&B run names
UNNAMED_OVERRIDES = (
    "logger",
    "hydra",
    "ckpt_path",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "callbacks.media",
)


def split_overrides(override_dirname: str) -> list[tuple[str, str]]:
    """(key, value) of each `key=value` in a `,`-joined override list (commas inside brackets or quotes kept)."""
    items, depth, quote, current = [], 0, "", ""
    for ch in str(override_dirname):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        current += ch
    items.append(current)
    return [(k, v) for k, _, v in (item.partition("=") for item in items if item)]


def _safe(text: str) -> str:
    """Only `[A-Za-z0-9._-]`: anything else becomes `-` (runs of it one `-`, none at the ends)."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]", "-", text)).strip("-")


def short_dirname(override_dirname: str, limit: int = DIRNAME_LIMIT) -> str:
    """A job folder name from its overrides: `experiment-synthetic_cam__cam_weight-0.5`, safe for the command line.

    Keys keep their last part (`+experiment` → `experiment`, `model.loss.cam_weight` → `cam_weight`);
    names longer than `limit` are cut and suffixed with a hash of the whole override list.
    """
    pairs = [
        (_safe(k.lstrip("+~").rsplit(".", 1)[-1].replace("/", "-")), _safe(v))
        for k, v in split_overrides(override_dirname)
    ]
    name = "__".join(f"{k}-{v}" if v else k for k, v in pairs) or "default"
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha1(str(override_dirname).encode()).hexdigest()[:8]}"


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


def wandb_mode(requested: str | None, env: Mapping[str, str] = os.environ) -> WandbMode:
    """online | offline | disabled: the request, else $WANDB_MODE, else online iff credentials (never without them)."""
    mode = (requested or env.get("WANDB_MODE") or "").lower().replace("dryrun", "offline")
    if mode not in WANDB_MODES:
        mode = "online" if has_wandb_credentials(env) else "offline"
    if mode == "online" and not has_wandb_credentials(env):
        log.warning("W&B: no credentials (WANDB_API_KEY or `wandb login`): logging offline instead")
        mode = "offline"
    return cast(WandbMode, mode)  # one of WANDB_MODES


def run_name(overrides: list[str]) -> str:
    """A W&B run name from the meaningful overrides: `experiment=synthetic_cam cam_weight=1 seed=2` (or "default")."""
    parts = []
    for item in overrides:
        key, _, value = str(item).partition("=")
        bare = key.lstrip("+~")
        if any(bare == u or bare.startswith(u + ".") or bare.startswith(u + "/") for u in UNNAMED_OVERRIDES):
            continue
        parts.append(f"{bare.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts) or "default"


def job_identity() -> tuple[str, str | None]:
    """(run name, group): the job's meaningful overrides, and its multirun folder (None outside a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return "jointcap", None
    hc = HydraConfig.get()
    group = "/".join(Path(hc.sweep.dir).parts[-2:]) if hc.mode == RunMode.MULTIRUN else None
    return run_name(list(hc.overrides.task)), group


def readable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as nested dicts for W&B, without the `_target_`/`_convert_` plumbing."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if k not in ("_target_", "_convert_", "_partial_")}
        return [clean(v) for v in node] if isinstance(node, list) else node

    return clean(OmegaConf.to_container(cfg, resolve=True))


def run_tags(cfg: DictConfig) -> list[str]:
    """Tags that filter runs in the W&B table: dataset, task, λ on/off, and the experiment's name if one was chosen."""
    from hydra.core.hydra_config import HydraConfig

    tags = []
    source = str(OmegaConf.select(cfg, "data.source._target_", default="") or "")
    if source:
        tags.append(source.rsplit(".", 1)[-1].removesuffix("Source").lower() or source)
    task = OmegaConf.select(cfg, "model.task", default=None)
    if task:
        tags.append(str(task))
        weight = OmegaConf.select(cfg, "model.loss.cam_weight", default=None)
        if task == "joint" and weight is not None:
            tags.append("cam" if float(weight) > 0 else "nocam")
    if HydraConfig.initialized():
        tags += [
            f"experiment:{o.split('=', 1)[1]}"
            for o in HydraConfig.get().overrides.task
            if o.lstrip("+").startswith("experiment=")
        ]
    if cfg.get("debug_run"):
        tags.append("debug")
    return tags


def _wandb_logger_class():
    """JointcapWandbLogger, defined on first use (importing wandb costs seconds)."""
    from lightning.pytorch.loggers import WandbLogger

    class JointcapWandbLogger(WandbLogger):
        """A WandbLogger whose run gets the job's config, tags and job type once, before it starts."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None; wandb warns about the setting

        def configure(self, config: dict[str, Any], tags: list[str], job_type: str) -> None:
            """Config, tags and job type for the run (set at its start when it has not started yet)."""
            if self._experiment is None:
                self._wandb_init["config"] = config
                self._wandb_init["tags"] = sorted({*(self._wandb_init.get("tags") or []), *tags})
                if self._wandb_init.get("job_type") is None:
                    self._wandb_init["job_type"] = job_type
            else:
                self.experiment.config.update(config, allow_val_change=True)

        def log_hyperparams(self, params: Any) -> None:
            """Dropped: `log_config` already gave the run the whole config (Lightning would add the module's again)."""

    return JointcapWandbLogger


def wandb_logger(
    project: str = "jointcap",
    save_dir: str = ".",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str | None = None,
    log_model: bool | str = True,
    job_type: str | None = None,
    **kwargs: Any,
):
    """A W&B logger that never prompts: named by the job's overrides, grouped per sweep, offline without credentials.

    `log_model` (true: the best and last checkpoints at the end of a successful fit; all: every
    save) works offline too: the artifacts upload with `wandb sync`.
    """
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    mode = wandb_mode(mode)
    auto_name, auto_group = job_identity()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return _wandb_logger_class()(
        project=project,
        save_dir=save_dir,
        entity=entity,
        name=name or auto_name,
        group=group or auto_group,
        tags=list(tags or []),
        mode=mode,
        log_model=log_model if mode != "disabled" else False,
        job_type=job_type,
        settings=wandb.Settings(silent=True),
        **kwargs,
    )


def log_config(loggers: list[Any], cfg: DictConfig) -> None:
    """Give each W&B logger's run the resolved config (once, readable), tags and job type (train | debug)."""
    wandb_loggers = [lg for lg in loggers if hasattr(lg, "configure")]
    if wandb_loggers:
        config, tags = readable_config(cfg), run_tags(cfg)
        for lg in wandb_loggers:
            lg.configure(config, tags, "debug" if cfg.get("debug_run") else "train")


def finish_wandb(exit_code: int = 0) -> None:
    """Close this process's W&B run, if any, and say how to upload it when it was offline."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if wandb is None or run is None:
        return
    offline = run.settings.mode in ("offline", "dryrun")
    sync_dir = run.settings.sync_dir
    wandb.finish(exit_code=exit_code)
    if offline:
        print(f"W&B run saved offline; upload it with: wandb sync {shlex.quote(str(sync_dir))}")


def write_results(
    run_dir: Path, metrics: Mapping[str, float], objective: str | None = None, extra: Mapping[str, Any] | None = None
) -> Path:
    """`<run_dir>/results.json`: the final metrics (finite ones), the objective's name and value."""
    finite = {k: float(v) for k, v in sorted(metrics.items()) if math.isfinite(float(v))}
    record = {
        "objective": objective,
        "objective_value": finite.get(objective) if objective else None,
        "metrics": finite,
        **(extra or {}),
    }
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
