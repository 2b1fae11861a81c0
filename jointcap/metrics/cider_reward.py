"""CIDEr-D of sampled captions against their training references: the reward of self-critical training.

Same formula as `jointcap.metrics.cider` (pycocoevalcap's CIDEr-D: clipped TF-IDF n-gram cosine, n = 1..4,
Gaussian length penalty on the bigram count, ×10), but on token ids and with the document frequencies of
the whole training corpus fixed once, as SCST implementations do (Rennie et al. 2017; Luo 2020): a
batch's reward must not depend on which images share the batch. References are vectorised lazily and
cached per training image.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from jointcap.metrics.cider import SIGMA

_N = 4
Vec = tuple[dict[tuple[int, ...], float], float]  # n-gram → tf-idf weight, and the vector's norm


def _ngrams(seq: Sequence[int], n: int) -> Counter:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


class CiderReward:
    """Per-caption CIDEr-D of token-id captions against the references of training images."""

    def __init__(self, references: np.ndarray, pad_id: int, bos_id: int, eos_id: int, sigma: float = SIGMA) -> None:
        # references (N, C, T) token ids as the data module stores them (BOS … EOS pad…)
        self.specials = (pad_id, bos_id, eos_id)
        self.eos_id, self.sigma = eos_id, sigma
        self.refs = references
        self._cache: dict[int, list[tuple[list[Vec], int]]] = {}
        df: Counter = Counter()
        for caps in references:
            seen: set[tuple[int, ...]] = set()
            for row in caps:
                words = self.words(row)
                for n in range(1, _N + 1):
                    seen.update(_ngrams(words, n))
            df.update(seen)
        self.df = df
        self.log_n = math.log(float(len(references)))

    def words(self, row: Sequence[int]) -> list[int]:
        """The caption's ids up to EOS, specials dropped."""
        out = []
        for t in row:
            t = int(t)
            if t == self.eos_id:
                break
            if t not in self.specials:
                out.append(t)
        return out

    def _vec(self, words: list[int]) -> list[Vec]:
        out = []
        for n in range(1, _N + 1):
            w = {g: c * (self.log_n - math.log(max(1.0, self.df.get(g, 0.0)))) for g, c in _ngrams(words, n).items()}
            out.append((w, math.sqrt(sum(v * v for v in w.values()))))
        return out

    def _references(self, image: int) -> list[tuple[list[Vec], int]]:
        if image not in self._cache:
            caps = [self.words(row) for row in self.refs[image]]
            self._cache[image] = [(self._vec(w), max(len(w) - 1, 0)) for w in caps if w]
        return self._cache[image]

    def score(self, hyp: Sequence[int], image: int) -> float:
        """CIDEr-D of one caption (token ids) against training image `image`'s references."""
        words = self.words(hyp)
        hv, hlen = self._vec(words), max(len(words) - 1, 0)
        refs = self._references(image)
        total = 0.0
        for rv, rlen in refs:
            penalty = math.exp(-((hlen - rlen) ** 2) / (2 * self.sigma**2))
            for (h, hn), (r, rn) in zip(hv, rv, strict=False):
                dot = sum(min(v, r[g]) * r[g] for g, v in h.items() if g in r)
                total += (dot / (hn * rn) if hn and rn else dot) * penalty
        return 10.0 * total / _N / max(1, len(refs))

    def __call__(self, hyps: np.ndarray, images: Sequence[int]) -> np.ndarray:
        """Rewards (M,) of captions hyps (M, T) for training images (M,)."""
        return np.array([self.score(h, int(i)) for h, i in zip(hyps, images, strict=True)])
