"""The soak script's bookkeeping: a kill that comes after the run ended is not reported as a kill; flags have help."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jointcap.tools import soak


def test_a_kill_after_the_run_ended_is_not_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        soak, "start", lambda run_dir, overrides, env=None: subprocess.Popen([sys.executable, "-c", "pass"])
    )
    cycle = soak.kill_and_resume(tmp_path / "run", [], [(signal.SIGKILL, 0.2)], timeout=30)
    assert cycle.kills == ["no SIGKILL: run had already ended→0"] and cycle.exit_code == 0


def test_every_flag_has_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        soak.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--cycles", "--seed", "--max-delay", "--out"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(flag))
        assert len(line.split(maxsplit=2)) == 3 or "\n" in text, line
    assert "kill-and-resume cycles" in text and "seed of the kill schedule" in text
