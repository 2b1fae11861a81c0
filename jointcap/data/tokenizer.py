"""SentencePiece tokenizer trained on the training captions only; fixed special ids.

The model is kept as bytes, so it can be stored beside the cache and inside checkpoints.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
WORD_START = "\u2581"  # SentencePiece's word-boundary mark


def clean_word(word: str) -> str:
    """A caption word as the vocabulary spells it: lower case, no trailing punctuation."""
    return word.lower().strip(".,;:!?\"'")


class TokenizerError(ValueError):
    """Bytes that are not a SentencePiece model (a corrupt cache file or checkpoint); the message says which."""


class Tokenizer:
    """Encode captions to fixed-length id rows (BOS … EOS pad…) and decode them back."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_proto: bytes, source: str = "tokenizer") -> None:
        """Load a serialised model; TokenizerError names `source` (a file, a checkpoint) when it is not one."""
        try:
            self.model_proto = bytes(model_proto)
            self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        except (RuntimeError, TypeError, ValueError, OSError) as e:
            raise TokenizerError(f"{source}: not a SentencePiece tokenizer model ({str(e).splitlines()[0]})") from None
        if self.sp.get_piece_size() <= EOS_ID or self.sp.pad_id() != PAD_ID or self.sp.eos_id() != EOS_ID:
            raise TokenizerError(f"{source}: a SentencePiece model without jointcap's special ids (pad 0, eos 3)")

    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int = 1000, model_type: str = "bpe") -> Tokenizer:
        """Train on `captions`; a vocabulary larger than the corpus allows is shrunk, not an error."""
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(captions)),
            model_writer=buf,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            hard_vocab_limit=False,
            character_coverage=1.0,
            num_threads=1,
            minloglevel=2,
            normalization_rule_name="nmt_nfkc_cf",
        )
        return cls(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        return cls(Path(path).read_bytes(), source=str(path))

    def save(self, path: Path) -> None:
        """Write atomically, so a killed run never leaves a truncated model behind."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(self.model_proto)
        os.replace(tmp, path)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, caption: str, max_len: int) -> list[int]:
        """BOS + pieces + EOS, truncated to `max_len` (EOS kept), right-padded with PAD."""
        ids = self.sp.encode(caption.strip())[: max_len - 2]
        ids = [BOS_ID, *ids, EOS_ID]
        return ids + [PAD_ID] * (max_len - len(ids))

    def _content(self, ids: Sequence[int]) -> list[int]:
        """The ids between BOS and the first EOS, specials dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(i)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(self._content(ids))

    def word_steps(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
        """Group generated steps into words: [(word, [step indices of its pieces])], for per-word attention."""
        words: list[tuple[str, list[int]]] = []
        for step, i in enumerate(ids):
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            piece = self.sp.id_to_piece(i)
            if piece.startswith(WORD_START) or not words:
                words.append((piece.lstrip(WORD_START), [step]))
            else:
                words[-1] = (words[-1][0] + piece, words[-1][1] + [step])
        return [(w, s) for w, s in words if w]

    def word_mask(self, rows: Sequence[Sequence[int]], words: frozenset[str]) -> list[list[bool]]:
        """Per row, per position: is this piece part of a word in `words`? (e.g. the attribute and part
        words, so the CAM loss can average attention over content words only). Words are matched lower case,
        without trailing punctuation."""
        out = []
        for row in rows:
            mask = [False] * len(row)
            for word, steps in self.word_steps(row):
                if clean_word(word) in words:
                    for t in steps:
                        mask[t] = True
            out.append(mask)
        return out
