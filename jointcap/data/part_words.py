"""Which part a caption's word names: a part noun names its part, an attribute word the part it describes (the
first part noun among the next `window` words: "a red crown", "crown is red" is not paired). One rule for the word
grounding metric and for the supervised attention targets (`model.loss.part_attention`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jointcap.data.tokenizer import Tokenizer, clean_word

WINDOW = 3  # an attribute word describes the first part noun within this many words after it


def described_parts(
    words: Sequence[str], part_words: Mapping[str, int], attribute_words: frozenset[str], window: int = WINDOW
) -> list[tuple[int, int, int]]:
    """(attribute word's index, its noun's index, part index) of every attribute word that describes a part."""
    pairs = []
    for t, w in enumerate(words):
        if w not in attribute_words:
            continue
        nxt = [u for u in range(t + 1, min(len(words), t + 1 + window)) if words[u] in part_words]
        if nxt:
            pairs.append((t, nxt[0], part_words[words[nxt[0]]]))
    return pairs


def word_parts(
    words: Sequence[str], part_words: Mapping[str, int], attribute_words: frozenset[str], window: int = WINDOW
) -> list[int]:
    """Per word, the part it names (its own part for a part noun, the described part for an attribute word), or -1."""
    out = [part_words.get(w, -1) for w in words]
    for t, _, p in described_parts(words, part_words, attribute_words, window):
        out[t] = p
    return out


def token_parts(
    tokenizer: Tokenizer,
    rows: np.ndarray,
    part_words: Mapping[str, int],
    attribute_words: frozenset[str],
    window: int = WINDOW,
) -> np.ndarray:
    """Token rows (N, T) → (N, T) int64: at each piece of a word that names a part, that part; -1 elsewhere
    (padding, BOS, EOS, function words)."""
    out = np.full(rows.shape, -1, dtype=np.int64)
    for n, row in enumerate(rows):
        steps = tokenizer.word_steps(row.tolist())
        parts = word_parts([clean_word(w) for w, _ in steps], part_words, attribute_words, window)
        for (_, positions), p in zip(steps, parts, strict=True):
            out[n, positions] = p
    return out
