"""What the entry points (`run`, `evaluate`, `predict`) share: user errors printed as one message, checkpoint paths.

* `user_errors` wraps a `@hydra.main` task function: a mistake the user can fix (a bad config
  value, missing data files, a missing or unsafe checkpoint, an unreadable image, a missing
  mandatory option) prints `error: <message>` on stderr and exits with status 2, without a
  traceback, and removes the job's output folder when this job created it (it held nothing but
  Hydra's fresh bookkeeping when the job started) and it still holds nothing else; a folder that
  held anything before the job (a user's `hydra.run.dir=mylogs`) is never removed.
  `HYDRA_FULL_ERROR=1`, `JOINTCAP_DEBUG=1` or `--debug` on the command line re-raise instead
  (the full traceback).
* `find_checkpoint(path, prefer)` accepts a checkpoint file or a run folder (its best or last
  checkpoint, logged which).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf.errors import MissingMandatoryValue

from jointcap.config import ConfigError
from jointcap.data.cache import CacheError
from jointcap.data.captions import CaptionError
from jointcap.data.download import DataFileError
from jointcap.runtime.callbacks.guards import EmptyTrainingError, NonFiniteLossError
from jointcap.runtime.checkpoint import CheckpointError
from jointcap.runtime.distributed import SweepStrategyError
from jointcap.runtime.run_folder import RunLockedError
from jointcap.runtime.threads import ThreadsError

log = logging.getLogger("jointcap")
DEBUG_FLAG = "--debug"
EXIT_USER_ERROR = 2
# what a Hydra job leaves in its folder before it has done anything: the folder may go when the job fails
BOOKKEEPING = {".hydra"}
# when this process started (before Hydra made the job folder): what is older is not this job's
STARTED = time.time() - 1.0  # a second of slack for file systems with coarse timestamps
F = TypeVar("F", bound=Callable[..., Any])


class UserError(RuntimeError):
    """A problem with the request (paths, options) that the user can fix; printed without a traceback."""


# DataFileError covers MissingFileError, ChecksumError, ArchiveError and ImageDecodeError
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ConfigError,
    DataFileError,
    CaptionError,
    CacheError,
    CheckpointError,
    SweepStrategyError,
    RunLockedError,
    ThreadsError,
    MissingMandatoryValue,
    NonFiniteLossError,
    EmptyTrainingError,
)


def debugging(env: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether the user asked for full tracebacks (HYDRA_FULL_ERROR=1, JOINTCAP_DEBUG=1 or --debug)."""
    return env.get("HYDRA_FULL_ERROR") == "1" or env.get("JOINTCAP_DEBUG") == "1"


def strip_debug_flag(argv: list[str] = sys.argv) -> None:
    """Take `--debug` out of the command line (Hydra would refuse it) and remember it in the environment."""
    if DEBUG_FLAG in argv[1:]:
        argv[:] = [a for a in argv if a != DEBUG_FLAG]
        os.environ["JOINTCAP_DEBUG"] = "1"  # inherited by DDP ranks that re-run the command line


def message(error: BaseException) -> str:
    """One readable line (or block) for a user error."""
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", "") or str(error).split("\n")[0]
        return f"{key} is required: give it on the command line ({key}=…); see --help"
    return str(error)


def remove_if_empty(folder: Path | None) -> bool:
    """Delete a job folder that holds only Hydra's bookkeeping and its log (nothing a user wants); True if removed."""
    if folder is None or not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if any(p.name not in BOOKKEEPING and not (p.is_file() and p.suffix == ".log") for p in entries):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def made_by_this_job(folder: Path | None, started: float = STARTED) -> bool:
    """Whether the job folder holds only what Hydra made for this job just now (empty logs, a fresh `.hydra/`).

    Checked when the job starts: a folder that held a user's files before (or an earlier run's) is not
    this job's to remove.
    """
    if folder is None or not folder.is_dir():
        return False
    for p in folder.iterdir():
        if p.name in BOOKKEEPING and p.is_dir():
            if any(f.stat().st_mtime < started for f in p.rglob("*")):
                return False
        elif not (p.is_file() and p.suffix == ".log" and p.stat().st_size == 0):
            return False
    return True


def _close_logs_in(folder: Path) -> None:
    """Detach and close the log file handlers writing inside `folder` (so it can be removed, and stays removed)."""
    for logger in [
        logging.getLogger(),
        *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]:
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().is_relative_to(folder.resolve()):
                logger.removeHandler(h)
                h.close()


def _output_dir() -> Path | None:
    """The Hydra job's output folder, when there is one."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 - no job folder to tidy (a config without a runtime section)
        return None


def user_errors(task: F) -> F:
    """Decorate a Hydra task function: user errors → `error: …` on stderr, exit 2, no traceback, no empty folder."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        folder = _output_dir()
        ours = made_by_this_job(folder)
        try:
            return task(*args, **kwargs)
        except USER_ERRORS as e:
            if debugging():
                raise
            if folder is not None and ours:
                _close_logs_in(folder)
                remove_if_empty(folder)
            print(f"error: {message(e)}", file=sys.stderr)
            print("(HYDRA_FULL_ERROR=1 or --debug shows the traceback)", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]


def find_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file as given, or a run folder's best (`prefer="best"`) or last checkpoint; UserError if none.

    A run folder is one with `checkpoints/` (its `best-*.ckpt` and `last.ckpt`), or that folder itself.
    """
    p = Path(str(path)).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise UserError(f"ckpt_path={path}: no such file or folder")
    folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    best = sorted(folder.glob("best*.ckpt"), key=lambda f: f.stat().st_mtime)
    last = folder / "last.ckpt"
    order = [*best[-1:], last] if prefer == "best" else [last, *best[-1:]]
    found = next((c for c in order if c.is_file()), None)
    if found is None:
        raise UserError(
            f"ckpt_path={path}: a folder without checkpoints (looked for {folder}/best*.ckpt and last.ckpt)"
        )
    kind = "last" if found == last else "best"
    log.info("ckpt_path=%s is a folder: using its %s checkpoint %s", path, kind, found)
    return found


def precheck(
    config_dir: Path, config_name: str, argv: list[str], checks: tuple[Callable[[Any], None], ...] = ()
) -> None:
    """Compose the command line's config once before Hydra runs (which makes the job's folder first): a misspelt
    key gets the project's answer (its section's keys, the nearest one) instead of Hydra's "use +" advice, and
    `checks` (functions raising a user error, e.g. a GPU preset on a CPU machine) run before any folder exists.

    Prints `error: …` and exits 2 on a problem; returns quietly otherwise, and leaves to Hydra whatever it cannot
    judge (Hydra's own flags, sweeps' values, syntax errors).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, HydraException

    if debugging() or any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return  # the full traceback was asked for; --help, --cfg job, --info …: Hydra's
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except HydraException:
        return  # Hydra reports a syntax error its own way
    keep = [
        o.input_line
        for o in parsed
        if o.input_line and not o.is_sweep_override() and not o.key_or_group.startswith(("hydra.", "hydra/"))
    ]

    def composed(overrides: list[str]) -> Any:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)

    try:
        cfg = composed(keep)
        for check in checks:
            check(cfg)
    except ConfigCompositionException as e:
        problem = _unknown_override(str(e), keep, composed)
        if problem is None:
            return  # not a misspelt key: Hydra's message stands
        _exit_with(problem)
    except USER_ERRORS as e:
        _exit_with(message(e))
    except Exception:  # noqa: BLE001 - anything else is Hydra's to report, with its own message
        return


def _unknown_override(error: str, overrides: list[str], composed: Callable[[list[str]], Any]) -> str | None:
    """The project's message for Hydra's "Could not override 'a.b.c'" (a key not in the config), else None."""
    import difflib
    import re

    from omegaconf import DictConfig, OmegaConf

    from jointcap.config import _target_params

    found = re.search(r"Could not override '([^']+)'", error)
    if found is None:
        return None
    key = found.group(1)
    parent, _, leaf = key.rpartition(".")
    try:
        base = composed([o for o in overrides if not o.split("=", 1)[0].lstrip("~+") == key])
    except Exception:  # noqa: BLE001 - another override fails as well: Hydra's message stands
        return None
    node = OmegaConf.select(base, parent) if parent else base
    if not isinstance(node, DictConfig):
        return None
    keys = sorted(str(k) for k in node.keys() if not str(k).startswith("_"))
    target = node.get("_target_") if "_target_" in node else None
    params = _target_params(str(target)) if target else None
    if isinstance(params, frozenset) and leaf in params:  # a real argument the YAML does not set: + is right
        return f"{key}: not set in the config, but {target} takes it; add it with +{key}=…"
    where = parent or "the top level"
    near = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
    hint = f"; did you mean {parent + '.' if parent else ''}{near[0]}?" if near else ""
    return f"{key}: unknown key in {where}{hint} (allowed: {', '.join(keys)})"


def _exit_with(text: str) -> None:
    """A user error's two lines on stderr, exit status 2."""
    print(f"error: {text}", file=sys.stderr)
    print("(HYDRA_FULL_ERROR=1 or --debug shows the traceback)", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
