"""Evaluate a checkpoint on a split: `python -m jointcap.evaluate ckpt_path=FILE|RUN_FOLDER [data=…] [split=test]`.

Runs the module's own test (or validation) metrics over the whole split and writes, into the
Hydra output folder: `report.json` (every metric, per-class accuracy, what was evaluated),
`report.csv` (metric, value), `per_class.csv`, `predictions.csv` (one row per image:
index, key, true and predicted class, probability, generated caption, first reference and
the per-image pointing hits) and `report.html` (self-contained: metrics, per-class accuracy,
a gallery of explained images, worst errors first; `jointcap.analysis.html_report`). Prints a
table of the metrics. A run folder as `ckpt_path` means its best checkpoint (else its last).
With `wandb.enabled=true` the report, the per-class table and a predictions table with the
gallery's images go to a W&B run of job type `evaluate`.

Without a `data…` override on the command line, the data is the one the checkpoint's run used
(`<run>/.hydra/config.yaml` beside `<run>/checkpoints/`), read as untrusted input: it may name the
preset and the settings that make the data what it is, while paths, downloads and checksums come
from the user's own `data=<preset>` config (`jointcap.runtime.run_config`). Evaluate's own config is
recorded in its output folder's `.hydra/`, or in `.hydra/evaluate-<n>/` when that folder already
holds a run's record (`hydra.run.dir=<run folder>`): a training run's config is never overwritten.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, cast

import hydra
import lightning as L
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jointcap import cli
from jointcap.analysis import html_report
from jointcap.analysis.report import (
    checkpoint_epoch,
    data_reference_points,
    print_metrics,
    print_samples,
    saved_settings,
)
from jointcap.config import EvaluateOptions, option_errors
from jointcap.lit_module import JointCaptionModule
from jointcap.metrics.localisation import part_pointing, pointing_game
from jointcap.runtime.checkpoint import load_module
from jointcap.runtime.noise import quiet_known_noise
from jointcap.runtime.run_config import load_run_data_config
from jointcap.runtime.run_folder import record_config
from jointcap.runtime.threads import apply as apply_threads

log = logging.getLogger("jointcap.evaluate")
quiet_known_noise()  # Lightning's tips and known deprecation warnings (jointcap/runtime/noise.py)
SPLITS = ("val", "test")
_DATA_OVERRIDE = re.compile(r"^[+~]*data([.=@/]|$)")


class EvaluateError(cli.UserError):
    """A problem with the request (checkpoint, split, data) that the user can fix."""


class PredictionCollector(L.Callback):
    """Per-image rows from the records `JointCaptionModule._eval_step` returns."""

    def __init__(
        self,
        keys: list[str],
        references: list[list[str]],
        class_names: list[str],
        class_parts: list[int] | None,
        part_radius: float,
    ) -> None:
        self.keys, self.references, self.class_names = keys, references, class_names
        self.class_parts, self.part_radius = class_parts, part_radius
        self.rows: dict[int, dict[str, Any]] = {}

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.add(cast(JointCaptionModule, pl_module), outputs, batch)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.add(cast(JointCaptionModule, pl_module), outputs, batch)

    def _name(self, k: int) -> str:
        return self.class_names[k] if k < len(self.class_names) else str(k)

    def add(self, module: JointCaptionModule, record: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        """One row per image of the batch (the first one seen wins, as in the caption metric)."""
        hits = self.pointing(record, batch)
        for b, index in enumerate(record["index"].tolist()):
            label = int(record["label"][b])
            row: dict[str, Any] = {
                "index": index,
                "key": self.keys[index],
                "true_label": label,
                "true_class": self._name(label),
            }
            if "pred" in record:
                pred = int(record["pred"][b])
                row.update(
                    pred_label=pred,
                    pred_class=self._name(pred),
                    prob=round(float(record["prob"][b]), 6),
                    correct=int(pred == label),
                )
            if "tokens" in record:
                row["caption"] = module.tok.decode(record["tokens"][b].tolist())
            refs = self.references[index]
            row["reference"] = refs[0] if refs else ""
            row.update({name: (int(v[b]) if v[b] >= 0 else "") for name, v in hits.items()})
            self.rows.setdefault(index, row)

    def pointing(self, record: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-image hits (1/0, -1 = nothing to point at): maps vs class-part masks, and vs annotated parts."""
        out: dict[str, torch.Tensor] = {}
        size = tuple(batch["image"].shape[-2:])
        masks, parts = batch.get("masks"), batch.get("parts")
        for src in ("cam", "attn"):
            maps = record.get(src)
            if maps is None:
                continue
            maps = maps.float()
            if masks is not None:  # (B, P, S, S)
                sel = masks.bool()[:, self.class_parts] if self.class_parts else masks.bool()
                union = sel.any(1)  # (B, S, S)
                hit = pointing_game(maps, union).long()
                out[f"{src}_pointing"] = torch.where(union.flatten(1).any(1), hit, -1).cpu()
            if parts is not None:  # (B, P, 3)
                h, visible = part_pointing(maps, parts.float(), size, self.part_radius * max(size))
                out[f"{src}_part_pointing"] = torch.where(visible > 0, (h > 0).long(), -1).cpu()
        return out


def data_config(cfg: DictConfig, ckpt: Path) -> DictConfig:
    """The composed data config; without a data override, the checkpoint's own run's (resolved there)."""
    overridden = any(_DATA_OVERRIDE.match(o) for o in HydraConfig.get().overrides.task)
    run_cfg = ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    if cfg.data_from_run and not overridden and run_cfg.is_file():
        log.info("data of the checkpoint's run: %s", run_cfg)
        return load_run_data_config(run_cfg, user_data_config)  # untrusted: an allow-list over the user's config
    return cfg.data


def user_data_config(preset: str) -> DictConfig:
    """The user's own config with `data=<preset>`: this command line's overrides, composed from the user's files."""
    hydra_cfg = HydraConfig.get()
    overrides = [*hydra_cfg.overrides.task, f"data={preset}"]
    return compose(config_name=hydra_cfg.job.config_name, overrides=overrides)


def check_compatible(module: JointCaptionModule, dm: Any, ckpt: Path) -> None:
    """The data must be what the model was trained on: same class count and tokenizer."""
    if module.hparams["num_classes"] != dm.num_classes:
        raise EvaluateError(
            f"{ckpt}: the model has {module.hparams['num_classes']} classes, the data {dm.num_classes}; "
            "pass the data config it was trained with (data=… and its overrides)"
        )
    if module.tokenizer is not None and module.tokenizer.model_proto != dm.tokenizer.model_proto:
        raise EvaluateError(
            f"{ckpt}: the data's tokenizer differs from the one inside the checkpoint; "
            "pass the data config it was trained with (data.vocab_size, data.source…)"
        )


def per_class_accuracy(rows: list[dict[str, Any]], class_names: list[str], num_classes: int) -> list[dict[str, Any]]:
    """Accuracy of each class over its images (None for a class with no image in the split)."""
    out = []
    for k in range(num_classes):
        mine = [r for r in rows if r["true_label"] == k and "correct" in r]
        acc = sum(r["correct"] for r in mine) / len(mine) if mine else None
        out.append(
            {
                "label": k,
                "class": class_names[k] if k < len(class_names) else str(k),
                "n_images": len(mine),
                "accuracy": acc,
            }
        )
    return out


def write_report(
    out_dir: Path, report: dict[str, Any], per_class: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> dict[str, Path]:
    """report.json, report.csv, per_class.csv and predictions.csv in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("report.json", "report.csv", "per_class.csv", "predictions.csv")}
    paths["report.json"].write_text(json.dumps({**report, "per_class": per_class}, indent=2))
    _write_csv(paths["report.csv"], [{"metric": k, "value": v} for k, v in report["metrics"].items()])
    _write_csv(paths["per_class.csv"], per_class)
    _write_csv(paths["predictions.csv"], rows)
    return paths


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts as CSV; the header is the union of their keys, in first-seen order."""
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["empty"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Load, evaluate, write the report; returns it."""
    errors = option_errors(cfg, EvaluateOptions, "evaluate")
    if errors:  # metrics.meteor=no must not turn METEOR on, beam_size=-2 must not reach the decoder …
        raise EvaluateError("invalid options:\n  - " + "\n  - ".join(errors))
    if cfg.split not in SPLITS:
        raise EvaluateError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    if cfg.ckpt_path is None:
        raise EvaluateError(
            "ckpt_path is required: python -m jointcap.evaluate ckpt_path=<file.ckpt or run folder> (see --help)"
        )
    apply_threads(cfg)  # its share of the cores (threads=N beside another job)
    ckpt = cli.find_checkpoint(cfg.ckpt_path, prefer="best")
    module = load_module(ckpt)  # every check of the file happens here, before the (long) evaluation
    epoch = checkpoint_epoch(ckpt)
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.metrics, resolve=True))
    chosen = {k: v for k, v in options.items() if v is not None}
    module.set_metric_options(box_stages=[cfg.split], **chosen)
    if cfg.beam_size is not None:
        beam_size = int(cfg.beam_size)
        module.decode_cfg = dataclasses.replace(module.decode_cfg, beam_size=beam_size, test_beam_size=beam_size)
    if cfg.get("no_repeat_ngram") is not None:  # ≥ 0 (0 = off): checked with the other options above
        n = int(cfg.no_repeat_ngram)
        module.decode_cfg = dataclasses.replace(module.decode_cfg, no_repeat_ngram=n)
    if cfg.get("length_penalty") is not None:  # beam search's ranking: log p ÷ length^p (p > 0 favours longer)
        lp = float(cfg.length_penalty)
        module.decode_cfg = dataclasses.replace(module.decode_cfg, length_penalty=lp)
    dm = instantiate(data_config(cfg, ckpt), _convert_="all")
    dm.prepare_data()
    dm.setup(cfg.split)
    check_compatible(module, dm, ckpt)
    split = dm.splits[cfg.split]
    collector = PredictionCollector(
        list(split.keys),
        dm.references(cfg.split),
        dm.info.get("class_names") or [],
        dm.info.get("class_parts"),
        float(module.metrics_cfg.part_radius),
    )
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[collector], enable_checkpointing=False)
    run = trainer.test if cfg.split == "test" else trainer.validate
    results = run(module, datamodule=dm, verbose=False)
    metrics = {k.split("/", 1)[-1]: float(v) for k, v in (results[0] if results else {}).items()}
    rows = [collector.rows[i] for i in sorted(collector.rows)]
    per_class = per_class_accuracy(rows, dm.info.get("class_names") or [], dm.num_classes)
    beam = module.decode_cfg.test_beam_size if cfg.split == "test" else module.decode_cfg.beam_size
    report = {
        "checkpoint": str(ckpt.resolve()),
        "epoch": epoch,
        "split": cfg.split,
        "dataset": dm.info.get("name"),
        "n_images": len(rows),
        "task": module.hparams["task"],
        "beam_size": beam,
        "no_repeat_ngram": module.decode_cfg.no_repeat_ngram,
        "length_penalty": module.decode_cfg.length_penalty,
        "metrics": metrics,
        "per_class_accuracy": [c["accuracy"] for c in per_class],
        "settings": saved_settings(ckpt, module.hparams),
        "references": data_reference_points(dm, cfg.split, dm.num_classes),
    }
    paths = write_report(out_dir, report, per_class, rows)
    items = gallery_items(module, split, rows, dm.references(cfg.split), int(cfg.report.gallery), cfg.beam_size)
    paths["report.html"] = html_report.write_html(out_dir / "report.html", report, per_class, items)
    if cfg.wandb.enabled:
        log_to_wandb(cfg, report, per_class, rows, items, paths)
    if "captions" in module.eval_metrics[stage := "test" if cfg.split == "test" else "val"]:
        print_samples(
            module.eval_metrics[stage]["captions"].last_predictions, dm.references(cfg.split), list(split.keys)
        )
    print_metrics(
        metrics,
        f"jointcap: {cfg.split} metrics of {ckpt.name} (epoch {report['epoch']}, {len(rows)} images, beam {beam})",
        paths,
        report["references"],
    )
    return report


def gallery_items(
    module: JointCaptionModule,
    split: Any,
    rows: list[dict[str, Any]],
    references: list[list[str]],
    n: int,
    beam_size: int | None,
) -> list[html_report.GalleryItem]:
    """The report's gallery: the `n` worst rows (errors first), explained and drawn."""
    chosen = [rows[i] for i in html_report.gallery_order(rows)[: max(0, n)]]
    if not chosen:
        return []
    images = (
        torch.from_numpy(split.images[[r["index"] for r in chosen]]).permute(0, 3, 1, 2).contiguous()
    )  # (N, 3, S, S)
    return html_report.gallery(module, images, chosen, references, beam_size)


def log_to_wandb(
    cfg: DictConfig,
    report: dict[str, Any],
    per_class: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    items: list[html_report.GalleryItem],
    paths: dict[str, Path],
) -> None:
    """One W&B run (job type evaluate): metrics as summary, per-class and prediction tables (gallery images), files."""
    import io

    import wandb
    from PIL import Image

    from jointcap.runtime.tracking import finish_wandb, wandb_mode

    w = cfg.wandb
    run = wandb.init(
        project=w.project,
        entity=w.entity,
        mode=wandb_mode(w.mode),
        job_type="evaluate",
        name=w.name or f"evaluate {Path(report['checkpoint']).parent.parent.name} {report['split']}",
        dir=str(paths["report.json"].parent),
        tags=[report.get("dataset") or "data", report["split"]],
        config={k: report[k] for k in ("checkpoint", "split", "dataset", "n_images", "task", "beam_size")},
        settings=wandb.Settings(silent=True),
    )
    try:
        run.summary.update({f"{report['split']}/{k}": v for k, v in report["metrics"].items()})
        run.log(
            {
                "per_class": wandb.Table(
                    columns=["class", "n_images", "accuracy"],
                    data=[[c["class"], c["n_images"], c["accuracy"]] for c in per_class],
                )
            }
        )
        columns: list[str | int] = [
            "key",
            "true_class",
            "pred_class",
            "prob",
            "correct",
            "caption",
            "references",
            "explanation",
        ]
        table = wandb.Table(columns=columns)
        for it in items:
            table.add_data(
                it.key,
                it.true_class,
                it.pred_class,
                it.prob,
                it.correct,
                it.caption,
                " | ".join(it.references[:5]),
                wandb.Image(Image.open(io.BytesIO(it.jpeg))),
            )
        run.log({"predictions": table, "report": wandb.Html(paths["report.html"].read_text(encoding="utf-8"))})
        artifact = wandb.Artifact(f"evaluation-{run.id}", type="evaluation")
        for path in paths.values():
            artifact.add_file(str(path))
        run.log_artifact(artifact)
    finally:
        finish_wandb()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    record_config(out_dir, cfg, HydraConfig.instance().cfg, HydraConfig.get().overrides.task, "evaluate")
    evaluate(cfg, out_dir)


if __name__ == "__main__":
    cli.strip_debug_flag()
    main()
