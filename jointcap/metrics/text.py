"""Caption tokenisation shared by every caption metric (hypotheses and references alike).

pycocoevalcap runs Stanford's PTBTokenizer (Java, ``-lowerCase``) and then drops the
tokens in its ``PUNCTUATIONS`` list. :func:`tokenize` is a pure-Python stand-in for that
pipeline on caption-like English: it lower-cases, splits the PTB clitics (``bird's`` →
``bird 's``, ``aren't`` → ``are n't``), drops the punctuation tokens pycocoevalcap drops
(``. , ; : ! ? - -- ... ' ` '' ``" and quotes) and keeps word-internal hyphens, decimals
and dotted abbreviations (``grey-brown``, ``2.5``, ``e.g.``). Deliberate differences:
brackets are dropped, while pycocoevalcap keeps them as ``-lrb-``/``-rrb-`` tokens (its
punctuation list is upper-case but the tokenizer ran with ``-lowerCase``), and runs like
``!!`` are dropped where PTB keeps them as one token. Checked token-for-token against the
Java tokenizer on caption-like sentences in tests/test_metrics_captions.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain

import numpy as np

__all__ = ["tokenize", "tokenize_many", "tokenize_flat"]

# PTB clitics, split off the preceding word: can't -> ca n't, bird's -> bird 's.
_NT = re.compile(r"(\w)(n't)\b")
_CLITIC = re.compile(r"(\w)('(?:s|re|ve|ll|d|m))\b")
# Always-dropped characters: quotes, backticks and brackets.
_DROP = re.compile(r"[\"`()\[\]{}]")
# Sentence punctuation, unless it sits between two digits (1,000 / 4:30 / 2.5).
_SPLIT_PUNCT = re.compile(r"(?<!\d)[,;:!?]|[,;:!?](?!\d)")
# Currency / percent / hash signs are their own PTB tokens: 50% -> 50 %.
_SYMBOL = re.compile(r"([%$#])")
# Dotted abbreviations like e.g. / u.s. keep their dots; numbers keep decimal points.
_ABBREV = re.compile(r"^(?:[a-z]\.){2,}$")
_EDGE = ".-'"
# Already-clean text (the common case for generated captions) needs no regex work.
_PLAIN = re.compile(r"[a-z0-9 ]*")
_PLAIN_LINES = re.compile(r"[a-z0-9 \n]*")


def _clean_token(tok: str) -> str:
    """Strip the punctuation PTB would split off a word's edges; '' when nothing remains."""
    if tok.startswith("'") and tok[1:] in {"s", "re", "ve", "ll", "d", "m"}:
        return tok  # a clitic produced above
    if tok == "n't" or _ABBREV.match(tok):
        return tok
    tok = tok.strip(_EDGE)
    while "..." in tok:  # an ellipsis glued between words splits them
        tok = tok.replace("...", " ")
    return tok


def tokenize(caption: str) -> list[str]:
    """Lower-case and PTB-tokenise one caption, dropping punctuation like pycocoevalcap."""
    s = caption.lower()
    if _PLAIN.fullmatch(s):
        return s.split()
    s = _DROP.sub(" ", s)
    s = _SPLIT_PUNCT.sub(" ", s)
    s = _SYMBOL.sub(r" \1 ", s)
    s = _NT.sub(r"\1 \2", s)
    s = _CLITIC.sub(r"\1 \2", s)
    out: list[str] = []
    for raw in s.split():
        tok = _clean_token(raw)
        if tok:
            out.extend(tok.split())
    return out


def tokenize_many(captions: Sequence[str]) -> list[list[str]]:
    """:func:`tokenize` of each caption; one regex pass over all when they are already clean."""
    text = "\n".join(captions).lower()
    if _PLAIN_LINES.fullmatch(text):
        lines = text.split("\n")
        if len(lines) == len(captions):  # no caption had its own newline
            return [line.split() for line in lines]
    return [tokenize(c) for c in captions]


def tokenize_flat(captions: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """:func:`tokenize` of each caption as one flat word list and the word count of each caption (C,).

    The fast path for scoring a whole split: already-clean text is split once and counted with NumPy, so no
    per-caption list is built (66,000 small lists cost a full garbage collection, a third of the scoring time).
    """
    text = "\n".join(captions).lower()
    if _PLAIN_LINES.fullmatch(text) and text.count("\n") == len(captions) - 1 and captions:
        b = np.frombuffer(text.encode("ascii"), dtype=np.uint8)  # (chars,) ASCII: the match above allows no more
        newline = b == 10
        space = newline | (b == 32)
        start = ~space  # (chars,) first character of a word
        start[1:] &= space[:-1]
        line = np.cumsum(newline)  # (chars,) caption of each character
        return text.split(), np.bincount(line[start], minlength=len(captions)).astype(np.int64)
    toks = [tokenize(c) for c in captions]
    return list(chain.from_iterable(toks)), np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
