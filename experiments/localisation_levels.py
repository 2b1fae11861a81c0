"""Reference levels for "the map's peak lies on a class-defining part" on a g×g feature grid (issue 25).

A model's pointing score means little alone: how often a map on this grid *could* hit, and how often a
trivial rule does. Per test image of the hard benchmark, with one-hot maps on the grid scored exactly as
the model's maps are (bilinear upsampling, peak, inside the union of the class-defining parts' masks):

* chance: a cell drawn uniformly (the mean over all cells);
* head-cell heuristic: the cell holding the most head pixels (head, crown, eyering, throat, beak);
* ceiling: the best cell (any cell whose peak lands on a class part).

And the same three for "on the bird at all" (the union of every part's mask). Deterministic, no model.

    python experiments/localisation_levels.py 10 20 [data=synthetic_hard overrides]   # grid sizes
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import jointcap.config  # noqa: F401  (registers the schema configs that conf/ builds on)
from jointcap.metrics.localisation import cell_hits

CONF = Path(__file__).resolve().parents[1] / "conf"
HEAD_PARTS = ("head", "crown", "eyering", "throat", "beak")


def levels(masks: torch.Tensor, class_parts: list[int], head_parts: list[int], grid: int) -> dict[str, float]:
    """masks (N, P, S, S) bool → chance / head-cell / ceiling pointing on class parts and on the bird, in %."""
    n = masks.shape[0]
    cls = masks[:, class_parts].any(1)  # (N, S, S)
    bird = masks.any(1)
    hit_cls, hit_bird = cell_hits(cls, (grid, grid)), cell_hits(bird, (grid, grid))  # (N, cells) each
    head = masks[:, head_parts].any(1).float()[:, None]  # (N, 1, S, S)
    per_cell = F.adaptive_avg_pool2d(head, grid).flatten(1)  # (N, cells): head pixels per cell
    best = per_cell.argmax(1)
    ar = torch.arange(n)
    out = {}
    for name, hits in (("class part", hit_cls), ("bird", hit_bird)):
        out[f"{name}: chance"] = 100 * hits.float().mean().item()
        out[f"{name}: head cell"] = 100 * hits[ar, best].float().mean().item()
        out[f"{name}: ceiling"] = 100 * hits.any(1).float().mean().item()
    return out


def main(argv: list[str]) -> None:
    grids = [int(a) for a in argv if a.isdigit()] or [10, 20]
    overrides = ["data=synthetic_hard"] + [a for a in argv if not a.isdigit()]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("test")
    split, info = dm.splits["test"], dm.info
    masks = torch.from_numpy(split.masks[:]).bool()  # (N, P, S, S)
    names = list(info["part_names"])
    head = [names.index(p) for p in HEAD_PARTS]
    rows = {g: levels(masks, list(info["class_parts"]), head, g) for g in grids}
    keys = list(next(iter(rows.values())))
    print("| grid | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for g, r in rows.items():
        print(f"| {g}×{g} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
