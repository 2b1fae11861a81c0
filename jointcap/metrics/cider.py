"""CIDEr-D exactly as pycocoevalcap 1.2's ``Cider`` class, vectorised.

Which variant: pycocoevalcap 1.2's ``Cider`` *is* CIDEr-D — its scorer is the
``ciderD_scorer.py`` of vrama91/cider run with ``df_mode="corpus"`` (the two files differ
only in Python 2/3 syntax and the df-file option). Per image with hypothesis h and
references r_1..r_m, for n = 1..4:

* TF-IDF vectors ``g_n(s)[w] = tf_s(w) · (log N − log max(1, df(w)))``, where N is the
  number of images in the evaluated set and df(w) the number of those images whose
  references contain n-gram w (idf from the references of the evaluated set only; an
  n-gram no reference has gets idf log N);
* clipped similarity ``Σ_w min(g_n(h)[w], g_n(r)[w]) · g_n(r)[w] / (‖g_n(h)‖·‖g_n(r)‖)``
  (the division is skipped when a norm is 0);
* a Gaussian length penalty ``exp(−δ²/(2σ²))``, σ = 6 — where, as in the reference code,
  the "length" is the number of **bigram occurrences** (``if n == 1`` tests the 0-based
  order), i.e. ``max(len − 1, 0)`` words; the 1e-6 match depends on keeping this quirk;
* ``CIDEr-D(h) = 10 · mean_n (Σ_j sim_n(h, r_j) · penalty_j) / m``; the set score is the mean.

:func:`cider` is the same number under the name pycocoevalcap and the COCO leaderboard use
("CIDEr"). :func:`cider_plain` is the original CIDEr of Vedantam et al. 2015 (vrama91's
``cider_scorer.py``: no clipping, no length penalty, same ×10), kept for comparison only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jointcap.metrics.ngrams import NgramCorpus, encode, lookup

__all__ = ["cider_d", "cider", "cider_plain", "cider_from_corpus"]

SIGMA = 6.0


def cider_from_corpus(c: NgramCorpus, sigma: float = SIGMA, clipped: bool = True) -> tuple[float, np.ndarray]:
    """Mean CIDEr-D (or plain CIDEr with clipped=False) and per-image scores (N,)."""
    n_img, n, g = c.n_images, c.n, max(c.n_grams, 1)
    if n_img == 0:
        return 0.0, np.zeros(0)
    h, r = c.hyp, c.ref  # entry slices: hypotheses first, then references
    # Document frequency: images whose references contain the n-gram.
    df = np.bincount(c.ref_image_grams % g, minlength=g).astype(np.float64)  # (G,)
    ref_len = np.log(float(n_img))
    idf = ref_len - np.log(np.maximum(1.0, df))  # (G,)
    weight = c.count * idf[c.gram]  # (E,) tf-idf
    order = c.gram_order[c.gram]  # (E,)
    norm = np.sqrt(np.bincount(c.sent * n + order, weights=weight**2, minlength=c.n_sentences * n)).reshape(
        -1, n
    )  # (S, n)
    # Hypothesis weight of each reference entry's n-gram (0 when the hypothesis lacks it).
    h_keys = c.sent[h] * g + c.gram[h]  # sorted: entries are sorted by (sent, gram)
    v_hyp = lookup(h_keys, weight[h], c.ref_keys, 0.0)  # (Er,)
    v_ref = weight[r]
    prod = (np.minimum(v_hyp, v_ref) if clipped else v_hyp) * v_ref  # (Er,)
    r_local = c.sent[r] - n_img  # (Er,) reference index
    n_ref_total = c.n_sentences - n_img
    dot = np.bincount(r_local * n + order[r], weights=prod, minlength=n_ref_total * n)
    dot = dot.reshape(-1, n)  # (R, n)
    nh, nr = norm[c.ref_image], norm[n_img:]  # (R, n) each
    both = (nh != 0) & (nr != 0)
    val = np.where(both, dot / np.where(both, nh * nr, 1.0), dot)  # (R, n)
    if clipped:
        bigrams = np.maximum(c.lengths - 1, 0).astype(np.float64)  # the reference code's "length"
        delta = bigrams[c.ref_image] - bigrams[n_img:]  # (R,)
        val = val * np.e ** (-(delta**2) / (2 * sigma**2))[:, None]
    starts = np.r_[0, np.cumsum(c.n_refs)[:-1]]  # references are grouped by image, every image has one
    summed = np.add.reduceat(val, starts, axis=0)  # (N, n) Σ over references (np.add.at is ~10× slower)
    scores = summed.mean(axis=1) / c.n_refs * 10.0  # (N,)
    return float(np.mean(scores)), scores


def cider_d(
    hyps: Sequence[Sequence[str]],
    refs: Sequence[Sequence[Sequence[str]]],
    sigma: float = SIGMA,
) -> tuple[float, np.ndarray]:
    """Mean CIDEr-D and per-image scores of tokenised hypotheses, idf from these references."""
    return cider_from_corpus(encode(hyps, refs, 4), sigma=sigma, clipped=True)


def cider(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> tuple[float, np.ndarray]:
    """pycocoevalcap's "CIDEr" — identical to :func:`cider_d` (its scorer is CIDEr-D)."""
    return cider_d(hyps, refs)


def cider_plain(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> tuple[float, np.ndarray]:
    """Original CIDEr (no clipping, no length penalty); not what papers report as CIDEr."""
    return cider_from_corpus(encode(hyps, refs, 4), clipped=False)
