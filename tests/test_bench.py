"""`python -m jointcap.tools.bench` runs end to end at tiny sizes (no timing is asserted)."""

import json
import math
from pathlib import Path

import torch

from jointcap.tools import bench
from tests.conftest import TINY

TINY_BENCH = ["--steps", "1", "--warmup", "1", "--repeats", "1", "--beam-images", "2", "--beam-repeats", "1",
              "--caption-images", "20", "--caption-refs", "3", "--device", "cpu",
              "--threads", "1"]  # one intra-op thread: steady on a busy machine


def test_bench_end_to_end(tmp_path: Path, capsys) -> None:
    threads = torch.get_num_threads()
    report = bench.main([*TINY_BENCH, "--out", str(tmp_path / "bench.md"), *TINY])
    names = [r.name for r in report.rows]
    assert [n.split(".")[0] for n in names] == ["1", "2", "3", "4", "5"], names
    for row in report.rows:
        assert math.isfinite(row.ratio) and row.ratio > 0, row
        assert row.result in ("pass", "miss", "report")
    assert report.rows[2].result == "report"  # the captioning-cost target is a GPU one
    assert report.memory["rss_peak_mb"] > 0
    printed = capsys.readouterr().out
    table = (tmp_path / "bench.md").read_text()
    for name in names:
        assert name in printed and name in table
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["rows"]) == 5 and all(isinstance(r["ratio"], float) for r in data["rows"])
    assert data["machine"]["device"] == "cpu" and data["machine"]["torch_threads"] == 1
    assert torch.get_num_threads() == threads  # restored
