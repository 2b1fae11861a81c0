"""Where does the captioner look when it names a part: at the attribute word, or at the part's own noun?

    python experiments/grounding_by_word.py <cache folder of the data> <run folder or .ckpt> [more runs…] [--n N]

The logged word grounding (`test/word_grounding`) scores the attention at an attribute word ("red") on the part
named just after it ("crown"). In a Show-Attend-Tell decoder the attention at a step is computed from the words
before it, so at "red" the decoder must already have chosen which part comes next; at "crown" it has said the
colour. This prints, on the same greedy captions of the test split, the attention peak on the named part

* at the attribute word (the logged metric's definition),
* at the part noun itself,
* at either of the two,
* at the attribute word but on another part of the bird (it looks at the bird, at the wrong part),

each beside the levels of experiments/localisation_levels.py for these parts (one-hot maps on the grid, scored
as the model's: chance = a uniformly drawn cell, ceiling = the best cell) and, per part name, how often it is
grounded at its noun. A captioner that grounds nouns but not their attributes looks after
it has said what it sees (the attribute then comes from elsewhere, e.g. the class); one that grounds neither
does not look at the part it names at all.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from jointcap.analysis.explain import explain
from jointcap.cli import find_checkpoint
from jointcap.data import cache
from jointcap.data.part_words import WINDOW, described_parts
from jointcap.metrics.localisation import cell_hits, pointing_game, word_grounding
from jointcap.runtime.checkpoint import load_module


def noun_triples(words: list[list[str]], part_words: dict[str, int], masks: torch.Tensor, width: int) -> list:
    """(b, t, part) for every part noun at word t whose part is visible."""
    return [
        (b, t, part_words[w])
        for b, ws in enumerate(words)
        for t, w in enumerate(ws[:width])
        if w in part_words and bool(masks[b, part_words[w]].any())
    ]


def cell_levels(masks: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """masks (K, S, S) → per mask the share of grid cells whose one-hot map hits it (chance) and any (ceiling)."""
    hits = cell_hits(masks, grid)  # (K, cells)
    return hits.float().mean(1), hits.any(1).float()


def score(path: str, test: cache.SplitData, info: dict, n: int, batch: int = 100) -> dict[str, float]:
    """Grounding at attribute words, at part nouns, at either, with chance, over the first n test images."""
    if test.masks is None:
        raise SystemExit(f"{path}: the test split has no part masks (word grounding needs them)")
    module = load_module(find_checkpoint(path, prefer="best")).eval()
    part_words, attrs = dict(info["part_words"]), frozenset(info["attribute_words"])
    names = {v: k for k, v in reversed(list(part_words.items()))}  # part index → its first name
    counts: dict[str, float] = defaultdict(float)
    per_part: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    all_masks = test.masks
    for i in range(0, n, batch):
        sel = slice(i, min(n, i + batch))
        images = torch.from_numpy(np.array(test.images[sel])).permute(0, 3, 1, 2)  # (B, 3, S, S)
        masks = torch.from_numpy(np.array(all_masks[sel])).bool()  # (B, P, S, S)
        ex = explain(module, images, beam_size=1)
        maps, words = ex.word_maps, ex.words  # (B, W, h, w)
        assert maps is not None
        hits, count = word_grounding(maps, words, part_words, attrs, masks)  # at the attribute word
        counts["attr_hits"] += hits
        counts["attr_n"] += count
        elsewhere, _ = word_grounding(maps, words, part_words, attrs, _others(masks))  # on another part instead
        counts["attr_other"] += elsewhere
        either, pairs = _either(maps, words, part_words, attrs, masks)
        counts["either_hits"] += either
        counts["either_n"] += pairs
        nouns = noun_triples(words, part_words, masks, maps.shape[1])
        if nouns:
            idx = torch.tensor(nouns)  # (K, 3)
            hit = pointing_game(maps[idx[:, 0], idx[:, 1]], masks[idx[:, 0], idx[:, 2]])  # (K,) bool
            chance, ceiling = cell_levels(masks[idx[:, 0], idx[:, 2]], (maps.shape[-2], maps.shape[-1]))
            counts["noun_hits"] += float(hit.sum())
            counts["noun_n"] += len(nouns)
            counts["noun_chance"] += float(chance.sum())
            counts["noun_ceiling"] += float(ceiling.sum())
            for (_, _, p), h in zip(nouns, hit.tolist(), strict=True):
                per_part[names[p]][0] += int(h)
                per_part[names[p]][1] += 1
    out = {
        "attribute word": counts["attr_hits"] / max(1, counts["attr_n"]),
        "attribute word, on another part": counts["attr_other"] / max(1, counts["attr_n"]),
        "part noun": counts["noun_hits"] / max(1, counts["noun_n"]),
        "either": counts["either_hits"] / max(1, counts["either_n"]),
        "chance": counts["noun_chance"] / max(1, counts["noun_n"]),
        "ceiling": counts["noun_ceiling"] / max(1, counts["noun_n"]),
        "attribute words": counts["attr_n"],
        "part nouns": counts["noun_n"],
    }
    out.update({f"noun '{k}'": h / c for k, (h, c) in sorted(per_part.items()) if c >= 20})
    return out


def _others(masks: torch.Tensor) -> torch.Tensor:
    """(B, P, S, S) → per part the union of the bird's *other* parts (a peak there looks at the wrong part)."""
    bird = masks.any(1, keepdim=True)  # (B, 1, S, S)
    return bird & ~masks & masks.any((2, 3), keepdim=True)  # an invisible part keeps an empty mask (not counted)


def _either(maps, words, part_words, attrs, masks, window: int = WINDOW) -> tuple[int, int]:
    """Attribute-noun pairs (the metric's pairing) where the attribute word's or the noun's peak is on the part."""
    hits = pairs = 0
    for b, ws in enumerate(words):
        for t, u, p in described_parts(ws, part_words, frozenset(attrs), window):
            if t >= maps.shape[1] or u >= maps.shape[1] or not bool(masks[b, p].any()):
                continue
            pairs += 1
            two = torch.stack([maps[b, t], maps[b, u]])  # (2, h, w)
            hits += int(pointing_game(two, masks[b, p].expand(2, -1, -1)).any())
    return hits, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache", type=Path, help="the data's cache folder (holds info.json and test/)")
    ap.add_argument("runs", nargs="+", help="run folders or checkpoints")
    ap.add_argument("--n", type=int, default=1000, help="test images (the first N)")
    args = ap.parse_args()
    info = json.loads((args.cache / "info.json").read_text())
    test = cache.read_split(args.cache / "test")
    rows = {run: score(run, test, info, min(args.n, len(test))) for run in args.runs}
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print("| run | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for run, r in rows.items():
        cells = [
            "–" if k not in r else f"{r[k]:.0f}" if k.endswith(("words", "nouns")) else f"{100 * r[k]:.1f} %"
            for k in keys
        ]
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
