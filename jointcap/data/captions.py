"""Reed et al. (CVPR 2016) captions: `text_c10/<class folder>/<image stem>.txt`, 10 lines each.

`read_captions` reads and validates one file (strict UTF-8, at least `min_lines` non-empty
lines, each cleaned by `jointcap.data.textsafe`: a BOM, control characters and VT/FF/U+2028-style
separators neither split a caption nor stay in it); `join_captions` attaches captions to images
by file name, either failing on the first bad file or, with `skip_bad`, collecting what was
skipped and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jointcap.data.textsafe import split_lines

TEXT_FOLDER = "text_c10"


class CaptionError(ValueError):
    """A caption file is missing, short or not UTF-8; the message names the file."""


@dataclass(frozen=True)
class Skipped:
    """One image left out of the cache, and why (recorded in info.json)."""

    key: str
    file: str
    reason: str


def caption_path(text_dir: Path, class_folder: str, image_name: str) -> Path:
    """Where Reed keeps the captions of `image_name` (a file name, with or without extension)."""
    return Path(text_dir) / class_folder / (Path(image_name).stem + ".txt")


def read_captions(path: Path, min_lines: int = 10) -> list[str]:
    """Read one caption file: its non-empty, stripped lines; at least `min_lines` of them."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CaptionError(f"{path}: caption file missing") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CaptionError(f"{path}: not valid UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = split_lines(text)
    if len(lines) < min_lines:
        raise CaptionError(f"{path}: {len(lines)} caption lines, need at least {min_lines}")
    return lines


def join_captions(
    text_dir: Path,
    images: Sequence[tuple[str, str]],
    min_lines: int = 10,
    skip_bad: bool = False,
) -> tuple[dict[str, list[str]], list[Skipped]]:
    """Captions for `(class_folder, image_name)` pairs, keyed by image name; bad files raise or are skipped."""
    text_dir = Path(text_dir)
    if not text_dir.is_dir():
        raise CaptionError(f"{text_dir}: caption folder missing (expected Reed's {TEXT_FOLDER} layout)")
    captions: dict[str, list[str]] = {}
    skipped: list[Skipped] = []
    for class_folder, image_name in images:
        path = caption_path(text_dir, class_folder, image_name)
        try:
            captions[image_name] = read_captions(path, min_lines)
        except CaptionError as e:
            if not skip_bad:
                raise
            skipped.append(Skipped(image_name, str(path), str(e)))
    return captions, skipped


def read_class_list(path: Path) -> list[str]:
    """Read one of Reed's class lists (`trainclasses.txt`…): one class folder name a line."""
    path = Path(path)
    if not path.is_file():
        raise CaptionError(f"{path}: class list missing (needed for split='zeroshot')")
    return split_lines(path.read_text(encoding="utf-8"))
