"""Can a cell of the feature grid tell the body colour at all? A pixel-level ceiling for the default data (issue 25).

    python experiments/body_colour_grid.py [cache folder] [grid sizes…]   # default: the default run's cache, 8 16

For each image the grid cell holding the most body pixels (from the part masks) is where an attention that
found the body would read. This prints, per grid size, how much of that cell is body, and how often a small
MLP (64 hidden units, Adam, 500 steps, seed 0; 3,000 training / 1,000 test images) tells the true body colour
from the cell's mean RGB, and from the mean RGB of the body mask itself (a perfect segmentation). No model is
trained but the probe: it bounds what a map of that resolution offers a captioner that averages a cell.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jointcap.data import cache
from jointcap.data.download import default_root
from jointcap.data.synthetic import PART_NAMES

DEFAULT_CACHE = "synthetic-v2-c24-s64-n4000-500-1000-seed0-cap10-clutter1"  # `make run`'s data


def cell_colours(split: cache.SplitData, n: int, grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean RGB of the body's best cell (n, 3), of the body mask (n, 3), and the body's share of that cell (n,)."""
    assert split.masks is not None  # main() checks
    images = torch.from_numpy(np.array(split.images[:n])).permute(0, 3, 1, 2).float() / 255  # (n, 3, S, S)
    body = torch.from_numpy(np.array(split.masks[:n, PART_NAMES.index("body")])).float()[:, None]  # (n, 1, S, S)
    share = F.adaptive_avg_pool2d(body, grid).flatten(1)  # (n, g·g) body pixels per cell
    best = share.argmax(1)
    cell = F.adaptive_avg_pool2d(images, grid).flatten(2)[torch.arange(n), :, best]
    mask = (images * body).sum((2, 3)) / body.sum((2, 3)).clamp(min=1)
    return cell, mask, share.amax(1)


def probe(x_train: torch.Tensor, x_test: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor, k: int) -> float:
    """Test accuracy of a small MLP from x to the colour index."""
    torch.manual_seed(0)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    net = torch.nn.Sequential(torch.nn.Linear(a.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, k))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(500):
        opt.zero_grad()
        F.cross_entropy(net(a), y_train).backward()
        opt.step()
    with torch.no_grad():
        return (net(b).argmax(1) == y_test).float().mean().item()


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv and not argv[0].isdigit() else default_root() / "cache" / DEFAULT_CACHE
    grids = [int(a) for a in argv if a.isdigit()] or [8, 16]
    train, test = cache.read_split(folder / "train"), cache.read_split(folder / "test")
    for name, split in (("train", train), ("test", test)):
        if split.masks is None:
            raise SystemExit(f"{folder / name}: no part masks in this split (the body's cell needs them)")
    colours = sorted(set(train.extra["attributes"]["body"]))
    n_train, n_test = min(3000, len(train)), min(1000, len(test))
    y_train = torch.tensor([colours.index(c) for c in train.extra["attributes"]["body"][:n_train]])
    y_test = torch.tensor([colours.index(c) for c in test.extra["attributes"]["body"][:n_test]])
    print(f"{n_test} test images, {len(colours)} body colours (chance {1 / len(colours):.3f})")
    print("| grid | body share of its best cell | cell mean RGB → body colour | body-mask mean RGB → body colour |")
    print("|---|---:|---:|---:|")
    for g in grids:
        cell_a, mask_a, _ = cell_colours(train, n_train, g)
        cell_b, mask_b, share = cell_colours(test, n_test, g)
        from_cell = probe(cell_a, cell_b, y_train, y_test, len(colours))
        from_mask = probe(mask_a, mask_b, y_train, y_test, len(colours))
        print(f"| {g}×{g} | {share.mean():.2f} | {from_cell:.3f} | {from_mask:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
