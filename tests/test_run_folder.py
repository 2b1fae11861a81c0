"""Run folders are safe to reuse and to receive: never overwritten, never deleted, one training at a time,
and a run folder from someone else cannot say where data is read or written (issue 26, points 1, 3, 4)."""

from __future__ import annotations

import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from jointcap.runtime.run_folder import LOCK_NAME, RunLock, RunLockedError, record_config
from tests.conftest import ROOT, TINY
from tests.helpers.ckpt import TinyRun

BLOCKED = "http://127.0.0.1:9"  # nothing listens there: any download a test would make fails at once, locally


def _cli(args: list[str], cwd: Path, module: str = "jointcap.run", timeout: float = 300, **env: str):
    """The CLI as a user runs it (no HYDRA_FULL_ERROR: user errors print one line and exit 2), network blocked."""
    full = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "JOINTCAP_DEBUG", "no_proxy")}
    full |= {"PYTHONPATH": str(ROOT), "http_proxy": BLOCKED, "https_proxy": BLOCKED, "NO_PROXY": "127.0.0.1"}
    full |= env
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _copy_run(tiny_run: TinyRun, dest: Path) -> Path:
    shutil.copytree(tiny_run.run_dir, dest)
    return dest


# -- point 4: a user's folder is never deleted ------------------------------------------------------
@pytest.mark.slow
def test_a_config_error_keeps_the_users_folder(tmp_path: Path) -> None:
    mylogs = tmp_path / "mylogs"
    mylogs.mkdir()
    (mylogs / "a.log").write_text("my notes\n")
    (mylogs / "b.log").write_text("more notes\n")
    proc = _cli(["model.loss.cam_weight=-1", f"hydra.run.dir={mylogs}"], tmp_path)
    assert proc.returncode == 2 and "model.loss.cam_weight" in proc.stderr, proc.stderr
    assert (mylogs / "a.log").read_text() == "my notes\n" and (mylogs / "b.log").read_text() == "more notes\n"


def test_only_a_folder_this_job_made_counts_as_its_own(tmp_path: Path) -> None:
    from jointcap import cli

    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / "run.log").touch()
    (fresh / ".hydra" / "config.yaml").write_text("a: 1\n")
    assert cli.made_by_this_job(fresh, started=time.time() - 60)
    assert not cli.made_by_this_job(fresh, started=time.time() + 60)  # an earlier run's record
    (fresh / "run.log").write_text("an earlier run's lines\n")
    assert not cli.made_by_this_job(fresh, started=time.time() - 60)
    users = tmp_path / "mylogs"
    users.mkdir()
    (users / "a.log").write_text("mine\n")
    assert not cli.made_by_this_job(users) and not cli.made_by_this_job(tmp_path / "missing")


# -- the lock: one training per run folder ----------------------------------------------------------
def test_a_second_lock_on_a_folder_is_refused_and_released_locks_are_free(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} ")
        with pytest.raises(RunLockedError, match=rf"{tmp_path}.*another training.*pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()  # released: the file goes, the folder holds only its own files
    with RunLock(tmp_path):
        pass


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = (
        f"from jointcap.runtime.run_folder import RunLock; RunLock({str(tmp_path)!r}).acquire(); "
        "print('held', flush=True); input()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up ran, the file with its dead pid stays
        holder.wait()
    assert f"pid {holder.pid} " in (tmp_path / LOCK_NAME).read_text()
    with RunLock(tmp_path):
        assert f"pid {os.getpid()} " in (tmp_path / LOCK_NAME).read_text()


@pytest.mark.slow
def test_a_second_training_in_a_busy_folder_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch\n0\n")
    with RunLock(run):
        proc = _cli([*TINY, f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 2 and "another training is running" in proc.stderr, proc.stderr[-3000:]
    assert (run / "metrics.csv").read_text() == "epoch\n0\n" and not (run / "checkpoints").exists()


# -- point 3: a recorded config is never overwritten -----------------------------------------------
def test_record_config_writes_once_and_puts_later_ones_beside(tmp_path: Path) -> None:
    first = record_config(tmp_path, OmegaConf.create({"a": 1}), None, ["a=1"], "run")
    assert first == tmp_path / ".hydra" and OmegaConf.load(first / "config.yaml") == {"a": 1}
    later = record_config(tmp_path, OmegaConf.create({"a": 2}), None, ["a=2"], "evaluate")
    assert later == tmp_path / ".hydra" / "evaluate-1"
    assert OmegaConf.load(tmp_path / ".hydra" / "config.yaml") == {"a": 1}
    assert OmegaConf.load(later / "config.yaml") == {"a": 2} and list(OmegaConf.load(later / "overrides.yaml")) == [
        "a=2"
    ]


@pytest.mark.slow
def test_a_refused_resume_and_evaluate_leave_the_runs_config_alone(tiny_run: TinyRun, tmp_path: Path) -> None:
    run = _copy_run(tiny_run, tmp_path / "run")
    recorded = (run / ".hydra" / "config.yaml").read_bytes()
    proc = _cli(
        [*TINY, "model.loss.cam_weight=0.5", f"hydra.run.dir={run}"], tmp_path, JOINTCAP_DATA=str(tiny_run.data_root)
    )
    assert proc.returncode == 2 and "another model configuration" in proc.stderr, proc.stderr[-3000:]
    assert (run / ".hydra" / "config.yaml").read_bytes() == recorded
    proc = _cli([f"ckpt_path={run}", "split=nope", f"hydra.run.dir={run}"], tmp_path, module="jointcap.evaluate")
    assert proc.returncode == 2 and "split='nope': must be one of" in proc.stderr, proc.stderr[-3000:]
    assert (run / ".hydra" / "config.yaml").read_bytes() == recorded
    assert (run / ".hydra" / "evaluate-1" / "config.yaml").is_file()  # evaluate's own config, beside
    assert (run / "checkpoints" / "last.ckpt").is_file()


# -- point 1: a run folder from someone else says which data, never where ---------------------------
def _hostile_run(tiny_run: TinyRun, dest: Path, source: dict) -> Path:
    """A run folder with the tiny checkpoint and an attacker's data section."""
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run.ckpt, dest / "checkpoints" / "last.ckpt")
    data = {
        "_target_": "jointcap.data.datamodule.JointDataModule",
        "cache_root": "${oc.env:HOME}/cache",
        "num_workers": 0,
        "source": {"_target_": "jointcap.data.cub.CUBSource", "root": "${oc.env:HOME}", **source},
    }
    (dest / ".hydra").mkdir()
    (dest / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"seed": 0, "data": data})))
    return dest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME with the files an attacker goes for."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("# my shell\n")
    (home / ".ssh" / "id_ed25519").write_text("my key\n")
    (home / ".ssh" / "authorized_keys").write_text("my laptop\n")
    return home


def _untouched(home: Path) -> None:
    tools = {".cache", ".config", ".local"}  # what matplotlib, torch and wandb keep in a HOME
    assert sorted(p.name for p in home.iterdir() if p.name not in tools) == [".bashrc", ".ssh"]
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["authorized_keys", "id_ed25519"]
    assert (home / ".bashrc").read_text() == "# my shell\n"
    assert (home / ".ssh" / "id_ed25519").read_text() == "my key\n"
    assert (home / ".ssh" / "authorized_keys").read_text() == "my laptop\n"


@pytest.mark.slow
def test_a_wrong_md5_in_a_run_folder_cannot_move_a_users_file(tiny_run: TinyRun, tmp_path: Path, home: Path) -> None:
    evil = _hostile_run(
        tiny_run,
        tmp_path / "evil",
        {
            "download": False,
            "images_archive": ".bashrc",
            "images_md5": "0" * 32,
            "images_folder": "not-there",
            "images_url": f"{BLOCKED}/x.tgz",
            "captions_url": f"{BLOCKED}/y.tgz",
        },
    )
    proc = _evaluate_refused(evil, tmp_path, home)
    said = proc.stdout + proc.stderr
    assert "data.source.root" in said and "data.source.images_md5" in said  # said what it ignored


@pytest.fixture
def attacker_server(tmp_path: Path) -> Iterator[str]:
    """An attacker's archive (top-level `imgs/` and `.ssh/authorized_keys`) served on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("imgs/readme.txt", b"x"), (".ssh/authorized_keys", b"attacker\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    (served / "evil.tgz").write_bytes(buf.getvalue())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/evil.tgz"
    server.shutdown()


@pytest.mark.slow
def test_a_run_folder_cannot_replace_a_users_folder(
    tiny_run: TinyRun, tmp_path: Path, home: Path, attacker_server: str
) -> None:
    evil = _hostile_run(
        tiny_run,
        tmp_path / "evil",
        {
            "download": True,
            "images_url": attacker_server,
            "images_md5": None,
            "images_archive": "evil.tgz",
            "images_folder": "imgs",
            "captions_url": attacker_server,
            "captions_gdrive_id": None,
            "captions_md5": None,
            "captions_archive": "evil.tgz",
            "captions_folder": ".ssh",
        },
    )
    proc = _evaluate_refused(evil, tmp_path, home)
    assert "data.source.captions_folder" in proc.stdout + proc.stderr


def _evaluate_refused(evil: Path, tmp_path: Path, home: Path) -> subprocess.CompletedProcess:
    """`evaluate ckpt_path=<the hostile run folder>` with HOME in tmp_path: exit 2 and HOME as it was."""
    proc = _cli(
        [f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'ev'}"],
        tmp_path,
        module="jointcap.evaluate",
        HOME=str(home),
        JOINTCAP_DATA=str(tmp_path / "mydata"),
    )
    _untouched(home)
    assert proc.returncode == 2, proc.stderr[-3000:]
    return proc
