"""End-of-job summaries: the metrics a reader needs, grouped and named, and where the job's files are.

The table groups the metrics (classification, captions: overlap, captions: correctness, localisation,
agreement; `jointcap.metrics.catalogue`), names each with its direction (↑/↓) and puts the reference
points beside it (chance, a constant caption, one reference against the others, a class template).
It is plain text (no wrapping, no colours), so it reads the same on a terminal and in a log file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from jointcap.data.textsafe import clean_text
from jointcap.metrics.baselines import class_template, reference_points
from jointcap.metrics.catalogue import DOWN, UP, grouped, split_key
from jointcap.metrics.correctness import FactReader

REFERENCE_NOTES = {  # by the reference point's first word
    "chance": "chance = one class at random",
    "constant": "constant = the best of the 30 most frequent training captions, said of every image",
    "1": "1 ref vs N = each image's first reference caption scored against its other N (a human-like level)",
    "template": "template = 'this bird has <wing> <pattern> wings and a <head> head' with the true class's colours",
}
References = dict[str, dict[str, float]]  # reference point name → {metric name (no stage): value}
REFERENCE_VERSION = 1  # the stored reference points' format and definition; bump when reference_points changes
PROFILE_LINES = 14  # how much of a profiler's table the summary shows
MAX_SAVED_CONFIG = 1 << 20  # a run folder's config.yaml larger than this is not read for display


def metric_table(metrics: Mapping[str, float], references: References | None = None) -> list[str]:
    """Grouped, named metrics, one line each: `  name  ↑  value   reference points`."""
    references = references or {}
    lines: list[str] = []
    for group, rows in grouped(dict(metrics)).items():
        lines.append(group)
        for row in rows:
            name = split_key(row.key)[1]
            refs = " · ".join(f"{ref} {vals[name]:.3f}" for ref, vals in references.items() if name in vals)
            value = f"{row.value:.4f}" if math.isfinite(row.value) else "–"
            line = f"  {row.info.name:<34} {name:<22} {row.info.direction} {value:>9}"
            lines.append(line + (f"   {refs}" if refs else ""))
    if lines:
        lines.append(f"{UP} higher is better, {DOWN} lower is better; definitions: docs/usage.md (the run's numbers)")
        named = [REFERENCE_NOTES[k.split(" ")[0]] for k in references if k.split(" ")[0] in REFERENCE_NOTES]
        if named:
            lines.append("reference points: " + "; ".join(named))
    return lines


def print_metrics(
    metrics: dict[str, float], title: str, paths: Mapping[str, object], references: References | None = None
) -> None:
    """The grouped metric table, then one `name: path` line per path; plain `print`, never wrapped or coloured."""
    print(title, flush=True)
    for line in metric_table(metrics, references):
        print(line, flush=True)
    for name, path in paths.items():
        print(f"{name}: {path}", flush=True)


def _short(value: Any, limit: int = 60) -> str:
    """A config value as short display text (values may come from someone else's run folder: shown, never used)."""
    text = clean_text(str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_settings(cfg: Mapping[str, Any]) -> dict[str, str]:
    """What a reader needs to place a run's numbers, from a composed config (a plain dict): data, model, λ, epochs,
    seed, batch size, learning rate; keys the config lacks are left out."""

    def get(*path: str) -> Any:
        node: Any = cfg
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    out: dict[str, str] = {}
    source = get("data", "source")
    if isinstance(source, Mapping):
        kind = str(source.get("_target_", "")).rsplit(".", 1)[-1].removesuffix("Source") or "?"
        sizes = [f"{k}={source[k]}" for k in ("n_train", "per_class", "n_classes", "image_size") if k in source]
        out["data"] = _short(f"{kind} ({', '.join(sizes)})" if sizes else kind)
    encoder = get("model", "encoder", "name")
    out["model"] = _short(f"{get('model', 'task') or '?'}" + (f", {encoder}" if encoder else ""))
    loss = get("model", "loss")
    if isinstance(loss, Mapping) and "cam_weight" in loss:
        out["λ (CAM loss weight)"] = _short(
            f"{loss['cam_weight']} ({loss.get('divergence', '?')}, gradient to {loss.get('grad_to', '?')})"
        )
    for label, path in (
        ("epochs", ("trainer", "max_epochs")),
        ("seed", ("seed",)),
        ("batch size", ("data", "batch_size")),
        ("learning rate", ("model", "optim", "lr")),
        ("threads", ("threads",)),
    ):
        value = get(*path)
        if value is not None:
            out[label] = _short(value)
    return out


def saved_settings(ckpt: Path, hparams: Mapping[str, Any]) -> dict[str, str]:
    """A checkpoint's run settings: from its run folder's `.hydra/config.yaml` when there is one (read as plain YAML,
    its values only shown), else the model's hyper-parameters alone."""
    saved = Path(ckpt).resolve().parent.parent / ".hydra" / "config.yaml"
    cfg: Any = None
    if saved.is_file() and saved.stat().st_size < MAX_SAVED_CONFIG:
        try:
            cfg = yaml.safe_load(saved.read_text(encoding="utf-8", errors="replace"))
        except yaml.YAMLError:
            cfg = None
    if not isinstance(cfg, Mapping):
        cfg = {"model": dict(hparams)}
    return run_settings(cfg)


def data_reference_points(datamodule: Any, split: str, num_classes: int | None = None) -> References:
    """Chance accuracy, and the caption reference points (`jointcap.metrics.baselines.reference_points`) of a
    set-up data module's `split`; {} for what the data cannot give."""
    points: References = {}
    if num_classes:
        points["chance"] = {"acc1": 1 / num_classes, "acc5": min(5, num_classes) / num_classes}
        points["chance"]["acc_per_class"] = points["chance"]["acc1"]
    splits = getattr(datamodule, "splits", {})
    if split not in splits or "train" not in splits:
        return points
    data, info = splits[split], getattr(datamodule, "info", {}) or {}
    attributes = info.get("class_attributes")
    templates = None
    if attributes:
        made = [class_template(attributes[int(y)]) for y in data.labels]
        templates = [t for t in made if t is not None] if all(t is not None for t in made) else None
    extra = getattr(data, "extra", {}) or {}
    facts = (extra["facts"], extra["class_facts"]) if "facts" in extra and "class_facts" in extra else None
    cache_dir = getattr(datamodule, "cache_dir", None)
    stored = Path(cache_dir) / f"reference_points-{split}-v{REFERENCE_VERSION}.json" if cache_dir else None
    captions = _read_points(stored)
    if captions is None:  # ~10 s on 1000 images: once per data cache and split, then read back
        captions = reference_points(
            datamodule.references("train"), datamodule.references(split), templates, facts, FactReader.from_info(info)
        )
        _write_points(stored, captions)
    return {**points, **captions}


def _read_points(path: Path | None) -> References | None:
    """Reference points stored beside the data cache, or None when absent or not numbers by name."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and all(
        isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()) for v in data.values()
    )
    return {str(k): {str(m): float(x) for m, x in v.items()} for k, v in data.items()} if ok else None


def _write_points(path: Path | None, points: References) -> None:
    """Store reference points atomically (a concurrent job writing the same numbers is harmless)."""
    if path is None or not path.parent.is_dir():
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(points, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only cache: computed again next time
        tmp.unlink(missing_ok=True)


def checkpoint_epoch(path: Path | str | None) -> int | None:
    """The epoch a checkpoint was saved at (0-based, as its file name and metrics.csv count), or None."""
    if not path or not Path(path).is_file():
        return None
    from jointcap.runtime.checkpoint import load_checkpoint

    epoch = load_checkpoint(path, mmap=True).get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None  # untrusted: a number or nothing


def print_samples(
    predictions: dict[int, str], references: list[list[str]], keys: list[str] | None = None, n: int = 8
) -> None:
    """A handful of generated captions next to a reference, so a person reads the words and not only the scores."""
    if not predictions:
        return
    chosen = sorted(predictions)[:: max(1, len(predictions) // n)][:n]  # spread over the split
    print("sample captions (generated | first reference):", flush=True)
    for i in chosen:
        name = keys[i] if keys is not None and i < len(keys) else str(i)
        ref = references[i][0] if i < len(references) and references[i] else ""
        print(f"  {clean_text(name)}: {clean_text(predictions[i])} | {clean_text(ref)}", flush=True)


def run_paths(run_dir: Path, trainer: L.Trainer | None = None) -> dict[str, Path]:
    """The files a run left that a user looks for next: checkpoints, metrics.csv, TensorBoard logs, media, results."""
    run_dir = Path(run_dir)
    paths: dict[str, Path] = {}
    cb: Any = trainer.checkpoint_callback if trainer is not None else None  # a ModelCheckpoint or None
    if cb is not None and cb.best_model_path and Path(cb.best_model_path).is_file():
        paths["best checkpoint"] = Path(cb.best_model_path)
    last = Path(cb.dirpath) / "last.ckpt" if cb is not None and cb.dirpath else run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        paths["last checkpoint"] = last
    for name, rel in (
        ("metrics", "metrics.csv"),
        ("profile", "fit-profile.txt"),
        ("results", "results.json"),
        ("TensorBoard logs", "tensorboard"),
        ("media", "media"),
        ("W&B", "wandb"),
    ):
        if (run_dir / rel).exists():
            paths[name] = run_dir / rel
    paths["run folder"] = run_dir
    return paths


def print_summary(
    metrics: dict[str, float],
    run_dir: Path,
    trainer: L.Trainer,
    source: str = "",
    references: References | None = None,
    config: str = "",
) -> None:
    """Print test metrics (validation ones when there was no test), where they come from, the profiler's table
    (its slowest hooks) when there is one, and the run's files."""
    shown = {k: v for k, v in metrics.items() if k.startswith("test/")} or {
        k: v for k, v in metrics.items() if k.startswith("val/")
    }
    profile = Path(run_dir) / "fit-profile.txt"
    if profile.is_file():
        head = profile.read_text(encoding="utf-8", errors="replace").splitlines()[:PROFILE_LINES]
        print(f"profiler (the slowest hooks; the whole table is in {profile}):", flush=True)
        print("\n".join(head), flush=True)
    title = "jointcap: final metrics" + (f" ({source})" if source else "")
    print_metrics(shown, title, run_paths(run_dir, trainer), references)
    if config:
        print(f"settings: {config}", flush=True)
