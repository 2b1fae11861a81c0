"""A run folder's life: one training at a time (a lock) and a recorded config that is never overwritten.

* `RunLock(folder)` holds an exclusive `flock` on `<folder>/.jointcap.lock` for the run's life; a
  second training in the same folder is refused with `RunLockedError` (naming the holder's pid and
  host). The kernel drops a flock with its process, so the lock of a killed run (even SIGKILL) is
  free again: a lock file left with a dead process's pid is simply taken over.
* `record_config(folder, cfg, hydra_cfg, overrides, kind)` writes `.hydra/{config,hydra,overrides}.yaml`
  only when the folder has no recorded config yet (Hydra's own writing is switched off with
  `hydra.output_subdir: null`, because it writes before any check). A later run in the same folder
  (an accepted resume, an `evaluate` pointed at it) writes its own under `.hydra/<kind>-<n>/`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger("jointcap")
LOCK_NAME = ".jointcap.lock"
RECORD_DIR = ".hydra"
RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


class RunLockedError(RuntimeError):
    """Another live process is training in this run folder."""


class RunLock:
    """An exclusive lock on a run folder for as long as the run lives (a context manager)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError; a lock file whose holder died is taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown process"
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent}: another training is running in this folder ({holder}); "
                    "wait for it to end, or use another folder (hydra.run.dir=…)"
                ) from None
            if self._same_file(fd):  # not unlinked by a holder that released it while we waited
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%F %T')}\n".encode(), 0)
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file (while still holding it) and drop the lock."""
        if self._fd is None:
            return
        if self._same_file(self._fd):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def recorded_config(folder: Path) -> Path:
    """Where a run folder's recorded config lives."""
    return Path(folder) / RECORD_DIR / "config.yaml"


def record_config(folder: Path, cfg: DictConfig, hydra_cfg: Any, overrides: ListConfig | list[str], kind: str) -> Path:
    """Write the job's config into `.hydra/` if the folder has none yet, else into `.hydra/<kind>-<n>/`; returns where.

    `hydra_cfg` is Hydra's own node (`HydraConfig.instance().cfg`, recorded as `hydra.yaml`), or None.

    An existing record is never touched: it describes what trained (or what first used) this folder.
    """
    target = Path(folder) / RECORD_DIR
    if recorded_config(folder).exists():
        n = 1
        while (target / f"{kind}-{n}").exists():
            n += 1
        target = target / f"{kind}-{n}"
        log.info("%s already holds a recorded config: this %s's config goes to %s", folder, kind, target)
    target.mkdir(parents=True, exist_ok=True)
    texts: dict[str, Any] = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": overrides}
    for name, node in texts.items():
        if node is None:
            continue
        text = OmegaConf.to_yaml(node if isinstance(node, (DictConfig, ListConfig)) else OmegaConf.create(node))
        tmp = target / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target / name)
    return target
