"""experiments/lever_table.py: per-seed scores from run folders and paired Δ over the seeds two arms share."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import load_script


def _run(folder: Path, acc1: float, wrong: list[int], packed: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"metrics": {"test/acc1": acc1, "test/cider_d": 1.0}}))
    text = "index,facts_wrong\n" + "".join(f"{i},{w}\n" for i, w in enumerate(wrong))
    if packed:
        (folder / "test_predictions.csv.gz").write_bytes(gzip.compress(text.encode()))
    else:
        (folder / "test_predictions.csv").write_text(text)


def test_per_seed_values_and_the_paired_difference(tmp_path: Path) -> None:
    lever = load_script("lever_table")
    for seed, acc in ((1, 0.30), (2, 0.40), (3, 0.50)):
        _run(tmp_path / "base" / f"seed0{seed}", acc, [2, 2])
    for seed, acc in ((1, 0.32), (2, 0.44)):  # seed 3 not finished: left out of the pairing
        _run(tmp_path / "arm" / f"s{seed}", acc, [1, 0], packed=True)
    (tmp_path / "arm" / "s3").mkdir()
    arms = {"base": lever.arm(tmp_path / "base"), "arm": lever.arm(tmp_path / "arm")}
    assert sorted(arms["arm"]) == [1, 2] and arms["arm"][1]["facts_wrong"] == pytest.approx(0.5)
    out = lever.table(arms)
    assert "| top-1 | 30.0 / 40.0 / 50.0 % | 32.0 / 44.0 % |" in out
    assert "| false facts per caption | 2.000 / 2.000 / 2.000 | 0.500 / 0.500 |" in out
    # Δ top-1 = +2, +4 points: mean +3.0, t interval 3 ± 12.706 · 1.414 / √2
    assert "- top-1: +3.0 [-9.7, +15.7] points" in out
    assert "- false facts per caption: -1.500" in out
    assert "CAM peak" not in out.split("Δ")[1]  # a metric no run has gets no Δ


def test_a_folder_without_finished_runs_is_named(tmp_path: Path) -> None:
    lever = load_script("lever_table")
    (tmp_path / "empty" / "s1").mkdir(parents=True)
    with pytest.raises(SystemExit, match="empty: no finished run folder"):
        lever.arm(tmp_path / "empty")
    with pytest.raises(SystemExit, match="missing: no such folder"):
        lever.main([f"a={tmp_path / 'missing'}"])
