"""What the hard benchmark's references reward, per caption style (`data.source.captions`; issue 28).

For `random_parts` (a random 1–5 visible parts per reference) and `field_marks` (the class-defining parts
first, nuisance parts sometimes), on the calibrated test split (100 classes, 80 px, 10 images per class,
data seed 0, as `+budget=study_hard` builds it) and on the shortcut split's test images:
* class facts one reference names: per reference, the share of the image's visible class-defining facts
  it states (read by `FactReader`), averaged over references and images;
* token shares: class-part nouns, nuisance-part nouns, attribute words, other words (+ one end token
  per caption, the steps Q averages over);
* CIDEr-D against the image's other nine references of (a) a caption stating every visible class fact
  ("this bird has a red crown, a white eyering, … and yellow wingbars") and (b) the held-out first reference;
* shortcut split: the share of references naming the body or wing (the shortcut's carriers) against the
  share naming a class-defining part, and the mean number of each per reference.
Deterministic (no model).

    python experiments/reference_study.py [--n-classes 100] > experiments/results/field_study/references.md
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from jointcap.data import synthetic_hard as sh
from jointcap.metrics.caption_metric import score_tokenised
from jointcap.metrics.correctness import FactReader
from jointcap.metrics.text import tokenize

CLASS_PART_NAMES = {sh.PART_NAMES[i] for i in sh.CLASS_PARTS}


def every_class_fact(class_facts: Sequence[str]) -> str:
    """One caption stating each visible class fact ("crown red" → "a red crown"), in the parts' order."""
    phrases = []
    for fact in class_facts:
        part, value = fact.split(" ", 1)
        phrases.append(f"{value} wingbars" if part == "wingbar" else sh._article(f"{value} {part}"))
    return "this bird has " + sh._join(phrases) if phrases else "this is a bird"


def measure(style: str, n_classes: int, per_class: int, shortcut: bool) -> dict[str, float]:
    """The reference statistics of one caption style on one test split."""
    source = sh.HardSyntheticSource(
        n_classes=n_classes, test_per_class=per_class, shortcut=shortcut, captions=style, per_class=1, val_per_class=1
    )
    split = sh.generate_split(
        source.sizes["test"],
        n_classes,
        source.image_size,
        source.split_seed("test"),
        source.captions_per_image,
        source.clutter,
        source.occlusion,
        source.lighting,
        sh.EVAL_ALIGNED if shortcut else None,
        "test",
        style,
    )
    info = sh.dataset_info(n_classes, shortcut)
    reader = FactReader.from_info(info)
    assert reader is not None
    part_of = {w: sh.PART_NAMES[i] for w, i in info["part_words"].items()}
    attributes = set(info["attribute_words"])
    recall, counts = [], np.zeros(5)  # class nouns, nuisance nouns, attribute words, other words, end tokens
    body_wing, class_named, n_body_wing, n_class = [], [], [], []
    for refs, class_facts in zip(split.captions, split.extra["class_facts"], strict=True):
        for ref in refs:
            words = tokenize(ref)
            said = reader.read(words)
            if class_facts:
                recall.append(len(said & set(class_facts)) / len(class_facts))
            parts = [part_of[w] for w in words if w in part_of]
            counts += [
                sum(p in CLASS_PART_NAMES for p in parts),
                sum(p not in CLASS_PART_NAMES for p in parts),
                sum(w in attributes for w in words),
                sum(w not in attributes and w not in part_of for w in words),
                1,
            ]
            named = {p for p in parts}
            body_wing.append(bool(named & {"body", "wing"}))
            class_named.append(bool(named & CLASS_PART_NAMES))
            n_body_wing.append(len(named & {"body", "wing"}))
            n_class.append(len(named & CLASS_PART_NAMES))
    refs_tok = [[tokenize(r) for r in refs[1:]] for refs in split.captions]
    full = score_tokenised([tokenize(every_class_fact(cf)) for cf in split.extra["class_facts"]], refs_tok)
    held = score_tokenised([tokenize(refs[0]) for refs in split.captions], refs_tok)
    share = counts / counts.sum()
    return {
        "class facts one reference names": float(np.mean(recall)),
        "class-part nouns / tokens (+ end)": float(share[0]),
        "nuisance-part nouns / tokens": float(share[1]),
        "attribute words / tokens": float(share[2]),
        "function words + end token / tokens": float(share[3] + share[4]),
        "CIDEr-D, every visible class fact": full["cider_d"],
        "CIDEr-D, held-out reference": held["cider_d"],
        "references naming body or wing": float(np.mean(body_wing)),
        "references naming a class-defining part": float(np.mean(class_named)),
        "body/wing parts per reference": float(np.mean(n_body_wing)),
        "class-defining parts per reference": float(np.mean(n_class)),
        "mean words per reference": float((counts[:4].sum()) / counts[4]),
    }


def main(argv: list[str] | None = None) -> None:
    """Print one markdown table: every statistic × (style, split)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-classes", type=int, default=100)
    p.add_argument("--test-per-class", type=int, default=10)
    args = p.parse_args(argv)
    n_classes, per_class = args.n_classes, args.test_per_class
    columns = {
        f"{style}{', shortcut split' if shortcut else ''}": measure(style, n_classes, per_class, shortcut)
        for shortcut in (False, True)
        for style in ("random_parts", "field_marks")
    }
    n = args.n_classes * args.test_per_class
    print(f"References of the hard benchmark's test split ({args.n_classes} classes, {n} images, 10 references each)\n")
    print("| statistic | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for key in next(iter(columns.values())):
        print(f"| {key} | " + " | ".join(f"{c[key]:.3f}" for c in columns.values()) + " |")
    print("\nExamples (test image 0, first three references):\n")
    for style in ("random_parts", "field_marks"):
        split = sh.generate_split(3, args.n_classes, 80, 2, 10, 0.5, 0.15, 0.05, None, "test", style)
        print(f"* {style}: " + " · ".join(f'"{c}"' for c in split.captions[0][:3]))


if __name__ == "__main__":
    main()
