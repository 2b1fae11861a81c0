"""How much of a nuisance attribute does the shared embedding keep? A linear probe for the body colour.

    python experiments/probe_body_colour.py <run folder or .ckpt> <cache folder of its data> [n_train] [n_test]

Trains a logistic-regression probe (Adam, 300 steps, seed 0) on the mean- and max-pooled embedding
maps of n_train training images, and on the one cell that holds the most body pixels (where an attention
that found the body would read; from the part masks), and reports its test accuracy against chance. A
captioner can only state a body colour that the embedding it reads still encodes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jointcap.analysis.explain import to_model_input
from jointcap.cli import find_checkpoint
from jointcap.data import cache
from jointcap.data.synthetic import PART_NAMES
from jointcap.lit_module import JointCaptionModule
from jointcap.runtime.checkpoint import load_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colour_probe import fit_logistic, split_images, standardise  # noqa: E402


def _features(module: JointCaptionModule, split: cache.SplitData, n: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, n, 250):
            images = split_images(split, i, min(n, i + 250))
            out.append(module.net.embed(to_model_input(module, images)).float().flatten(2))  # (B, D, h·w)
    return torch.cat(out)


def _body_cell(split: cache.SplitData, n: int, feats: torch.Tensor) -> torch.Tensor:
    """(N,) the grid cell with the most body pixels of each image (feats (N, D, h·w) fixes the grid's size)."""
    if split.masks is None:
        raise SystemExit("the split has no part masks: the body's cell needs them")
    body = PART_NAMES.index("body")
    masks = torch.from_numpy(np.array(split.masks[:n, body])).float()[:, None]  # (N, 1, S, S)
    side = int(round(feats.shape[2] ** 0.5))
    return F.adaptive_avg_pool2d(masks, side).flatten(1).argmax(1)


def _at(feats: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """feats (N, D, L) at one cell per image: (N, D)."""
    return feats[torch.arange(len(cells)), :, cells]


def main(path: str, data_dir: str, n_train: int = 2000, n_test: int = 500) -> None:
    torch.manual_seed(0)
    module = load_module(find_checkpoint(path, prefer="best")).eval()
    train, test = cache.read_split(Path(data_dir) / "train"), cache.read_split(Path(data_dir) / "test")
    colours = sorted(set(train.extra["attributes"]["body"]))
    y_train = torch.tensor([colours.index(c) for c in train.extra["attributes"]["body"][:n_train]])
    y_test = torch.tensor([colours.index(c) for c in test.extra["attributes"]["body"][:n_test]])
    x_train, x_test = _features(module, train, n_train), _features(module, test, n_test)
    cell_train, cell_test = _body_cell(train, n_train, x_train), _body_cell(test, n_test, x_test)
    pools = {
        "mean-pooled": (x_train.mean(2), x_test.mean(2)),
        "max-pooled": (x_train.amax(2), x_test.amax(2)),
        "at the body's cell,": (_at(x_train, cell_train), _at(x_test, cell_test)),
    }
    for name, (a, b) in pools.items():
        a, b = standardise(a, b)
        acc = fit_logistic(a, y_train, b, y_test, len(colours), 0.05, (300,), None)[0]
        print(
            f"{name} embedding → body colour: test accuracy {acc:.3f} (chance {1 / len(colours):.3f}, {n_test} images)"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:5]))
