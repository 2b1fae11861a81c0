"""Learning curves of a study's settings: each job's metrics.csv (Lightning's CSVLogger) averaged per epoch, then
mean ± sample std over the seeds of a setting. The paired tables compare where the runs end; these show how a
variant of the loss gets there (e.g. a classifier that learns slower, not worse, at a step-limited budget)."""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from jointcap.analysis import summarize as sm
from jointcap.analysis.stats import paired_t

CURVE_METRICS = ("val/acc1", "train/cls", "val/disagreement_js", "val/cider_d")
METRICS_FILE = "metrics.csv"


def epoch_means(path: Path, metrics: tuple[str, ...] = CURVE_METRICS) -> dict[str, dict[int, float]]:
    """{metric: {epoch: mean of the values logged in that epoch}} of one metrics.csv (0-based epochs)."""
    stat = path.stat()
    every = _all_epoch_means(str(path), stat.st_mtime_ns, stat.st_size)
    return {m: dict(every.get(m, {})) for m in metrics}


@functools.lru_cache(maxsize=512)
def _all_epoch_means(path: str, mtime_ns: int, size: int) -> dict[str, dict[int, float]]:
    """Every column's per-epoch means, read once per version of the file (a summary asks each file for several
    metrics, settings and epochs)."""
    sums: dict[str, dict[int, list[float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                e = sm.csv_number(row.get("epoch"))
                if not math.isfinite(e):  # no epoch, or nan/garbage in a damaged file: the row says nothing
                    continue
                for m, v in row.items():
                    x = sm.csv_number(v) if m not in ("epoch", None) and isinstance(v, str) else math.nan
                    if math.isfinite(x):
                        sums.setdefault(m, {}).setdefault(int(e), []).append(x)
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        sm.skip_job(Path(path), err)
        return {}
    return {m: {e: sum(vs) / len(vs) for e, vs in sorted(by.items())} for m, by in sums.items()}


Curve = tuple[list[int], list[float], list[float], int]  # epochs, mean, sample std (nan for one run), runs


def setting_curve(jobs: list[sm.Job], metric: str) -> Curve | None:
    """Mean ± std over the jobs (seeds) of a metric per epoch, on the epochs every job logged; None if none did."""
    per_job = []
    for job in jobs:
        path = job.folder / METRICS_FILE
        if path.is_file():
            per_job.append(epoch_means(path, (metric,))[metric])
    per_job = [c for c in per_job if c]
    if not per_job:
        return None
    epochs = sorted(set.intersection(*(set(c) for c in per_job)))
    stats = [sm.mean_std([c[e] for c in per_job]) for e in epochs]
    return epochs, [m for m, _, _ in stats], [s for _, s, _ in stats], len(per_job)


def table(groups: dict[str, list[sm.Job]], metric: str, every: int = 4) -> list[str]:
    """Markdown: a row per setting, a column per `every`-th epoch and the last (1-based), `mean ± std` cells."""
    curves = {name: c for name, jobs in groups.items() if (c := setting_curve(jobs, metric))}
    if not curves:
        return []
    last = max(e for c in curves.values() for e in c[0])
    shown = sorted({e for e in range(every - 1, last + 1, every)} | {last})
    lines = [
        f"### {sm.metric_title(metric)}: mean ± std over seeds, by epoch (`{metric}`)",
        "",
        "| setting | runs | " + " | ".join(f"epoch {e + 1}" for e in shown) + " |",
        "|---|---:|" + "---:|" * len(shown),
    ]
    for name, (epochs, mean, std, n) in curves.items():
        by = {e: (m, s) for e, m, s in zip(epochs, mean, std, strict=True)}
        cells = [_cell(*by[e]) if e in by else "–" for e in shown]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _cell(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def values_at(jobs: list[sm.Job], metric: str, epoch: int) -> dict[object, float]:
    """{seed: the metric's mean in that epoch (0-based)} over the jobs that logged it."""
    out: dict[object, float] = {}
    for job in jobs:
        path = job.folder / METRICS_FILE
        value = epoch_means(path, (metric,))[metric].get(epoch) if path.is_file() else None
        if value is not None:
            out[job.seed] = value
    return out


def paired_table(
    groups: dict[str, list[sm.Job]], baseline: str, metric: str, epochs: list[int], min_seeds: int = 3
) -> list[str]:
    """Markdown: each setting minus the baseline at the given epochs (0-based), paired over common seeds, with a
    Student-t 95 % interval (**bold**: excludes 0); `–` with fewer than `min_seeds` common seeds."""
    base = {e: values_at(groups[baseline], metric, e) for e in epochs}
    lines = [
        f"### {sm.metric_title(metric)}: Δ against {baseline} by epoch (t interval over seeds, 95 %; `{metric}`)",
        "",
        "| setting | " + " | ".join(f"epoch {e + 1}" for e in epochs) + " | seeds |",
        "|---|" + "---|" * len(epochs) + "---:|",
    ]
    body = []
    for name, jobs in groups.items():
        if name == baseline:
            continue
        cells, seeds = [], []
        for e in epochs:
            mine = values_at(jobs, metric, e)
            common = sorted(set(mine) & set(base[e]), key=repr)
            if len(common) < min_seeds:
                cells.append("–")
                continue
            c = paired_t(np.array([mine[s] for s in common]), np.array([base[e][s] for s in common]))
            cells.append(c.cell())
            seeds.append(len(common))
        if seeds:
            body.append(f"| {name} | " + " | ".join(cells) + f" | {min(seeds)} |")
    return [*lines, *body, ""] if body else []


def scst_first_epoch(jobs: list[sm.Job]) -> int | None:
    """The first self-critical epoch (0-based: `trainer.max_epochs` − `model.loss.scst_epochs`) when every caption
    job starts it at the same epoch; None otherwise."""
    starts = set()
    for job in jobs:
        epochs, scst = job.config.get("trainer.max_epochs"), job.config.get("model.loss.scst_epochs")
        if job.config.get("model.task") == "classifier" or not isinstance(epochs, (int, float)):
            continue
        if isinstance(scst, (int, float)) and scst > 0:
            starts.add(int(epochs - scst))
    return starts.pop() if len(starts) == 1 else None


def figure(
    groups: dict[str, list[sm.Job]], path: Path, baseline: str, metrics: tuple[str, ...] = CURVE_METRICS
) -> Path | None:
    """One panel per metric, a line per setting (mean over seeds, shaded ± 1 std), the baseline black and thick;
    panels no job logged are left out. None if there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(m, {n: c for n, jobs in groups.items() if (c := setting_curve(jobs, m))}) for m in metrics]
    panels = [(m, curves) for m, curves in panels if curves]
    if not panels:
        return None
    cmap = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    colors = {n: cmap(i % cmap.N) for i, n in enumerate(n for n in groups if n != baseline)}
    first = scst_first_epoch([j for jobs in groups.values() for j in jobs])
    scst = None if first is None else first + 0.5  # on the 1-based epoch axis: between the last CE and first SCST
    cols = 2 if len(panels) > 2 else len(panels)
    n_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols + 3.4, 3.1 * n_rows + 0.5), squeeze=False)
    flat = list(axes.ravel())
    legend: dict[str, Any] = {}  # name → its line (a matplotlib Line2D)
    for ax, (metric, curves) in zip(flat, panels, strict=False):
        for name, (epochs, mean, std, _) in curves.items():
            x = [e + 1 for e in epochs]
            color, width = ("black", 2.2) if name == baseline else (colors[name], 1.1)
            (line,) = ax.plot(x, mean, color=color, lw=width, label=name)
            legend.setdefault(name, line)
            if all(math.isfinite(v) for v in std):
                lo = [m - v for m, v in zip(mean, std, strict=True)]
                hi = [m + v for m, v in zip(mean, std, strict=True)]
                ax.fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)
        if scst is not None:
            ax.axvline(scst, color="grey", lw=0.8, ls=":")
            ax.annotate(
                "SCST →",
                (scst, 1),
                xycoords=("data", "axes fraction"),
                xytext=(2, -3),
                textcoords="offset points",
                va="top",
                fontsize=7,
                color="grey",
            )
        ax.set_title(sm.metric_title(metric), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    order = [n for n in groups if n in legend]  # the settings' order, not the order panels first drew them
    right = 1 - 3.3 / fig.get_figwidth()  # the legend's strip
    fig.legend(
        [legend[n] for n in order], order, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=7, frameon=False
    )
    fig.suptitle("Learning curves: mean over seeds, shaded ± 1 std (black: the baseline)", fontsize=9)
    fig.tight_layout(rect=(0, 0, right, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
