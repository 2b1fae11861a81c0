"""Reference points for caption scores: the best single caption said of every image."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from jointcap.metrics.caption_metric import score_tokenised
from jointcap.metrics.text import tokenize


def frequent_captions(captions: Sequence[Sequence[str]], top: int = 300) -> list[str]:
    """The `top` most frequent (tokenised-identical) training captions, as candidates."""
    counts = Counter(" ".join(tokenize(c)) for caps in captions for c in caps)
    return [c for c, _ in counts.most_common(top)]


def best_constant_caption(
    candidates: Sequence[str], references: Sequence[Sequence[str]], metric: str = "cider_d"
) -> tuple[str, dict[str, float]]:
    """The candidate that, said of every image, scores best on `metric`; with all its scores."""
    refs = [[tokenize(r) for r in rs] for rs in references]
    best: tuple[str, dict[str, float]] | None = None
    for cand in candidates:
        hyp = tokenize(cand)
        scores = score_tokenised([hyp] * len(refs), refs)
        if best is None or scores[metric] > best[1][metric]:
            best = (cand, scores)
    if best is None:
        raise ValueError("no candidate captions")
    return best
