"""The hard procedural benchmark (issue 11): classes, determinism, facts, captions, shortcut, low data, cache."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jointcap.data import cache
from jointcap.data import synthetic_hard as sh
from jointcap.data.source import Source


@pytest.fixture(scope="module")
def split() -> cache.SplitData:
    return sh.generate_split(300, seed=5)


@pytest.fixture(scope="module")
def info() -> dict:
    return sh.dataset_info(120)


def test_shapes_classes_and_masks(split):
    n, s, p = 300, 96, len(sh.PART_NAMES)
    assert split.images.shape == (n, s, s, 3) and split.masks.shape == (n, p, s, s)
    assert set(np.unique(split.masks)) <= {0, 1} and split.labels.max() < 120
    assert len(set(split.labels.tolist())) == 120  # balanced: every class in 300 images
    shares = split.masks.reshape(n, p, -1).sum(-1)
    assert (shares[:, sh.BODY] > 0).all() and (np.median(shares[:, list(sh.CLASS_PARTS)], 0) > 10).all()


def test_at_least_100_classes_with_one_attribute_neighbours():
    specs = sh.class_specs(120)
    assert len(set(specs)) == 120 and sh.max_classes() >= 120
    attrs = [tuple(vars(s).values()) for s in specs]
    one_off = [sum(sum(a != b for a, b in zip(x, y, strict=False)) == 1 for y in attrs) for x in attrs]
    assert np.mean([k > 0 for k in one_off]) > 0.9  # fine-grained: almost every class has a look-alike
    assert sh.class_specs(50) == specs[:50]
    with pytest.raises(ValueError, match="n_classes"):
        sh.class_specs(sh.max_classes() + 1)


def test_deterministic_and_prefix():
    a, b, c = sh.generate_split(40, seed=3), sh.generate_split(40, seed=3), sh.generate_split(40, seed=4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.extra == b.extra
    assert not np.array_equal(a.images, c.images)
    short = sh.generate_split(10, seed=3)
    assert np.array_equal(short.images, a.images[:10]) and short.extra["facts"] == a.extra["facts"][:10]


def test_facts_are_true_and_class_facts_define_the_class(split, info):
    for i in range(len(split)):
        facts, cfacts = split.extra["facts"][i], split.extra["class_facts"][i]
        assert set(cfacts) <= set(facts)
        spec = info["class_attributes"][split.labels[i]]
        for f in cfacts:
            part, value = f.split()
            assert spec[part] == value
        for f in facts:
            part, value = f.split()
            assert part in info["part_names"] and value in info["attribute_words"]
            # visible: the part has pixels in the mask
            assert split.masks[i, info["part_names"].index(part)].sum() > 0


def test_occluded_parts_are_not_facts():
    d = sh.generate_split(200, seed=2, occlusion=1.0)
    p = len(sh.PART_NAMES)
    assert d.masks is not None
    pixels = d.masks.reshape(len(d), p, -1).sum(-1)
    hidden = [(i, part) for i in range(len(d)) for part in range(p) if pixels[i, part] == 0]
    assert hidden, "full occlusion should hide some part completely"
    for i, part in hidden:
        assert not any(f.startswith(sh.PART_NAMES[part] + " ") for f in d.extra["facts"][i])


def test_captions_state_only_true_facts_with_attribute_before_its_part(split, info):
    assert _check_true_facts(split, info) > 0  # some captions name no class-defining part at all


def _check_true_facts(split: cache.SplitData, info: dict) -> int:
    """Every caption states only true facts, each attribute before its part; returns the captions naming no
    class-defining fact."""
    part_words, attr_words = info["part_words"], set(info["attribute_words"])
    n_class_free = 0
    for i in range(len(split)):
        facts = set(split.extra["facts"][i])
        for cap in split.captions[i]:
            words = cap.rstrip(".").replace(",", "").replace(";", "").replace(":", "").split()
            stated = []
            for j, w in enumerate(words):
                if w in attr_words:
                    noun = next(x for x in words[j + 1 :] if x in part_words)  # the next part noun
                    stated.append(f"{info['part_names'][part_words[noun]]} {w}")
            assert stated and set(stated) <= facts, (cap, facts)
            n_class_free += not set(stated) & set(split.extra["class_facts"][i])
    return n_class_free


def test_nuisance_colours_reuse_class_colours(split):
    class_colours = {v for s in sh.class_specs(120) for k, v in vars(s).items() if k != "beak"}
    assert class_colours <= set(split.extra["attributes"]["head"]) | set(split.extra["attributes"]["body"])


def test_shortcut_split_groups():
    train = sh.generate_split(600, seed=1, shortcut_p=0.95)
    test = sh.generate_split(600, seed=2, shortcut_p=sh.EVAL_ALIGNED)
    pairs = sh.shortcut_pairs(sh.class_specs(120))
    assert len({tuple(p) for p in pairs}) == 120  # the pair alone names the class
    g_train, g_test = np.array(train.extra["group"]), np.array(test.extra["group"])
    assert 0.9 < (g_train == 0).mean() <= 1.0 and 0.4 < (g_test == 0).mean() < 0.6
    body = np.array([sh.COLOR_NAMES.index(c) for c in test.extra["attributes"]["body"]])
    wing = np.array([sh.COLOR_NAMES.index(c) for c in test.extra["attributes"]["wing"]])
    aligned = (body == pairs[test.labels, 0]) & (wing == pairs[test.labels, 1])
    assert np.array_equal(aligned, g_test == 0) and test.extra["group_names"] == ["aligned", "conflicting"]
    assert "group" not in sh.generate_split(10, seed=1).extra


def test_preset_composes_to_the_source_defaults():
    """data=synthetic_hard (the calibrated preset, built on config.HardSyntheticSourceConfig) composes to the
    source's own defaults, so the yaml, the schema and the generator cannot drift apart."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import jointcap.config  # noqa: F401  (registers the schema nodes the yaml builds on)

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        source = compose("config", overrides=["data=synthetic_hard"]).data.source
    params = inspect.signature(sh.HardSyntheticSource).parameters
    assert set(source) - {"_target_"} == set(params)
    assert {k: source[k] for k in params} == {k: v.default for k, v in params.items()}


def test_source_cache_key_changes_with_every_argument():
    base = sh.HardSyntheticSource()
    assert isinstance(base, Source)
    changed: dict[str, Any] = dict(
        n_classes=120,
        image_size=128,
        per_class=15,
        val_per_class=4,
        test_per_class=15,
        seed=1,
        captions_per_image=5,
        clutter=1.0,
        occlusion=0.1,
        lighting=0.1,
        shortcut=True,
        captions="random_parts",
    )
    keys = {base.cache_key()} | {sh.HardSyntheticSource(**{k: v}).cache_key() for k, v in changed.items()}
    assert len(keys) == len(changed) + 1
    assert (
        sh.HardSyntheticSource(shortcut=True, shortcut_p=0.9).cache_key()
        != sh.HardSyntheticSource(shortcut=True).cache_key()
    )
    assert f"-v{sh.GENERATOR_VERSION}-" in base.cache_key()
    with pytest.raises(ValueError, match="per_class"):
        sh.HardSyntheticSource(per_class=0)


def test_build_writes_low_data_shortcut_cache(tmp_path):
    src = sh.HardSyntheticSource(
        n_classes=12, image_size=64, per_class=3, val_per_class=2, test_per_class=4, shortcut=True, captions_per_image=2
    )
    src.build(tmp_path)
    info = json.loads((tmp_path / "info.json").read_text())
    assert (
        info["num_classes"] == 12
        and info["part_words"]["wingbars"] == sh.WINGBAR
        and info["class_parts"] == list(sh.CLASS_PARTS)
    )
    assert len(info["shortcut"]["class_colors"]) == 12
    train, test = cache.read_split(tmp_path / "train"), cache.read_split(tmp_path / "test")
    assert len(train) == 36 and len(test) == 48 and len(train.extra["facts"]) == 36 and len(test.extra["group"]) == 48
    assert train.masks is not None
    assert train.masks.shape[1] == len(info["part_names"])


@pytest.mark.parametrize("bad", [dict(image_size=16), dict(occlusion=1.5), dict(lighting=-0.1), dict(shortcut_p=2.0)])
def test_bad_arguments_name_themselves(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        sh.generate_split(4, **bad)


# ------------------------------------------------------------------ caption styles (issue 28: field-mark references)
# sha256 of json.dumps(captions) of two small splits, made by the random-subset generator before the
# `captions` option existed (commit a7fd63e): `random_parts` must keep writing exactly these references.
OLD_CAPTIONS = {
    (3, None, "train"): "a15ff6e9f33f494d98726add71bb4934ef3de31d3afc99d9b4074e19529cdc70",
    (5, 0.95, "test"): "695fb7f6f828e4585a541af7edee1b8d8cfa18ecb766194f0ac9304858ec58d3",
}


@pytest.mark.parametrize("seed, shortcut_p, name", list(OLD_CAPTIONS))
def test_random_parts_references_are_byte_identical_to_the_old_generator(seed, shortcut_p, name):
    import hashlib

    data = sh.generate_split(24, 12, 48, seed, shortcut_p=shortcut_p, split=name, captions="random_parts")
    assert hashlib.sha256(json.dumps(data.captions).encode()).hexdigest() == OLD_CAPTIONS[(seed, shortcut_p, name)]
    assert data.captions[0][0] == sh.generate_split(1, 12, 48, seed, shortcut_p=shortcut_p, split=name).captions[0][0]


@pytest.fixture(scope="module")
def field_split() -> cache.SplitData:
    return sh.generate_split(200, seed=5, captions="field_marks")


def test_field_marks_change_only_the_references(split, field_split):
    assert np.array_equal(split.images[:200], field_split.images)
    assert np.array_equal(split.masks[:200], field_split.masks)
    assert split.extra["class_facts"][:200] == field_split.extra["class_facts"]
    assert split.captions[:200] != field_split.captions and field_split.extra["captions"] == "field_marks"


def test_field_marks_are_deterministic_per_seed(field_split):
    again = sh.generate_split(200, seed=5, captions="field_marks")
    assert again.captions == field_split.captions
    assert sh.generate_split(200, seed=6, captions="field_marks").captions != field_split.captions


def test_field_marks_state_true_facts_class_parts_first(field_split, info):
    """Each reference states only true facts; every class-defining part it names comes before every nuisance
    part; together the references name (nearly) every visible class fact, nuisance parts only sometimes."""
    assert _check_true_facts(field_split, info) == 0  # every reference names a class-defining fact
    part_words, class_parts = info["part_words"], set(info["class_parts"])
    recall, with_nuisance = [], []
    for refs, class_facts in zip(field_split.captions, field_split.extra["class_facts"], strict=True):
        for ref in refs:
            words = ref.rstrip(".").replace(",", " ").replace(";", " ").replace(":", " ").split()
            kinds = [part_words[w] in class_parts for w in words if w in part_words]
            if ref.count("wingbars on"):  # "white wingbars on olive wings": the wing qualifies its field mark
                kinds = [k for k, w in zip(kinds, [w for w in words if w in part_words], strict=True) if w != "wings"]
            assert kinds == sorted(kinds, reverse=True), ref  # class parts (True) before nuisance parts (False)
            with_nuisance.append(not all(kinds))
            if class_facts:
                recall.append(sum(f.split()[1] in words for f in class_facts) / len(class_facts))
    assert np.mean(recall) > 0.85 and 0.2 < np.mean(with_nuisance) < 0.7


def test_a_wrong_caption_style_names_the_key():
    with pytest.raises(ValueError, match="data.source.captions"):
        sh.generate_split(2, captions="random")
    with pytest.raises(ValueError, match="data.source.captions"):
        sh.HardSyntheticSource(captions="birder")
