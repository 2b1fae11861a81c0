"""Issue 25's default-data table over seeds: what the captions say, greedy and beam 3, against the targets.

Reads `<folder>/s<seed>/eval_beam{1,3}/` (report.json and predictions.csv of `python -m jointcap.evaluate`, as
experiments/describe_lever.sh writes them; predictions.csv.gz as experiments/results/describe_lever/ holds them)
and prints, per decoding, each metric's seed mean with its Student-t 95 % interval over the seeds, the seed
values and issue 25's target (met when the mean is on its side; the interval says how sure that is).

    python experiments/summarize_describe.py multirun/describe_lever [more folders…] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import t as student_t

sys.path.insert(0, str(Path(__file__).resolve().parent))
from body_colour import body_colour, test_truth  # noqa: E402

# (label, report key or body-colour key, scale, target as (">=" | "<=", value) or None)
ROWS: tuple[tuple[str, str, float, tuple[str, float] | None], ...] = (
    ("CIDEr-D", "cider_d", 1.0, (">=", 1.7)),
    ("distinct captions %", "distinct captions %", 1.0, (">=", 30.0)),
    ("body colour stated %", "body colour stated %", 1.0, (">=", 50.0)),
    ("… right when stated %", "right when stated %", 1.0, (">=", 90.0)),
    ("class-attribute F1", "class_attr_f1", 1.0, (">=", 0.95)),
    ("precision of every stated fact", "attr_precision", 1.0, (">=", 0.95)),
    ("repeated trigram %", "rep3", 100.0, ("<=", 1.0)),
    ("top-1", "acc1", 1.0, (">=", 0.99)),
    ("word grounding", "word_grounding", 1.0, None),
)
DECODINGS = (("greedy", "eval_beam1"), ("beam 3", "eval_beam3"))


def seed_values(folder: Path, sub: str) -> dict[int, dict[str, float]]:
    """seed → {metric: value} for every `s<seed>/<sub>` of folder with a report (body colour included)."""
    out: dict[int, dict[str, float]] = {}
    truth, reader = test_truth([])
    for d in sorted(folder.glob(f"s*/{sub}")):
        report = d / "report.json"
        if not report.is_file():
            continue
        metrics = {k.split("/")[-1]: float(v) for k, v in json.loads(report.read_text())["metrics"].items()}
        plain, packed = d / "predictions.csv", d / "predictions.csv.gz"  # a run's, or as committed
        with gzip.open(packed, "rt") if packed.is_file() and not plain.is_file() else plain.open() as f:
            caps = {int(r["index"]): r["caption"] for r in csv.DictReader(f)}
        metrics.update(body_colour(caps, truth, reader))
        out[int(d.parent.name[1:])] = metrics
    return out


def mean_interval(x: list[float], level: float = 0.95) -> tuple[float, float]:
    """The mean and the half-width of its Student-t interval over the seeds (nan with one seed)."""
    a = np.asarray(x, dtype=np.float64)
    if len(a) < 2:
        return float(a.mean()), math.nan
    return float(a.mean()), float(student_t.ppf(0.5 + level / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))


def meets(value: float, target: tuple[str, float]) -> bool:
    """Whether value is on the target's side (">=" or "<=" its bound)."""
    return value >= target[1] if target[0] == ">=" else value <= target[1]


def table(folder: Path) -> list[str]:
    """A markdown table of one folder: a row per metric, greedy and beam 3 side by side."""
    per = {name: seed_values(folder, sub) for name, sub in DECODINGS}
    seeds = sorted(set().union(*per.values()))
    lines = [
        f"`{folder}`, seeds {', '.join(map(str, seeds))}: seed mean ± t 95 % half-width [seed values]",
        "",
        "| metric | target | " + " | ".join(n for n, _ in DECODINGS) + " |",
        "|---|---|" + "---|" * len(DECODINGS),
    ]
    for label, key, scale, target in ROWS:
        cells = []
        for name, _ in DECODINGS:
            vals = [per[name][s][key] * scale for s in seeds if s in per[name] and key in per[name][s]]
            vals = [v for v in vals if math.isfinite(v)]
            if not vals:
                cells.append("–")
                continue
            m, h = mean_interval(vals)
            met = "" if target is None else (" ✓" if meets(m, target) else " ✗")
            cells.append(f"{m:.3g} ± {h:.2g}{met} [{' / '.join(f'{v:.3g}' for v in vals)}]")
        tgt = "" if target is None else f"{'≥' if target[0] == '>=' else '≤'} {target[1]:g}"
        lines.append(f"| {label} | {tgt} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = ap.parse_args(argv)
    text = "\n\n".join("\n".join(table(f)) for f in args.folders) + "\n"
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
