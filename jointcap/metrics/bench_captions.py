"""Benchmark: our caption scores against pycocoevalcap's Bleu + Rouge + Cider on one input."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from jointcap.metrics.caption_metric import score_captions

__all__ = ["synthetic_captions", "benchmark_caption_metrics"]

_COLOURS = "red orange yellow green blue purple pink brown grey black white".split()
_PARTS = "head crown wing wings belly breast tail beak bill throat nape back".split()
_SIZES = "small tiny large medium long short pointed".split()
_TEMPLATES = [
    "this bird has a {c} {p} and a {c2} {p2}",
    "a {s} bird with {c} {p} and {c2} {p2}",
    "the bird is {c} with a {s} {c2} {p}",
    "this {s} bird has {c} {p} {c2} {p2} and a {s2} {p3}",
    "{c} {p} with {c2} and {c3} {p2}",
    "a bird with a {s} {p} that is {c} and {c2} {p2}",
]


def _caption(rng: random.Random) -> str:
    """One templated bird caption, already lower-case and punctuation-free."""
    t = rng.choice(_TEMPLATES)
    return t.format(
        c=rng.choice(_COLOURS),
        c2=rng.choice(_COLOURS),
        c3=rng.choice(_COLOURS),
        p=rng.choice(_PARTS),
        p2=rng.choice(_PARTS),
        p3=rng.choice(_PARTS),
        s=rng.choice(_SIZES),
        s2=rng.choice(_SIZES),
    )


def synthetic_captions(n_images: int, n_refs: int, seed: int = 0) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Seeded hypotheses (a perturbed reference) and references for n_images images."""
    rng = random.Random(seed)
    refs = {i: [_caption(rng) for _ in range(n_refs)] for i in range(n_images)}
    hyps = {}
    for i, rs in refs.items():
        words = rng.choice(rs).split()
        if rng.random() < 0.5:
            words[rng.randrange(len(words))] = rng.choice(_COLOURS)
        if rng.random() < 0.3:
            del words[rng.randrange(len(words)) :]
        hyps[i] = " ".join(words)
    return hyps, refs


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """Result of fn and its best wall and CPU seconds over `repeats` runs."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(max(repeats, 1)):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return out, wall, cpu


def benchmark_caption_metrics(n_images: int = 6000, n_refs: int = 10, seed: int = 0, repeats: int = 1) -> dict:
    """Time score_captions vs pycocoevalcap Bleu+Rouge+Cider on one input; check equal values.

    Both sides get the same raw strings (already lower-case, no punctuation, so our
    tokenisation, which is included in our time, leaves them as pycocoevalcap sees them).
    Wall and CPU times are the best of `repeats` runs; CPU time is the steadier on a
    shared machine.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = synthetic_captions(n_images, n_refs, seed)
    gts = {i: list(refs[i]) for i in hyps}
    res = {i: [hyps[i]] for i in hyps}

    def theirs_fn() -> dict[str, float]:
        b, _ = Bleu(4).compute_score(gts, res, verbose=0)
        r, _ = Rouge().compute_score(gts, res)
        c, _ = Cider().compute_score(gts, res)
        keys = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d")
        return dict(zip(keys, [*b, r, c], strict=False))

    ours, wall_ours, cpu_ours = _timed(lambda: score_captions(hyps, refs), repeats)
    theirs, wall_ref, cpu_ref = _timed(theirs_fn, repeats)
    diff = max(abs(float(ours[k]) - float(v)) for k, v in theirs.items())
    return {
        "n_images": n_images,
        "n_refs": n_refs,
        "ours_s": wall_ours,
        "pycocoevalcap_s": wall_ref,
        "speedup": wall_ref / wall_ours,
        "ours_cpu_s": cpu_ours,
        "pycocoevalcap_cpu_s": cpu_ref,
        "speedup_cpu": cpu_ref / cpu_ours,
        "max_abs_diff": diff,
        "equal": diff <= 1e-6,
        "ours": ours,
        "pycocoevalcap": {k: float(v) for k, v in theirs.items()},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(benchmark_caption_metrics(), indent=2, default=float))
