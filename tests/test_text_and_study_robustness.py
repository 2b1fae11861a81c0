"""Issue 26 points 9 and 10: caption text that cannot break a page, a caption or a terminal; study tools that
name and skip one bad job instead of stopping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from jointcap.analysis import curves, html_report, summarize
from jointcap.analysis.report import print_samples
from jointcap.data.captions import read_captions
from jointcap.data.textsafe import clean_text, path_text, split_lines
from tests.conftest import ROOT

HOSTILE = "\ufeffthis\x0bbird\x0chas\u2028red\u2029wings\x85and\x1b[31m a \x1b]0;title\x07beak\x00\x07\u202e."


# -- point 10: one sanitiser ---------------------------------------------------------------------------
def test_clean_text_keeps_one_printable_line() -> None:
    assert clean_text(HOSTILE) == "this bird has red wings and a beak ."
    assert clean_text("a  plain\tcaption ") == "a plain caption"
    assert clean_text("é ü — «ok»") == "é ü — «ok»"  # ordinary text untouched


def test_split_lines_splits_only_on_line_ends() -> None:
    text = "\ufefffirst\x0bcaption\r\nsecond\u2028caption\rthird\x0ccaption\n\n\x85\n"
    assert split_lines(text) == ["first caption", "second caption", "third caption"]


def test_path_text_is_valid_printable_utf8() -> None:
    name = os.fsdecode(b"/x/caf\xe9\x1b[2J.png")
    out = path_text(name)
    assert out == "/x/caf\\xe9\\x1b[2J.png" and out.encode("utf-8")


def test_reed_captions_with_separators_and_a_bom_stay_ten_captions(tmp_path: Path) -> None:
    lines = [f"caption {i}\x0bwith a vertical tab\u2028and a line separator" for i in range(10)]
    path = tmp_path / "a.txt"
    path.write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode("utf-8"))
    caps = read_captions(path)  # main: 30 "captions", the first starting with a BOM
    assert len(caps) == 10 and caps[0] == "caption 0 with a vertical tab and a line separator"


def test_report_html_stays_well_formed_with_control_characters(tmp_path: Path) -> None:
    item = html_report.GalleryItem(
        key="img\x1b[31m0",
        true_class="red\x00",
        pred_class="blue\x0c",
        prob=0.5,
        correct=False,
        caption=HOSTILE,
        references=[HOSTILE],
        jpeg=b"\xff\xd8",
    )
    report = {"split": "test", "dataset": "synthetic\x07", "n_images": 1, "metrics": {"acc1": 0.5}}
    path = html_report.write_html(tmp_path / "report.html", report, [], [item])
    text = path.read_text(encoding="utf-8")
    ET.fromstring(text.split("\n", 1)[1])  # main: "not well-formed (invalid token)"
    assert "this bird has red wings and a beak ." in text


def test_terminal_never_gets_escapes(capsys: pytest.CaptureFixture) -> None:
    print_samples({0: "a bird\x1b[2J\x1b]0;pwned\x07 sings"}, [["ref\x1b[31m red"]], ["key\x1b[1m"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "a bird sings" in out


# -- point 9: one bad job is named and skipped ---------------------------------------------------------
def _job(root: Path, name: str, cam_weight: float, results: str | None = None) -> Path:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    cfg = {"seed": 1, "model": {"task": "joint", "loss": {"cam_weight": cam_weight}}}
    (folder / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    (folder / ".hydra" / "overrides.yaml").write_text(json.dumps([f"model.loss.cam_weight={cam_weight}"]))
    metrics = {"test/acc1": 0.5 + cam_weight / 10, "test/cider_d": 0.3}
    good = json.dumps({"objective": "test/acc1", "metrics": metrics})
    (folder / "results.json").write_text(good if results is None else results)
    return folder


@pytest.mark.parametrize("bad", ['{"objective": "test/acc1", "metr', "", '{"metrics": {"test/acc1": "x"}}', "[]"])
def test_summarize_names_and_skips_a_truncated_results_json(
    tmp_path: Path, capsys: pytest.CaptureFixture, bad: str
) -> None:
    _job(tmp_path / "runs", "a", 0.0)
    _job(tmp_path / "runs", "b", 1.0)
    broken = _job(tmp_path / "runs", "c", 2.0, results=bad)
    files = summarize.summarize([tmp_path / "runs"], tmp_path / "out")  # main: JSONDecodeError naming no file
    assert str(broken / "results.json") in capsys.readouterr().err
    assert len(files["jobs"].read_text().splitlines()) == 3  # header + the two good jobs


def test_summarize_hard_skips_a_truncated_results_json(tmp_path: Path) -> None:
    """experiments/summarize_hard.py (jointcap.analysis.paired) through its command line."""
    _job(tmp_path / "runs", "a", 0.0)
    _job(tmp_path / "runs", "b", 1.0)
    broken = _job(tmp_path / "runs", "c", 2.0, results='{"metrics": {"test/ac')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "summarize_hard.py"), str(tmp_path / "runs"), "--n-boot", "50"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(broken / "results.json") in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "runs" / "summary.md").is_file()


def test_curves_skip_an_epoch_of_nan(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/acc1\n0,1,0.5\nnan,2,0.7\n,3,0.9\n1,4,0.6\n")  # main: ValueError on "nan"
    assert curves.epoch_means(path, ("val/acc1",)) == {"val/acc1": {0: 0.5, 1: 0.6}}
