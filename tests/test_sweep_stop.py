"""A sweep told to stop (SIGTERM from `timeout` or a scheduler, Ctrl-C's SIGINT) stops with every started job
resumable, and the same command resumes it (issue 26, point 5). Through the CLI, in a process group of its own,
the signal sent to the whole group as `timeout` and a terminal do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jointcap.runtime import stopping
from tests.conftest import ROOT, TINY

# A loader worker in the basic launcher (it gets the group's signal too). Under joblib, DataLoader workers cannot
# start inside loky's worker processes on this stack ('Process' object has no attribute 'env', also on main).
LAUNCHERS = {
    "basic": ["data.num_workers=1"],
    "joblib": ["hydra/launcher=local", "hydra.launcher.n_jobs=2", "data.num_workers=0"],
}


def _sweep(sweep: Path, launcher: str) -> list[str]:
    """The sweep command: two seeds, a checkpoint every 2 steps."""
    tiny = [o for o in TINY if not o.startswith(("data.num_workers", "trainer.max_epochs"))]
    return [
        sys.executable,
        "-m",
        "jointcap.run",
        "-m",
        *tiny,
        *LAUNCHERS[launcher],
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    ]


def _wait_for(pattern: str, folder: Path, proc: subprocess.Popen, timeout: float = 300) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted(folder.glob(pattern))
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {pattern} under {folder} (exit {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("launcher,name", [("basic", "SIGTERM"), ("basic", "SIGINT"), ("joblib", "SIGTERM")])
def test_a_stopped_sweep_keeps_its_work_and_resumes(tmp_path: Path, launcher: str, name: str) -> None:
    sig = signal.Signals[name]
    sweep = tmp_path / "sweep"
    cmd = _sweep(sweep, launcher)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for("0_*/checkpoints/last.ckpt", sweep, proc)  # job 0 is training
        time.sleep(0.5)
        stopped_at = time.time()
        os.killpg(proc.pid, sig)  # the whole group, loader workers included
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    text = (tmp_path / "first.log").read_text()
    jobs = sorted(sweep.glob("[0-9]_*"))
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}:\n{text[-4000:]}"
    if launcher == "basic":
        assert [j.name[0] for j in jobs] == ["0"], f"a next job started after the stop: {jobs}"
    in_validation = "during validation: not saving" in text  # by design: it resumes from the checkpoint before
    for job in jobs:  # every started job saved where it stopped (or never began training)
        last = job / "checkpoints" / "last.ckpt"
        began = (job / "metrics.csv").is_file()
        saved = last.is_file() and (in_validation or last.stat().st_mtime >= stopped_at)
        assert not began or saved, f"{job.name}:\n{text[-4000:]}"
        assert not (job / "results.json").exists()
    assert "saving" in text and "resume the sweep with the same command" in text
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "resuming from" in rerun.stdout + rerun.stderr
    assert len(list(sweep.glob("[0-9]_*/results.json"))) == 2


def test_a_signal_outside_a_fit_stops_at_once_and_no_job_starts_after() -> None:
    """Outside Lightning's loops there is nothing to save: the job stops with Stopped (a SystemExit)."""
    assert stopping.requested() is None
    try:
        with pytest.raises(stopping.Stopped) as e:
            with stopping.stop_on_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this
        assert e.value.code == 128 + signal.SIGTERM and isinstance(e.value, SystemExit)
        with pytest.raises(stopping.Stopped):  # told to stop: the next job of this process never begins
            with stopping.stop_on_signals():
                raise AssertionError("a job started after the stop")
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handlers are back
    finally:
        stopping._requested = None


def test_an_error_after_a_stop_request_stops_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loader worker killed by the group's SIGTERM used to fail the job and start the next one."""
    monkeypatch.setattr(stopping, "_requested", None)
    with pytest.raises(stopping.Stopped):
        with stopping.stop_on_signals():
            stopping._requested = signal.SIGTERM  # as the handler notes it while Lightning runs
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")


def _signal_this_worker() -> tuple[int | None, str]:
    """In a loky worker: SIGTERM to itself outside a job, then what it noted (and undo the note for the next user)."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    noted, stopping._requested = stopping.requested(), None
    return noted, type(signal.getsignal(signal.SIGTERM)).__name__


def test_a_launcher_worker_outside_a_job_notes_a_stop_instead_of_dying() -> None:
    """loky's default was to die of the group's SIGTERM, and loky then killed its other workers mid-save."""
    joblib = pytest.importorskip("joblib")
    with joblib.parallel_config(backend="loky", n_jobs=2):  # (n_jobs=1 would run it in this process)
        [(noted, handler)] = joblib.Parallel()(joblib.delayed(_signal_this_worker)() for _ in range(1))
    assert noted == signal.SIGTERM and handler == "function"


@pytest.mark.parametrize("error", [RuntimeError("A worker process was terminated"), SystemExit(1)])
def test_an_error_after_a_stop_exits_as_stopped(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """The sweep's process: a launcher error (or Hydra's exit 1 for it) after a stop request exits 128 + signal."""
    monkeypatch.setattr(stopping, "_requested", None)
    with pytest.raises(type(error)):  # no stop asked for: the error stays what it is
        with stopping.stopped_sweep_status():
            raise error
    monkeypatch.setattr(stopping, "_requested", signal.SIGTERM)
    with pytest.raises(stopping.Stopped) as e:
        with stopping.stopped_sweep_status():
            raise error
    assert e.value.code == 128 + signal.SIGTERM
    with pytest.raises(SystemExit) as ok:  # a clean exit stays clean
        with stopping.stopped_sweep_status():
            raise SystemExit(0)
    assert ok.value.code == 0
