"""Is a caption *right*, not just similar? Attribute correctness and degeneracy of generated captions.

CIDEr and BLEU reward n-gram overlap: a constant sentence or a looping one can score near a
real captioner. Here a caption is read as a set of facts "PART ATTRIBUTE" ("head red",
"wing striped") and scored against what the image really shows (the synthetic generators
store every image's true facts), and the caption set is checked for the symptoms of a
degenerate decoder (few distinct captions, repeated n-grams, a part named twice).

Reading rule (the synthetic captions follow it: every attribute word sits directly before
the part noun it describes): a run of attribute words followed by a part noun states one
fact per attribute word ("long orange beak" → "beak long", "beak orange"); any other word in
between breaks the run.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["FactReader", "fact_scores", "image_fact_scores", "degeneracy", "repeats_ngram", "part_repeat_share"]


@dataclass(frozen=True)
class FactReader:
    """Turns tokenised captions into fact sets, from a dataset's info.json vocabulary."""

    part_words: Mapping[str, int]  # caption word → part index ("crown" → 0)
    part_names: Sequence[str]  # part index → canonical part name ("head")
    attribute_words: frozenset[str]
    attribute_kinds: Mapping[str, str] = field(
        default_factory=dict
    )  # word → kind ("red" → "colour"); default: one kind
    class_slots: frozenset[str] = frozenset()  # "PART KIND" slots that define the class; default: those of class facts

    @classmethod
    def from_info(cls, info: Mapping) -> FactReader | None:
        """The reader for a dataset, or None when its info names no parts/attributes (CUB, Flowers)."""
        if not info.get("part_words") or not info.get("attribute_words"):
            return None
        return cls(
            dict(info["part_words"]),
            list(info["part_names"]),
            frozenset(info["attribute_words"]),
            dict(info.get("attribute_kinds", {})),
            frozenset(info.get("class_slots", ())),
        )

    def read(self, words: Sequence[str]) -> set[str]:
        """The facts "PART ATTRIBUTE" a tokenised caption states (a repeated fact counts once)."""
        facts: set[str] = set()
        pending: list[str] = []
        for w in words:
            if w in self.attribute_words:
                pending.append(w)
            elif w in self.part_words:
                part = self.part_names[self.part_words[w]]
                facts.update(f"{part} {a}" for a in pending)
                pending = []
            else:
                pending = []
        return facts

    def repeats_part(self, words: Sequence[str]) -> bool:
        """Whether the caption names one part twice, synonyms included ("a red crown … a red cap"): a loop that
        no_repeat_ngram lets through. The synthetic references never do (each names a part at most once)."""
        parts = [self.part_words[w] for w in words if w in self.part_words]
        return len(set(parts)) < len(parts)

    def slot(self, fact: str) -> str:
        """What a fact is about: "PART KIND" ("head colour"), so a wrong colour counts against the head's colour."""
        part, attr = fact.split(" ", 1)
        return f"{part} {self.attribute_kinds.get(attr, 'attribute')}"


def fact_scores(
    stated: Sequence[set[str]], truth: Sequence[Sequence[str]], class_truth: Sequence[Sequence[str]], reader: FactReader
) -> dict[str, float]:
    """Micro precision / recall / F1 of stated facts against the true ones, over all facts and over the
    class-defining ones.

    A stated fact is right when the image shows it (`truth`). Recall asks how many of the facts an image
    must be described by (`truth`, or `class_truth` for the class-defining set) were stated. A stated fact
    is class-relevant when it is about a class-defining slot (e.g. the head's colour): naming the wrong
    colour there is a false positive and leaves the true one unrecalled.
    """
    tp = n_stated = n_true = 0
    ctp_p = ctp_r = c_stated = c_true = 0
    for said, true, ctrue in zip(stated, truth, class_truth, strict=True):
        true_set, ctrue_set = set(true), set(ctrue)
        slots = reader.class_slots or {reader.slot(f) for f in ctrue_set}
        said_cls = {f for f in said if reader.slot(f) in slots}
        tp += len(said & true_set)
        n_stated += len(said)
        n_true += len(true_set)
        ctp_p += len(said_cls & true_set)
        ctp_r += len(said & ctrue_set)
        c_stated += len(said_cls)
        c_true += len(ctrue_set)
    out: dict[str, float] = {}
    for prefix, hit_p, hit_r, s, t in (
        ("attr", tp, tp, n_stated, n_true),
        ("class_attr", ctp_p, ctp_r, c_stated, c_true),
    ):
        p = hit_p / s if s else 0.0
        r = hit_r / t if t else 0.0
        out[f"{prefix}_precision"], out[f"{prefix}_recall"] = p, r
        out[f"{prefix}_f1"] = 2 * p * r / (p + r) if p + r else 0.0
    return out


def image_fact_scores(said: set[str], truth: Sequence[str], class_truth: Sequence[str]) -> dict[str, float]:
    """One caption's correctness as numbers whose mean over images is meaningful (for paired bootstraps over
    images): the share of the image's class-defining facts it states (`class_recall`), and how many of the
    facts it states are true (`facts_right`) or false (`facts_wrong`) of the image."""
    true_set = set(truth)
    return {
        "class_recall": len(said & set(class_truth)) / len(class_truth) if class_truth else float("nan"),
        "facts_right": float(len(said & true_set)),
        "facts_wrong": float(len(said - true_set)),
    }


def repeated_ngrams(words: Sequence[Hashable], n: int = 3) -> int:
    """How many of the caption's n-grams repeat an earlier one of the same caption (words or token ids)."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) - len(set(grams))


def repeats_ngram(words: Sequence[str], n: int) -> bool:
    """Whether some n-gram occurs twice in the caption ("a red head and a red head" repeats "a red head")."""
    return repeated_ngrams(words, n) > 0


def part_repeat_share(captions: Sequence[Sequence[str]], reader: FactReader) -> float:
    """The share of (tokenised) captions that name some part twice (`FactReader.repeats_part`); 0 when none."""
    return sum(reader.repeats_part(c) for c in captions) / len(captions) if len(captions) else 0.0


def degeneracy(captions: Sequence[Sequence[str]]) -> dict[str, float]:
    """Symptoms of a degenerate decoder over a caption set (tokenised, one per image): the share of distinct
    captions, the share with a repeated bigram / trigram, the mean length in words and the vocabulary used.

    Builds no object per caption that outlives its loop turn (joined strings are not tracked by the garbage
    collector), so scoring a whole split triggers no collection.
    """
    n = len(captions)
    if n == 0:
        return {"distinct_captions": 0.0, "rep2": 0.0, "rep3": 0.0, "mean_len": 0.0, "vocab_used": 0.0}
    return {
        "distinct_captions": len({" ".join(c) for c in captions}) / n,
        "rep2": sum(repeats_ngram(c, 2) for c in captions) / n,
        "rep3": sum(repeats_ngram(c, 3) for c in captions) / n,
        "mean_len": sum(len(c) for c in captions) / n,
        "vocab_used": float(len({w for c in captions for w in c})),
    }
