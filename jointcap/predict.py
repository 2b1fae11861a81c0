"""Classify and caption image files: `python -m jointcap.predict ckpt_path=FILE|RUN_FOLDER images=[a.jpg,folder]`.

Any file PIL reads (JPEG, PNG, BMP, …; grey, palette, RGBA, CMYK; any size) is decoded and
squashed to the model's training image size exactly as the cache does
(`jointcap.data.realdata.decode_resized`). For each image it prints the class with its
probability and the generated caption, writes `<out_dir>/<name>.<format>` (png, pdf or svg):
the image at its own aspect ratio, the CAM of the predicted class, the mean caption attention
and the attention at each generated word, with a colour bar, and one `predictions.csv` row.
A folder in `images` stands for the image files anywhere below it. Files that are missing or
cannot be read are reported by name on stderr (exit status 1) after the others are done.

A model only knows the data it was trained on: a checkpoint trained on the synthetic birds
describes drawings of coloured parts, so given photographs it says so in a warning, and
every prediction whose probability is below twice chance is flagged as low confidence.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig
from PIL import Image

from jointcap import cli
from jointcap.analysis import viz
from jointcap.analysis.explain import Explanation, explain
from jointcap.data.realdata import ImageDecodeError, decode_resized
from jointcap.lit_module import JointCaptionModule
from jointcap.runtime.checkpoint import load_module

log = logging.getLogger("jointcap.predict")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Prediction:
    """What the model says about one image file."""

    path: Path
    class_name: str | None
    prob: float | None
    caption: str
    figure: Path
    note: str = ""  # e.g. "low confidence"


def expand(images: list[str]) -> list[Path]:
    """Paths as given; a folder becomes the image files anywhere below it (sorted, hidden ones skipped).

    A folder without any image file is a UserError naming it.
    """
    out: list[Path] = []
    for item in images:
        p = Path(str(item)).expanduser()
        if not p.is_dir():
            out.append(p)
            continue
        found = sorted(
            f
            for f in p.rglob("*")
            if f.suffix.lower() in IMAGE_SUFFIXES
            and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not found:
            raise cli.UserError(f"{p}: no image files in this folder or below it ({', '.join(sorted(IMAGE_SUFFIXES))})")
        out += found
    return out


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) uint8, decoded and squashed like the cache; ImageDecodeError names a bad or missing file."""
    if not path.exists():
        raise ImageDecodeError(f"{path}: no such file")
    if path.is_dir():
        raise ImageDecodeError(f"{path}: a folder, not an image file")
    try:
        array, _ = decode_resized(path, size)  # (S, S, 3)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def display_image(path: Path, longest: int) -> torch.Tensor:
    """(3, H, W) uint8 at the file's own aspect ratio, its longest side `longest` (for figures, not for the model)."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    w, h = rgb.size
    scale = longest / max(w, h)
    rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def domain_warning(module: JointCaptionModule) -> str | None:
    """A warning when the checkpoint's training data is unlike image files a user passes (synthetic drawings)."""
    name = str(module.info.get("name") or "")
    if name.startswith("synthetic"):  # synthetic, synthetic_hard
        return (
            "this checkpoint was trained on jointcap's synthetic birds (procedural drawings of coloured parts): its "
            "classes and captions describe those drawings only. On photographs or other images its output is "
            "meaningless; use a checkpoint trained on data like yours (e.g. +experiment=cub_cam for bird photos)."
        )
    return None


def confidence_note(prob: float | None, num_classes: int) -> str:
    """`low confidence` when the class probability is below twice chance (1/K)."""
    if prob is None or num_classes <= 1:
        return ""
    return "low confidence" if prob < 2.0 / num_classes else ""


def model_image_size(module: JointCaptionModule) -> int:
    """The side of the images the model was trained on, as its checkpoint records it."""
    size = module.image_size or module.info.get("image_size")
    if not size:
        raise cli.UserError("the checkpoint does not record its image size (pass image_size=N)")
    return int(size)


def describe(module: JointCaptionModule, ex: Explanation, b: int) -> tuple[str | None, float | None, str]:
    """Image b's class name, its probability and the title line of its figure."""
    if ex.pred is None or ex.probs is None:
        return None, None, ex.captions[b]
    names = module.info.get("class_names") or []
    k = int(ex.pred[b])
    name = names[k] if k < len(names) else str(k)
    prob = float(ex.probs[b, k])
    return name, prob, f"{name} ({prob:.2f})" + (f" — {ex.captions[b]}" if ex.captions[b] else "")


def figure_path(out_dir: Path, path: Path, taken: set[Path], fmt: str = "png") -> Path:
    """out_dir/<stem>.<fmt>, numbered when two inputs share a stem."""
    target, n = out_dir / f"{path.stem}.{fmt}", 1
    while target in taken:
        target, n = out_dir / f"{path.stem}-{n}.{fmt}", n + 1
    taken.add(target)
    return target


def predict_files(
    module: JointCaptionModule,
    paths: list[Path],
    out_dir: Path,
    size: int,
    beam_size: int | None = None,
    batch_size: int = 16,
    display_size: int = 320,
    fmt: str = "png",
) -> tuple[list[Prediction], list[str]]:
    """Predictions of the readable files (figures written) and an error line per unreadable one.

    The model sees each image squashed to `size`; the figures show it at its own aspect ratio
    (longest side `display_size`), with the maps stretched back over it.
    """
    if fmt not in viz.FORMATS:
        raise cli.UserError(f"format={fmt}: must be one of {', '.join(viz.FORMATS)}")
    good: list[tuple[Path, torch.Tensor, torch.Tensor]] = []
    errors: list[str] = []
    for p in paths:
        try:
            good.append((p, load_image(p, size), display_image(p, max(size, display_size))))
        except ImageDecodeError as e:
            errors.append(str(e))
    preds: list[Prediction] = []
    taken: set[Path] = set()
    for start in range(0, len(good), batch_size):
        chunk = good[start : start + batch_size]
        images = torch.stack([im for _, im, _ in chunk])  # (B, 3, S, S) uint8
        ex = explain(module, images, beam_size)
        mean = ex.mean_attention()
        for b, (p, _, shown) in enumerate(chunk):
            name, prob, title = describe(module, ex, b)
            words = ex.words[b]
            panels = viz.explanation_panels(
                ex.cam[b] if ex.cam is not None else None,
                mean[b] if mean is not None else None,
                words,
                ex.word_maps[b, : len(words)] if ex.word_maps is not None else None,
                class_title="CAM (predicted class)",
            )
            fig = viz.image_figure(shown.permute(1, 2, 0).numpy(), panels, title)
            figure = viz.save_figure(fig, figure_path(out_dir, p, taken, fmt))
            preds.append(
                Prediction(p, name, prob, ex.captions[b], figure, confidence_note(prob, module.hparams["num_classes"]))
            )
    return preds, errors


def write_csv(path: Path, preds: list[Prediction]) -> Path:
    """predictions.csv: one row per image (file, class, probability, caption, figure, note), written atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "class", "probability", "caption", "figure", "note"])
        for p in preds:
            w.writerow(
                [
                    str(p.path),
                    p.class_name or "",
                    "" if p.prob is None else f"{p.prob:.6f}",
                    p.caption,
                    str(p.figure),
                    p.note,
                ]
            )
    os.replace(tmp, path)
    return path


def run(cfg: DictConfig, out_dir: Path) -> int:
    """Predict every image of cfg.images; print results; the exit status (0 ok, 1 some unreadable, 2 bad request)."""
    if cfg.ckpt_path is None:
        raise cli.UserError(
            "ckpt_path is required: python -m jointcap.predict ckpt_path=<file.ckpt or run folder> "
            "images=[a.jpg,folder] (see --help)"
        )
    if cfg.images is None:
        raise cli.UserError("images is required: images=[a.jpg,b.png] or images=[a/folder] (see --help)")
    images = cfg.images if isinstance(cfg.images, (list, ListConfig)) else [cfg.images]
    paths = expand(list(images))
    if not paths:
        raise cli.UserError("no images given (images=[a.jpg,b.png] or images=[a/folder])")
    ckpt = cli.find_checkpoint(cfg.ckpt_path, prefer="best")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    module = load_module(ckpt, map_location=device)
    size = int(cfg.image_size) if cfg.image_size else model_image_size(module)
    warning = domain_warning(module)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    preds, errors = predict_files(module, paths, out_dir, size, cfg.beam_size, fmt=str(cfg.format))
    for p in preds:
        head = f"{p.class_name} ({p.prob:.3f})" if p.class_name is not None else "-"
        print(f"{p.path}: {head}{' [' + p.note + ']' if p.note else ''} | {p.caption or '-'} | {p.figure}")
    if preds:
        print(f"predictions: {write_csv(out_dir / 'predictions.csv', preds)}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    out_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else Path(HydraConfig.get().runtime.output_dir)
    status = run(cfg, out_dir)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    cli.strip_debug_flag()
    main()
