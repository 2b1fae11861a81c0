"""Corpus BLEU-1..4 exactly as pycocoevalcap's ``Bleu`` (the ``closest`` reference length).

pycocoevalcap (and so the COCO caption leaderboard) computes, over the whole set,
``BLEU-k = BP · (Π_{m≤k} (c_m + 1e-15) / (g_m + 1e-9))^(1/k)`` with clipped n-gram matches
``c_m`` (hypothesis count clipped by the maximum count in any one reference), guesses
``g_m = Σ max(0, len − m + 1)``, and a brevity penalty ``BP = exp(1 − r/c)`` when
``c < r``, where ``c`` is the total hypothesis length and ``r`` sums, per image, the length
of the reference closest to the hypothesis (ties → the shorter one). The tiny constants
make a set with no k-gram match score a tiny positive BLEU-k, not exactly 0.

torchmetrics' ``BLEUScore`` (whitespace tokens, uniform weights) computes the same formula
with three differences: no epsilons (any zero match count gives exactly 0), a tie between
two equally close reference lengths goes to the first reference in list order rather than
the shorter one, and it works in float32 tensors. Ours matches pycocoevalcap to float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jointcap.metrics.ngrams import NgramCorpus, encode, group_max, lookup

__all__ = ["bleu", "bleu_from_corpus", "bleu_counts"]

_SMALL = 1e-9
_TINY = 1e-15


def bleu_counts(c: NgramCorpus) -> dict[str, np.ndarray | int]:
    """Corpus totals pycocoevalcap's BleuScorer accumulates: correct, guess, testlen, reflen."""
    n_img, g = c.n_images, max(c.n_grams, 1)
    h, r = c.hyp, c.ref  # entry slices: hypotheses first, then references
    h_key = c.sent[h] * g + c.gram[h]  # (Eh,) image·G + gram (hypothesis i is image i)
    # Max count of each n-gram over one image's references: 1 where some reference has it,
    # unless a reference repeats it (few entries, so the group-max runs on those only).
    present = lookup(c.ref_image_grams, np.ones(c.ref_image_grams.shape, np.int64), h_key, 0)
    r_count = c.count[r]  # (Er,)
    rep = r_count > 1
    rep_keys, rep_max = group_max(c.ref_keys[rep], r_count[rep])
    max_ref = lookup(rep_keys, rep_max, h_key, 0)
    clipped = np.minimum(c.count[h], np.maximum(present, max_ref))  # (Eh,)
    correct = np.bincount(c.gram_order[c.gram[h]], weights=clipped, minlength=c.n)
    hyp_len = c.lengths[:n_img]  # (N,)
    guess = np.array([np.maximum(hyp_len - k, 0).sum() for k in range(c.n)])
    # Closest reference length per image; ties go to the shorter reference.
    ref_len = c.lengths[n_img:]  # (R,)
    big = int(ref_len.max(initial=0)) + 1
    dist_key = np.abs(ref_len - hyp_len[c.ref_image]) * big + ref_len  # (R,)
    starts = np.r_[0, np.cumsum(c.n_refs)[:-1]]
    closest = np.minimum.reduceat(dist_key, starts) % big if n_img else np.zeros(0, np.int64)
    return {
        "correct": correct.astype(np.int64),
        "guess": guess.astype(np.int64),
        "testlen": int(hyp_len.sum()),
        "reflen": int(closest.sum()),
    }


def bleu_from_corpus(c: NgramCorpus) -> list[float]:
    """BLEU-1..n of an encoded corpus, with pycocoevalcap's epsilons and brevity penalty."""
    t = bleu_counts(c)
    scores, prod = [], 1.0
    for k in range(c.n):
        correct, guess = np.asarray(t["correct"]), np.asarray(t["guess"])
        prod *= float(correct[k] + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(prod ** (1.0 / (k + 1)))
    ratio = (t["testlen"] + _TINY) / (t["reflen"] + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def bleu(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n of tokenised hypotheses (one per image) against their references."""
    return bleu_from_corpus(encode(hyps, refs, n))
