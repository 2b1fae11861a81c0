"""Classify and caption image files: `python -m jointcap.predict ckpt_path=FILE|RUN_FOLDER images=[a.jpg,folder]`.

Any file PIL reads (JPEG, PNG, BMP, …; grey, palette, RGBA, CMYK, 16-bit; any size) is decoded
upright (EXIF orientation), converted to RGB (alpha over white, 16-bit scaled) and squashed to the
model's training image size exactly as the cache does (`jointcap.data.realdata`). The figure shows
that same decoded image at its own aspect ratio (clamped to 4:1, so a 1×5000 px strip still gives
a figure of ordinary size) with the CAM of the predicted class, the mean caption attention and the
attention at each generated word, and a colour bar.

It streams: images are decoded, predicted and drawn `batch_size` at a time; each result is printed,
its figure saved and its `predictions.csv` row written (and flushed) as soon as it is done, with a
progress bar on a terminal and a progress line now and then in a log; memory stays that of one
batch, whatever the number of files. Nothing is ever replaced: a figure or CSV name that is taken
in `out_dir` gets the next free number (`photo-1.png`), and an `out_dir` that holds an input, or
lies inside an input folder, is refused. A folder in `images` stands for the image files anywhere
below it (hidden ones and non-regular files skipped). Files that are missing, unreadable or not
regular files (a FIFO given by name is never opened) are reported by name on stderr and skipped
(exit status 1). File names that are not UTF-8 are written with `\\xNN` escapes.

A model only knows the data it was trained on: a checkpoint trained on the synthetic birds
describes drawings of coloured parts, so its warning is printed once, drawn on every figure and
written in every CSV row; a prediction whose probability is below twice chance is flagged as low
confidence on its line, its figure and its row.
"""

from __future__ import annotations

import csv
import itertools
import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from jointcap import cli
from jointcap.analysis import viz
from jointcap.analysis.explain import Explanation, explain
from jointcap.config import MAX_IMAGE_SIZE, PredictConfig, option_errors
from jointcap.data.realdata import ImageDecodeError, decode_resized, to_rgb
from jointcap.data.textsafe import clean_text, path_text
from jointcap.lit_module import JointCaptionModule
from jointcap.runtime.checkpoint import load_module

log = logging.getLogger("jointcap.predict")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_ASPECT = 4.0  # figures show at most a 4:1 strip (a 1×5000 px image would make a figure 100,000 px tall)
MAX_WORD_PANELS = 30  # per-word attention panels per figure
CSV_COLUMNS = ["image", "class", "probability", "caption", "figure", "note", "warning"]
SYNTHETIC_WARNING = "trained on synthetic birds: meaningful only on images of its generator, not on photos"


@dataclass
class Prediction:
    """What the model says about one image file."""

    path: Path
    class_name: str | None
    prob: float | None
    caption: str
    figure: Path | None  # None with figures=false
    note: str = ""  # e.g. "low confidence"
    warning: str = ""  # e.g. SYNTHETIC_WARNING

    def row(self) -> list[str]:
        """Its predictions.csv row (names and text made printable; see CSV_COLUMNS)."""
        prob = "" if self.prob is None else f"{self.prob:.6f}"
        return [
            path_text(self.path),
            clean_text(self.class_name or ""),
            prob,
            clean_text(self.caption),
            path_text(self.figure) if self.figure else "",
            self.note,
            self.warning,
        ]

    def line(self) -> str:
        """Its line on stdout: file: class (probability) [note] | caption | figure."""
        head = f"{clean_text(self.class_name)} ({self.prob:.3f})" if self.class_name is not None else "-"
        flags = "; ".join(f for f in (self.note, self.warning) if f)
        caption = clean_text(self.caption) or "-"
        flagged = f"{head} [{flags}]" if flags else head
        return f"{path_text(self.path)}: {flagged} | {caption} | {path_text(self.figure) if self.figure else '-'}"


def expand(images: list[str]) -> list[Path]:
    """Paths as given; a folder becomes the regular image files anywhere below it (sorted, hidden ones skipped).

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


def check_out_dir(out_dir: Path, images: list[str]) -> None:
    """Refuse an out_dir that holds an input, or lies inside an input folder: its figures would land among (or
    replace) the user's images, and a later run over that folder would read them as inputs."""
    out = out_dir.expanduser().resolve()
    for item in images:
        given = Path(str(item)).expanduser().resolve()
        if given.is_relative_to(out) or (given.is_dir() and out.is_relative_to(given)):
            raise cli.UserError(
                f"out_dir={out_dir}: it holds the input {item} (or lies inside it); figures are never written among "
                "the images: choose another out_dir (e.g. a new folder beside the images)"
            )


def check_regular(path: Path) -> None:
    """ImageDecodeError for a path that is not a regular file (missing, a folder, a FIFO, a device, a socket):
    opening a FIFO would wait for a writer forever."""
    if not path.exists():
        raise ImageDecodeError(f"{path_text(path)}: no such file")
    if path.is_dir():
        raise ImageDecodeError(f"{path_text(path)}: a folder, not an image file")
    if not path.is_file():
        raise ImageDecodeError(f"{path_text(path)}: not a regular file (a FIFO, socket or device); skipped")


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) uint8, decoded and squashed like the cache; ImageDecodeError names a bad or missing file."""
    check_regular(path)
    try:
        array, _ = decode_resized(path, size)  # (S, S, 3)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"{path_text(path)}: cannot decode image ({e})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def display_size(w: int, h: int, longest: int, max_aspect: float = MAX_ASPECT) -> tuple[int, int]:
    """(W, H) of a figure's image: the file's aspect ratio clamped to `max_aspect`:1, its longest side `longest`."""
    aspect = min(max(w / h, 1 / max_aspect), max_aspect)  # W / H
    return (longest, max(1, round(longest / aspect))) if aspect >= 1 else (max(1, round(longest * aspect)), longest)


def display_image(path: Path, longest: int) -> torch.Tensor:
    """(3, H, W) uint8 for figures: the image the model sees (upright, RGB by the cache's own conversion) at its own
    aspect ratio (at most MAX_ASPECT:1), its longest side `longest`."""
    check_regular(path)
    try:
        with Image.open(path) as img:
            img.draft("RGB", (longest, longest))  # JPEG: let the decoder downscale (never below `longest`)
            rgb = to_rgb(ImageOps.exif_transpose(img), path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{path_text(path)}: cannot decode image ({e})") from None
    rgb = rgb.resize(display_size(*rgb.size, longest), Image.Resampling.BICUBIC)
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
    """The side of the images the model was trained on, as its checkpoint records it (range-checked: untrusted)."""
    size = module.image_size or module.info.get("image_size")
    if not size:
        raise cli.UserError("the checkpoint does not record its image size (pass image_size=N)")
    if not isinstance(size, int) or not 8 <= size <= MAX_IMAGE_SIZE:
        raise cli.UserError(
            f"the checkpoint records image size {size!r}; not in 8..{MAX_IMAGE_SIZE} (pass image_size=N)"
        )
    return size


def describe(module: JointCaptionModule, ex: Explanation, b: int) -> tuple[str | None, float | None, str]:
    """Image b's class name, its probability and the title line of its figure."""
    caption = clean_text(ex.captions[b])
    if ex.pred is None or ex.probs is None:
        return None, None, caption
    names = module.info.get("class_names") or []
    k = int(ex.pred[b])
    name = str(names[k]) if k < len(names) else str(k)
    prob = float(ex.probs[b, k])
    return name, prob, f"{clean_text(name)} ({prob:.2f})" + (f" — {caption}" if caption else "")


def create_new(out_dir: Path, stem: str, suffix: str) -> tuple[Path, IO[Any]]:
    """A new file `out_dir/<stem>.<suffix>`, or `<stem>-N.<suffix>` with the first free N: never an existing one
    (opened with O_EXCL, so another process cannot slip in between)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = suffix != "csv"
    for n in itertools.count():
        target = out_dir / f"{stem}{f'-{n}' if n else ''}.{suffix}"
        try:
            if binary:
                return target, open(target, "xb")  # noqa: SIM115 - the caller closes it
            return target, open(target, "x", newline="", encoding="utf-8")  # noqa: SIM115
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def save_figure(fig: Any, out_dir: Path, stem: str, fmt: str) -> Path:
    """Write the figure to a new file (never replacing one); a failed write leaves no partial file."""
    target, f = create_new(out_dir, stem, fmt)
    try:
        with f:
            # the mosaic's layout is pixel-exact (no tight bbox, a second draw); zlib level 1: ~10× faster, ~1.3× larger
            fig.savefig(f, format=fmt, **({"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def panels_of(ex: Explanation, b: int) -> list[viz.Panel]:
    """Image b's panels: the image, the CAM, the mean attention, the first MAX_WORD_PANELS words' attention."""
    mean = ex.mean_attention()
    words = [clean_text(w) for w in ex.words[b][:MAX_WORD_PANELS]]
    return viz.explanation_panels(
        ex.cam[b].cpu() if ex.cam is not None else None,
        mean[b].cpu() if mean is not None else None,
        words,
        ex.word_maps[b, : len(words)].cpu() if ex.word_maps is not None else None,
        class_title="CAM (predicted class)",
    )


def render(
    image: np.ndarray, panels: list[viz.Panel], title: str, footnote: str, out_dir: Path, stem: str, fmt: str
) -> Path:
    """Draw one figure and write it to a new file (run in a worker process with `workers` > 0)."""
    return save_figure(viz.mosaic_figure(image, panels, title, footnote=footnote), out_dir, stem, fmt)


def decode_chunk(
    paths: list[Path], size: int, longest: int
) -> tuple[list[tuple[Path, torch.Tensor, torch.Tensor]], list[ImageDecodeError]]:
    """The readable files of a chunk as (path, model input (3, S, S), figure image (3, H, W)), and the errors."""
    good, errors = [], []
    for p in paths:
        try:
            good.append((p, load_image(p, size), display_image(p, max(size, longest))))
        except ImageDecodeError as e:
            errors.append(e)
    return good, errors


def predict_files(
    module: JointCaptionModule,
    paths: list[Path],
    out_dir: Path,
    size: int,
    beam_size: int | None = None,
    batch_size: int = 16,
    longest: int = 320,
    fmt: str = "png",
    workers: int = 0,
    figures: bool = True,
) -> Iterator[Prediction | ImageDecodeError]:
    """Each file's Prediction (its figure written) or ImageDecodeError, `batch_size` files at a time, as they are done.

    The model sees each image squashed to `size`; the figures show it at its own aspect ratio (longest side
    `longest`), with the maps stretched back over it, the flags in the title and the checkpoint's warning below.
    With `workers` > 0, that many processes draw the figures (drawing costs more than predicting on a CPU);
    `figures=False` draws none (class and caption only: the CSV and the printed lines).
    """
    if fmt not in viz.FORMATS:
        raise cli.UserError(f"format={fmt}: must be one of {', '.join(viz.FORMATS)}")
    warning = SYNTHETIC_WARNING if domain_warning(module) else ""
    footnote = f"WARNING: {warning}" if warning else ""
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 0 and figures else None
    try:
        for start in range(0, len(paths), batch_size):
            good, errors = decode_chunk(paths[start : start + batch_size], size, longest)
            yield from errors
            if not good:
                continue
            ex = explain(module, torch.stack([im for _, im, _ in good]), beam_size)  # (B, 3, S, S) uint8 in
            jobs, facts = [], []
            for b, (p, _, shown) in enumerate(good):
                name, prob, title = describe(module, ex, b)
                note = confidence_note(prob, module.hparams["num_classes"])
                args = (
                    shown.permute(1, 2, 0).numpy(),
                    panels_of(ex, b),
                    f"[{note.upper()}] {title}" if note else title,
                )
                jobs.append((*args, footnote, out_dir, p.stem, fmt))
                facts.append((p, name, prob, ex.captions[b], note))
            drawn: Any = (
                pool.map(render, *zip(*jobs, strict=True))
                if pool
                else (render(*job) if figures else None for job in jobs)
            )
            for (p, name, prob, caption, note), figure in zip(facts, drawn, strict=True):
                yield Prediction(p, name, prob, caption, figure, note, warning)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file) a plain line every `every_s` seconds and at the end."""

    def __init__(self, total: int, stream: IO[str] = sys.stderr, every_s: float = 30.0) -> None:
        self.total, self.stream, self.every_s, self.done = total, stream, every_s, 0
        self.start = self.last = time.monotonic()
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=total, unit="img", file=stream, dynamic_ncols=True) if tty else None

    def write(self, line: str) -> None:
        """A result line on stdout that does not tear the bar."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
            return
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"predict: {self.done}/{self.total} images, {rate:.3g} img/s, ETA {eta:.0f} s", file=self.stream)
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_options(cfg: DictConfig) -> None:
    """Every bad option named at once (beam_size=-2, image_size=abc, device=gpu …), before any work."""
    errors = option_errors(cfg, PredictConfig, "predict")
    if errors:
        raise cli.UserError("invalid options:\n  - " + "\n  - ".join(errors))
    if cfg.ckpt_path is None:
        raise cli.UserError(
            "ckpt_path is required: python -m jointcap.predict ckpt_path=<file.ckpt or run folder> "
            "images=[a.jpg,folder] (see --help)"
        )
    if cfg.images is None:
        raise cli.UserError("images is required: images=[a.jpg,b.png] or images=[a/folder] (see --help)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise cli.UserError("device=cuda: no CUDA device is available here (use device=cpu or auto)")


def run(cfg: DictConfig, out_dir: Path, explicit_out_dir: bool = True) -> int:
    """Predict every image of cfg.images; print results; the exit status (0 ok, 1 some unreadable, 2 bad request)."""
    check_options(cfg)
    images = [str(i) for i in (cfg.images if isinstance(cfg.images, (list, ListConfig)) else [cfg.images])]
    if explicit_out_dir:
        check_out_dir(out_dir, images)
    paths = expand(images)
    if not paths:
        raise cli.UserError("no images given (images=[a.jpg,b.png] or images=[a/folder])")
    ckpt = cli.find_checkpoint(cfg.ckpt_path, prefer="best")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    module = load_module(ckpt, map_location=device)
    size = int(cfg.image_size) if cfg.image_size else model_image_size(module)
    warning = domain_warning(module)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    results = predict_files(
        module,
        paths,
        out_dir,
        size,
        cfg.beam_size,
        int(cfg.batch_size),
        fmt=str(cfg.format),
        workers=int(cfg.workers),
        figures=bool(cfg.figures),
    )
    n_errors, table, progress = 0, _CsvLazy(out_dir), Progress(len(paths))
    try:
        with table:
            for result in results:
                if isinstance(result, ImageDecodeError):
                    n_errors += 1
                    print(f"error: {result}", file=sys.stderr, flush=True)
                else:
                    table.add(result.row())
                    progress.write(result.line())
                progress.update()
    except OSError as e:  # disk full, a read-only folder …: the rows and figures done so far stay
        done = f"; the {progress.done} results so far are in {path_text(table.path)}" if table.path else ""
        raise cli.UserError(f"{path_text(out_dir)}: cannot write the results ({e.strerror or e}){done}") from e
    finally:
        progress.close()
    if table.path is not None:
        print(f"predictions: {path_text(table.path)}")
    if n_errors:
        print(f"error: {n_errors} of {len(paths)} files not predicted (named above)", file=sys.stderr)
    return 1 if n_errors else 0


class _CsvLazy:
    """predictions.csv (a new file: predictions-N.csv when the name is taken), created at the first row and
    flushed after every row, so it grows as images are done."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir: Path = out_dir
        self.path: Path | None = None
        self._file: IO[Any] | None = None
        self._writer: Any = None

    def __enter__(self) -> _CsvLazy:
        return self

    def add(self, row: list[str]) -> None:
        if self._file is None:
            self.path, self._file = create_new(self.out_dir, "predictions", "csv")
            self._writer = csv.writer(self._file)
            self._writer.writerow(CSV_COLUMNS)
        self._writer.writerow(row)
        self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    explicit = bool(cfg.out_dir)
    out_dir = Path(str(cfg.out_dir)).expanduser() if explicit else Path(HydraConfig.get().runtime.output_dir)
    status = run(cfg, out_dir, explicit_out_dir=explicit)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    cli.strip_debug_flag()
    main()
