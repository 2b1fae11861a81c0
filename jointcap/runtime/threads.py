"""How many CPU threads a job takes (the `threads` setting), and OpenMP threads that sleep when idle.

Two torch processes on one machine, each with an intra-op thread for every core, ran ~30× slower
each than alone (issue 27): libgomp's idle threads spin for ~300,000 iterations at every barrier
(milliseconds) before they sleep, so each process burns the cores the other one needs. Two fixes:

* `quiet_openmp()` puts `OMP_WAIT_POLICY=PASSIVE` in the environment (unless the user set a wait
  policy or `GOMP_SPINCOUNT`): idle OpenMP threads sleep at once. libgomp reads it once, when it
  loads, i.e. when torch is imported, so `jointcap/__init__.py` calls it before anything imports
  torch: every `python -m jointcap.…` entry point, joblib's workers and DataLoader workers inherit it.
* `threads=auto` (conf/config.yaml) sizes the intra-op threads to the job's share of the machine:
  `share(...)` below; `apply(cfg)` sets it at the start of a run.

Nothing here imports torch at module level (it must run before torch is imported).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AUTO = "auto"
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
# Settings a user may have chosen for OpenMP's idle threads: any of them means "leave the wait policy alone".
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# A DataLoader worker of ours reads a decoded uint8 cache and shifts/flips it: ~11 ms of CPU per 32-image
# batch against a ~170 ms training step on this CPU (docs/performance.md), so four workers take about one core.
WORKERS_PER_CORE = 4
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2 CPU quota: "<quota> <period>" or "max <period>"


def quiet_openmp(env: MutableMapping[str, str] = os.environ) -> bool:
    """Make idle OpenMP threads sleep instead of spin (before torch loads libgomp); True if it set anything."""
    if any(k in env for k in WAIT_SETTINGS):
        return False
    env.update(WAIT_POLICY)
    return True


def cgroup_cpus(path: Path = CGROUP_CPU_MAX) -> int | None:
    """The CPUs a cgroup v2 quota allows (`docker --cpus`, Kubernetes limits), rounded up; None without a quota."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cores(affinity: int | None = None, quota: int | None = None) -> int:
    """Cores this process may run on: its CPU affinity (taskset, SLURM, cgroups' cpusets), capped by a CPU quota."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if quota is None:
        quota = cgroup_cpus()
    return max(1, min(affinity, quota) if quota else affinity)


def omp_threads(env: Mapping[str, str] = os.environ) -> int | None:
    """OMP_NUM_THREADS as a thread count, when set to a positive integer (its first level if nested: "4,2")."""
    value = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def share(cores: int, jobs: int = 1, workers: int = 0, omp: int | None = None) -> int:
    """Intra-op threads for one of `jobs` concurrent processes on `cores` cores, each with `workers` DataLoader workers.

    `omp` (OMP_NUM_THREADS) is a per-process count already (joblib, torchrun and Lightning's DDP set it per
    worker or rank): it caps the result and is not divided again.
    """
    per_job = max(1, cores // max(1, jobs))
    threads = max(1, per_job - workers // WORKERS_PER_CORE)
    return min(threads, omp) if omp else threads


def launcher_jobs(hydra_cfg: Any | None, cores: int) -> int:
    """Jobs a Hydra multirun's launcher runs at once on this machine: joblib's `n_jobs` (negative: cores + 1 +
    n_jobs, as joblib counts), else 1."""
    hydra_cfg = hydra_cfg or {}
    launcher = hydra_cfg.get("launcher") or {}
    if "MULTIRUN" not in str(hydra_cfg.get("mode")) or "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1  # basic launcher: one job at a time; submitit/SLURM: each job has its own cores (affinity)
    n = launcher.get("n_jobs")
    n = int(n) if n is not None else -1  # joblib's own default: all cores
    return max(1, cores + 1 + n if n < 0 else n)


def processes_per_job(trainer_cfg: Any | None) -> int:
    """Training processes one job starts on this machine: the devices of a CPU DDP run, else 1."""
    t = trainer_cfg or {}
    devices = t.get("devices", 1)
    strategy = str(t.get("strategy", "") or "")
    if t.get("accelerator") == "cpu" and "ddp" in strategy and isinstance(devices, int) and devices > 1:
        return devices
    return 1


def resolve(setting: Any, cores: int, jobs: int = 1, workers: int = 0, omp: int | None = None) -> int:
    """`threads`: an int ≥ 1 as given, `auto` → `share(...)`; ValueError otherwise."""
    if setting is None or str(setting) == AUTO:
        return share(cores, jobs, workers, omp)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"threads={setting!r}: must be auto or an integer ≥ 1")
    return setting


def plan(cfg: Any, hydra_cfg: Any | None = None, env: Mapping[str, str] = os.environ) -> tuple[int, str]:
    """The intra-op thread count for a run's config, and why (for the log)."""
    cores = available_cores()
    jobs = launcher_jobs(hydra_cfg, cores) * processes_per_job(cfg.get("trainer"))
    workers = int((cfg.get("data") or {}).get("num_workers", 0) or 0)
    omp = omp_threads(env)
    setting = cfg.get("threads", AUTO)
    n = resolve(setting, cores, jobs, workers, omp)
    why = (
        f"threads={setting}"
        if str(setting) != AUTO
        else f"threads=auto: {cores} cores / {jobs} concurrent process(es), {workers} data workers"
        + (f", OMP_NUM_THREADS={omp}" if omp else "")
    )
    return n, why


def set_torch_threads(n: int) -> None:
    """torch's intra-op threads → `n`; its inter-op pool too, while that can still change (once, before use)."""
    import torch

    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # already used or set once in this process: only intra-op threads change
            pass


def apply(cfg: Any, hydra_cfg: Any | None = None) -> int:
    """Size this process's torch threads to the run's `threads` setting; returns the count (logged)."""
    n, why = plan(cfg, hydra_cfg)
    set_torch_threads(n)
    policy = os.environ.get("OMP_WAIT_POLICY") or "libgomp default (spins)"
    log.info("%d intra-op thread(s) (%s; OpenMP wait policy %s)", n, why, policy)
    return n
