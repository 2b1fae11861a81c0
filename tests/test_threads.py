"""The `threads` setting (jointcap/runtime/threads.py): a job's share of the cores, and OpenMP threads that sleep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from jointcap import run
from jointcap.config import ConfigError, validate
from jointcap.runtime import threads
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "cores,jobs,workers,omp,expected",
    [
        (2, 1, 2, None, 2),  # the default run alone on this 2-core machine: both cores
        (2, 2, 2, None, 1),  # two sweep jobs: one core each
        (2, 2, 0, None, 1),
        (16, 1, 8, None, 14),  # a GPU machine's 16 cores, 8 workers: two cores left to them
        (16, 3, 0, None, 5),  # 16 // 3
        (16, 1, 0, 4, 4),  # OMP_NUM_THREADS caps a process
        (2, 4, 0, None, 1),  # never below one
        (1, 1, 8, None, 1),
    ],
)
def test_share(cores: int, jobs: int, workers: int, omp: int | None, expected: int) -> None:
    assert threads.share(cores, jobs, workers, omp) == expected


def _hydra(mode: str, target: str, n_jobs: int | None) -> dict:
    return {"mode": f"RunMode.{mode}", "launcher": {"_target_": target, "n_jobs": n_jobs}}


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.mark.parametrize(
    "hydra_cfg,cores,expected",
    [
        (_hydra("MULTIRUN", JOBLIB, 2), 2, 2),
        (_hydra("MULTIRUN", JOBLIB, 3), 16, 3),
        (_hydra("MULTIRUN", JOBLIB, -1), 8, 8),  # joblib: all cores
        (_hydra("MULTIRUN", JOBLIB, -2), 8, 7),
        (_hydra("MULTIRUN", JOBLIB, None), 4, 4),  # joblib's default n_jobs is -1
        (_hydra("RUN", JOBLIB, 2), 2, 1),  # a single run with the launcher preset still runs one job
        (_hydra("MULTIRUN", "hydra._internal.core_plugins.basic_launcher.BasicLauncher", None), 8, 1),
        (None, 8, 1),
    ],
)
def test_launcher_jobs(hydra_cfg: dict | None, cores: int, expected: int) -> None:
    cfg = OmegaConf.create(hydra_cfg) if hydra_cfg is not None else None
    assert threads.launcher_jobs(cfg, cores) == expected


def test_processes_per_job_counts_cpu_ddp_ranks() -> None:
    assert threads.processes_per_job({"accelerator": "cpu", "strategy": "ddp_spawn", "devices": 2}) == 2
    assert threads.processes_per_job({"accelerator": "cpu", "devices": 1}) == 1
    assert threads.processes_per_job({"accelerator": "gpu", "strategy": "ddp", "devices": 4}) == 1


def test_available_cores_affinity_and_quota(tmp_path: Path) -> None:
    assert threads.available_cores(affinity=8, quota=3) == 3
    assert threads.available_cores(affinity=2, quota=None) == 2
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert threads.cgroup_cpus(cpu_max) == 2  # 1.5 CPUs: two threads may run
    cpu_max.write_text("max 100000\n")
    assert threads.cgroup_cpus(cpu_max) is None
    assert threads.cgroup_cpus(tmp_path / "absent") is None
    assert threads.available_cores() == min(len(os.sched_getaffinity(0)), threads.cgroup_cpus() or 10**6)


def test_omp_threads_reads_the_environment() -> None:
    assert threads.omp_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert threads.omp_threads({"OMP_NUM_THREADS": "4,2"}) == 4
    assert threads.omp_threads({"OMP_NUM_THREADS": "0"}) is None
    assert threads.omp_threads({}) is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, "many", True])
def test_resolve_refuses_bad_settings(bad: object) -> None:
    with pytest.raises(ValueError, match="threads="):
        threads.resolve(bad, cores=2)
    assert threads.resolve(3, cores=2) == 3  # explicit: as given, even beyond the cores
    assert threads.resolve("auto", cores=2, jobs=2) == 1


def test_quiet_openmp_respects_the_users_choice() -> None:
    env: dict[str, str] = {}
    assert threads.quiet_openmp(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(chosen)
        assert not threads.quiet_openmp(env) and env == chosen


def test_libgomp_sees_the_passive_policy_when_jointcap_runs() -> None:
    """Importing an entry point sets the wait policy before torch loads libgomp (which then never spins)."""
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_SETTINGS}
    env.update(OMP_DISPLAY_ENV="verbose", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", "import jointcap.run"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GOMP_SPINCOUNT = '0'" in proc.stderr, proc.stderr[-2000:]  # PASSIVE: no spinning at all


def _composed(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_threads_setting_is_validated() -> None:
    validate(_composed(["threads=auto"]))
    validate(_composed(["threads=3"]))
    for bad in ("0", "many", "1.5"):
        with pytest.raises(ConfigError, match=r"threads=.*auto"):
            validate(_composed([f"threads={bad}"]))


def test_plan_and_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    cfg = _composed(["threads=auto", "data.num_workers=0"])
    hydra = OmegaConf.create(_hydra("MULTIRUN", JOBLIB, 2))
    assert threads.plan(cfg, hydra)[0] == 2
    assert threads.plan(cfg, None)[0] == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what joblib gives each worker of a 4-job sweep on 4 cores
    assert threads.plan(cfg, None)[0] == 1
    before = torch.get_num_threads()
    try:
        assert threads.apply(_composed(["threads=3"])) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_run_applies_its_threads_before_any_data_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """jointcap.run's train() sizes the threads first: nothing is instantiated before it."""

    class Applied(Exception):
        pass

    seen: list[object] = []

    def fake_apply(cfg: object, hydra_cfg: object) -> int:
        seen.append(cfg)
        raise Applied

    monkeypatch.setattr(run, "apply_threads", fake_apply)
    monkeypatch.setattr(run, "build", lambda cfg: pytest.fail("built before the threads were set"))
    monkeypatch.setattr(run.L, "seed_everything", lambda *a, **k: pytest.fail("seeded before the threads were set"))
    cfg = _composed(["threads=1"])

    class FakeHydra:
        class runtime:  # noqa: N801 - mirrors HydraConfig.get().runtime
            output_dir = str(tmp_path)

    monkeypatch.setattr(run.HydraConfig, "get", staticmethod(lambda: FakeHydra))
    with pytest.raises(Applied):
        run.train(cfg)
    assert seen and seen[0].threads == 1
