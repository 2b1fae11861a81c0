"""Reference points for caption scores: the best single caption said of every image, one reference against
the others, a class template; what a model's scores are read against in the run's table and report.html."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from jointcap.metrics.caption_metric import score_tokenised
from jointcap.metrics.correctness import FactReader, fact_scores
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


def class_template(attributes: dict[str, str]) -> str | None:
    """The synthetic birds' class template ("this bird has <wing> <pattern> wings and a <head> head"), or None
    for data whose class attributes are not head, wing and pattern (it names the class and nothing else)."""
    if not {"head", "wing", "pattern"} <= set(attributes):
        return None
    return f"this bird has {attributes['wing']} {attributes['pattern']} wings and a {attributes['head']} head"


def reference_points(
    train_captions: Sequence[Sequence[str]],
    references: Sequence[Sequence[str]],
    templates: Sequence[str] | None = None,
    facts: tuple[Sequence[Sequence[str]], Sequence[Sequence[str]]] | None = None,
    reader: FactReader | None = None,
    top: int = 30,
) -> dict[str, dict[str, float]]:
    """Caption scores a reader can hold a model's against, on the same images and scorer.

    * `constant caption`: the best of the `top` most frequent training captions, said of every image;
    * `one reference vs nine`: each image's first reference scored against its others (a human-like level);
    * `class template`: `templates` (one caption per image naming its true class), when given.
    Each with the overlap scores, the degeneracy and, with `facts` (true, class-defining) and a `reader`,
    the correctness scores.
    """

    def scores(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
        toks = [tokenize(h) for h in hyps]
        out = score_tokenised(toks, [[tokenize(r) for r in rs] for rs in refs])
        if facts is not None and reader is not None:
            out.update(fact_scores([reader.read(t) for t in toks], facts[0], facts[1], reader))
        return out

    points: dict[str, dict[str, float]] = {}
    candidates = frequent_captions(train_captions, top=top)
    if candidates and references:
        constant, _ = best_constant_caption(candidates, references)
        points["constant"] = scores([constant] * len(references), references)
    if references and all(len(r) > 1 for r in references):
        n_others = min(len(r) for r in references) - 1
        points[f"1 ref vs {n_others}"] = scores([r[0] for r in references], [r[1:] for r in references])
    if templates is not None and len(templates) == len(references):
        points["template"] = scores(templates, references)
    return points
