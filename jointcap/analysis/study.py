"""The field-mark study's summary (issue 28; protocol: experiments/README.md), rebuilt from archived runs.

`archive(multirun, runs)` keeps of every finished job what the analysis needs — results.json, the Hydra
config and overrides, metrics.csv as per-epoch means (`epoch_table`), and the per-image test_predictions.csv
gzipped (fixed mtime: the same bytes on every archive) — so the committed folder is enough to redo
everything. `summarize(runs, out)`:
* the positive control (the oracle Q arm against λ = 0 on top-1, class facts named, worst-group accuracy),
  Holm over its 3 checks: the study can answer only if one of them improves;
* the primary endpoints P1–P4, one Holm family of 4;
* every other arm × metric against λ = 0 of its data option, exploratory, Benjamini–Hochberg;
each by a paired t-test over seeds (`stats.seed_level` / `stats.paired_t`), with a hierarchical bootstrap
(seeds, then classes) beside per-image endpoints. Writes verdicts.md (≤ 8 rows), primary.png,
readme_block.md (what README shows), exploratory.md/.csv, and the full paired summary
(`paired.summarize_study`).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jointcap.analysis import curves, paired
from jointcap.analysis import summarize as sm
from jointcap.analysis.stats import Comparison, benjamini_hochberg, hierarchical_bootstrap, holm, paired_t, seed_level
from jointcap.runtime.callbacks.predictions import PREDICTIONS_FILE

ALPHA = 0.05  # family-wise (Holm) for the gate and the primary family; false discovery rate (BH) for the rest
MAX_ARCHIVED_BYTES = 20_000_000  # a file larger than this in a run folder is not what a job writes: left out
KEPT = ("results.json", ".hydra/config.yaml", ".hydra/overrides.yaml")
DEFAULT, SHORTCUT = "default data", "shortcut split"
DUPLICATES = {"test/acc1"}  # the run-level twin of the per-image `correct`: one test, not two rows
LAMBDA_0, LAMBDA_1, ORACLE = "joint λ = 0", "joint λ = 1", "oracle Q"
CLASSIFIER, CAPTIONER = "classifier alone", "captioner alone"


@dataclass(frozen=True)
class Endpoint:
    """One declared comparison: arm a − arm b on one metric of one data option."""

    key: str  # "P1", "C1", …
    title: str
    a: str
    b: str
    option: str
    metric: str  # a per-image column of test_predictions.csv, "worst_group_acc", or a run-level test/ metric


GATE = (
    Endpoint("C1", "Oracle Q: test top-1", ORACLE, LAMBDA_0, DEFAULT, "correct"),
    Endpoint("C2", "Oracle Q: class facts named", ORACLE, LAMBDA_0, DEFAULT, "class_recall"),
    Endpoint("C3", "Oracle Q: worst-group top-1", ORACLE, LAMBDA_0, SHORTCUT, "worst_group_acc"),
)
PRIMARY = (
    Endpoint("P1", "Top-1: joint vs classifier alone", LAMBDA_1, CLASSIFIER, DEFAULT, "correct"),
    Endpoint("P2", "Class facts named: joint vs captioner alone", LAMBDA_1, CAPTIONER, DEFAULT, "class_recall"),
    Endpoint("P3", "Top-1: CAM loss (λ = 1 vs 0)", LAMBDA_1, LAMBDA_0, DEFAULT, "correct"),
    Endpoint("P4", "CAM on class parts: λ = 1 vs 0", LAMBDA_1, LAMBDA_0, DEFAULT, "test/cam_pointing_class"),
)


@dataclass
class Result:
    """An endpoint's comparison, its bootstrap check and its adjusted p-value."""

    endpoint: Endpoint
    result: Comparison | None  # None: an arm has no runs (yet)
    check: Comparison | None = None
    p_adjusted: float = math.nan

    def verdict(self) -> str:
        """Plain words: better/worse than the comparator where the adjusted p < ALPHA, else no detectable change."""
        if self.result is None:
            return "not run"
        if not self.result.judged:
            return f"too few seeds ({self.result.n_seeds})"
        if not self.p_adjusted < ALPHA:
            return "no difference detected"
        return ("higher" if self.result.diff > 0 else "lower") + f" than {self.endpoint.b}"


# ----------------------------------------------------------------------------------- archive
def epoch_table(src: Path, dest: Path) -> None:
    """metrics.csv reduced to one row per epoch holding each column's epoch mean: what the learning curves read
    (`curves.epoch_means` gives the same from either file), at a fraction of the per-step log's size."""
    with open(src, newline="") as f:
        header = next(csv.reader(f), [])
    columns = tuple(c for c in header if c != "epoch")
    means = curves.epoch_means(src, columns)
    epochs = sorted({e for by in means.values() for e in by})
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", *columns])
        w.writerows([[e, *(repr(means[c][e]) if e in means[c] else "" for c in columns)] for e in epochs])


def archive(multirun: Path, runs: Path) -> int:
    """Copy what the analysis needs of every finished job under `multirun` into `runs` (same relative folders),
    test_predictions.csv gzipped; returns the jobs archived. Only the fixed file names in KEPT are read,
    never symlinks: a run folder is data, not instructions."""
    count = 0
    for results in sorted(Path(multirun).rglob("results.json")):
        job = results.parent
        if not (job / ".hydra" / "config.yaml").is_file() or results.is_symlink():
            continue
        dest = Path(runs) / job.relative_to(multirun)
        for name in KEPT:
            src = job / name
            if src.is_file() and not src.is_symlink() and src.stat().st_size <= MAX_ARCHIVED_BYTES:
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / name)
        log = job / curves.METRICS_FILE
        if log.is_file() and not log.is_symlink() and log.stat().st_size <= MAX_ARCHIVED_BYTES:
            epoch_table(log, dest / curves.METRICS_FILE)
        table = job / PREDICTIONS_FILE
        if table.is_file() and not table.is_symlink() and table.stat().st_size <= MAX_ARCHIVED_BYTES:
            with open(table, "rb") as f_in, open(dest / (PREDICTIONS_FILE + ".gz"), "wb") as raw:
                with gzip.GzipFile(filename=PREDICTIONS_FILE, fileobj=raw, mode="wb", mtime=0) as f_out:
                    shutil.copyfileobj(f_in, f_out)
        count += 1
    return count


# ----------------------------------------------------------------------------------- arms and scores
def option_of(job: sm.Job) -> str:
    """The job's data option: the shortcut split or the default data."""
    return SHORTCUT if job.config.get("data.source.shortcut") is True else DEFAULT


def arm_of(job: sm.Job) -> str:
    """The protocol's name of the job's arm (`joint λ = 1, grad_to=classifier` etc. for the variants)."""
    c = job.config
    task = c.get("model.task")
    if task in ("classifier", "captioner"):
        return f"{task} alone"
    if c.get("model.loss.q_source", "attention") == "oracle":
        return ORACLE
    weight = float(c.get("model.loss.cam_weight", 1.0))
    if weight == 0:
        return LAMBDA_0
    plain = {"grad_to": "both", "divergence": "js"}  # the plain loss goes unsaid
    extra = [f"{k}={c.get(f'model.loss.{k}')}" for k, v in plain.items() if c.get(f"model.loss.{k}", v) != v]
    return f"joint λ = {weight:g}" + "".join(f", {e}" for e in extra)


def arms(jobs: list[sm.Job]) -> dict[tuple[str, str], dict[int, sm.Job]]:
    """{(data option, arm): {seed: job}}; two finished jobs of one arm and seed are an error (a mixed folder)."""
    out: dict[tuple[str, str], dict[int, sm.Job]] = {}
    for job in jobs:
        seeds = out.setdefault((option_of(job), arm_of(job)), {})
        if job.seed in seeds:
            raise ValueError(
                f"two jobs of {arm_of(job)} ({option_of(job)}), seed {job.seed}: "
                f"{seeds[job.seed].folder} and {job.folder}"
            )
        seeds[int(job.seed)] = job
    return out


def _scores(jobs: list[sm.Job], metric: str) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray] | None:
    """(seeds, images) per-image scores of one metric on the images every job has, with the classes and the
    shortcut groups of those images; None where a job has no predictions table."""
    tables = [paired.read_predictions(j) for j in jobs]
    if any(t is None for t in tables):
        return None
    tabs = [t for t in tables if t is not None]
    keys = sorted(set.intersection(*(set(t) for t in tabs)))
    column = "correct" if metric == "worst_group_acc" else metric
    x = np.array([[sm.csv_number(t[k].get(column)) for k in keys] for t in tabs])
    labels = np.array([tabs[0][k].get("label", "") for k in keys])
    groups = np.array([tabs[0][k].get("group", "") for k in keys])
    return x, keys, labels, groups


def compare_endpoint(e: Endpoint, by_arm: dict[tuple[str, str], dict[int, sm.Job]], n_boot: int) -> Result:
    """The endpoint's paired t over the seeds both arms ran (and the hierarchical bootstrap for per-image ones)."""
    a_by, b_by = by_arm.get((e.option, e.a), {}), by_arm.get((e.option, e.b), {})
    seeds = sorted(set(a_by) & set(b_by))
    if not seeds:
        return Result(e, None)
    if e.metric.startswith("test/"):  # one value per run
        a = np.array([a_by[s].metrics.get(e.metric, math.nan) for s in seeds])
        b = np.array([b_by[s].metrics.get(e.metric, math.nan) for s in seeds])
        if len(seeds) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
            return Result(e, None)
        return Result(e, paired_t(a, b))
    sa, sb = _scores([a_by[s] for s in seeds], e.metric), _scores([b_by[s] for s in seeds], e.metric)
    if sa is None or sb is None:
        return Result(e, None)
    keys = sorted(set(sa[1]) & set(sb[1]))
    pos_a, pos_b = ({k: i for i, k in enumerate(s[1])} for s in (sa, sb))
    ia, ib = [pos_a[k] for k in keys], [pos_b[k] for k in keys]
    xa, xb, labels, groups = sa[0][:, ia], sb[0][:, ib], sa[2][ia], sa[3][ia]
    g = groups if e.metric == "worst_group_acc" else None
    if g is not None and (groups == "").any():
        return Result(e, None)
    c = seed_level(xa, xb, groups=g, min_seeds=paired.MIN_SEEDS)
    check = hierarchical_bootstrap(xa, xb, labels, n_boot, groups=g) if n_boot and len(seeds) > 1 else None
    return Result(e, c, check)


def adjust(results: list[Result], method: str) -> None:
    """Set each result's adjusted p-value, the family being the results with a p-value (`holm` or `bh`)."""
    p = [r.result.p if r.result is not None and r.result.judged else math.nan for r in results]
    adjusted = holm(p) if method == "holm" else benjamini_hochberg(p)
    for r, q in zip(results, adjusted, strict=True):
        r.p_adjusted = float(q)


# ----------------------------------------------------------------------------------- tables and figure
def _scale(metric: str) -> float:
    """Shares in percentage points, other scores as they are."""
    return 100.0 if paired._in_points(metric) else 1.0


def _cell(c: Comparison, metric: str = "correct") -> str:
    k = _scale(metric)
    d = 1 if k == 100 else 3
    if not (math.isfinite(c.low) and math.isfinite(c.high)):  # one seed: no interval
        return f"{c.diff * k:+.{d}f} [–]"
    return f"{c.diff * k:+.{d}f} [{c.low * k:+.{d}f}, {c.high * k:+.{d}f}]"


def gate_sentence(gate: list[Result]) -> str:
    """The write-up's first line: whether the positive control shows the benchmark can answer."""
    if any(r.result is None for r in gate):
        return "**Positive control incomplete**: the study's verdicts wait for the oracle arm."
    moved = [r for r in gate if r.p_adjusted < ALPHA and r.result is not None and r.result.diff > 0]
    if not moved:
        return (
            "**The positive control failed: even the oracle Q did not move top-1, worst-group accuracy or the "
            "class facts named beyond the noise, so this benchmark cannot answer whether the CAM loss helps** "
            "(the primary endpoints below are descriptive only)."
        )
    return (
        "The positive control passed (the oracle Q improved "
        + ", ".join(r.endpoint.title.split(": ")[1] for r in moved)
        + "): the benchmark can detect a gain of that kind."
    )


def verdict_table(gate: list[Result], primary: list[Result]) -> list[str]:
    """≤ 8 rows: the positive control's checks, then P1–P4 — Δ with its 95 % t interval, Holm p, verdict."""
    lines = [
        gate_sentence(gate),
        "",
        "| | endpoint | Δ [95 % CI] | seeds | Holm p | verdict | bootstrap check |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for r in [*gate, *primary]:
        e = r.endpoint
        if r.result is None:
            lines.append(f"| {e.key} | {e.title} | – | 0 | – | not run | – |")
            continue
        unit = " pts" if _scale(e.metric) == 100 else ""
        p = f"{r.p_adjusted:.3f}" if math.isfinite(r.p_adjusted) else "–"
        verdict = r.verdict()
        verdict = f"**{verdict}**" if r.p_adjusted < ALPHA else verdict
        check = _cell(r.check, e.metric) if r.check is not None else "–"
        cells = f"{_cell(r.result, e.metric)}{unit} | {r.result.n_seeds} | {p} | {verdict} | {check}"
        lines.append(f"| {e.key} | {e.title} | {cells} |")
    return [*lines, ""]


def primary_figure(results: list[Result], path: Path) -> Path | None:
    """One forest plot: each declared endpoint's Δ with its 95 % t interval (every endpoint is a share: in
    percentage points), green/red where its Holm-adjusted p < α, grey otherwise. None when nothing has run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(r.result is not None and math.isfinite(r.result.low) for r in results):
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(results) + 1.6))
    for i, r in enumerate(results):
        c, k = r.result, _scale(r.endpoint.metric)
        if c is None or not math.isfinite(c.low):
            ax.annotate("not run", (0.5, i), xycoords=("axes fraction", "data"), ha="center", fontsize=8, color="grey")
            continue
        color = "grey" if not r.p_adjusted < ALPHA else ("C2" if c.diff > 0 else "C3")
        ax.errorbar(
            c.diff * k, i, xerr=[[(c.diff - c.low) * k], [(c.high - c.diff) * k]], fmt="o", color=color, capsize=3
        )
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_xlabel("Δ, percentage points (first arm − second)", fontsize=9)
    ax.set_yticks(range(len(results)), [f"{r.endpoint.key} {r.endpoint.title}" for r in results], fontsize=8)
    ax.set_ylim(len(results) - 0.5, -0.5)
    ax.set_title(
        "Positive control (C1–C3: oracle Q − λ = 0) and primary endpoints (P1–P4)\n"
        "95 % paired t intervals over seeds; green/red: Holm p < 0.05; grey: not detected",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def exploratory(by_arm: dict[tuple[str, str], dict[int, sm.Job]], declared: set[tuple], n_boot: int) -> list[Result]:
    """Every other arm × metric against λ = 0 of its data option (paired.compare), BH-adjusted as one family."""
    rows: list[Result] = []
    for (option, arm), jobs in sorted(by_arm.items()):
        base = by_arm.get((option, LAMBDA_0))
        if arm == LAMBDA_0 or base is None:
            continue
        for metric, _, c, check in paired.compare(list(jobs.values()), list(base.values()), n_boot):
            if (arm, LAMBDA_0, option, metric) not in declared and metric not in DUPLICATES:
                rows.append(Result(Endpoint("E", f"{arm} vs λ = 0", arm, LAMBDA_0, option, metric), c, check))
    adjust(rows, "bh")
    return rows


def exploratory_files(rows: list[Result], out: Path) -> dict[str, Path]:
    """exploratory.md (significant rows first) and exploratory.csv (every row)."""
    md, path_csv = out / "exploratory.md", out / "exploratory.csv"
    lines = [
        "# Exploratory comparisons (not the protocol's endpoints)",
        "",
        f"Every arm against joint λ = 0 of its data option on every metric: paired t over seeds, Benjamini–Hochberg "
        f"over these {len(rows)} rows (q = {ALPHA}). A BH-significant row is a lead for another study, not a finding.",
        "",
        "| data | arm | metric | Δ [95 % CI] | seeds | p | BH p |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    order = sorted(rows, key=lambda r: (not r.p_adjusted < ALPHA, r.endpoint.option, r.endpoint.a, r.endpoint.metric))
    for r in order:
        c = r.result
        if c is None:
            continue
        bold = "**" if r.p_adjusted < ALPHA else ""
        lines.append(
            f"| {r.endpoint.option} | {r.endpoint.a} | {r.endpoint.metric} | {bold}{_cell(c, r.endpoint.metric)}"
            f"{bold} | {c.n_seeds} | {c.p:.3g} | {r.p_adjusted:.3g} |"
        )
    md.write_text("\n".join(lines) + "\n")
    with open(path_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["option", "arm", "metric", *Comparison.CSV_HEADER, "p_bh", "boot_low", "boot_high"])
        for r in rows:
            if r.result is not None:
                e = r.endpoint
                cells = [e.option, e.a, e.metric, *r.result.csv_cells(), r.p_adjusted]
                w.writerow(cells + Comparison.check_cells(r.check))
    return {"exploratory": md, "exploratory_csv": path_csv}


def summarize(runs: Path, out: Path, n_boot: int = 2000, title: str = "Field-mark study") -> dict[str, Path]:
    """Every table and figure of the study from the archived (or live) runs under `runs`; returns the files."""
    jobs = sm.find_jobs([runs])
    if not jobs:
        raise SystemExit(f"no finished jobs (folders with results.json and .hydra/) under {runs}")
    out.mkdir(parents=True, exist_ok=True)
    by_arm = arms(jobs)
    gate = [compare_endpoint(e, by_arm, n_boot) for e in GATE]
    primary = [compare_endpoint(e, by_arm, n_boot) for e in PRIMARY]
    adjust(gate, "holm")
    adjust(primary, "holm")
    files: dict[str, Path] = {"verdicts": out / "verdicts.md"}
    table = verdict_table(gate, primary)
    seeds = {f"{arm} ({option})": len(js) for (option, arm), js in sorted(by_arm.items())}
    files["verdicts"].write_text(
        f"# {title}: the protocol's verdicts\n\n"
        + "\n".join(table)
        + "\nΔ = first arm − second (C: oracle Q − λ = 0; P1/P2: joint λ = 1 − the single-task model; P3/P4: λ = 1 − "
        "λ = 0); 95 % paired t intervals over seeds; Holm over C1–C3 and, separately, over P1–P4; bootstrap check: "
        "the hierarchical bootstrap's 95 % interval (seeds, then classes as clusters of test images).\n\n"
        + "Seeds per arm: "
        + ", ".join(f"{k} {v}" for k, v in seeds.items())
        + "\n"
        + _levels(out)
    )
    figure = primary_figure([*gate, *primary], out / "primary.png")
    if figure:
        files["primary"] = figure
    files["readme_block"] = out / "readme_block.md"
    files["readme_block"].write_text(
        f"![Positive control and primary endpoints](experiments/results/{out.name}/primary.png)\n\n" + "\n".join(table)
    )
    declared = {(e.a, e.b, e.option, e.metric) for e in (*GATE, *PRIMARY)}
    files.update(exploratory_files(exploratory(by_arm, declared, n_boot), out))
    try:
        files.update(paired.summarize_study([runs], out, title, n_boot))
    except (ValueError, SystemExit) as err:  # e.g. too few jobs for the full summary: the verdicts still stand
        print(f"full paired summary skipped: {err}")
    return files


LEVELS_FILE = "levels.md"  # the study folder's reference levels for P4 (experiments/localisation_levels.py)


def _levels(out: Path) -> str:
    """The pointing levels (chance, head-cell heuristic, ceiling) P4 is read beside, from `out/levels.md` if there."""
    path = out / LEVELS_FILE
    return f"\nP4 is read beside these levels ({LEVELS_FILE}):\n\n{path.read_text()}" if path.is_file() else ""


def main(argv: list[str] | None = None) -> None:
    """`python experiments/summarize_study.py DIR [--archive MULTIRUN]`: (archive then) rebuild DIR's tables."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir", type=Path, help="the study's results folder; its runs/ holds the archived jobs")
    p.add_argument("--archive", type=Path, default=None, help="first archive the finished jobs of this multirun folder")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--title", default="Field-mark study (issue 28)")
    args = p.parse_args(argv)
    if args.archive is not None:
        print(f"archived {archive(args.archive, args.dir / 'runs')} jobs from {args.archive} into {args.dir / 'runs'}")
    for name, path in summarize(args.dir / "runs", args.dir, args.n_boot, args.title).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
