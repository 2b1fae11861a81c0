"""Caption correctness (facts stated vs true) and degeneracy: a constant or looping captioner must not pass."""

from __future__ import annotations

import pytest

from jointcap.data import synthetic as sy
from jointcap.data import synthetic_hard as sh
from jointcap.metrics.correctness import (
    FactReader,
    degeneracy,
    fact_scores,
    image_fact_scores,
    part_repeat_share,
    repeats_ngram,
)
from jointcap.metrics.text import tokenize

_reader = FactReader.from_info(sy.dataset_info(6))
assert _reader is not None  # the synthetic data has facts
READER = _reader


def _facts(caption: str) -> set[str]:
    return READER.read(tokenize(caption))


def test_reader_maps_attribute_runs_to_the_next_part_noun() -> None:
    assert _facts("this bird has a red crown, blue striped wings and a long orange bill.") == {
        "head red",
        "wing blue",
        "wing striped",
        "beak long",
        "beak orange",
    }
    assert _facts("a small bird with a mostly grey body") == {"body grey"}  # size words are no facts
    # a word between the attribute and the noun breaks the run: "red" describes the bird, not the wings
    assert _facts("a red bird with wings") == set()
    assert _facts("this bird has a red head and a red head") == {"head red"}  # a repeat states nothing new


def test_fact_scores_count_a_wrong_colour_as_wrong() -> None:
    truth = [["head red", "wing green", "wing striped", "body blue", "beak long", "beak black", "tail forked"]]
    required = [["head red", "wing green", "wing striped"]]
    right = fact_scores([_facts("a red head and green striped wings")], truth, required, READER)
    assert right["class_attr_precision"] == right["class_attr_recall"] == right["class_attr_f1"] == 1.0
    assert right["attr_precision"] == 1.0 and right["attr_recall"] == pytest.approx(3 / 7)
    wrong = fact_scores([_facts("a blue head and green striped wings")], truth, required, READER)
    assert wrong["class_attr_precision"] == pytest.approx(2 / 3)  # "head blue" is a class-relevant error
    assert wrong["class_attr_recall"] == pytest.approx(2 / 3)  # and "head red" was not said
    nuisance = fact_scores([_facts("a red head, green striped wings and a yellow belly")], truth, required, READER)
    assert nuisance["class_attr_f1"] == 1.0  # the body is no class slot
    assert nuisance["attr_precision"] == pytest.approx(3 / 4)  # but the wrong body colour is wrong


def test_a_constant_caption_scores_low_on_a_balanced_split() -> None:
    """The best single sentence cannot name every class's colours: class F1 far from 1."""
    data = sy.generate_split(240, n_classes=24, image_size=16, seed=3)
    truth, required = data.extra["facts"], data.extra["class_facts"]
    constant = [_facts("this bird has a red head and green wings")] * len(truth)
    scores = fact_scores(constant, truth, required, READER)
    assert scores["class_attr_f1"] < 0.5
    # the references themselves state only true facts
    refs = [_facts(c[0]) for c in data.captions]
    assert fact_scores(refs, truth, required, READER)["attr_precision"] == 1.0


def test_degeneracy_flags_loops_and_constants() -> None:
    loop = tokenize("this bird has a red head and a red head")
    assert repeats_ngram(loop, 3) and not repeats_ngram(tokenize("a red head and green wings"), 2)
    d = degeneracy([loop, loop, tokenize("a blue bird"), tokenize("a blue bird")])
    assert d["distinct_captions"] == 0.5 and d["rep3"] == 0.5 and d["rep2"] == 0.5
    assert d["mean_len"] == pytest.approx((10 + 10 + 3 + 3) / 4) and d["vocab_used"] == 8.0
    assert degeneracy([])["distinct_captions"] == 0.0


def test_a_part_named_twice_is_a_loop_even_by_synonym() -> None:
    """no_repeat_ngram stops "a red crown … a red crown" but not "a red crown … a red cap": repeats_part does."""
    hard = FactReader.from_info(sh.dataset_info(12))
    assert hard is not None
    assert hard.repeats_part(tokenize("this is a small bird with a red crown, a black eyering and a red cap"))
    assert hard.repeats_part(tokenize("a yellow throat, a white eyering and a yellow throat"))
    assert not hard.repeats_part(tokenize("olive wings with white wingbars, a red crown and a hooked bill"))
    assert not hard.repeats_part(tokenize("this bird has a white eyering"))
    loops = [tokenize("a red crown and a red cap"), tokenize("a red crown"), tokenize("a grey breast and a grey belly")]
    assert part_repeat_share(loops, hard) == pytest.approx(2 / 3) and part_repeat_share([], hard) == 0.0


def test_the_hard_references_never_name_a_part_twice() -> None:
    """So any part repeat in a generated caption is the decoder's, and the references' rate (0) is the floor."""
    hard = FactReader.from_info(sh.dataset_info(12))
    assert hard is not None
    data = sh.generate_split(60, n_classes=12, image_size=48, seed=5)
    refs = [tokenize(c) for caps in data.captions for c in caps]
    assert len(refs) == 600 and part_repeat_share(refs, hard) == 0.0
    assert sum(len(hard.read(r)) >= 2 for r in refs) > 200  # many name several parts: the check has teeth


def test_synthetic_facts_match_the_class() -> None:
    data = sy.generate_split(40, n_classes=6, image_size=16, seed=1)
    specs = sy.class_specs(6)
    for label, facts, required in zip(data.labels, data.extra["facts"], data.extra["class_facts"], strict=False):
        spec = specs[int(label)]
        assert f"head {spec.head}" in required and f"wing {spec.wing}" in required
        assert (f"wing {spec.pattern}" in required) == (spec.pattern != "plain")
        assert set(required) <= set(facts)


def test_image_fact_scores_count_per_caption() -> None:
    truth = ["head red", "wing green", "wing striped", "body blue"]
    required = ["head red", "wing green"]
    said = _facts("a red head, blue wings and a blue belly")
    assert image_fact_scores(said, truth, required) == {"class_recall": 0.5, "facts_right": 2.0, "facts_wrong": 1.0}
    looping = _facts("a red head, a red head and a red head")  # a loop states its fact once
    assert image_fact_scores(looping, truth, required) == {"class_recall": 0.5, "facts_right": 1.0, "facts_wrong": 0.0}
    assert image_fact_scores(set(), truth, [])["class_recall"] != image_fact_scores(set(), truth, [])["class_recall"]
