"""ROUGE-L exactly as pycocoevalcap's ``Rouge`` (β = 1.2), with a vectorised LCS.

Per image: ``P = max_r LCS(h, r)/|h|`` and ``R = max_r LCS(h, r)/|r|`` (each maximised over
the references *separately*), ``F = (1 + β²)·P·R / (R + β²·P)`` (0 when P or R is 0); the
set's score is the mean over images. Like pycocoevalcap (which splits on ``" "``), an
empty caption counts as one empty token, so an empty hypothesis matches an empty reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jointcap.metrics.ngrams import NgramCorpus, encode

__all__ = ["rouge_l", "rouge_l_from_corpus", "lcs_lengths"]

BETA = 1.2
_CHUNK = 8192  # pairs scored together; bounds the DP buffers to a few MB


def lcs_lengths(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """LCS length of each row pair: a (P, La) and b (P, Lb) padded with ids that never match.

    Uses L[i][j] = max(L[i-1][j], L[i][j-1], L[i-1][j-1] + [a_i == b_j]) (equal to the
    textbook recurrence), so each row is one running maximum along j.
    """
    n_pairs, la = a.shape
    lb = b.shape[1]
    bt = np.ascontiguousarray(b.T)  # (Lb, P)
    prev = np.zeros((lb + 1, n_pairs), dtype=np.int16)  # (Lb+1, P)
    for i in range(la):
        eq = bt == a[:, i]  # (Lb, P)
        t = np.maximum(prev[1:], prev[:-1] + eq)  # (Lb, P)
        cur = np.empty_like(prev)
        cur[0] = 0
        np.maximum.accumulate(t, axis=0, out=cur[1:])
        prev = cur
    return prev[lb].astype(np.int64)


def _padded(c: NgramCorpus, sents: np.ndarray, width: int, pad: int, empty: int) -> np.ndarray:
    """Word ids of sentences (P,) as (P, width), padded with `pad`; empty → one `empty` token."""
    cols = np.arange(width)  # (width,)
    lens = c.lengths[sents][:, None]  # (P, 1)
    pos = np.minimum(c.offsets[sents][:, None] + cols, max(c.words.shape[0] - 1, 0))
    toks = c.words[pos] if c.words.shape[0] else np.zeros(pos.shape, np.int64)
    out = np.where(cols < lens, toks, pad)  # (P, width)
    out[:, 0] = np.where(lens[:, 0] == 0, empty, out[:, 0])
    return out


def _pair_lcs(c: NgramCorpus) -> np.ndarray:
    """LCS of every (hypothesis, reference) pair; (R,) in reference order."""
    n_img = c.n_images
    ref_sent = np.arange(n_img, c.n_sentences)  # (R,)
    hyp_sent = c.ref_image  # (R,) the hypothesis of each reference's image
    eff = np.maximum(c.lengths, 1)  # (S,) empty sentence = one empty token
    order = np.lexsort((eff[hyp_sent], eff[ref_sent]))  # bucket similar lengths together
    lcs = np.zeros(ref_sent.shape[0], dtype=np.int64)
    empty = c.vocab_size  # an id no real word has
    for start in range(0, order.shape[0], _CHUNK):
        idx = order[start : start + _CHUNK]
        hs, rs = hyp_sent[idx], ref_sent[idx]
        a = _padded(c, hs, int(eff[hs].max()), -1, empty)
        b = _padded(c, rs, int(eff[rs].max()), -2, empty)
        lcs[idx] = lcs_lengths(a, b)
    return lcs


def rouge_l_from_corpus(c: NgramCorpus, beta: float = BETA) -> tuple[float, np.ndarray]:
    """Mean ROUGE-L over images and the per-image scores (N,) of an encoded corpus."""
    n_img = c.n_images
    if n_img == 0:
        return 0.0, np.zeros(0)
    lcs = _pair_lcs(c)  # (R,)
    eff = np.maximum(c.lengths, 1).astype(np.float64)
    prec = lcs / eff[c.ref_image]  # (R,)
    rec = lcs / eff[n_img:]  # (R,)
    starts = np.r_[0, np.cumsum(c.n_refs)[:-1]]
    p_max = np.maximum.reduceat(prec, starts)  # (N,)
    r_max = np.maximum.reduceat(rec, starts)  # (N,)
    ok = (p_max != 0) & (r_max != 0)
    denom = np.where(ok, r_max + beta**2 * p_max, 1.0)
    scores = np.where(ok, ((1 + beta**2) * p_max * r_max) / denom, 0.0)
    return float(np.mean(scores)), scores


def rouge_l(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> tuple[float, np.ndarray]:
    """Mean ROUGE-L and per-image scores of tokenised hypotheses against their references."""
    return rouge_l_from_corpus(encode(hyps, refs, 1))
