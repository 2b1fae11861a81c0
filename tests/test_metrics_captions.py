"""Caption metrics: hand-made cases, equality with pycocoevalcap, and DDP gathering."""

from __future__ import annotations

import gc
import json
import math
import random
import shutil
import time
import warnings
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from jointcap.metrics import caption_metric
from jointcap.metrics.bench_captions import synthetic_captions
from jointcap.metrics.bleu import bleu
from jointcap.metrics.caption_metric import CaptionScores, score_captions, score_tokenised
from jointcap.metrics.cider import cider, cider_d, cider_plain
from jointcap.metrics.ngrams import encode, encode_flat
from jointcap.metrics.rouge import lcs_lengths, rouge_l
from jointcap.metrics.text import tokenize, tokenize_flat, tokenize_many

pycoco_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
pycoco_rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")
pycoco_cider = pytest.importorskip("pycocoevalcap.cider.cider")

HAS_JAVA = shutil.which("java") is not None
VOCAB = "a the bird has white black wings belly small red beak long tail with and is this".split()


def _random_set(n: int, seed: int, max_len: int = 14, max_refs: int = 6):
    """Seeded tokenised hypotheses and references from a small vocabulary (empties included)."""
    rng = random.Random(seed)
    sent = lambda: [rng.choice(VOCAB) for _ in range(rng.randint(0, max_len))]  # noqa: E731
    hyps = [sent() for _ in range(n)]
    refs = [[sent() for _ in range(rng.randint(1, max_refs))] for _ in range(n)]
    # A few hypotheses copied from a reference, so high-order matches exist too.
    for i in range(0, n, 7):
        hyps[i] = list(refs[i][0])
    return hyps, refs


def _coco(hyps, refs):
    """pycocoevalcap's input dicts from tokenised lists."""
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    return gts, res


# ----------------------------------------------------------------- reference-code oracles
# Faithful Python 3 ports of vrama91/cider's pyciderevalcap/ciderD/ciderD_scorer.py
# (df_mode="corpus") and pyciderevalcap/cider/cider_scorer.py (original CIDEr): per-sentence
# n-gram dictionaries, loops over references, exactly their arithmetic.


def _ngram_counts(words: list[str], n: int = 4) -> dict[tuple, int]:
    counts: dict[tuple, int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _oracle_cider(hyps, refs, d_variant: bool, n: int = 4, sigma: float = 6.0) -> np.ndarray:
    crefs = [[_ngram_counts(r, n) for r in rs] for rs in refs]
    ctest = [_ngram_counts(h, n) for h in hyps]
    df: dict[tuple, float] = defaultdict(float)
    for rs in crefs:
        for ng in {ng for r in rs for ng in r}:
            df[ng] += 1
    ref_len = np.log(float(len(crefs)))

    def vec(cnts):
        v: list[defaultdict[tuple[str, ...], float]] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for ng, tf in cnts.items():
            k = len(ng) - 1
            v[k][ng] = float(tf) * (ref_len - np.log(max(1.0, df[ng])))
            norm[k] += v[k][ng] ** 2
            if k == 1:  # the reference code's "length": bigram occurrences
                length += tf
        return v, [np.sqrt(x) for x in norm], length

    def sim(vh, vr, nh, nr, lh, lr):
        delta = float(lh - lr)
        val = np.zeros(n)
        for k in range(n):
            for ng in vh[k]:
                if d_variant:
                    val[k] += min(vh[k][ng], vr[k][ng]) * vr[k][ng]
                else:
                    val[k] += vh[k][ng] * vr[k][ng]
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            if d_variant:
                val[k] *= np.e ** (-(delta**2) / (2 * sigma**2))
        return val

    scores = []
    for test, rs in zip(ctest, crefs, strict=False):
        vh, nh, lh = vec(test)
        total = np.zeros(n)
        for r in rs:
            vr, nr, lr = vec(r)
            total += sim(vh, vr, nh, nr, lh, lr)
        scores.append(np.mean(total) / len(rs) * 10.0)
    return np.array(scores)


# ----------------------------------------------------------------- tokenisation


def test_tokenize_hand_cases():
    assert tokenize("This bird has a white belly, and a black crown.") == (
        "this bird has a white belly and a black crown".split()
    )
    assert tokenize("The bird's wings aren't grey-brown!") == (
        ["the", "bird", "'s", "wings", "are", "n't", "grey-brown"]
    )
    assert tokenize("a 2.5 inch bill -- (short) ...") == ["a", "2.5", "inch", "bill", "short"]
    assert tokenize("") == []
    assert tokenize_many(["A b.", "c  d", ""]) == [["a", "b"], ["c", "d"], []]
    assert tokenize_many(["plain words", "two\nlines"]) == [["plain", "words"], ["two", "lines"]]


PTB_CASES = [
    "This bird has a white belly, and a black crown.",
    "The bird's wings are grey-brown; its beak is short!",
    "a small bird with a yellow-green back and a pointy bill...",
    "This flower's petals aren't yellow? They're PINK & white: really \"nice\".",
    "it has a 2.5 inch wingspan -- quite small",
    "the bird is 'cute' and `odd` e.g. a bird. u.s. birds",
    "I can't won't don't she'll we've I'd I'm",
    "a bird / with slash, 50% orange #1 $5",
    "The petals are white,with yellow stamen.",
    "A flower with 1,000 petals at 4:30 o'clock",
    "birds' wings",
    "Medium-sized bird, with a short, pointed bill.",
    "the flower is pink...and white",
]


@pytest.mark.skipif(not HAS_JAVA, reason="pycocoevalcap's PTBTokenizer needs java")
def test_tokenize_matches_pycocoevalcap_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(PTB_CASES)})
    for i, s in enumerate(PTB_CASES):
        assert " ".join(tokenize(s)) == out[i][0], s


# ----------------------------------------------------------------- hand-made scores


def test_identical_captions_score_one_and_disjoint_zero():
    refs = [
        [["a", "small", "red", "bird", "with", "black", "wings"]] * 3,
        [["the", "bird", "is", "tiny", "and", "blue"]] * 2,
    ]
    hyps = [refs[0][0], refs[1][0]]
    assert bleu(hyps, refs) == pytest.approx([1.0] * 4, abs=1e-9)
    assert rouge_l(hyps, refs)[0] == pytest.approx(1.0)
    # Two images, disjoint words, hypothesis == every reference: every n-gram has idf log 2,
    # all cosines are 1 and no length penalty applies, so CIDEr-D is exactly 10.
    assert cider_d(hyps, refs)[1] == pytest.approx([10.0, 10.0])
    other = [["zz", "yy", "xx", "ww"], ["vv", "uu", "tt"]]
    assert max(bleu(other, refs)) < 1e-6
    assert rouge_l(other, refs)[0] == 0.0
    assert cider_d(other, refs)[0] == 0.0


def test_single_image_cider_is_zero():
    # idf = log(N) − log(df) = 0 for a one-image set: the reference formula gives 0.
    assert cider_d([["a", "bird"]], [[["a", "bird"]]])[0] == 0.0


def test_rouge_hand_computed():
    # LCS("a b c d", "a c d e f") = 3 → P = 3/4, R = 3/5, F = 2.44·P·R / (R + 1.44·P).
    p, r = 3 / 4, 3 / 5
    expect = (1 + 1.2**2) * p * r / (r + 1.2**2 * p)
    assert rouge_l([list("abcd")], [[list("acdef")]])[0] == pytest.approx(expect, abs=1e-12)
    # P and R are maximised over references separately.
    hyp, refs = list("abcd"), [list("ab"), list("abcdxxxxxxxx")]
    p, r = max(2 / 4, 4 / 4), max(2 / 2, 4 / 12)
    assert rouge_l([hyp], [refs])[0] == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))


def test_lcs_lengths_against_python_dp():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(200, 9))
    b = rng.integers(0, 4, size=(200, 13))

    def dp(x, y):
        t = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
        for i in range(1, len(x) + 1):
            for j in range(1, len(y) + 1):
                t[i][j] = t[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(t[i - 1][j], t[i][j - 1])
        return t[-1][-1]

    assert lcs_lengths(a, b).tolist() == [dp(list(x), list(y)) for x, y in zip(a, b, strict=False)]


def test_bleu_hand_computed_brevity_penalty():
    # hyp 3 words, refs of 2 and 5 words: closest length is 2 (|3-2| < |3-5|), so no penalty.
    hyps, refs = [["a", "b", "c"]], [[["a", "b"], ["a", "b", "c", "d", "e"]]]
    b1 = bleu(hyps, refs, n=1)[0]
    assert b1 == pytest.approx(1.0, abs=1e-9)
    # hyp 2 words, refs of 1 and 3 words: a tie, which goes to the shorter (1): no penalty
    # (the longer would give exp(1 - 3/2)).
    assert bleu([["a", "b"]], [[["a"], ["a", "b", "c"]]], n=1)[0] == pytest.approx(1.0, abs=1e-9)
    # hyp of 1 word against a 4-word reference: BP = exp(1 - 4/1).
    b1 = bleu([["a"]], [[["a", "b", "c", "d"]]], n=1)[0]
    assert b1 == pytest.approx(math.exp(1 - 4 / 1), rel=1e-6)


# ----------------------------------------------------------------- equality with pycocoevalcap


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_rouge_cider_equal_pycocoevalcap(seed):
    hyps, refs = _random_set(300, seed)
    gts, res = _coco(hyps, refs)
    b, _ = pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    assert np.allclose(bleu(hyps, refs), b, atol=1e-6, rtol=0)
    r, r_img = pycoco_rouge.Rouge().compute_score(gts, res)
    ours, ours_img = rouge_l(hyps, refs)
    assert abs(ours - r) < 1e-6 and np.allclose(ours_img, r_img, atol=1e-6)
    c, c_img = pycoco_cider.Cider().compute_score(gts, res)
    ours, ours_img = cider_d(hyps, refs)
    assert abs(ours - c) < 1e-6 and np.allclose(ours_img, c_img, atol=1e-6)
    assert cider(hyps, refs)[0] == ours


def test_cider_d_and_plain_equal_vrama91_ports():
    hyps, refs = _random_set(150, 3)
    oracle_d = _oracle_cider(hyps, refs, d_variant=True)
    oracle_plain = _oracle_cider(hyps, refs, d_variant=False)
    assert np.allclose(cider_d(hyps, refs)[1], oracle_d, atol=1e-6)
    assert np.allclose(cider_plain(hyps, refs)[1], oracle_plain, atol=1e-6)
    # pycocoevalcap 1.2's Cider is the CIDEr-D scorer:
    gts, res = _coco(hyps, refs)
    assert np.allclose(pycoco_cider.Cider().compute_score(gts, res)[1], oracle_d, atol=1e-12)
    # and the two variants really differ on this set.
    assert not np.allclose(oracle_d, oracle_plain, atol=1e-3)


def test_score_captions_tokenises_raw_text():
    hyps = {3: "A small RED bird.", 7: "the bird, is blue!"}
    refs = {3: ["a small red bird", "A red bird"], 7: ["The bird is blue.", "a blue bird"], 9: ["x"]}
    out = score_captions(hyps, refs)
    assert set(out) == {
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "rouge_l",
        "cider_d",
        "cider",
        "distinct_captions",
        "rep2",
        "rep3",
        "mean_len",
        "vocab_used",
    }
    clean = score_captions({3: "a small red bird", 7: "the bird is blue"}, refs)
    assert out == clean
    with pytest.raises(KeyError):
        score_captions({1: "a"}, refs)


def test_tokenize_flat_equals_tokenize_per_caption():
    cases = [
        ["plain words", "", "  two   spaces ", "x"],
        ["A b.", "c  d", ""],
        ["plain words", "two\nlines"],
        [],
        PTB_CASES,
        ["ONLY UPPER CASE", "mixed Case 42"],
    ]
    for caps in cases:
        words, lengths = tokenize_flat(caps)
        per = [tokenize(c) for c in caps] if not any("\n" in c for c in caps) else tokenize_many(caps)
        assert lengths.tolist() == [len(t) for t in per] and words == [w for t in per for w in t], caps


def test_encode_flat_equals_encode_and_names_a_mismatch():
    hyps, refs = _random_set(60, 4)
    nested = encode(hyps, refs, 4)
    sents = list(hyps) + [r for rs in refs for r in rs]
    flat = encode_flat([w for s in sents for w in s], [len(s) for s in sents], [len(rs) for rs in refs], 4)
    for name in ("lengths", "words", "sent", "gram", "count", "gram_order", "ref_image", "n_refs"):
        assert np.array_equal(getattr(flat, name), getattr(nested, name)), name
    with pytest.raises(ValueError, match="sentence lengths"):
        encode_flat(["a", "b"], [1, 2], [1], 4)


def test_score_captions_of_raw_strings_equal_pycocoevalcap_and_the_nested_path():
    """The flat fast path (bench row 5's input) gives pycocoevalcap's values and score_tokenised's, exactly."""
    hyps, refs = synthetic_captions(400, 5, seed=2)
    hyps[5], refs[9][0] = "", ""  # empty captions take part too
    gts, res = {i: list(refs[i]) for i in hyps}, {i: [hyps[i]] for i in hyps}
    ours = score_captions(hyps, refs)
    theirs = [
        *pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)[0],
        pycoco_rouge.Rouge().compute_score(gts, res)[0],
        pycoco_cider.Cider().compute_score(gts, res)[0],
    ]
    for key, value in zip(("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d"), theirs, strict=False):
        assert abs(ours[key] - value) < 1e-9, key
    nested = score_tokenised([tokenize(hyps[i]) for i in hyps], [[tokenize(r) for r in refs[i]] for i in hyps])
    assert ours == nested


def test_score_captions_builds_no_list_per_caption():
    """66,000 small lists cost a full garbage collection (a third of the time): the fast path triggers none."""
    hyps, refs = synthetic_captions(2000, 10)
    starts = []
    callback = lambda phase, info: starts.append(info["generation"]) if phase == "start" else None  # noqa: E731
    gc.collect()
    gc.callbacks.append(callback)
    try:
        score_captions(hyps, refs)
    finally:
        gc.callbacks.remove(callback)
    assert len(starts) <= 2, starts  # the per-caption lists of 22,000 captions made ~30


def test_meteor_skipped_with_warning_without_java(monkeypatch):
    monkeypatch.setattr(caption_metric.shutil, "which", lambda _: None)
    monkeypatch.setattr(caption_metric, "_meteor_warned", False)
    with pytest.warns(UserWarning, match="METEOR"):
        out = score_captions({0: "a bird"}, {0: ["a bird"]}, meteor=True)
    assert "meteor" not in out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAVA, reason="METEOR needs java")
def test_meteor_with_java():
    out = score_captions(
        {0: "a small red bird", 1: "zz yy"}, {0: ["a small red bird"], 1: ["a blue bird"]}, meteor=True
    )
    assert 0.0 < out["meteor"] < 1.0


# ----------------------------------------------------------------- CaptionScores metric

DATA_RNG = random.Random(42)
N_ITEMS = 11
# Token ids index VOCAB; dataset item i has these references and a "generated" caption.
REFS = {
    i: [" ".join(DATA_RNG.choice(VOCAB) for _ in range(DATA_RNG.randint(2, 9))) + "." for _ in range(3)]
    for i in range(N_ITEMS)
}
GEN = {i: [DATA_RNG.randrange(len(VOCAB)) for _ in range(DATA_RNG.randint(1, 8))] for i in range(N_ITEMS)}
MAX_LEN = 8


def _decode(ids: list[int]) -> str:
    return " ".join(VOCAB[i] for i in ids)


def _references(i: int) -> list[str]:
    return REFS[i]


def _feed(metric: CaptionScores, indices: list[int], batch: int = 2) -> None:
    """Update in batches, each padded (with -1) only to its own longest caption."""
    for s in range(0, len(indices), batch):
        idx = indices[s : s + batch]
        width = max(len(GEN[i]) for i in idx)
        tok = torch.full((len(idx), width), -1, dtype=torch.long)
        for r, i in enumerate(idx):
            tok[r, : len(GEN[i])] = torch.tensor(GEN[i])
        metric.update(torch.tensor(idx), tok)


def _expected() -> dict[str, float]:
    return score_captions({i: _decode(GEN[i]) for i in range(N_ITEMS)}, REFS)


def test_caption_scores_single_process_drops_duplicates():
    m = CaptionScores(_decode, _references, max_len=MAX_LEN)
    _feed(m, [5, 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 0, 1])  # sampler-style repeats at the end
    out = m.compute()
    exp = _expected()
    assert set(out) == set(exp)
    for k, v in exp.items():
        assert out[k].item() == pytest.approx(v, abs=1e-12)
    assert m.last_predictions == {i: _decode(GEN[i]) for i in range(N_ITEMS)}
    with pytest.raises(ValueError):
        m.update(torch.tensor([0]), torch.zeros(1, MAX_LEN + 1, dtype=torch.long))


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One gloo rank: feed a DistributedSampler's share, compute, write the result."""
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        sampler: DistributedSampler[int] = DistributedSampler(
            cast(Any, range(N_ITEMS)), num_replicas=world, rank=rank, shuffle=False
        )  # a sized range is all the sampler needs
        m = CaptionScores(_decode, _references, max_len=MAX_LEN)
        _feed(m, list(sampler), batch=2 + rank)  # ranks use different widths and batch sizes
        full = {k: v.item() for k, v in m.compute().items()}
        # A rank that saw nothing must still take part in the gather.
        lonely = CaptionScores(_decode, _references, max_len=MAX_LEN)
        if rank == 0:
            _feed(lonely, list(range(N_ITEMS)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            part = {k: v.item() for k, v in lonely.compute().items()}
        preds = {str(k): v for k, v in m.last_predictions.items()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"full": full, "lonely": part, "preds": preds}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_caption_scores_ddp_two_ranks_equal_one(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("DDP workers timed out")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    exp = _expected()
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for k, v in exp.items():
            assert got["full"][k] == pytest.approx(v, abs=1e-12), (rank, k)
            assert got["lonely"][k] == pytest.approx(v, abs=1e-12), (rank, k)
        assert got["preds"] == {str(i): _decode(GEN[i]) for i in range(N_ITEMS)}
