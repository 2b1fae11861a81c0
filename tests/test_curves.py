"""Learning curves of a study (jointcap.analysis.curves): per-epoch means of each job's metrics.csv, over seeds."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from jointcap.analysis import curves
from jointcap.analysis import summarize as sm


def _job(root: Path, name: str, rows: list[dict[str, object]], config: dict | None = None) -> sm.Job:
    """A job folder whose metrics.csv holds `rows` (Lightning's CSVLogger layout: blank cells where not logged)."""
    folder = root / name
    folder.mkdir(parents=True)
    columns = sorted({k for r in rows for k in r})
    with open(folder / curves.METRICS_FILE, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    return sm.Job(folder, config or {}, [], {})


def _rows(acc: list[float]) -> list[dict[str, object]]:
    """Two training steps and one validation row per epoch: train/cls 4 − epoch (steps 0.1 apart), val/acc1."""
    out: list[dict[str, object]] = []
    for e, a in enumerate(acc):
        out += [
            {"epoch": e, "step": 2 * e, "train/cls": 4.0 - e - 0.05},
            {"epoch": e, "step": 2 * e + 1, "train/cls": 4.0 - e + 0.05},
        ]
        out.append({"epoch": e, "step": 2 * e + 1, "val/acc1": a})
    out.append({"step": 99, "val/acc1": 0.0})  # a row without an epoch (e.g. a test-time log) is not a point
    return out


def test_epoch_means_average_each_epochs_logged_values(tmp_path: Path) -> None:
    job = _job(tmp_path, "a", _rows([0.1, 0.3, 0.5]))
    means = curves.epoch_means(job.folder / curves.METRICS_FILE, ("train/cls", "val/acc1", "val/cider_d"))
    assert means["val/acc1"] == {0: 0.1, 1: 0.3, 2: 0.5}
    assert {e: round(v, 6) for e, v in means["train/cls"].items()} == {0: 4.0, 1: 3.0, 2: 2.0}
    assert means["val/cider_d"] == {}


def test_setting_curve_is_mean_and_std_over_seeds_on_common_epochs(tmp_path: Path) -> None:
    jobs = [_job(tmp_path, "s1", _rows([0.1, 0.3, 0.5])), _job(tmp_path, "s2", _rows([0.3, 0.5]))]
    curve = curves.setting_curve(jobs, "val/acc1")
    assert curve is not None
    epochs, mean, std, n = curve
    assert epochs == [0, 1] and n == 2  # epoch 2: one seed only, not averaged with nothing
    assert [round(m, 6) for m in mean] == [0.2, 0.4] and all(math.isclose(s, math.sqrt(0.02)) for s in std)
    assert curves.setting_curve(jobs, "val/cider_d") is None


def test_table_has_a_row_per_setting_and_every_fourth_epoch_and_the_last(tmp_path: Path) -> None:
    acc = [0.05 * e for e in range(10)]
    groups = {
        "joint, λ = 0": [_job(tmp_path, "b", _rows(acc))],
        "joint, λ = 1": [_job(tmp_path, "c", _rows([a / 2 for a in acc]))],
    }
    table = curves.table(groups, "val/acc1")
    header = next(line for line in table if line.startswith("| setting"))
    assert [c.strip() for c in header.split("|")[3:-1]] == ["epoch 4", "epoch 8", "epoch 10"]
    row = next(line for line in table if line.startswith("| joint, λ = 1 "))
    assert [c.strip() for c in row.split("|")[2:-1]] == ["1", "0.075", "0.175", "0.225"]
    assert curves.table(groups, "val/cider_d") == []


def test_figure_draws_what_was_logged_and_marks_the_self_critical_epochs(tmp_path: Path) -> None:
    joint = {"model.task": "joint", "trainer.max_epochs": 16, "model.loss.scst_epochs": 2}
    groups = {"joint, λ = 0": [_job(tmp_path, "b", _rows([0.1, 0.2, 0.4]), joint)]}
    groups["classifier alone"] = [_job(tmp_path, "c", _rows([0.2, 0.3, 0.4]), {**joint, "model.task": "classifier"})]
    assert curves.scst_first_epoch([j for js in groups.values() for j in js]) == 14  # the classifier has no SCST
    assert (
        curves.scst_first_epoch(
            [*groups["joint, λ = 0"], sm.Job(tmp_path, {**joint, "model.loss.scst_epochs": 3}, [], {})]
        )
        is None
    )
    path = curves.figure(groups, tmp_path / "curves.png", "joint, λ = 0")
    assert path is not None and path.stat().st_size > 10_000
    assert curves.figure(groups, tmp_path / "none.png", "joint, λ = 0", ("val/cider_d",)) is None


def test_paired_table_compares_each_setting_with_the_baseline_per_epoch_over_common_seeds(tmp_path: Path) -> None:
    def seeds(name: str, acc: list[float], n: int) -> list[sm.Job]:
        jobs = [_job(tmp_path, f"{name}{s}", _rows([a + 0.01 * s for a in acc])) for s in range(n)]
        for s, job in enumerate(jobs):
            job.config["seed"] = s
        return jobs

    groups = {
        "joint, λ = 0": seeds("base", [0.1, 0.5], 3),
        "joint, λ = 1": seeds("gain", [0.1, 0.7], 3),  # equal at epoch 1, +0.2 at epoch 2 in every seed
        "joint, λ = 2": seeds("few", [0.1, 0.7], 2),  # two seeds: no interval
    }
    table = curves.paired_table(groups, "joint, λ = 0", "val/acc1", [0, 1])
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in table
        if line.startswith("| joint")
    }
    assert set(rows) == {"joint, λ = 1"}  # the baseline is no row, and a setting with too few seeds none either
    equal, gain, n = rows["joint, λ = 1"]
    assert not equal.startswith("**") and gain.startswith("**+0.200 [") and n == "3"
    assert curves.paired_table(groups, "joint, λ = 0", "val/cider_d", [0, 1]) == []
