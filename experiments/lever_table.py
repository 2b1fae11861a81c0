"""Per-seed test scores of a few arms and each arm's paired difference from the first, as a markdown table.

    python experiments/lever_table.py NAME=FOLDER [NAME=FOLDER …]

Each FOLDER holds one run folder per seed (`s1`, `seed01`, …: the digits are the seed), each with results.json and
test_predictions.csv[.gz] (false facts per caption are read from it). The first arm is the base: every other arm
gets Δ = its mean minus the base's over the seeds both ran, with a paired t interval (95 %, n − 1 df) and its
two-sided p — uncorrected, for one lever at a time (a study's verdicts come from experiments/summarize_study.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's jointcap, as experiments/summarize.py

from jointcap.analysis.paired import prediction_rows  # noqa: E402
from jointcap.analysis.stats import paired_t  # noqa: E402

# (label, key, scale, unit): results.json keys, or "facts_wrong" (mean false facts per caption, test_predictions)
METRICS = [
    ("top-1", "test/acc1", 100, " %"),
    ("CAM peak on a class part", "test/cam_pointing_class", 100, " %"),
    ("CAM peak on the bird", "test/cam_pointing_object", 100, " %"),
    ("attention peak on a class part", "test/attn_pointing_class", 100, " %"),
    ("word grounding", "test/word_grounding", 100, " %"),
    ("class facts named (class-attribute F1)", "test/class_attr_f1", 1, ""),
    ("precision of stated facts", "test/attr_precision", 1, ""),
    ("false facts per caption", "facts_wrong", 1, ""),
    ("CIDEr-D", "test/cider_d", 1, ""),
    ("captions repeating a trigram", "test/rep3", 100, " %"),
    ("distinct captions", "test/distinct_captions", 100, " %"),
]


def scores(run: Path) -> dict[str, float]:
    """One finished run's values of METRICS."""
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    out = {key: float(metrics[key]) for _, key, _, _ in METRICS if key in metrics}
    rows = prediction_rows(run)
    if rows is None:
        raise SystemExit(f"{run}: no test_predictions.csv(.gz)")
    out["facts_wrong"] = float(np.mean([float(r["facts_wrong"]) for r in rows])) if rows else float("nan")
    return out


def arm(folder: Path) -> dict[int, dict[str, float]]:
    """Seed → scores of every finished run folder directly under `folder`."""
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder (give NAME=FOLDER, the folder holding one run folder per seed)")
    runs = {}
    for run in sorted(folder.iterdir()):
        digits = re.findall(r"\d+", run.name)
        if run.is_dir() and digits and (run / "results.json").is_file():
            runs[int(digits[-1])] = scores(run)
    if not runs:
        raise SystemExit(f"{folder}: no finished run folder (s<seed>/ or seed<NN>/ with results.json)")
    return runs


def _cell(values: list[float], scale: float, unit: str) -> str:
    return (
        " / ".join("–" if not np.isfinite(v) else f"{v * scale:.1f}" if scale != 1 else f"{v:.3f}" for v in values)
        + unit
    )


def table(arms: dict[str, dict[int, dict[str, float]]]) -> str:
    """Per-seed values of every arm, then each arm's paired Δ from the first."""
    names = list(arms)
    base = names[0]
    lines = [
        "| test, per seed | " + " | ".join(f"{n} (seeds {', '.join(map(str, sorted(arms[n])))})" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, key, scale, unit in METRICS:
        cells = [_cell([arms[n][s].get(key, float("nan")) for s in sorted(arms[n])], scale, unit) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name in names[1:]:
        seeds = sorted(set(arms[base]) & set(arms[name]))
        if len(seeds) < 2:
            lines += ["", f"Δ {name} − {base}: fewer than 2 seeds in common, no interval."]
            continue
        lines += [
            "",
            f"Δ {name} − {base}, paired over seeds {', '.join(map(str, seeds))} (mean [95 % t interval], p):",
            "",
        ]
        for label, key, scale, unit in METRICS:
            a = np.array([arms[name][s].get(key, np.nan) for s in seeds])
            b = np.array([arms[base][s].get(key, np.nan) for s in seeds])
            if np.isfinite(a - b).sum() < 2:
                continue
            c = paired_t(a, b)
            digits = 1 if scale != 1 else 3
            lines.append(
                f"- {label}: {c.diff * scale:+.{digits}f} [{c.low * scale:+.{digits}f}, {c.high * scale:+.{digits}f}]"
                f"{' points' if unit else ''}, p = {c.p:.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("arms", nargs="+", help="NAME=FOLDER, the first is the base")
    args = ap.parse_args(argv)
    arms = {}
    for spec in args.arms:
        name, sep, folder = spec.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: give NAME=FOLDER")
        arms[name] = arm(Path(folder))
    print(table(arms))


if __name__ == "__main__":
    main()
