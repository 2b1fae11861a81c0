"""Reference points for the default run's caption scores, on the same test split and scorer.

* best constant caption: the frequent training caption that scores highest said of every image;
* held-out reference ("human-like"): each image's first reference scored against its other nine;
* class template: "this bird has <wing colour> <pattern> wings and a <head colour> head", filled
  with the image's true class attributes (names the class, nothing that varies within it);
  and the same plus the image's true body colour, or plus a fixed one ("grey", mostly wrong):
  what a captioner gains by also describing what varies within a class.

Each with CIDEr-D, BLEU-4 and the caption-correctness metrics. Deterministic (no model, no seed).

    python experiments/reference_points.py [data=… overrides]   # --markdown for a table
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import jointcap.config  # noqa: F401  (registers the schema configs that conf/ builds on)
from jointcap.metrics.baselines import best_constant_caption, frequent_captions
from jointcap.metrics.caption_metric import score_tokenised
from jointcap.metrics.correctness import FactReader, fact_scores
from jointcap.metrics.text import tokenize

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ("cider_d", "bleu4", "class_attr_f1", "attr_precision", "rep3", "distinct_captions")


def _scores(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], facts: tuple[list, list] | None, reader: FactReader | None
) -> dict[str, float]:
    toks = [tokenize(h) for h in hyps]
    out = score_tokenised(toks, [[tokenize(r) for r in rs] for rs in refs])
    if facts is not None and reader is not None:
        out.update(fact_scores([reader.read(t) for t in toks], facts[0], facts[1], reader))
    return out


def main(argv: list[str]) -> None:
    markdown = "--markdown" in argv
    overrides = [a for a in argv if a != "--markdown"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("test")
    refs, extra = dm.references("test"), dm.splits["test"].extra
    reader = FactReader.from_info(dm.info)
    facts = (extra["facts"], extra["class_facts"]) if "facts" in extra else None
    rows: dict[str, dict[str, float]] = {}
    constant, _ = best_constant_caption(frequent_captions(dm.references("train"), top=300), refs)
    rows[f"best constant caption ({constant!r})"] = _scores([constant] * len(refs), refs, facts, reader)
    rows["held-out reference vs the other nine"] = _scores([r[0] for r in refs], [r[1:] for r in refs], facts, reader)
    if dm.info.get("class_attributes"):
        attrs = [dm.info["class_attributes"][int(y)] for y in dm.splits["test"].labels]
        template = [f"this bird has {a['wing']} {a['pattern']} wings and a {a['head']} head" for a in attrs]
        rows["class template (true head, wing colour, pattern)"] = _scores(template, refs, facts, reader)
        body = extra["attributes"]["body"]
        rows["class template + the true body colour"] = _scores(
            [t.replace(" and a ", ", a ") + f" and a {b} body" for t, b in zip(template, body, strict=True)],
            refs,
            facts,
            reader,
        )
        rows["class template + a fixed (mostly wrong) body colour"] = _scores(
            [t.replace(" and a ", ", a ") + " and a grey body" for t in template], refs, facts, reader
        )
    if markdown:
        print("| caption source | " + " | ".join(KEYS) + " |")
        print("|---|" + "---:|" * len(KEYS))
    for name, s in rows.items():
        if markdown:
            print(f"| {name} | " + " | ".join(f"{s[k]:.3f}" if k in s else "–" for k in KEYS) + " |")
        else:
            print(name + ": " + ", ".join(f"{k} {s[k]:.4f}" for k in KEYS if k in s))


if __name__ == "__main__":
    main(sys.argv[1:])
