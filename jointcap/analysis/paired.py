"""Study summary with paired comparisons against λ = 0: `python experiments/summarize_hard.py <study dir>… [--out DIR]`.

Reads every finished job under the folders (results.json, .hydra/, and the per-image
`test_predictions.csv` of `+budget=study_hard`), groups them into settings as
`jointcap.analysis.summarize` does, and splits the settings into *families* by their data
options (the shortcut split, the low-data per_class). In each family the baseline is the joint
model with λ = model.loss.cam_weight = 0; every other setting is compared with it on the seeds
both ran:
* per-image scores (test top-1 `correct`, and any numeric per-image column such as a caption
  score; `worst_group_acc` where images carry a shortcut group): each run's mean (or worst-group mean),
  then a paired t interval and p-value over the seeds (`jointcap.analysis.stats.seed_level`; issue 28:
  never a percentile bootstrap over few seeds), with a hierarchical bootstrap interval (seeds, then
  classes as clusters of test images: `stats.hierarchical_bootstrap`) beside it as a check;
* the run-level test metrics of results.json (CIDEr-D, localisation, …): one value per run, so a
  paired Student-t interval over the seeds (`stats.paired_t`); from MIN_SEEDS common seeds on.
Per-image rows on fewer seeds are written, but judge nothing (`Comparison.judged`): their interval holds
the images' spread and not the seeds'.
Writes `paired.md` (one table per family, significance stated), `paired.csv` and one forest plot
per family and metric kind (`paired_<family>.png`), next to the usual summary.md / jobs.csv / plots.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import importlib
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jointcap.analysis import curves
from jointcap.analysis import summarize as sm
from jointcap.analysis.stats import Comparison, hierarchical_bootstrap, paired_t, seed_level
from jointcap.metrics.correctness import FactReader
from jointcap.metrics.text import tokenize
from jointcap.runtime.callbacks.predictions import PREDICTIONS_FILE

FAMILY_KEYS = ("data.source.shortcut", "data.source.per_class")
# a training length set on a job's command line makes a data option of its own (`…, max_epochs=53`: 15 images
# per class trained as many steps as 50 per class are); unset, the budget's length goes unsaid
BUDGET_KEYS = ("trainer.max_epochs",)
NON_SCORES = {"index", "key", "label", "pred", "prob", "group", "caption"}
RUN_METRICS = (
    "test/acc1",
    "test/class_attr_f1",
    "test/attr_f1",
    "test/rep3",
    "test/rep_part",
    "test/cider_d",
    "test/bleu4",
    "test/disagreement_js",  # not test/disagreement: that one is in each run's own divergence
    "test/cam_pointing_class",
    "test/attn_pointing_class",
    "test/cam_iou_class",
    "test/word_grounding",
)


MIN_SEEDS = 3  # comparisons on fewer common seeds are not judged; run-level ones (one value per run) not made
BY_IMAGES = "t, seeds (per-image scores)"  # Row.level: how the interval was made
BY_SEEDS = "t, seeds"


@dataclass
class Row:
    """One comparison of a setting with its family's λ = 0 baseline on one metric."""

    family: str
    setting: str
    metric: str
    level: str  # BY_IMAGES or BY_SEEDS
    result: Comparison
    check: Comparison | None = None  # per-image scores: the hierarchical bootstrap (seeds, then classes)


def family_of(job: sm.Job) -> str:
    """`shortcut=True, per_class=15`-style name of the job's data options (with `max_epochs=53` where the job's
    command line set its training length: BUDGET_KEYS)."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in job.overrides}
    keys = [*FAMILY_KEYS, *(k for k in BUDGET_KEYS if k in given)]
    values = [(k.rsplit(".", 1)[-1], job.config.get(k)) for k in keys]
    return ", ".join(f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}" for n, v in values)


def family_slug(family: str) -> str:
    """A file-name form of a data option's name: `shortcut=False, per_class=15` → `shortcut-False_per_class-15`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", family.replace("=", "-").replace(", ", "_")).strip("_")


def is_baseline(job: sm.Job) -> bool:
    """The joint model without the CAM loss."""
    return job.config.get("model.task") == "joint" and float(job.config.get("model.loss.cam_weight", 1.0)) == 0.0


RE_DECODED_PREDICTIONS = Path("eval") / "predictions.csv"  # experiments/rescore_no_repeat.py's per-image captions


@functools.cache
def _reader_of(source_target: str, n_classes: int) -> FactReader | None:
    """The fact reader of a data source class whose module defines `dataset_info(n_classes)` (the synthetic
    generators); None for the others (CUB, Flowers: no part vocabulary)."""
    module = importlib.import_module(source_target.rsplit(".", 1)[0])
    info = getattr(module, "dataset_info", None)
    return FactReader.from_info(info(n_classes)) if info is not None else None


def fact_reader(job: sm.Job) -> FactReader | None:
    """The fact reader of the job's data, or None where its data has no part vocabulary."""
    target, n_classes = job.config.get("data.source._target_"), job.config.get("data.source.n_classes")
    if not isinstance(target, str) or not isinstance(n_classes, (int, float)):  # a float once assign_settings ran
        return None
    try:
        return _reader_of(target, int(n_classes))
    except (ImportError, AttributeError, TypeError):  # a source moved or renamed since the job ran
        return None


def prediction_rows(folder: Path) -> list[dict[str, str]] | None:
    """The rows of a run folder's test_predictions.csv, or of its .csv.gz as a study archives it
    (`jointcap.analysis.study.archive`); None when it has neither."""
    path, packed = folder / PREDICTIONS_FILE, folder / (PREDICTIONS_FILE + ".gz")
    if not (path.is_file() or packed.is_file()):
        return None
    with open(path, newline="") if path.is_file() else gzip.open(packed, "rt", newline="") as f:
        return list(csv.DictReader(f))


def read_predictions(job: sm.Job) -> dict[str, dict[str, str]] | None:
    """{key: row} of the job's test_predictions.csv (or .csv.gz), or of a re-decoded job's captions (key and
    caption only: its other columns are the original job's); None when it has neither. Tables written before
    `part_repeat` existed get it from their captions, by the same rule (`FactReader.repeats_part`)."""
    table = prediction_rows(job.folder)
    if table is not None:
        rows = {row["key"]: row for row in table}
    elif (job.folder / RE_DECODED_PREDICTIONS).is_file():
        with open(job.folder / RE_DECODED_PREDICTIONS, newline="") as f:
            rows = {row["key"]: {"key": row["key"], "caption": row["caption"]} for row in csv.DictReader(f)}
    else:
        return None
    reader = fact_reader(job)
    if reader is not None:
        for row in rows.values():
            if "caption" in row and "part_repeat" not in row:
                row["part_repeat"] = str(float(reader.repeats_part(tokenize(row["caption"]))))
    return rows


def per_image_scores(preds: dict[str, dict[str, str]]) -> list[str]:
    """The numeric per-image score columns of a predictions table (`correct` and e.g. caption scores): those
    with a finite value on some image (a score can be undefined on a few, e.g. recall with nothing to recall)."""
    first = next(iter(preds.values()), {})
    return [
        k for k in first if k not in NON_SCORES and any(math.isfinite(sm.csv_number(r.get(k))) for r in preds.values())
    ]


Compared = tuple[str, str, Comparison, Comparison | None]  # (metric, level, verdict's comparison, bootstrap check)


def compare(a_jobs: list[sm.Job], b_jobs: list[sm.Job], n_boot: int = 2000) -> list[Compared]:
    """(metric, level, comparison, bootstrap check) of setting a vs baseline b on their common seeds; `n_boot`
    replicates of the hierarchical bootstrap (0: none)."""
    a_by, b_by = {j.seed: j for j in a_jobs}, {j.seed: j for j in b_jobs}
    seeds = sorted(set(a_by) & set(b_by), key=repr)
    if not seeds:
        return []
    out: list[Compared] = []
    loaded_a = [read_predictions(a_by[s]) for s in seeds]
    loaded_b = [read_predictions(b_by[s]) for s in seeds]
    preds_a, preds_b = [p for p in loaded_a if p], [p for p in loaded_b if p]
    if len(preds_a) == len(loaded_a) and len(preds_b) == len(loaded_b):  # every job has its predictions
        keys = sorted(set.intersection(*(set(p) for p in preds_a + preds_b)))
        common = set.intersection(*(set(per_image_scores(p)) for p in preds_a + preds_b))  # in every job's table
        names = [n for n in per_image_scores(preds_a[0]) if n in common]
        labels = np.array([preds_a[0][k].get("label", "") for k in keys])  # the classes: clusters of test images
        for name in names:
            a = np.array([[sm.csv_number(p[k].get(name)) for k in keys] for p in preds_a])
            b = np.array([[sm.csv_number(p[k].get(name)) for k in keys] for p in preds_b])
            groups = [preds_a[0][k].get("group", "") for k in keys]
            by_group = [None] + ([np.array(groups)] if name == "correct" and all(g != "" for g in groups) else [])
            if not (np.isfinite(a).any() and np.isfinite(b).any()):
                continue
            for g in by_group:
                c = seed_level(a, b, groups=g, min_seeds=MIN_SEEDS)
                check = hierarchical_bootstrap(a, b, labels, n_boot, groups=g) if n_boot else None
                out.append((name if g is None else "worst_group_acc", BY_IMAGES, c, check))
    if len(seeds) < MIN_SEEDS:  # one value per run: 1–2 runs say nothing
        return out
    for name in RUN_METRICS:
        a = np.array([a_by[s].metrics.get(name, math.nan) for s in seeds])
        b = np.array([b_by[s].metrics.get(name, math.nan) for s in seeds])
        if np.isfinite(a).all() and np.isfinite(b).all():
            out.append((name, BY_SEEDS, paired_t(a, b), None))
    return out


def named_settings(jobs: list[sm.Job]) -> dict[str, dict[str, list[sm.Job]]]:
    """{family: {setting name: its jobs}}, settings in `setting_order` (the λ = 0 baseline among them)."""
    sm.assign_settings(jobs)
    families: dict[str, list[sm.Job]] = {}
    for job in jobs:
        families.setdefault(family_of(job), []).append(job)
    out: dict[str, dict[str, list[sm.Job]]] = {}
    drop = (*FAMILY_KEYS, *BUDGET_KEYS)  # said by the family
    for family, members in sorted(families.items()):
        groups = sm.group_jobs(members)
        named = {sm.setting_name(tuple((k, v) for k, v in s if k not in drop)): js for s, js in groups.items()}
        if len(named) < len(groups):
            raise ValueError(f"{family}: two settings share a name among {sorted(named)}; see summarize.setting_name")
        out[family] = {name: named[name] for name in sorted(named, key=setting_order)}
    return out


def baseline_name(settings: dict[str, list[sm.Job]]) -> str | None:
    """The name of a family's λ = 0 baseline, None when it has none."""
    return next((name for name, js in settings.items() if is_baseline(js[0])), None)


def paired_rows(jobs: list[sm.Job], n_boot: int = 2000) -> list[Row]:
    """Every setting against its family's λ = 0 baseline (families without one are skipped)."""
    return rows_of(named_settings(jobs), n_boot)


def rows_of(named: dict[str, dict[str, list[sm.Job]]], n_boot: int = 2000) -> list[Row]:
    """`paired_rows` of settings `named_settings` already grouped."""
    rows: list[Row] = []
    for family, settings in named.items():
        base = baseline_name(settings)
        if base is None:
            continue
        for name, js in settings.items():
            if name != base:
                rows += [Row(family, name, *row) for row in compare(js, settings[base], n_boot)]
    return rows


PLAIN_LAMBDA = re.compile(r"^joint, λ = ([0-9.e+-]+)$")  # the plain loss (JS, both sides) at one weight
LAMBDA_IN_NAME = re.compile(r"λ = ([0-9.e+-]+)")


VARIANT_ORDER = ("CAM loss trains", *(f"{w} divergence" for w in sm.DIVERGENCE_WORDS.values()))


def setting_order(name: str) -> tuple[int, int, str, float]:
    """Where a setting's rows go: the single-task models, then the plain loss by λ, then the variants of the loss
    (grad_to, the divergences in DIVERGENCE_WORDS order, then any other) by λ; tables and figures follow it."""
    lam = LAMBDA_IN_NAME.search(name)
    weight = float(lam.group(1)) if lam else 0.0
    if "alone" in name:
        return 0, 0, name, weight
    if PLAIN_LAMBDA.match(name):
        return 1, 0, "", weight
    kind = next((i for i, words in enumerate(VARIANT_ORDER) if words in name), len(VARIANT_ORDER))
    return 2, kind, LAMBDA_IN_NAME.sub("", name), weight


SHARES = {"correct", "worst_group_acc", "class_recall", "part_repeat"}  # per-image 0/1 or fractions: in points
# The study's questions, one panel each: (title, family, metric). Families as `family_of` names them.
QUESTIONS = (
    ("Test accuracy", "shortcut=False, per_class=50", "correct"),
    ("Class-defining facts the caption names", "shortcut=False, per_class=50", "class_recall"),
    ("False facts per caption", "shortcut=False, per_class=50", "facts_wrong"),
    ("CIDEr-D of the captions", "shortcut=False, per_class=50", "test/cider_d"),
    ("CAM peak on a class-defining part", "shortcut=False, per_class=50", "test/cam_pointing_class"),
    ("Caption attention peak on a class-defining part", "shortcut=False, per_class=50", "test/attn_pointing_class"),
    ("Worst-group accuracy, shortcut split", "shortcut=True, per_class=50", "worst_group_acc"),
    ("Test accuracy, 15 training images per class", "shortcut=False, per_class=15", "correct"),
    ("Test accuracy, 15 images per class, as many steps", "shortcut=False, per_class=15, max_epochs=53", "correct"),
)


# false facts per caption, repeated trigrams, a part named twice
LOWER_IS_BETTER = {"facts_wrong", "test/rep3", "test/rep_part", "part_repeat"}
NO_DIRECTION = {"test/disagreement_js"}  # what the loss lowers: a mechanism, neither better nor worse


def effect_color(metric: str, c: Comparison) -> str:
    """A Δ's colour in the figures: C2 (green) better, C3 (red) worse, C1 (orange) a significant change with no
    better side, C0 (blue) an interval that includes 0. Better is higher except for `LOWER_IS_BETTER`."""
    if not c.significant:
        return "C0"
    if metric in NO_DIRECTION:
        return "C1"
    return "C2" if (c.diff > 0) != (metric in LOWER_IS_BETTER) else "C3"


EFFECT_LEGEND = "green/red: better/worse, the interval excluding 0 (false facts, part repeats: lower is better)"


def _in_points(metric: str) -> bool:
    """Whether a metric is a share (accuracy, recall, pointing rate …) drawn in percentage points."""
    return (
        metric in SHARES
        or metric in ("test/acc1", "test/class_attr_f1", "test/attr_f1", "test/rep3", "test/rep_part")
        or ("pointing" in metric)
    )


def _scale_unit(metric: str) -> tuple[float, str]:
    """How a Δ of the metric is drawn: (factor, unit) — shares ×100 in percentage points, facts per caption,
    other scores as they are."""
    if _in_points(metric):
        return 100.0, "percentage points"
    return 1.0, "facts per caption" if metric.startswith("facts_") else "score units"


HEADLINE_SETTING = "joint, λ = 1"
TITLE_WIDTH = 70  # characters per line of a forest plot's title: what fits above its axes at 7 in wide, 8 pt


def headline(rows: list[Row], setting: str = HEADLINE_SETTING, questions: tuple = QUESTIONS) -> list[str]:
    """The study's answers as one markdown table: per question, λ = 0, the CAM loss (`setting`), Δ with its 95 %
    interval and the verdict; shares in percentage points. Empty when no question has data."""
    lines = []
    for title, family, metric in questions:
        r = next((r for r in rows if r.family == family and r.metric == metric and r.setting == setting), None)
        if r is None:
            continue
        c, points = r.result, _in_points(metric)
        values = (c.stat_b, c.stat_a, c.diff, c.low, c.high)
        b, a, d, lo, hi = (f"{v * 100:.1f}" if points else f"{v:.3f}" for v in values)
        verdict = f"**{c.verdict()}**" if c.significant else c.verdict()
        sign = "+" if c.diff >= 0 else ""
        kind = "per image" if r.level == BY_IMAGES else "per run"
        lines.append(f"| {title} | {b} | {a} | {sign}{d} [{lo}, {hi}] | {verdict} | {kind}, {c.n_seeds} seeds |")
    if not lines:
        return []
    unit = "shares in %, Δ in percentage points; false facts: per caption"
    return [
        f"## Does the CAM loss help? {setting} vs λ = 0 ({unit})",
        "",
        "| question | joint, λ = 0 | " + setting + " | Δ [95 % CI] | verdict | scores |",
        "|---|---:|---:|---|---|---|",
        *lines,
        "",
    ]


def settings_table(rows: list[Row], family: str = QUESTIONS[0][1], questions: tuple = QUESTIONS) -> list[str]:
    """Every setting of one family against λ = 0 on each of that family's questions, a row per setting: which
    variant of the loss (λ, grad_to, divergence) helps where. Cells: Δ [95 % CI] (shares in percentage points),
    **bold** when the interval excludes 0; the seeds column is the fewest common seeds in the row."""
    mine = [(t, m) for t, f, m in questions if f == family and any(r.family == f and r.metric == m for r in rows)]
    if not mine:
        return []
    settings = list(dict.fromkeys(r.setting for r in rows if r.family == family))
    lines = [
        f"## Every setting against λ = 0 ({family}; Δ [95 % CI], shares in percentage points, **bold**: excludes 0)",
        "",
        "| setting | " + " | ".join(t for t, _ in mine) + " | seeds |",
        "|---|" + "---|" * len(mine) + "---:|",
    ]
    for setting in settings:
        by = {r.metric: r.result for r in rows if r.family == family and r.setting == setting}
        cells, seeds = [], []
        for _, metric in mine:
            c = by.get(metric)
            if c is None:
                cells.append("–")
                continue
            k = _scale_unit(metric)[0]
            cells.append(c.cell(k, 1 if k == 100 else 3))
            seeds.append(c.n_seeds)
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {min(seeds) if seeds else '–'} |")
    return [*lines, ""]


def option_tables(rows: list[Row], questions: tuple = QUESTIONS) -> list[str]:
    """`settings_table` of each other data option that compares more than one setting with its λ = 0 (the
    shortcut split with its worst-group accuracy, low data …), asked `family_questions`: the protocol's arms
    read like the default's table."""
    default, lines = questions[0][1], []
    for family in dict.fromkeys(r.family for r in rows):
        if family != default and len({r.setting for r in rows if r.family == family}) > 1:
            asked = tuple((title, family, metric) for title, metric in family_questions(family, questions))
            lines += settings_table(rows, family, asked)
    return lines


def markdown(rows: list[Row], title: str) -> str:
    """One table per family: metric, both means, Δ, 95 % CI, n, and the verdict."""
    lines = [
        f"# {title}",
        "",
        "Each setting against the joint model with λ = 0 of the same data option, on the seeds both ran. "
        "Δ = setting − baseline; 95 % intervals: a paired Student-t interval over the seeds, of each run's mean "
        f"per-image score (`{BY_IMAGES}`) or of its run-level metric (`{BY_SEEDS}`: CIDEr-D, pointing, …); wide "
        "with 3–5 runs, as it should be. Per-image rows also give a hierarchical bootstrap interval (seeds, then "
        "classes as clusters of test images) in paired.csv, as a check. "
        f"**bold** = the interval excludes 0. Rows on fewer than {MIN_SEEDS} seeds judge nothing (`too few seeds`). "
        "`correct` is top-1 accuracy; `worst_group_acc` the lower of the "
        "shortcut split's aligned/conflicting group accuracies. The intervals are not corrected for multiple "
        f"comparisons: of these {len(rows)} rows, about {len(rows) // 20} would exclude 0 by chance alone "
        "were nothing real, so a lone bold cell is a lead to rerun with more seeds, not a finding.",
        "",
        *headline(rows),
        *settings_table(rows),
        *option_tables(rows),
    ]
    for family in dict.fromkeys(r.family for r in rows):
        lines += [
            f"## {family}",
            "",
            "| setting | metric | interval | setting | λ = 0 | Δ | 95 % CI | seeds | images | verdict |",
            "|---|---|---|---:|---:|---:|---|---:|---:|---|",
        ]
        for r in (r for r in rows if r.family == family):
            c = r.result
            delta = f"{c.diff:+.4f}"
            verdict = f"**{c.verdict()}**" if c.significant else c.verdict()
            images = c.n_images if r.level == BY_IMAGES else "–"
            lines.append(
                f"| {r.setting} | {r.metric} | {r.level} | {c.stat_a:.4f} | {c.stat_b:.4f} | {delta} | "
                f"[{c.low:+.4f}, {c.high:+.4f}] | {c.n_seeds} | {images} | {verdict} |"
            )
        lines.append("")
    return "\n".join(lines)


def forest_plot(rows: list[Row], family: str, metric: str, path: Path) -> Path | None:
    """Δ vs λ = 0 with its 95 % interval, one line per setting; None if there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r.family == family and r.metric == metric]
    if not mine:
        return None
    scale, unit = _scale_unit(metric)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(mine) + 1.6))
    for i, r in enumerate(mine):
        c = r.result
        color = effect_color(metric, c)
        ax.errorbar(
            c.diff * scale,
            i,
            xerr=[[(c.diff - c.low) * scale], [(c.high - c.diff) * scale]],
            fmt="o",
            color=color,
            capsize=3,
        )
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(mine)), [r.setting for r in mine], fontsize=8)
    ax.invert_yaxis()
    name = {"correct": "test top-1 accuracy", "worst_group_acc": "worst-group test accuracy"}.get(metric, metric)
    ax.set_xlabel(f"Δ {name} vs joint λ = 0 ({unit})", fontsize=9)
    title = f"Change in {name} against λ = 0 ({family}). Error bars: 95 % interval ({mine[0].level}); {EFFECT_LEGEND}"
    ax.set_title(textwrap.fill(title, TITLE_WIDTH), fontsize=8)  # wrapped: one line ran off the figure's edge
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _baseline_text(mine: list[Row], scale: float) -> str:
    """`λ = 0: 67.2 (5 seeds); rows 3–5 seeds`: the baseline on the most seeds any row pairs it with."""
    most = max(mine, key=lambda r: r.result.n_seeds).result
    base = f"{most.stat_b * scale:.1f}" if scale == 100 else f"{most.stat_b:.2f}"
    n = sorted({r.result.n_seeds for r in mine})
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}–{n[-1]}"
    return f"λ = 0: {base} ({most.n_seeds} seeds); rows {seeds} seeds"


def questions_figure(rows: list[Row], path: Path, questions: tuple = QUESTIONS) -> Path | None:
    """One panel per study question: every setting's Δ against λ = 0 with its 95 % interval (settings as rows,
    the same order in every panel); panels without data are left out. None if no panel has data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, f, m, [r for r in rows if r.family == f and r.metric == m]) for t, f, m in questions]
    panels = [p for p in panels if p[3]]
    if not panels:
        return None

    def family_settings(family: str) -> list[str]:  # a panel's rows: its data option's settings, in one order
        return sorted({r.setting for r in rows if r.family == family}, key=setting_order)

    cols = 2 if len(panels) > 1 else 1
    n_rows = math.ceil(len(panels) / cols)
    heights = [max(len(family_settings(p[1])) for p in panels[i * cols : (i + 1) * cols]) for i in range(n_rows)]
    fig, axes = plt.subplots(
        n_rows,
        cols,
        figsize=(7.4 * cols, 0.38 * sum(heights) + 1.4 * n_rows + 0.8),
        gridspec_kw={"height_ratios": [h + 3.7 for h in heights]},  # 3.7 rows' worth: title and axis labels
        squeeze=False,
    )
    flat = axes.ravel()
    for ax, (title, family, metric, mine) in zip(flat, panels, strict=False):
        settings = family_settings(family)
        scale, unit = _scale_unit(metric)
        by = {r.setting: r.result for r in mine}
        for i, name in enumerate(settings):
            c = by.get(name)
            if c is None:  # e.g. the classifier alone has no caption to score
                ax.annotate(
                    "not measured",
                    (0.5, i),
                    xycoords=("axes fraction", "data"),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="grey",
                )
                continue
            color = effect_color(metric, c)
            err = [[(c.diff - c.low) * scale], [(c.high - c.diff) * scale]]
            ax.errorbar(c.diff * scale, i, xerr=err, fmt="o", color=color, capsize=3)
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(range(len(settings)), settings, fontsize=8)
        ax.set_ylim(len(settings) - 0.5, -0.5)
        ax.set_title(f"{title}\n({_baseline_text(mine, scale)}; {mine[0].level})", fontsize=9)
        ax.set_xlabel(f"Δ vs joint λ = 0 ({unit})", fontsize=8)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"Each setting minus the joint model without the CAM loss (λ = 0); bars: 95 % intervals; {EFFECT_LEGEND}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # half an inch for the suptitle
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def family_questions(family: str, questions: tuple = QUESTIONS) -> list[tuple[str, str]]:
    """(title, metric) of the questions a data option is asked: the default option's questions (its first's
    family), then the option's own ones on other metrics (worst-group accuracy on the shortcut split)."""
    default = questions[0][1]
    asked = [(t, m) for t, f, m in questions if f == default]
    seen = {m for _, m in asked}
    return asked + [(t, m) for t, f, m in questions if f == family != default and m not in seen]


def lambda_figure(rows: list[Row], path: Path, questions: tuple = QUESTIONS, family: str | None = None) -> Path | None:
    """The dose response: Δ against λ = 0 (with its 95 % interval) as a function of λ for the plain loss, one
    panel per question (`family_questions`) of one data option (default: the default one); None when fewer
    than two λ > 0 were run there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family = family or questions[0][1]
    weights = {
        r.setting: float(m.group(1)) for r in rows if r.family == family and (m := PLAIN_LAMBDA.match(r.setting))
    }
    panels = []
    for title, metric in family_questions(family, questions):
        mine = [r for r in rows if r.family == family and r.metric == metric and r.setting in weights]
        if mine:
            panels.append((title, metric, mine))
    if len(set(weights.values())) < 2 or not panels:
        return None
    cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(5.6 * cols, 3.4 * n_rows), squeeze=False)
    for ax, (title, metric, mine) in zip(axes.flat, panels, strict=False):
        scale, unit = _scale_unit(metric)
        mine = sorted(mine, key=lambda r: weights[r.setting])
        xs = [0.0] + [weights[r.setting] for r in mine]
        ds = [0.0] + [r.result.diff * scale for r in mine]
        lo = [0.0] + [(r.result.diff - r.result.low) * scale for r in mine]
        hi = [0.0] + [(r.result.high - r.result.diff) * scale for r in mine]
        ax.errorbar(xs, ds, yerr=[lo, hi], fmt="o-", capsize=3, color="C0")
        for r in mine:
            if r.result.significant:
                ax.plot(
                    weights[r.setting],
                    r.result.diff * scale,
                    "o",
                    ms=7,
                    zorder=3,
                    color=effect_color(metric, r.result),
                )
        ax.axhline(0, color="grey", lw=1, ls="--")
        ax.set_title(f"{title}\n({_baseline_text(mine, scale)}; {mine[0].level})", fontsize=9)
        ax.set_xlabel("λ (weight of the CAM disagreement loss)", fontsize=8)
        ax.set_ylabel(f"Δ vs λ = 0 ({unit})", fontsize=8)
        ax.set_xticks(sorted(set(xs)))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"The plain CAM loss at each weight, minus the joint model without it ({family}); bars: 95 % intervals; "
        + EFFECT_LEGEND,
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_files(settings: dict[str, list[sm.Job]], out: Path, title: str, family: str) -> dict[str, Path]:
    """curves.md (per-epoch tables, and each setting against λ = 0 at the last cross-entropy epoch and the last
    epoch: where a caption-score difference arises, before SCST or in it) and curves.png, for one data option's
    `named_settings`."""
    base = baseline_name(settings)
    body = [line for m in curves.CURVE_METRICS for line in curves.table(settings, m)]
    if base is None or not body:
        return {}
    first = curves.scst_first_epoch([j for js in settings.values() for j in js])
    if first is not None:
        curve = curves.setting_curve(settings[base], "val/cider_d")
        epochs = sorted({first - 1, curve[0][-1]}) if curve else [first - 1]  # the last cross-entropy epoch
        for metric in ("val/cider_d", "val/acc1"):
            body += curves.paired_table(settings, base, metric, epochs)
    files = {"curves": out / "curves.md"}
    files["curves"].write_text(f"# {title}: learning curves ({family})\n\n" + "\n".join(body))
    drawn = curves.figure(settings, out / "curves.png", base)
    if drawn:
        files["curves_png"] = drawn
    return files


def summarize_study(
    roots: list[Path], out: Path, title: str = "Hard-benchmark study", n_boot: int = 2000
) -> dict[str, Path]:
    """The usual summary (summary.md, jobs.csv, λ plots), paired.md, paired.csv and forest plots; returns the files."""
    files = sm.summarize(roots, out, title)
    named = named_settings(sm.find_jobs(roots))
    rows = rows_of(named, n_boot)
    files["paired"] = out / "paired.md"
    files["paired"].write_text(markdown(rows, f"{title}: paired comparisons against λ = 0"))
    files["paired_csv"] = out / "paired.csv"
    with open(files["paired_csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["family", "setting", "metric", "interval", "setting_value", "baseline_value", *Comparison.CSV_HEADER]
            + ["significant", "boot_low", "boot_high"]
        )
        for r in rows:
            c = r.result
            cells = [r.family, r.setting, r.metric, r.level, c.stat_a, c.stat_b, *c.csv_cells(), c.significant]
            w.writerow(cells + Comparison.check_cells(r.check))
    figure = questions_figure(rows, out / "questions.png")
    if figure:
        files["questions"] = figure
    default = QUESTIONS[0][1]
    files.update(curves_files(named.get(default, {}), out, title, default))
    # per data option; an earlier summary's options may differ (numbers shift, options go): clear its plots first
    for stale in [*out.glob("lambda_*.png"), *out.glob("paired_*_*.png")]:
        stale.unlink()
    for i, family in enumerate(dict.fromkeys(r.family for r in rows)):
        name = "lambda" if family == default else f"lambda_{family_slug(family)}"
        dose = lambda_figure(rows, out / f"{name}.png", family=family)
        if dose:
            files[name] = dose
        for metric in ("correct", "worst_group_acc"):
            path = forest_plot(rows, family, metric, out / f"paired_{i}_{metric}.png")
            if path:
                files[path.name] = path
    return files


def main(argv: list[str] | None = None) -> None:
    """Command line: study folders in, summary files out."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="study folders (multirun folders or job folders) to read")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the first folder)")
    p.add_argument("--title", default="Hard-benchmark study")
    p.add_argument("--n-boot", type=int, default=2000)
    args = p.parse_args(argv)
    for name, path in summarize_study(args.roots, args.out or args.roots[0], args.title, args.n_boot).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
