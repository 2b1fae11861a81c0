"""Caption scores of a whole split: a plain function and a DDP-safe torchmetrics Metric.

Both tokenise hypotheses and references with :func:`jointcap.metrics.text.tokenize` and
return pycocoevalcap-equal BLEU-1..4, ROUGE-L and CIDEr-D (also under its COCO name
``cider``), plus METEOR through pycocoevalcap's Java scorer when asked for and Java exists.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from jointcap.metrics.bleu import bleu_from_corpus
from jointcap.metrics.cider import cider_from_corpus
from jointcap.metrics.correctness import FactReader, degeneracy, fact_scores, part_repeat_share
from jointcap.metrics.ngrams import NgramCorpus, encode, encode_flat
from jointcap.metrics.rouge import rouge_l_from_corpus
from jointcap.metrics.text import tokenize, tokenize_flat, tokenize_many

__all__ = ["CaptionScores", "score_captions", "score_tokenised", "meteor_available"]

_meteor_warned = False


def meteor_available() -> bool:
    """True when pycocoevalcap's METEOR can run here (it needs ``java`` on PATH)."""
    if shutil.which("java") is None:
        return False
    try:
        import pycocoevalcap.meteor.meteor  # noqa: F401
    except ImportError:
        return False
    return True


def _warn_no_meteor() -> None:
    """Warn once per process that METEOR was requested but cannot run."""
    global _meteor_warned
    if not _meteor_warned:
        warnings.warn("METEOR requested but java/pycocoevalcap is unavailable; skipping it", stacklevel=2)
        _meteor_warned = True


def _meteor(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]]) -> float:
    """Corpus METEOR from pycocoevalcap's Java scorer (one JVM per call, a few seconds)."""
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        del scorer
    return float(score)


def _corpus_scores(corpus: NgramCorpus) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D (also as ``cider``) of an encoded corpus."""
    out = {f"bleu{k + 1}": float(v) for k, v in enumerate(bleu_from_corpus(corpus))}
    out["rouge_l"] = rouge_l_from_corpus(corpus)[0]
    out["cider_d"] = cider_from_corpus(corpus)[0]
    out["cider"] = out["cider_d"]  # pycocoevalcap's "CIDEr" is CIDEr-D (see metrics/cider.py)
    return out


_EMPTY_KEYS = ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d", "cider"]


def score_tokenised(
    hyps: Sequence[Sequence[str]],
    refs: Sequence[Sequence[Sequence[str]]],
    meteor: bool = False,
) -> dict[str, float]:
    """All caption scores of tokenised hypotheses (one per image) and their references, with the caption
    set's degeneracy (`jointcap.metrics.correctness.degeneracy`)."""
    if len(hyps) == 0:
        return {**dict.fromkeys(_EMPTY_KEYS, 0.0), **degeneracy(hyps)}
    out = _corpus_scores(encode(hyps, refs, 4))
    out.update(degeneracy(hyps))  # distinct captions, repeated n-grams, length, vocabulary
    if meteor:
        if meteor_available():
            out["meteor"] = _meteor(hyps, refs)
        else:
            _warn_no_meteor()
    return out


class _Slices(Sequence[list[str]]):
    """The hypotheses of a flat word list as a lazy sequence: each caption's list exists only while it is used."""

    def __init__(self, words: list[str], starts: list[int]) -> None:
        self.words, self.starts = words, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i):
        return self.words[self.starts[i] : self.starts[i + 1]]


def score_captions(
    hyps: Mapping[int, str], refs: Mapping[int, Sequence[str]], meteor: bool = False
) -> dict[str, float]:
    """Scores of raw captions: hyps {image: caption}, refs {image: [captions]} (keys of hyps)."""
    missing = [k for k in hyps if k not in refs]
    if missing:
        raise KeyError(f"no references for {len(missing)} images, e.g. {missing[:5]}")
    keys = list(hyps)
    if not keys:
        return {**dict.fromkeys(_EMPTY_KEYS, 0.0), **degeneracy([])}
    ref_lists = [refs[k] for k in keys]
    n_refs = np.fromiter(map(len, ref_lists), dtype=np.int64, count=len(keys))  # (N,)
    # One flat pass over hypotheses then references: no list per caption (see tokenize_flat).
    words, lengths = tokenize_flat([hyps[k] for k in keys] + [r for rs in ref_lists for r in rs])
    out = _corpus_scores(encode_flat(words, lengths, n_refs, 4))
    n = len(keys)
    starts = np.concatenate([[0], np.cumsum(lengths[:n])]).tolist()
    out.update(degeneracy(_Slices(words, starts)))
    if meteor:
        if meteor_available():
            sents, at = [], 0
            for length in lengths.tolist():
                sents.append(words[at : at + length])
                at += length
            ref_sents, at = [], n
            for m in n_refs.tolist():
                ref_sents.append(sents[at : at + m])
                at += m
            out["meteor"] = _meteor(sents[:n], ref_sents)
        else:
            _warn_no_meteor()
    return out


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A "cat" state as one tensor: a list before syncing, a tensor after."""
    if isinstance(state, Tensor):
        return state
    return dim_zero_cat(state) if state else torch.zeros(0, dtype=torch.long)


class CaptionScores(Metric):
    """BLEU-1..4 / ROUGE-L / CIDEr-D (/ METEOR), degeneracy and (with `facts`) attribute correctness over a
    split, gathered across DDP ranks.

    State is the dataset index of every sample and its generated token ids, padded with -1
    to ``max_len`` so every rank's rows have one width. ``compute()`` gathers all ranks,
    keeps the first row per index (DistributedSampler repeats samples to even the ranks
    out), decodes each row with ``decode`` (negative ids removed first), looks references
    up with ``references`` (tokenised once and cached) and scores them in index order, so
    one process and many give the same numbers. Every rank computes the full result
    (with METEOR, every rank starts its own JVM).

    Call ``update()`` rather than ``forward()`` (which would score each batch on its own).
    Under ``ddp_spawn`` the metric is pickled, so ``decode`` and ``references`` must be
    picklable: module-level functions or methods of picklable objects, not lambdas.
    """

    indices: list[Tensor]  # list states, declared for the type checker
    tokens: list[Tensor]

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        references: Callable[[int], Sequence[str]],
        max_len: int,
        meteor: bool = False,
        facts: Callable[[int], tuple[Sequence[str], Sequence[str]]] | None = None,
        reader: FactReader | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.facts, self.reader = facts, reader  # (true facts, class-defining facts) of a dataset index
        self.decode = decode
        self.references = references
        self.max_len = int(max_len)
        self.meteor = bool(meteor)
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("tokens", default=[], dist_reduce_fx="cat")
        self._ref_tokens: dict[int, list[list[str]]] = {}
        self.last_predictions: dict[int, str] = {}
        if self.meteor and not meteor_available():
            _warn_no_meteor()

    def update(self, indices: Tensor, tokens: Tensor) -> None:
        """Record generated token ids (B, T≤max_len) for dataset indices (B,)."""
        if tokens.ndim != 2 or indices.ndim != 1 or tokens.shape[0] != indices.shape[0]:
            raise ValueError(f"want indices (B,) and tokens (B, T); got {indices.shape}, {tokens.shape}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"captions of {tokens.shape[1]} tokens exceed max_len={self.max_len}")
        padded = torch.full((tokens.shape[0], self.max_len), -1, dtype=torch.long, device=tokens.device)  # (B, max_len)
        padded[:, : tokens.shape[1]] = tokens.long()
        self.indices.append(indices.detach().long())
        self.tokens.append(padded)

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """Give a rank without data one sentinel row first: torchmetrics would send floats."""
        if len(self.indices) == 0:
            self.indices.append(torch.full((1,), -1, dtype=torch.long, device=self.device))
            self.tokens.append(torch.full((1, self.max_len), -1, dtype=torch.long, device=self.device))
        super().sync(*args, **kwargs)

    def _ref(self, index: int) -> list[list[str]]:
        """Tokenised references of one dataset index, cached."""
        if index not in self._ref_tokens:
            self._ref_tokens[index] = [tokenize(r) for r in self.references(index)]
        return self._ref_tokens[index]

    def compute(self) -> dict[str, Tensor]:
        """Scores of the unique gathered samples, as float64 scalar tensors."""
        idx = _cat(self.indices).reshape(-1).cpu().numpy()  # (M,)
        tok = _cat(self.tokens).reshape(idx.shape[0], -1).cpu().numpy()  # (M, max_len)
        keep = idx >= 0  # drop the sentinels of empty ranks
        idx, tok = idx[keep], tok[keep]
        uniq, first = np.unique(idx, return_index=True)  # first row per index, index order
        preds = {int(i): self.decode([int(t) for t in tok[r] if t >= 0]) for i, r in zip(uniq, first, strict=False)}
        self.last_predictions = preds
        hyps = tokenize_many(list(preds.values()))
        scores = score_tokenised(hyps, [self._ref(i) for i in preds], meteor=self.meteor)
        if self.facts is not None and self.reader is not None:
            truth = [self.facts(i) for i in preds]
            scores.update(
                fact_scores(
                    [self.reader.read(h) for h in hyps], [t[0] for t in truth], [t[1] for t in truth], self.reader
                )
            )
        if self.reader is not None:
            scores["rep_part"] = part_repeat_share(hyps, self.reader)  # synonym loops that rep3 misses
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in scores.items()}
