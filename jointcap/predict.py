"""Classify and caption image files: `python -m jointcap.predict ckpt_path=FILE images=[a.jpg,b.png]`.

Any file PIL reads (JPEG, PNG, BMP, …; grey, palette, RGBA, CMYK; any size) is decoded and
squashed to the model's training image size exactly as the cache does
(`jointcap.data.realdata.decode_resized`). For each image it prints the class with its
probability and the generated caption, and writes `<out_dir>/<name>.png`: the image, the CAM
of the predicted class, the mean caption attention and the attention at each generated word.
A folder in `images` stands for the image files inside it. Files that cannot be read are
reported by name on stderr (exit status 1) after the others are done.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig
from PIL import Image

from jointcap.analysis import viz
from jointcap.runtime.checkpoint import UnsafeCheckpointError, load_module
from jointcap.data.realdata import ImageDecodeError, decode_resized
from jointcap.analysis.explain import Explanation, explain
from jointcap.lit_module import JointCaptionModule

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


def expand(images: list[str]) -> list[Path]:
    """Paths as given; a folder becomes its image files (sorted)."""
    out: list[Path] = []
    for item in images:
        p = Path(str(item)).expanduser()
        out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
    return out


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) uint8, decoded and squashed like the cache; ImageDecodeError names a bad file."""
    try:
        array, _ = decode_resized(path, size)  # (S, S, 3)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def model_image_size(module: JointCaptionModule) -> int:
    """The side of the images the model was trained on, as its checkpoint records it."""
    size = module.image_size or module.info.get("image_size")
    if not size:
        raise ValueError("the checkpoint does not record its image size (pass image_size=N)")
    return int(size)


def describe(module: JointCaptionModule, ex: Explanation, b: int) -> tuple[str | None, float | None, str]:
    """Image b's class name, its probability and the title line of its figure."""
    if ex.pred is None:
        return None, None, ex.captions[b]
    names = module.info.get("class_names") or []
    k = int(ex.pred[b])
    name = names[k] if k < len(names) else str(k)
    prob = float(ex.probs[b, k])
    return name, prob, f"{name} ({prob:.2f})" + (f" — {ex.captions[b]}" if ex.captions[b] else "")


def figure_path(out_dir: Path, path: Path, taken: set[Path]) -> Path:
    """out_dir/<stem>.png, numbered when two inputs share a stem."""
    target, n = out_dir / f"{path.stem}.png", 1
    while target in taken:
        target, n = out_dir / f"{path.stem}-{n}.png", n + 1
    taken.add(target)
    return target


def predict_files(module: JointCaptionModule, paths: list[Path], out_dir: Path, size: int,
                  beam_size: int | None = None, batch_size: int = 16, display_size: int = 224) -> tuple[list[Prediction], list[str]]:
    """Predictions of the readable files (figures written) and an error line per unreadable one.

    The model sees each image squashed to `size`; the figures show it squashed to at least
    `display_size`, with the maps upsampled to match.
    """
    good: list[tuple[Path, torch.Tensor, torch.Tensor]] = []
    errors: list[str] = []
    for p in paths:
        try:
            good.append((p, load_image(p, size), load_image(p, max(size, display_size))))
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
                ex.cam[b] if ex.cam is not None else None, mean[b] if mean is not None else None, words,
                ex.word_maps[b, : len(words)] if ex.word_maps is not None else None, class_title="CAM (predicted class)")
            fig = viz.image_figure(shown.permute(1, 2, 0).numpy(), panels, title)
            preds.append(Prediction(p, name, prob, ex.captions[b], viz.save_figure(fig, figure_path(out_dir, p, taken))))
    return preds, errors


def run(cfg: DictConfig, out_dir: Path) -> int:
    """Predict every image of cfg.images; print results; the exit status (0 ok, 1 some unreadable, 2 unusable request)."""
    images = cfg.images if isinstance(cfg.images, (list, ListConfig)) else [cfg.images]
    paths = expand(list(images))
    if not paths:
        print("error: no images given (images=[a.jpg,b.png])", file=sys.stderr)
        return 2
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt.is_file():
        print(f"error: {ckpt}: checkpoint file not found", file=sys.stderr)
        return 2
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    module = load_module(ckpt, map_location=device)
    size = int(cfg.image_size) if cfg.image_size else model_image_size(module)
    preds, errors = predict_files(module, paths, out_dir, size, cfg.beam_size)
    for p in preds:
        head = f"{p.class_name} ({p.prob:.3f})" if p.class_name is not None else "-"
        print(f"{p.path}: {head} | {p.caption or '-'} | {p.figure}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    out_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else Path(HydraConfig.get().runtime.output_dir)
    try:
        status = run(cfg, out_dir)
    except (UnsafeCheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        status = 2
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
