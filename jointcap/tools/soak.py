"""Kill-and-resume soak check: `python -m jointcap.tools.soak [--cycles 50] [--seed 0] [--out DIR]`.

One uninterrupted reference run, then N cycles of: start the same tiny run in a fresh folder,
kill it (SIGTERM or SIGKILL, chosen at random) at a random moment after its first checkpoint,
possibly again after resuming, and finally let it resume to the end. Every cycle must finish
and end with exactly the reference's test metrics. Deterministic settings on CPU, synthetic data.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# A tiny, deterministic run: 6 training steps per epoch, a checkpoint every 2 steps.
SOAK_OVERRIDES = [
    "data.source.n_train=96",
    "data.source.n_val=32",
    "data.source.n_test=32",
    "data.source.n_classes=6",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.num_workers=0",
    "data.vocab_size=120",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
    "model.optim.warmup_steps=2",
    "model.decode.max_len=12",
    "model.encoder.stage=2",
    "model.embedding.dim=32",
    "model.captioner.hidden_dim=32",
    "model.captioner.embed_dim=16",
    "model.captioner.attn_dim=16",
    "callbacks.step_checkpoint.every_n_train_steps=2",
]


def command(run_dir: Path, overrides: list[str]) -> list[str]:
    """The CLI command of a run in `run_dir`."""
    return [sys.executable, "-m", "jointcap.run", *overrides, f"hydra.run.dir={run_dir}"]


def start(run_dir: Path, overrides: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Launch a run in the background, its output appended to `run_dir`/soak.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "soak.log", "ab")
    return subprocess.Popen(command(run_dir, overrides), stdout=log, stderr=subprocess.STDOUT, env=env)


def snapshot_code(out: Path) -> dict[str, str]:
    """Copy jointcap/ and conf/ under `out`; the returned environment runs that copy (later edits cannot skew it)."""
    root = Path(__file__).resolve().parents[2]
    for name in ("jointcap", "conf"):
        shutil.copytree(
            root / name, out / "code" / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
        )
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(out / "code"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float) -> bool:
    """True once `path` exists; False if the process ended first or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return True
        if proc.poll() is not None:
            return path.is_file()
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen, sig: int, timeout: float) -> int:
    """Send `sig` and wait for the exit code (SIGKILL if it will not end)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def final_test_metrics(run_dir: Path) -> dict[str, float]:
    """The last test/* values in the run's metrics.csv (empty if the run never tested)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    rows = [r for r in csv.DictReader(path.open()) if r.get("test/acc1")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v} if rows else {}


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    """Every row of the run's metrics.csv (train loss per step, validation, learning rate, test)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class Cycle:
    """What happened in one soak cycle."""

    kills: list[str]
    exit_code: int
    metrics: dict[str, float]

    def matches(self, reference: dict[str, float], tol: float = 0.0) -> bool:
        return (
            bool(self.metrics)
            and self.metrics.keys() == reference.keys()
            and all(abs(self.metrics[k] - reference[k]) <= tol for k in reference)
        )


def kill_and_resume(
    run_dir: Path,
    overrides: list[str],
    kills: list[tuple[int, float]],
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> Cycle:
    """Kill the run with each (signal, delay after its newest checkpoint appeared) in turn, then resume to the end."""
    done = []
    last = run_dir / "checkpoints" / "last.ckpt"
    for sig, delay in kills:
        before = last.stat().st_mtime_ns if last.is_file() else None
        proc = start(run_dir, overrides, env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:  # wait for a new checkpoint
            if last.is_file() and last.stat().st_mtime_ns != before:
                break
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is not None:  # it finished (or failed) before the kill: not a kill
            done.append(f"no {signal.Signals(sig).name}: run had already ended→{proc.returncode}")
            continue
        code = stop(proc, sig, timeout)
        done.append(f"{signal.Signals(sig).name}+{delay:.2f}s→{code}")
    code = start(run_dir, overrides, env).wait(timeout)
    return Cycle(done, code, final_test_metrics(run_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50, help="kill-and-resume cycles to run (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (signals and delays)")
    parser.add_argument(
        "--max-delay", type=float, default=4.0, help="longest wait after a checkpoint before a kill (s)"
    )
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="jointcap-soak-"))
    os.environ.setdefault("JOINTCAP_DATA", str(out / "data"))
    rng = random.Random(args.seed)
    env = snapshot_code(out)
    print(f"soak: code snapshot in {out / 'code'}; reference run in {out / 'reference'}", flush=True)
    if start(out / "reference", SOAK_OVERRIDES, env).wait() != 0:
        print("soak: the reference run failed; see its soak.log")
        return 2
    reference, reference_rows = final_test_metrics(out / "reference"), logged_rows(out / "reference")
    failures = 0
    for i in range(args.cycles):
        kills: list[tuple[int, float]] = [
            (rng.choice((signal.SIGTERM, signal.SIGKILL)), rng.uniform(0, args.max_delay))
            for _ in range(rng.choice((1, 1, 2)))
        ]
        cycle = kill_and_resume(out / f"cycle{i:03d}", SOAK_OVERRIDES, kills, env=env)
        rows_ok = logged_rows(out / f"cycle{i:03d}") == reference_rows
        ok = cycle.exit_code == 0 and cycle.matches(reference) and rows_ok
        failures += not ok
        diff = {k: (cycle.metrics.get(k), v) for k, v in reference.items() if cycle.metrics.get(k) != v}
        print(
            f"cycle {i:3d}: kills {', '.join(cycle.kills)}; exit {cycle.exit_code}; "
            f"{'test metrics and metrics.csv identical' if ok else f'MISMATCH rows_ok={rows_ok} {diff}'}",
            flush=True,
        )
    print(
        f"soak: {args.cycles - failures}/{args.cycles} resumed runs finished with the reference's test metrics "
        f"({len(reference)} metrics) and metrics.csv ({len(reference_rows)} rows), exactly; folder {out}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
