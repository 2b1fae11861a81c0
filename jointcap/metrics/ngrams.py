"""Integer n-gram counts of a scored caption set, computed once and shared by BLEU and CIDEr.

Every word and every n-gram (n = 1..4) gets an integer id, so the metrics become sorts,
searches and bincounts over flat arrays instead of Python dictionaries per sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import numpy as np

__all__ = ["NgramCorpus", "encode", "encode_flat", "sorted_unique", "group_max", "lookup"]


@dataclass(frozen=True)
class NgramCorpus:
    """N hypotheses (one per image) and their references as integer arrays.

    Sentences are numbered hypotheses first (0..N-1), then the references (N..N+R-1),
    grouped by image in image order.
    """

    n_images: int  # N
    n: int  # highest n-gram order
    ref_image: np.ndarray  # (R,) image of each reference
    n_refs: np.ndarray  # (N,) references per image
    lengths: np.ndarray  # (N+R,) words per sentence
    words: np.ndarray  # (W,) word ids of all sentences, concatenated
    offsets: np.ndarray  # (N+R+1,) start of each sentence in `words`
    sent: np.ndarray  # (E,) sentence of each (sentence, n-gram) count entry, ascending
    gram: np.ndarray  # (E,) n-gram id of the entry (ascending within a sentence)
    count: np.ndarray  # (E,) occurrences of the n-gram in the sentence
    gram_order: np.ndarray  # (G,) n-1 for each n-gram id
    vocab_size: int  # V; word ids are 0..V-1

    @cached_property
    def hyp(self) -> slice:
        """Entries of the hypotheses: a prefix, since entries are sorted by sentence."""
        return slice(0, int(np.searchsorted(self.sent, self.n_images)))

    @cached_property
    def ref(self) -> slice:
        """Entries of the references: the rest."""
        return slice(self.hyp.stop, self.sent.shape[0])

    @cached_property
    def ref_keys(self) -> np.ndarray:
        """(Er,) key image·G + gram of each reference entry, in entry order."""
        r = self.ref
        return self.ref_image[self.sent[r] - self.n_images] * max(self.n_grams, 1) + self.gram[r]

    @cached_property
    def ref_image_grams(self) -> np.ndarray:
        """Sorted distinct keys image·G + gram of the n-grams some reference of the image has."""
        return sorted_unique(self.ref_keys)

    @property
    def n_grams(self) -> int:
        """Number of distinct n-grams G."""
        return int(self.gram_order.shape[0])

    @property
    def n_sentences(self) -> int:
        """N + R."""
        return int(self.lengths.shape[0])


def _word_ids(flat: Sequence[str]) -> tuple[np.ndarray, int]:
    """Map words to dense ids in order of first appearance; returns (ids (W,), vocabulary size)."""
    vocab = {w: i for i, w in enumerate(dict.fromkeys(flat))}
    ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
    return ids, len(vocab)


def _gram_ids(
    words: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, n: int, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ids of every n-gram occurrence; returns (sentence (O,), gram id (O,), order (G,)).

    The k-gram at position p is identified by (id of the (k-1)-gram at p, word p+k-1),
    re-densified with np.unique at each order, so keys never overflow int64.
    """
    n_words = words.shape[0]
    sent_of_pos = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)  # (W,)
    room = lengths[sent_of_pos] - (np.arange(n_words) - offsets[:-1][sent_of_pos])  # (W,) words left
    prev = words.copy()  # (W,) id of the k-gram starting at each position (k = 1 here)
    out_sent, out_gram, orders = [], [], []
    base = 0
    for k in range(1, n + 1):
        valid = room >= k  # (W,)
        pos = np.flatnonzero(valid)
        if k == 1:  # word ids are already dense
            n_uniq, inv = vocab_size, words
        else:
            key = prev[pos] * vocab_size + words[pos + k - 1]
            uniq, inv = np.unique(key, return_inverse=True)
            n_uniq = uniq.shape[0]
            prev = np.full(n_words, -1, dtype=np.int64)
            prev[pos] = inv
        out_sent.append(sent_of_pos[pos])
        out_gram.append(inv + base)
        orders.append(np.full(n_uniq, k - 1, dtype=np.int64))
        base += n_uniq
    return np.concatenate(out_sent), np.concatenate(out_gram), np.concatenate(orders)


def encode(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[Sequence[str]]], n: int = 4) -> NgramCorpus:
    """Count the 1..n-grams of tokenised hypotheses (one per image) and references."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but references for {len(refs)} images")
    n_refs = np.fromiter((len(r) for r in refs), dtype=np.int64, count=len(refs))
    sentences: list[Sequence[str]] = list(hyps) + [r for rs in refs for r in rs]
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    return encode_flat(list(chain.from_iterable(sentences)), lengths, n_refs, n)


def encode_flat(
    flat: Sequence[str], lengths: np.ndarray | Sequence[int], n_refs: np.ndarray | Sequence[int], n: int = 4
) -> NgramCorpus:
    """:func:`encode` of sentences given as one word list and their lengths (N+R,): hypotheses, then references.

    n_refs (N,) says how many references each image has, grouped by image in image order.
    """
    n_refs = np.asarray(n_refs, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if (n_refs == 0).any():
        raise ValueError("every image needs at least one reference")
    n_img = n_refs.shape[0]
    if lengths.shape[0] != n_img + int(n_refs.sum()) or int(lengths.sum()) != len(flat):
        raise ValueError(
            f"{lengths.shape[0]} sentence lengths summing to {int(lengths.sum())} do not fit "
            f"{n_img} hypotheses + {int(n_refs.sum())} references of {len(flat)} words"
        )
    words, vocab_size = _word_ids(flat)
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    occ_sent, occ_gram, gram_order = _gram_ids(words, lengths, offsets, n, vocab_size)
    g = max(int(gram_order.shape[0]), 1)
    keys, count = np.unique(occ_sent * g + occ_gram, return_counts=True)  # sorted by (sent, gram)
    return NgramCorpus(
        n_images=n_img,
        n=n,
        ref_image=np.repeat(np.arange(n_img, dtype=np.int64), n_refs),
        n_refs=n_refs,
        lengths=lengths,
        words=words,
        offsets=offsets,
        sent=keys // g,
        gram=keys % g,
        count=count.astype(np.int64),
        gram_order=gram_order,
        vocab_size=vocab_size,
    )


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique's hash path is slow on large int64 arrays)."""
    s = np.sort(x)
    return s[np.r_[True, s[1:] != s[:-1]]] if s.shape[0] else s


def group_max(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max of `values` per distinct key; returns (sorted unique keys (U,), maxima (U,))."""
    if keys.shape[0] == 0:
        return keys, values
    order = np.argsort(keys, kind="stable")
    ks, vs = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    return ks[starts], np.maximum.reduceat(vs, starts)


def lookup(table_keys: np.ndarray, table_values: np.ndarray, keys: np.ndarray, missing: float = 0) -> np.ndarray:
    """Values of `keys` in a sorted key table, `missing` where absent; shape of `keys`."""
    if table_keys.shape[0] == 0:
        return np.full(keys.shape, missing, dtype=np.result_type(table_values, type(missing)))
    at = np.searchsorted(table_keys, keys)
    at_c = np.minimum(at, table_keys.shape[0] - 1)
    found = table_keys[at_c] == keys
    return np.where(found, table_values[at_c], missing)
