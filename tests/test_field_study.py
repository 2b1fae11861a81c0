"""The field-mark study's tools (issue 28): the lane script's job list, the archive and the protocol's summary."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jointcap.analysis import curves, study
from tests.conftest import ROOT

SCRIPT = ROOT / "experiments" / "run_study.sh"


# ------------------------------------------------------------------------------------------- the lane script
def _run_script(tmp_path: Path, script: Path = SCRIPT, **env: str) -> list[list[str]]:
    """Run a study script with a stand-in python that records each call (one line of arguments per call)."""
    log, fake = tmp_path / "calls.log", tmp_path / "py"
    # one write per call (two lanes append at once): the line is built first, then written whole
    fake.write_text(f'#!/bin/bash\nline=$(printf "%s\\t" "$@")\necho "$line" >> {log}\n')
    fake.chmod(0o755)
    full = {**os.environ, "PY": str(fake), "OUT": str(tmp_path / "out"), "RESULTS": str(tmp_path / "res"), **env}
    subprocess.run(["bash", str(script)], env=full, check=True, timeout=120, capture_output=True)
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.rstrip("\t").split("\t") for line in lines]


def _value(call: list[str], key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in call if a.startswith(key + "=")), None)


def test_lanes_run_every_job_once_with_one_thread_resumably_then_summarise(tmp_path: Path) -> None:
    calls = _run_script(tmp_path, SEEDS="3", SEEDS_SMALL="2", LANES="2")
    jobs, summary = calls[:-1], calls[-1]
    assert summary == ["experiments/summarize_study.py", str(tmp_path / "res"), "--archive", str(tmp_path / "out")]
    assert all(c[:2] == ["-m", "jointcap.run"] for c in jobs)
    assert all(_value(c, "threads") == "1" and _value(c, "skip_if_done") == "true" for c in jobs)
    assert all(_value(c, "data.source.captions") == "field_marks" for c in jobs)
    assert all(_value(c, "data.source.test_per_class") == "30" and "+budget=study_field" in c for c in jobs)
    folders = [_value(c, "hydra.run.dir") for c in jobs]
    assert len(set(folders)) == len(folders)  # a fixed folder per job: what skip_if_done/ckpt_path=auto resume
    # tiers 1-2: (2 + 3) arms × 3 seeds + 2 shortcut arms × 2 seeds; tier 3: 3 arms × 2 seeds
    assert len(jobs) == 5 * 3 + 2 * 2 + 3 * 2
    arms = {Path(str(f)).parent.name for f in folders}
    assert arms == {
        "nocam",
        "oracle",
        "nocam_shortcut",
        "oracle_shortcut",
        "cam",
        "classifier",
        "captioner",
        "cam_shortcut",
        "grad_to_classifier",
        "cosine",
    }
    oracle = [c for c in jobs if Path(str(_value(c, "hydra.run.dir"))).parent.name == "oracle_shortcut"]
    assert all(
        _value(c, "model.loss.q_source") == "oracle" and _value(c, "data.source.shortcut") == "true" for c in oracle
    )
    assert len(oracle) == 2 and {_value(c, "seed") for c in oracle} == {"1", "2"}
    lanes = [(tmp_path / "out" / f"lane{k}.log").read_text() for k in (0, 1)]
    assert all("done" in text for text in lanes) and lanes[0].count("== lane 0: tier") == 13


def test_the_positive_control_runs_first_and_plan_runs_nothing(tmp_path: Path) -> None:
    plan = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "PLAN": "1", "JOINT_MIN": "10", "CAPTIONER_MIN": "10", "CLASSIFIER_MIN": "10"},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    jobs = [line for line in plan if line.startswith("lane ")]
    assert len(jobs) == 110 and plan[-1] == "110 jobs, 1100 job-minutes: ~9.2 h on 2 lanes"
    tiers = [int(line.split()[3]) for line in jobs]
    assert tiers == sorted(tiers) and jobs[0].endswith("tier 1 nocam seed 1") and jobs[1].endswith("oracle seed 1")
    calls = _run_script(tmp_path, SEEDS="2", SEEDS_SMALL="1", TIERS="1", SUMMARY="0", THREADS="")
    assert len(calls) == 2 * 2 + 2 and not any(a.startswith("threads=") for c in calls for a in c)


def test_a_job_archived_in_the_results_is_not_run_again(tmp_path: Path) -> None:
    """A fresh clone has the archive (RESULTS/runs) but not the run folders: its archived jobs stay done."""
    archived = tmp_path / "res" / "runs" / "oracle" / "seed02"
    archived.mkdir(parents=True)
    (archived / "results.json").write_text("{}")
    calls = _run_script(tmp_path, SEEDS="2", SEEDS_SMALL="1", TIERS="1", SUMMARY="0")
    folders = {str(_value(c, "hydra.run.dir")) for c in calls}
    assert len(calls) == 2 * 2 + 2 - 1 and str(tmp_path / "out" / "oracle" / "seed02") not in folders
    assert str(tmp_path / "out" / "oracle" / "seed01") in folders


def test_a_second_copy_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    import fcntl

    with open(tmp_path / "out" / ".run_study.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running copy holds
        env = {**os.environ, "PY": "/bin/true", "OUT": str(tmp_path / "out"), "SEEDS": "1", "SEEDS_SMALL": "1"}
        done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "another copy" in done.stderr


def test_the_gpu_script_runs_the_same_jobs_on_the_gpu(tmp_path: Path) -> None:
    calls = _run_script(tmp_path, ROOT / "experiments" / "gpu_study.sh", SEEDS="1", SEEDS_SMALL="1", TIERS="1")
    jobs = calls[:-1]
    assert len(jobs) == 4 and all("trainer=gpu" in c and _value(c, "threads") == "2" for c in jobs)


def _study_commands() -> list[tuple[str, list[str]]]:
    """(arm, overrides) of every arm of the study, as the script builds them (one seed each)."""
    out = subprocess.run(
        [
            "bash",
            "-c",
            f"source <(sed -n '/^arm()/,/^}}/p' {shlex.quote(str(SCRIPT))}); for a in $0; do echo $a $(arm $a); done",
            "nocam oracle nocam_shortcut oracle_shortcut cam classifier captioner cam_shortcut "
            "grad_to_classifier cosine",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return [(line.split()[0], line.split()[1:]) for line in out]


ARMS = _study_commands()


@pytest.mark.parametrize("name,overrides", ARMS, ids=[n for n, _ in ARMS])
def test_every_arm_composes_and_validates(name: str, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from jointcap.config import LossConfig, validate
    from tests.test_configs import CONF

    if any("q_source" in o for o in overrides) and "q_source" not in LossConfig.__dataclass_fields__:
        pytest.skip("model.loss.q_source (issue 25's oracle Q) is not in this branch's schema yet")
    fixed = [
        "seed=1",
        "+budget=study_field",
        "skip_if_done=true",
        "data.source.captions=field_marks",
        "data.source.test_per_class=30",
        *overrides,
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=fixed)
    validate(cfg)
    assert cfg.data.source.captions == "field_marks" and cfg.data.source.test_per_class == 30
    assert cfg.data.source.shortcut == name.endswith("_shortcut")


# ------------------------------------------------------------------------------------------- the summary
def _job(
    root: Path,
    arm: str,
    seed: int,
    task: str,
    weight: float,
    p: float,
    *,
    q: str = "attention",
    shortcut: bool = False,
    recall: float = 0.4,
    pointing: float = 0.2,
) -> None:
    folder = root / arm / f"seed{seed:02d}"
    (folder / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "model": {"task": task, "loss": {"cam_weight": weight, "q_source": q, "divergence": "js", "grad_to": "both"}},
        "data": {
            "source": {
                "_target_": "jointcap.data.synthetic_hard.HardSyntheticSource",
                "n_classes": 10,
                "shortcut": shortcut,
                "per_class": 50,
            }
        },
    }
    (folder / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    (folder / ".hydra" / "overrides.yaml").write_text(json.dumps([f"seed={seed}"]))
    rng = np.random.default_rng([seed, int(weight * 10), len(arm), shortcut])
    shift = rng.normal(0, 0.01)  # the seed's own luck
    correct = (rng.random(200) < p + shift).astype(int)
    rec = np.clip(recall + shift + rng.normal(0, 0.1, 200), 0, 1)
    metrics = {"test/acc1": float(correct.mean()), "test/cam_pointing_class": pointing + shift}
    (folder / "results.json").write_text(json.dumps({"objective": "test/acc1", "metrics": metrics}))
    with open(folder / "test_predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", "label", "pred", "correct", "caption", "class_recall", "group"])
        for i in range(200):
            w.writerow(
                [
                    i,
                    f"test_{i:06d}",
                    i % 10,
                    0,
                    correct[i] if task != "captioner" else "",
                    "a bird" if task != "classifier" else "",
                    rec[i] if task != "classifier" else "",
                    i % 2,
                ]
            )


def _study(root: Path, oracle_gain: float, seeds: int = 4) -> None:
    for s in range(1, seeds + 1):
        _job(root, "nocam", s, "joint", 0.0, 0.6)
        _job(root, "oracle", s, "joint", 1.0, 0.6 + oracle_gain, q="oracle", recall=0.4 + oracle_gain)
        _job(root, "nocam_shortcut", s, "joint", 0.0, 0.5, shortcut=True)
        _job(root, "oracle_shortcut", s, "joint", 1.0, 0.5 + oracle_gain, q="oracle", shortcut=True)
        _job(root, "cam", s, "joint", 1.0, 0.6, pointing=0.3)
        _job(root, "classifier", s, "classifier", 0.0, 0.75)
        _job(root, "captioner", s, "captioner", 0.0, 0.0, recall=0.2)


def test_archive_keeps_what_the_analysis_needs_gzipped_and_the_same_bytes_twice(tmp_path: Path) -> None:
    _study(tmp_path / "multirun", 0.2, seeds=1)
    (tmp_path / "multirun" / "cam" / "seed01" / "last.ckpt").write_bytes(b"x" * 100)  # not archived
    (tmp_path / "multirun" / "cam" / "seed01" / "metrics.csv").symlink_to("/etc/hostname")  # a link: not followed
    log = tmp_path / "multirun" / "nocam" / "seed01" / "metrics.csv"  # per-step rows, as Lightning logs them
    log.write_text("epoch,step,train/cls,val/acc1\n0,10,2.0,\n0,20,1.0,\n0,20,,0.25\n1,30,0.5,\n1,40,,0.5\n")
    assert study.archive(tmp_path / "multirun", tmp_path / "a") == 7
    job = tmp_path / "a" / "cam" / "seed01"
    assert sorted(p.name for p in job.rglob("*") if p.is_file()) == [
        "config.yaml",
        "overrides.yaml",
        "results.json",
        "test_predictions.csv.gz",
    ]
    kept = tmp_path / "a" / "nocam" / "seed01" / "metrics.csv"
    assert len(kept.read_text().splitlines()) == 3  # a header and one row per epoch
    assert curves.epoch_means(kept, ("train/cls", "val/acc1")) == curves.epoch_means(log, ("train/cls", "val/acc1"))
    plain = (tmp_path / "multirun" / "cam" / "seed01" / "test_predictions.csv").read_bytes()
    assert gzip.decompress((job / "test_predictions.csv.gz").read_bytes()) == plain
    study.archive(tmp_path / "multirun", tmp_path / "b")
    assert (tmp_path / "b" / "cam" / "seed01" / "test_predictions.csv.gz").read_bytes() == (
        job / "test_predictions.csv.gz"
    ).read_bytes()


@pytest.mark.slow  # the full summary with its figures: ~15 s
def test_the_summary_judges_the_positive_control_first_and_holm_corrects_the_primary(tmp_path: Path) -> None:
    _study(tmp_path / "multirun", oracle_gain=0.2)
    study.archive(tmp_path / "multirun", tmp_path / "res" / "runs")
    files = study.summarize(tmp_path / "res" / "runs", tmp_path / "res", n_boot=200)
    verdicts = files["verdicts"].read_text()
    assert "The positive control passed" in verdicts
    rows = [line for line in verdicts.splitlines() if line.startswith("| C") or line.startswith("| P")]
    assert [r.split("|")[1].strip() for r in rows] == ["C1", "C2", "C3", "P1", "P2", "P3", "P4"]  # ≤ 8 rows
    p1, p2, p3 = rows[3], rows[4], rows[5]
    assert "lower than classifier alone" in p1 and "higher than captioner alone" in p2
    assert "no difference detected" in p3  # λ = 1 and λ = 0 drawn alike
    assert files["primary"].is_file() and files["readme_block"].read_text().startswith("![")
    assert "primary.png" in files["readme_block"].read_text() and "| P4 |" in files["readme_block"].read_text()
    exploratory = list(csv.DictReader(open(files["exploratory_csv"])))
    assert exploratory and all(r["p_bh"] != "" for r in exploratory)
    assert not any(
        r["arm"] == "oracle Q" and r["metric"] == "correct" and r["option"] == "default data" for r in exploratory
    )  # a declared endpoint is not also an exploratory row


@pytest.mark.slow  # the full summary with its figures: ~15 s
def test_a_failed_positive_control_says_the_benchmark_cannot_answer_first(tmp_path: Path) -> None:
    _study(tmp_path / "runs", oracle_gain=0.0)
    files = study.summarize(tmp_path / "runs", tmp_path / "out", n_boot=0)
    first = files["verdicts"].read_text().split("\n\n")[1]
    assert first.startswith("**The positive control failed") and "cannot answer" in first
    assert "P4 is read beside" not in files["verdicts"].read_text()  # no levels file, no levels
    (tmp_path / "out" / study.LEVELS_FILE).write_text("| grid | class part: chance |\n| 10×10 | 2.7 |\n")
    again = study.summarize(tmp_path / "runs", tmp_path / "out", n_boot=0)["verdicts"].read_text()
    assert again.endswith(
        "P4 is read beside these levels (levels.md):\n\n| grid | class part: chance |\n| 10×10 | 2.7 |\n"
    )


def test_arms_are_named_by_the_protocol_and_a_duplicate_seed_is_an_error(tmp_path: Path) -> None:
    _study(tmp_path / "runs", 0.1, seeds=1)
    by = study.arms(study.sm.find_jobs([tmp_path / "runs"]))
    assert set(by) == {
        (study.DEFAULT, "joint λ = 0"),
        (study.DEFAULT, "oracle Q"),
        (study.SHORTCUT, "joint λ = 0"),
        (study.SHORTCUT, "oracle Q"),
        (study.DEFAULT, "joint λ = 1"),
        (study.DEFAULT, "classifier alone"),
        (study.DEFAULT, "captioner alone"),
    }
    _job(tmp_path / "runs" / "again", "cam", 1, "joint", 1.0, 0.6)
    with pytest.raises(ValueError, match="two jobs of joint λ = 1"):
        study.arms(study.sm.find_jobs([tmp_path / "runs"]))
