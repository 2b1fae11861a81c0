"""Summarise sweeps: `python -m jointcap.analysis.summarize <multirun dir>… [--out DIR]`.

Reads every job folder under the given folders (each has `.hydra/config.yaml`,
`.hydra/overrides.yaml` and the `results.json` that `jointcap.run` writes), groups the jobs by
*setting* — the config values that differ between jobs, seeds left out, so e.g. `synthetic_nocam`
and `synthetic_cam model.loss.cam_weight=0` are one setting — and writes into `--out`:
* `summary.md`: one table per metric family, mean ± std over seeds (n) per setting, every metric;
* `jobs.csv`: one row per job (setting, seed, folder, overrides, every metric);
* `<x>.png` (default x: λ = model.loss.cam_weight) when x varies: every test metric against x,
  mean ± std over seeds, one line per other setting; single-x settings (e.g. the classifier
  alone) are drawn as dashed reference lines. Panels are titled in words, the figure says what
  the error bars are, scores in [0, 1] get a y-range of at least 0.1 (a 0.992–1.000 axis would
  make noise look like an effect), and `cider` is left out where `cider_d` is drawn.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jointcap.config import LossConfig
from jointcap.runtime.tracking import RESULTS_FILE

LAMBDA = "model.loss.cam_weight"
# config keys that follow from others (or are bookkeeping) and never define a setting
IGNORED_KEYS = ("seed", "objective", "objective_mode", "ckpt_path", "model.monitor", "skip_if_done")
# panel titles in words (metric names without the stage prefix)
METRIC_TITLES = {
    "acc1": "top-1 accuracy",
    "acc5": "top-5 accuracy",
    "acc_per_class": "mean per-class accuracy",
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    "cider_d": "CIDEr-D",
    "meteor": "METEOR",
    "loss": "loss",
    "cls": "classification loss",
    "disagreement": "CAM–attention disagreement (the loss's own divergence)",
    "disagreement_js": "CAM–attention JS divergence",
    "peak_agreement": "CAM and attention peak in the same cell",
    "cam_pointing_class": "pointing game, CAM (class parts)",
    "attn_pointing_class": "pointing game, attention (class parts)",
    "cam_pointing_object": "pointing game, CAM (whole bird)",
    "attn_pointing_object": "pointing game, attention (whole bird)",
    "cam_iou_class": "mask IoU, CAM (class parts)",
    "attn_iou_class": "mask IoU, attention (class parts)",
    "cam_iou_object": "mask IoU, CAM (whole bird)",
    "attn_iou_object": "mask IoU, attention (whole bird)",
    "word_grounding": "word grounding (attention on the named part)",
    "attr_f1": "attribute F1 of captions",
    "class_attr_f1": "class-attribute F1 of captions",
    "distinct_captions": "distinct captions",
    "rep3": "repeated 3-grams",
    "rep_part": "captions naming a part twice",
}
UNBOUNDED = ("loss", "cider", "cider_d", "len", "vocab")  # scores not confined to [0, 1]
MIN_SPAN = 0.1  # the least y-range of a [0, 1] score's panel
# a metric left out of the panels where the one it maps to is there (same stage): CIDEr-D is the study's
# CIDEr; the JS disagreement compares runs whatever divergence each trained with (`disagreement` is measured
# in the run's own divergence: KL and L1 numbers do not compare)
SUPERSEDED_BY = {"cider": "cider_d", "disagreement": "disagreement_js"}
MAIN_METRICS = (
    "acc1",
    "acc_per_class",
    "cider_d",
    "bleu4",
    "rouge_l",
    "disagreement",
    "disagreement_js",
    "cam_pointing_class",
    "attn_pointing_class",
    "cam_iou_class",
    "attn_iou_class",
    "peak_agreement",
    "word_grounding",
)


@dataclass
class Job:
    """One finished sweep job: where it ran, its flattened config, overrides and final metrics."""

    folder: Path
    config: dict[str, Any]
    overrides: list[str]
    metrics: dict[str, float]
    setting: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': leaf} of a nested dict/list config (unresolved interpolations kept as strings)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(node, list):
        return {prefix[:-1]: json.dumps(node)}
    return {prefix[:-1]: node}


def load_job(folder: Path) -> Job | None:
    """The job in `folder`, or None when it has no results (unfinished or failed) or a file of it is unreadable
    (a truncated results.json, a broken config): that job is named on stderr and skipped, the others summarised."""
    results = folder / RESULTS_FILE
    if not results.is_file() or not (folder / ".hydra" / "config.yaml").is_file():
        return None
    reading = results
    try:
        metrics = json.loads(results.read_text(encoding="utf-8"))["metrics"]
        values = {str(k): float(v) for k, v in metrics.items()}
        reading = folder / ".hydra" / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(reading), resolve=False)
        reading = folder / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(reading)) if reading.is_file() else []
    except (OSError, ValueError, TypeError, KeyError, AttributeError, OmegaConfBaseException, yaml.YAMLError) as e:
        skip_job(reading, e)
        return None
    if not isinstance(config, dict):
        skip_job(folder / ".hydra" / "config.yaml", ValueError("not a mapping"))
        return None
    return Job(folder, flatten(config), [str(o) for o in overrides], values)


def skip_job(path: Path, error: BaseException) -> None:
    """Name a job file that cannot be read, and why, on stderr (the summary goes on without that job)."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"warning: skipping the job of {path}: unreadable ({type(error).__name__}: {reason})", file=sys.stderr)


def find_jobs(roots: list[Path]) -> list[Job]:
    """Every finished job under the given folders (a job folder itself counts too)."""
    folders = sorted({p.parent for root in roots for p in Path(root).rglob(RESULTS_FILE)})
    return [job for job in map(load_job, folders) if job is not None]


def setting_keys(jobs: list[Job]) -> list[str]:
    """Config keys whose values differ between the jobs that have them, bookkeeping keys left out (a key that
    a newer schema added, absent from older jobs' configs, splits no setting unless its values differ)."""
    keys = sorted({k for job in jobs for k in job.config})
    return [
        k for k in keys if k not in IGNORED_KEYS and len({repr(job.config[k]) for job in jobs if k in job.config}) > 1
    ]


def csv_number(v: str | None) -> float:
    """A CSV cell as a float; nan where it is empty or not a number."""
    try:
        return float(v) if v not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _value(v: Any) -> Any:
    """Numbers as floats (so `2` from a command line and `2.0` from a file are one setting)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


# A loss option a newer schema added is absent from older jobs' configs, which ran with its default: read so,
# a study's old and new jobs of one setting stay one setting when a new job sets the option otherwise.
LOSS_DEFAULTS = {f"model.loss.{k}": _value(v) for k, v in asdict(LossConfig()).items()}


def assign_settings(jobs: list[Job]) -> list[str]:
    """Give each job its setting (the varying keys' values); returns those keys."""
    for job in jobs:
        job.config = {k: v if k in IGNORED_KEYS else _value(v) for k, v in job.config.items()}
        if any(k.startswith("model.loss.") for k in job.config):
            job.config = {**LOSS_DEFAULTS, **job.config}
    keys = setting_keys(jobs)
    for job in jobs:
        job.setting = tuple((k, job.config.get(k)) for k in keys)
    return keys


def label(setting: tuple[tuple[str, Any], ...]) -> str:
    """`task=joint, cam_weight=1.0`: the keys' last parts (whole keys where those collide)."""
    short = [k.rsplit(".", 1)[-1] for k, _ in setting]
    names = short if len(set(short)) == len(short) else [k for k, _ in setting]
    return (
        ", ".join(
            f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}" for n, (_, v) in zip(names, setting, strict=False)
        )
        or "all jobs"
    )


NAME_DROPS = ("model.loss.scst_epochs", "model.task", "model.loss.cam_weight")  # said by the name's head
PLAIN_LOSS = {f"model.loss.{k}": getattr(LossConfig(), k) for k in ("divergence", "grad_to", "scst_cam")}  # unsaid
DIVERGENCE_WORDS = {"js": "JS", "kl": "KL", "l1": "L1", "l2": "L2", "cosine": "1 − cosine"}
KEY_WORDS: dict[str, Callable[[Any], str]] = {
    "model.loss.divergence": lambda v: f"{DIVERGENCE_WORDS.get(v, v)} divergence",
    "model.loss.grad_to": lambda v: f"CAM loss trains the {v} only",
    "model.loss.scst_cam": lambda v: "" if v else "no CAM loss in the SCST epochs",
    "data.source.shortcut": lambda v: "shortcut split" if v else "",
    "data.source.per_class": lambda v: f"{v:g} images per class" if isinstance(v, (int, float)) else f"per_class={v}",
}


def setting_name(setting: tuple[tuple[str, Any], ...]) -> str:
    """A setting in words: `classifier alone`, `joint, λ = 1`, `joint, λ = 0.18, KL divergence`; the plain loss
    (JS, both sides trained: the schema's defaults) goes unsaid, other keys as `label` writes them."""
    values = dict(setting)
    task, lam = values.get("model.task"), values.get(LAMBDA)
    if task in ("classifier", "captioner"):
        head = f"{task} alone"
    elif task == "joint" or lam is not None:
        head = f"joint, λ = {lam:g}" if isinstance(lam, (int, float)) else "joint"
    else:
        head = ""
    words, rest = [], []
    for k, v in setting:
        if k in NAME_DROPS or (k in PLAIN_LOSS and v == PLAIN_LOSS[k]):
            continue
        if k in KEY_WORDS:
            words.append(KEY_WORDS[k](v))
        else:
            rest.append((k, v))
    tail = label(tuple(rest)) if rest else ""
    return ", ".join(p for p in (head, *words, tail) if p) or "all jobs"


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (nan for one value) and count of the finite values."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else math.nan, len(vals)


def fmt(mean: float, std: float, n: int) -> str:
    """`0.812 ± 0.013 (3)`."""
    if n == 0:
        return "–"
    return f"{mean:.4f} ± {std:.4f} ({n})" if math.isfinite(std) else f"{mean:.4f} ({n})"


def group_jobs(jobs: list[Job]) -> dict[tuple, list[Job]]:
    """Jobs by setting, settings in a stable order (sorted by their values)."""
    groups: dict[tuple, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: (repr(j.setting), repr(j.seed))):
        groups.setdefault(job.setting, []).append(job)
    return groups


def metric_names(jobs: list[Job], stage: str = "test/") -> list[str]:
    """Every metric of the given stage that some job reports (all metrics if none is of that stage)."""
    names = sorted({k for job in jobs for k in job.metrics if k.startswith(stage)})
    return names or sorted({k for job in jobs for k in job.metrics})


def markdown_table(jobs: list[Job], title: str = "Summary", sources: list[str] | None = None) -> str:
    """Metrics as rows, settings as columns, `mean ± std (n seeds)` in the cells."""
    groups = group_jobs(jobs)
    settings = list(groups)
    lines = [f"# {title}", ""]
    if sources:
        lines += ["Jobs from: " + ", ".join(f"`{s}`" for s in sources), ""]
    lines += [f"{len(jobs)} jobs; mean ± sample std over seeds (n = number of seeds).", "", "Settings:", ""]
    for i, s in enumerate(settings, 1):
        seeds = ", ".join(str(j.seed) for j in groups[s])
        overrides = sorted({" ".join(o for o in j.overrides if not o.startswith("seed=")) for j in groups[s]})
        lines.append(f"* **S{i}** — {label(s)} — seeds {seeds} — overrides: " + "; ".join(f"`{o}`" for o in overrides))
    lines += [
        "",
        "| metric | " + " | ".join(f"S{i}" for i in range(1, len(settings) + 1)) + " |",
        "|---|" + "---:|" * len(settings),
    ]
    for name in metric_names(jobs):
        cells = [fmt(*mean_std([j.metrics.get(name, math.nan) for j in groups[s]])) for s in settings]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_jobs_csv(jobs: list[Job], keys: list[str], path: Path) -> None:
    """One row per job: setting keys, seed, folder, overrides and every metric."""
    names = sorted({k for job in jobs for k in job.metrics})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*keys, "seed", "folder", "overrides", *names])
        for job in sorted(jobs, key=lambda j: (repr(j.setting), repr(j.seed))):
            w.writerow(
                [
                    *(v for _, v in job.setting),
                    job.seed,
                    str(job.folder),
                    " ".join(job.overrides),
                    *(job.metrics.get(n, "") for n in names),
                ]
            )


def metric_title(name: str) -> str:
    """`test/cider_d` → `CIDEr-D (test)`; unknown names with spaces for underscores."""
    stage, _, bare = name.rpartition("/")
    words = METRIC_TITLES.get(bare, bare.replace("_", " "))
    return f"{words} ({stage})" if stage else words


def panel_metrics(names: list[str], jobs: list[Job] | None = None) -> list[str]:
    """The metrics worth a panel: one SUPERSEDED_BY dropped where its successor of the same stage is there, and,
    given the jobs, a metric that would draw the same panel as an earlier one (equal in every job to within 1 %
    of that one's range, e.g. mean per-class accuracy on a near-balanced test split and top-1 accuracy)."""
    kept = [n for n in names if not _superseded(n, names)]
    if not jobs:
        return kept
    values = {n: [j.metrics.get(n, math.nan) for j in jobs] for n in kept}
    out: list[str] = []
    for name in kept:
        if not any(_same_panel(values[o], values[name]) for o in out):
            out.append(name)
    return out


def _superseded(name: str, names: list[str]) -> bool:
    """`test/cider` among names that hold `test/cider_d` (SUPERSEDED_BY)."""
    stage, _, metric = name.rpartition("/")
    successor = SUPERSEDED_BY.get(metric)
    return successor is not None and (f"{stage}/{successor}" if stage else successor) in names


def _same_panel(a: list[float], b: list[float], share: float = 0.01) -> bool:
    """b equals a in every job to within `share` of a's range (finite in the same jobs, at least one)."""
    pairs = list(zip(a, b, strict=True))
    finite = [x for x, _ in pairs if math.isfinite(x)]
    if any(math.isfinite(x) != math.isfinite(y) for x, y in pairs) or not finite:
        return False
    tol = max(share * (max(finite) - min(finite)), 1e-6)
    return all(abs(x - y) <= tol for x, y in pairs if math.isfinite(x))


def honest_ylim(ax: Any, name: str) -> None:
    """A [0, 1] score's axis spans at least MIN_SPAN (inside [0, 1]); no offset notation on any axis."""
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    if name.rsplit("/", 1)[-1] in UNBOUNDED:
        return
    lo, hi = ax.get_ylim()
    if hi - lo < MIN_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_SPAN / 2, mid + MIN_SPAN / 2
        if hi > 1.0:
            lo, hi = max(0.0, 1.0 - MIN_SPAN), 1.0 + 0.005
        if lo < 0.0:
            lo, hi = -0.005, min(1.0, MIN_SPAN)
        ax.set_ylim(lo, hi)


def _has_axis(setting: tuple[tuple[str, Any], ...], x_key: str) -> bool:
    """Whether x means something for the setting: λ only for the joint model (the single-task rungs have no CAM
    loss, so they are drawn as reference lines across the axis)."""
    return x_key != LAMBDA or dict(setting).get("model.task", "joint") == "joint"


def plot_against(jobs: list[Job], x_key: str, path: Path, metrics: list[str] | None = None) -> Path | None:
    """Each metric against `x_key` (mean ± std over seeds), one line per other setting; None if x does not vary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len({repr(j.config.get(x_key)) for j in jobs}) < 2:
        return None
    metrics = panel_metrics(metrics or metric_names(jobs), jobs)
    lines: dict[tuple, dict[float, list[Job]]] = {}
    for job in jobs:
        rest = tuple((k, v) for k, v in job.setting if k != x_key)
        lines.setdefault(rest, {}).setdefault(float(job.config[x_key]), []).append(job)
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    many = plt.get_cmap("tab20")
    palette = [many(i) for i in range(20)] if len(lines) > 10 else [f"C{i}" for i in range(10)]
    for ax, name in zip(axes.flat, metrics, strict=False):
        for i, (rest, by_x) in enumerate(sorted(lines.items(), key=lambda kv: repr(kv[0]))):
            color = palette[i % len(palette)]
            xs = sorted(by_x)
            stats = [mean_std([j.metrics.get(name, math.nan) for j in by_x[x]]) for x in xs]
            if all(n == 0 for _, _, n in stats):
                continue
            tag = setting_name(rest) if rest else "mean ± std"
            if len(xs) == 1 and not _has_axis(rest, x_key):  # e.g. the classifier alone on a λ axis: a reference
                ax.axhline(stats[0][0], ls="--", lw=1, color=color, label=tag)
                continue
            means = [m for m, _, _ in stats]
            stds = [s if math.isfinite(s) else 0.0 for _, s, _ in stats]
            style = "o" if len(xs) == 1 else "o-"  # one x: a point (e.g. a loss variant at its own λ), no line
            ax.errorbar(xs, means, yerr=stds, fmt=style, capsize=3, color=color, label=tag)
        ax.set_title(metric_title(name), fontsize=9)
        ax.set_xlabel("λ (weight of the CAM disagreement loss)" if x_key == LAMBDA else x_key, fontsize=8)
        ax.tick_params(labelsize=7)
        honest_ylim(ax, name)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    legend: dict[str, Any] = {}
    for ax in axes.flat:  # every line once, whichever panel has it (single-task rungs lack some metrics)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            legend.setdefault(lab, h)
    handles, labels = list(legend.values()), list(legend)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    seeds = sorted({n for by_x in lines.values() for js in by_x.values() for n in [len(js)]})
    n_text = f"n = {seeds[0]}" if len(seeds) == 1 else f"n = {seeds[0]}–{seeds[-1]}"
    fig.suptitle(
        f"Points: mean over seeds; error bars: ± 1 sample standard deviation ({n_text} seeds per point); "
        "dashed: settings without this axis (the single-task models); lone points: settings run at one value",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summarize(roots: list[Path], out: Path, title: str = "Summary", x_key: str = LAMBDA) -> dict[str, Path]:
    """Write summary.md, jobs.csv and the metric-vs-x plots for the jobs under `roots`; returns the files."""
    jobs = find_jobs(roots)
    if not jobs:
        raise SystemExit(
            f"no finished jobs (folders with {RESULTS_FILE} and .hydra/) under {', '.join(map(str, roots))}"
        )
    keys = assign_settings(jobs)
    out.mkdir(parents=True, exist_ok=True)
    files = {"summary": out / "summary.md", "jobs": out / "jobs.csv"}
    files["summary"].write_text(markdown_table(jobs, title, [str(r) for r in roots]))
    write_jobs_csv(jobs, keys, files["jobs"])
    stem = x_key.rsplit(".", 1)[-1]
    main = [m for m in metric_names(jobs) if m.split("/", 1)[-1] in MAIN_METRICS]
    for name, chosen in ((f"{stem}_main.png", main), (f"{stem}_all.png", None)):
        if chosen != [] and plot_against(jobs, x_key, out / name, chosen):
            files[name] = out / name
    return files


def main(argv: list[str] | None = None) -> None:
    """Command line: folders in, summary files out."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="multirun folders (or job folders) to read")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the first folder)")
    p.add_argument("--title", default="Summary")
    p.add_argument("--x", default=LAMBDA, help=f"config key for the plots' x axis (default {LAMBDA})")
    args = p.parse_args(argv)
    for name, path in summarize(args.roots, args.out or args.roots[0], args.title, args.x).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
