"""A grid of synthetic_hard images with their class and one caption.

`python experiments/hard_samples.py OUT.png [--n 16] [--shortcut]`: drawn with the preset's settings
(`HardSyntheticSource`'s defaults = conf/data/synthetic_hard.yaml).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's jointcap, as experiments/summarize.py

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jointcap.data import synthetic_hard as sh  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    """Draw `--n` training images (4 per row) titled with class attributes and caption 0; returns the PNG's path."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shortcut", action="store_true")
    args = ap.parse_args(argv)
    src = sh.HardSyntheticSource()
    data = sh.generate_split(
        args.n,
        src.n_classes,
        src.image_size,
        args.seed,
        src.captions_per_image,
        src.clutter,
        src.occlusion,
        src.lighting,
        shortcut_p=0.95 if args.shortcut else None,
    )
    names = [s.name for s in sh.class_specs(src.n_classes)]
    cols = 4
    rows = -(-args.n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 3.9))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= args.n:
            continue
        ax.imshow(data.images[i], interpolation="nearest")
        title = names[data.labels[i]].replace(" ", "\n", 2) + "\n" + textwrap.fill(data.captions[i][0], 34)
        ax.set_title(title, fontsize=7)
    fig.suptitle(
        f"synthetic_hard: {args.n} training images at {src.image_size} px (class attributes, caption 0)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the title above the first row's labels
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    return args.out


if __name__ == "__main__":
    print(main())
