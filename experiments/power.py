"""Seeds per arm for the field-mark study (issue 28): the smallest effect a paired t-test over seeds detects.

Reads the per-run values of the committed hard study (`experiments/results/hard_study/jobs.csv`: 5 seeds per
setting), takes the per-seed differences of each primary endpoint's pair of arms, and for n seeds per arm
prints the minimum detectable effect (MDE) of a two-sided paired t-test at 80 % power and α = 0.05 / 4 (the
first, strictest step of Holm over the 4 primary endpoints), from the noncentral t distribution. The
spread's own uncertainty (5 seeds: its sd is known to about ±35 %) is shown by the MDE at the upper end of
the sd's 80 % interval (chi-square).

    python experiments/power.py [jobs.csv] > experiments/results/power.md
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
from scipy import optimize
from scipy.stats import chi2, nct
from scipy.stats import t as student_t

JOBS = Path(__file__).parent / "results" / "hard_study" / "jobs.csv"
ALPHA, N_PRIMARY, POWER, TARGET = 0.05, 4, 0.80, 2.5  # MDE target in percentage points (P1, P3)
DEFAULT = {"data.source.per_class": "50.0", "data.source.shortcut": "False", "trainer.max_epochs": "16.0"}
PLAIN_LOSS = {"model.loss.divergence": "js", "model.loss.grad_to": "both", "model.loss.scst_cam": "True"}
ARMS = {  # name: (model.task, cam_weight) on the default data, JS, both sides, CAM loss in SCST
    "classifier alone": ("classifier", "0.0"),
    "captioner alone": ("captioner", "0.0"),
    "joint λ = 0": ("joint", "0.0"),
    "joint λ = 1": ("joint", "1.0"),
}
# (endpoint, arm a, arm b, metric in jobs.csv); P2 and P4 are shown for completeness, the target is on P1 and P3
ENDPOINTS = (
    ("P1 top-1: λ = 1 − classifier alone", "joint λ = 1", "classifier alone", "test/acc1"),
    ("P2 class facts: λ = 1 − captioner alone", "joint λ = 1", "captioner alone", "test/class_attr_recall"),
    ("P3 top-1: λ = 1 − λ = 0", "joint λ = 1", "joint λ = 0", "test/acc1"),
    ("P4 CAM pointing: λ = 1 − λ = 0", "joint λ = 1", "joint λ = 0", "test/cam_pointing_class"),
)
SEEDS = (5, 8, 10, 12, 16, 20)
TEST_NOW, TEST_STUDY = 1000, 3000  # test images: the measured study, the field-mark study (test_per_class=30)


def per_seed(rows: list[dict[str, str]], arm: str, metric: str) -> dict[int, float]:
    """{seed: value} of one arm's runs on the default data option."""
    task, weight = ARMS[arm]
    out = {}
    for r in rows:
        wanted = {**DEFAULT, **PLAIN_LOSS, "model.task": task, "model.loss.cam_weight": weight}
        if all(r[k] == v for k, v in wanted.items()) and r[metric] != "":
            out[int(r["seed"])] = float(r[metric])
    return out


def power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of a two-sided paired t-test over n seeds to detect `effect` given the sd of the differences."""
    df, ncp = n - 1, effect / sd * math.sqrt(n)
    crit = student_t.ppf(1 - alpha / 2, df)
    lower = float(nct.cdf(-crit, df, ncp))  # the wrong-sign tail: negligible, and NaN in scipy's far tail
    return float(nct.sf(crit, df, ncp)) + (lower if math.isfinite(lower) else 0.0)


def mde(sd: float, n: int, alpha: float = ALPHA / N_PRIMARY, target: float = POWER) -> float:
    """The effect detected with probability `target` (noncentral t; same units as sd)."""
    return float(optimize.brentq(lambda e: power(e, sd, n, alpha) - target, 1e-9 * sd, 12 * sd / math.sqrt(n)))


def study_sd(sd: float, a: float, b: float) -> float:
    """The per-seed Δ's sd (points) with TEST_STUDY test images, if the image part (binomial bound) shrinks as 1/N."""
    image_var = (a * (1 - a) + b * (1 - b)) / TEST_NOW * 100**2
    model_var = max(sd**2 - image_var, 0.0)
    return math.sqrt(model_var + image_var * TEST_NOW / TEST_STUDY)


def main(argv: list[str]) -> None:
    """Print the per-seed spreads and the MDE table (markdown)."""
    path = Path(argv[0]) if argv else JOBS
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"# Seeds per arm: minimum detectable effect of the primary endpoints ({path.name})\n")
    print(
        f"Two-sided paired t over seeds, {POWER:.0%} power, α = {ALPHA} / {N_PRIMARY} = {ALPHA / N_PRIMARY:.4f} "
        "(Holm's first step over the 4 primary endpoints: the conservative case). Effects in percentage points.\n"
    )
    mdes = " | ".join(f"MDE n={n}" for n in SEEDS)
    print(f"| endpoint | seeds measured | mean Δ | sd of per-seed Δ | sd, 80 % upper | {mdes} |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(SEEDS))
    needed = {}
    for name, a_arm, b_arm, metric in ENDPOINTS:
        a, b = per_seed(rows, a_arm, metric), per_seed(rows, b_arm, metric)
        seeds = sorted(set(a) & set(b))
        d = np.array([a[s] - b[s] for s in seeds]) * 100
        sd = float(d.std(ddof=1))
        upper = sd * math.sqrt((len(d) - 1) / chi2.ppf(0.10, len(d) - 1))  # the sd's one-sided 90 % bound
        cells = [f"{mde(sd, n):.2f}" for n in SEEDS]
        print(f"| {name} | {len(d)} | {d.mean():+.2f} | {sd:.2f} | {upper:.2f} | " + " | ".join(cells) + " |")
        scaled = study_sd(sd, float(np.mean([a[s] for s in seeds])), float(np.mean([b[s] for s in seeds])))
        cells = [f"{mde(scaled, n):.2f}" for n in SEEDS]
        print(f"| … with {TEST_STUDY} test images | | | {scaled:.2f} | | " + " | ".join(cells) + " |")
        if name.startswith(("P1", "P3")):
            needed[name] = tuple(next((n for n in range(3, 60) if mde(v, n) <= TARGET), 0) for v in (sd, scaled))
    print()
    for name, (n_now, n_study) in needed.items():
        print(
            f"* {name}: MDE ≤ {TARGET} points from n = {n_now} seeds at the measured sd, n = {n_study} with "
            f"{TEST_STUDY} test images."
        )
    print(
        "\nThe sd of a per-seed Δ holds the model's seed-to-seed change and which test images each model happens to "
        f"get right; the second part is at most a(1−a)/N + b(1−b)/N (independent flips) and shrinks as 1/N. '… with "
        f"{TEST_STUDY} test images' removes that bound's share {1 - TEST_NOW / TEST_STUDY:.0%}: optimistic where the "
        "two arms' flips correlate, so the study takes the seeds between the two rows."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
