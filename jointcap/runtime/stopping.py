"""Stopping a run, or a whole sweep, on SIGTERM/SIGINT with every started job resumable.

Lightning already handles SIGTERM during a fit or test: its handler notes it and the loop raises
`SIGTERMException` at the end of the current batch, where `PreemptionCheckpoint` saves `last.ckpt`.
What it leaves open, and this module closes:
* SIGINT (Ctrl-C) raises KeyboardInterrupt, on which Lightning stops *without* saving: while
  Lightning's handler is in place, SIGINT is passed on to it as SIGTERM (the same graceful stop).
* A SIGTERM sent to the whole process group (`timeout`, a scheduler) killed the DataLoader workers
  first; the main process then failed with "DataLoader worker … killed", an ordinary error that a
  Hydra sweep records as a failed job before starting the next one. Workers now ignore both signals
  (their `worker_init_fn`, `jointcap.data.datamodule.init_worker`) and leave stopping to the main process, and any
  error raised after a stop was asked for becomes `Stopped`.
* Outside Lightning's loops (start-up, data preparation, between jobs) a signal stops the job at
  once: nothing of it is trained yet, so nothing is lost.
`Stopped` is a SystemExit (status 128 + signal), which Hydra's launchers do not swallow: the sweep
ends instead of starting its next job, and once a process has been told to stop, no further job
starts in it.
* A sweep's own process (`SweepStop`, a Hydra callback in conf/config.yaml) notes the signal instead
  of dying, passes it on to its child processes (the joblib launcher's workers, each running a job,
  which then stop as above), waits for them, and exits with 128 + signal. A joblib worker whose job
  was stopped tells the sweep's process (the same signal), so a stop anywhere stops the whole sweep.
* A joblib (loky) worker outside a job (starting up, between jobs) only notes a stop signal
  (`hold_stops_in_launcher_worker`, run when jointcap is imported there): loky's default was to die
  of it, and one dead worker made loky kill the others mid-save and the sweep exit 1. Its next job
  then stops at once. The sweep's process turns any error that follows a stop into `Stopped`
  (`stopped_sweep_status`), so its exit status says it was stopped (128 + signal), not that it failed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("jointcap")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: int | None = None  # the first stop signal this process received


class Stopped(SystemExit):
    """The job was told to stop (SIGTERM/SIGINT); its exit status is 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def requested() -> int | None:
    """The stop signal this process received, if any."""
    return _requested


def _handler(signum: int, frame: FrameType | None) -> None:
    """Note the stop; hand it to Lightning's SIGTERM handler when a loop runs, else stop at once."""
    global _requested
    first = _requested is None
    _requested = _requested or signum
    lightning = signal.getsignal(signal.SIGTERM)
    if lightning is _handler or not callable(lightning):  # no Lightning loop running: nothing to save
        if first:  # a second signal must not interrupt the first one's clean-up
            raise Stopped(signum)
        return
    if signum == signal.SIGINT:  # Lightning calls this handler too on SIGTERM (it keeps existing ones)
        if first:
            log.warning("SIGINT: stopping after the current batch (as on SIGTERM); the run stays resumable")
        lightning(signal.SIGTERM, frame)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Run a job under the stop handlers (main thread only); errors after a stop request become `Stopped`."""
    if _requested is not None:  # a sweep told to stop starts no further job in this process
        raise Stopped(_requested)
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    except Exception as e:
        if _requested is None:
            raise
        log.warning("stopped by signal %d (%s: %s)", _requested, type(e).__name__, e)
        raise Stopped(_requested) from e
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _note(signum: int, frame: FrameType | None) -> None:
    """A launcher worker's handler outside a job: note the stop; the next job stops before it begins."""
    global _requested
    _requested = _requested or signum


def hold_stops_in_launcher_worker() -> None:
    """In a joblib (loky) worker's main thread: a stop signal is noted instead of killing the worker."""
    in_loky = type(multiprocessing.current_process()).__name__ == "LokyProcess"
    if in_loky and threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            if signal.getsignal(s) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(s, _note)


@contextlib.contextmanager
def stopped_sweep_status() -> Iterator[None]:
    """Around a whole command: an error (or an exit) that follows a stop request exits 128 + signal instead."""
    try:
        yield
    except Stopped:
        raise
    except (Exception, SystemExit) as e:  # Hydra reports an error as SystemExit(1) unless HYDRA_FULL_ERROR=1
        if _requested is None or (isinstance(e, SystemExit) and e.code in (0, None)):
            raise
        log.warning("stopped by signal %d (%s: %s); rerun the same command to resume", _requested, type(e).__name__, e)
        raise Stopped(_requested) from e


def _sweep_handler(signum: int, frame: FrameType | None) -> None:
    """In a sweep's own process: note the stop and pass it on to the child processes (running jobs)."""
    global _requested
    if _requested is not None:
        return
    _requested = signum
    log.warning("signal %d: stopping the sweep once its running jobs have saved (no new job starts)", signum)
    for pid in _children():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _children(pid: int | None = None) -> list[int]:
    """The direct child processes of `pid` (this process), from /proc (Linux); [] where it cannot tell."""
    pid = pid or os.getpid()
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            out += [int(c) for c in children.read_text().split()]
    return out


def tell_sweep(signum: int) -> None:
    """From a launcher's worker process: pass the stop on to the sweep's process (which stops the rest)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(os.getppid(), signum)


class SweepStop(Callback):
    """Hydra callback: a sweep (`-m`) stops on SIGTERM/SIGINT once its running jobs saved, and exits 128 + signal."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                signal.signal(s, _sweep_handler)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _requested is not None:
            log.warning("sweep stopped by signal %d; rerun the same command to resume it", _requested)
            raise Stopped(_requested)
