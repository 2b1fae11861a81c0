"""The procedural bird dataset: shapes, determinism, masks, captions, classes and the cache it builds."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from jointcap.data import cache
from jointcap.data import synthetic as sy
from jointcap.data.source import Source


@pytest.fixture(scope="module")
def split() -> cache.SplitData:
    return sy.generate_split(500, seed=5)


@pytest.fixture(scope="module")
def info() -> dict:
    return sy.dataset_info(24)


def _median_color(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.median(images[mask.astype(bool)], axis=0)


def test_shapes_and_dtypes(split):
    n, s = 500, 64
    assert split.images.shape == (n, s, s, 3) and split.images.dtype == np.uint8
    assert split.masks.shape == (n, 5, s, s) and split.masks.dtype == np.uint8
    assert set(np.unique(split.masks)) <= {0, 1}
    assert split.labels.dtype == np.int64 and split.labels.min() >= 0 and split.labels.max() < 24
    assert split.keys[:2] == ["train_000000", "train_000001"] and len(set(split.keys)) == n
    assert all(len(c) == 10 for c in split.captions)
    assert sy.PART_NAMES == ("head", "beak", "body", "wing", "tail")
    split.validate()


def test_every_class_occurs_in_500(split):
    assert set(split.labels.tolist()) == set(range(24))


@pytest.mark.parametrize("size", [32, 128])
def test_image_size_is_configurable(size):
    d = sy.generate_split(8, n_classes=10, image_size=size, seed=1, captions_per_image=3, split="val")
    assert d.masks is not None
    assert d.images.shape == (8, size, size, 3) and d.masks.shape == (8, 5, size, size)
    assert d.keys[0] == "val_000000" and all(len(c) == 3 for c in d.captions)
    assert (d.masks[:, [sy.HEAD, sy.WING]].sum((2, 3)) > 0).all()


def test_same_seed_identical_other_seed_different():
    a, b, c = sy.generate_split(40, seed=3), sy.generate_split(40, seed=3), sy.generate_split(40, seed=4)
    for name in ("images", "masks", "labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.captions == b.captions and a.extra == b.extra
    assert not np.array_equal(a.images, c.images) and a.captions != c.captions


def test_shorter_split_is_a_prefix_of_a_longer_one():
    short, long = sy.generate_split(37, seed=2), sy.generate_split(300, seed=2)
    assert short.masks is not None and long.masks is not None
    assert np.array_equal(short.images, long.images[:37]) and np.array_equal(short.masks, long.masks[:37])
    assert short.captions == long.captions[:37] and np.array_equal(short.labels, long.labels[:37])


def test_masks_disjoint_and_parts_big_enough(split):
    assert split.masks.sum(1).max() <= 1
    area = split.masks.sum((2, 3))  # (N, 5)
    # head and wing must cover about two cells of the 8x8 feature map at 64 px
    assert area[:, sy.HEAD].min() >= 60 and area[:, sy.WING].min() >= 60
    assert (area[:, [sy.BEAK, sy.BODY, sy.TAIL]] > 0).mean() > 0.95


def test_masks_lie_on_their_parts_colours(split):
    specs = sy.class_specs(24)
    body = split.extra["attributes"]["body"]
    for i in range(0, 500, 7):
        spec = specs[split.labels[i]]
        head = _median_color(split.images[i], split.masks[i, sy.HEAD])
        assert np.abs(head - sy.PALETTE[spec.head]).max() < 25, (i, head, spec)
        if spec.pattern == "plain":
            wing = _median_color(split.images[i], split.masks[i, sy.WING])
            assert np.abs(wing - sy.PALETTE[spec.wing]).max() < 25, (i, wing, spec)
        if split.masks[i, sy.BODY].sum() > 20:
            got = _median_color(split.images[i], split.masks[i, sy.BODY])
            assert np.abs(got - sy.PALETTE[body[i]]).max() < 25, (i, got, body[i])


def test_patterns_are_drawn(split):
    """Striped and spotted wings hold the contrast colour; plain wings do not."""
    specs = sy.class_specs(24)
    for i in range(0, 100):
        spec = specs[split.labels[i]]
        px = split.images[i][split.masks[i, sy.WING].astype(bool)].astype(np.float32)
        far = (np.abs(px - sy.PALETTE[spec.wing]).max(1) > 60).mean()
        assert (far > 0.1) if spec.pattern != "plain" else (far < 0.05), (i, spec, far)


def test_captions_words_and_class_mentions(split, info):
    specs = sy.class_specs(24)
    with_class = 0
    for caps, y in zip(split.captions, split.labels, strict=False):
        spec = specs[y]
        for c in caps:
            assert re.fullmatch(r"[a-z]+(,? [a-z]+)*\.?", c), c
        words = [c.rstrip(".").replace(",", "").split() for c in caps]
        heads = sum(any(a == spec.head and b in ("head", "crown") for a, b in itertools.pairwise(w)) for w in words)
        wings = sum(spec.wing in w and ("wings" in w or "wing" in w) for w in words)
        assert heads >= 2 and wings >= 2, caps
        if spec.pattern != "plain":
            assert sum(spec.pattern in w for w in words) >= 2, caps
        with_class += sum(any(p in w for p in ("head", "crown", "wing", "wings")) for w in words)
    assert with_class / (10 * len(split)) > 0.7
    assert len({c for caps in split.captions for c in caps}) > 0.9 * 10 * len(split)  # varied


def test_attribute_words_describe_the_next_part_noun(split, info):
    """Every attribute word is true of the part named by the next part noun (what metrics rely on)."""
    specs, attrs = sy.class_specs(24), split.extra["attributes"]
    part_words, attribute_words = info["part_words"], set(info["attribute_words"])
    for i in range(0, 500, 3):
        spec = specs[split.labels[i]]
        truth = {
            sy.HEAD: {spec.head},
            sy.WING: {spec.wing, spec.pattern},
            sy.BODY: {attrs["body"][i]},
            sy.BEAK: {attrs["beak"][i], attrs["beak_color"][i]},
            sy.TAIL: {attrs["tail"][i]},
        }
        for c in split.captions[i]:
            words = c.rstrip(".").replace(",", "").split()
            for k, w in enumerate(words):
                if w in attribute_words:
                    part = next(part_words[v] for v in words[k + 1 :] if v in part_words)
                    assert w in truth[part], (c, w, sy.PART_NAMES[part])


def test_class_count_is_configurable_and_bounded():
    specs = sy.class_specs(sy.max_classes())
    assert len({(s.head, s.wing, s.pattern) for s in specs}) == sy.max_classes()
    assert all(s.head != s.wing for s in specs)
    assert sy.class_specs(10) == specs[:10]
    d = sy.generate_split(30, n_classes=10, seed=0)
    assert set(d.labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="combinations"):
        sy.generate_split(4, n_classes=sy.max_classes() + 1)
    with pytest.raises(ValueError, match="combinations"):
        sy.SyntheticSource(n_classes=1000)


def test_default_classes_need_head_wing_and_pattern():
    """Each default class has a sibling differing only in head colour, one only in wing colour, one only in pattern."""
    combos = {(s.head, s.wing, s.pattern) for s in sy.class_specs(24)}
    for h, w, p in combos:
        assert any((h2, w, p) in combos for h2 in sy.HEAD_COLORS if h2 != h)
        assert any((h, w2, p) in combos for w2 in sy.WING_COLORS if w2 != w)
        assert any((h, w, p2) in combos for p2 in sy.PATTERNS if p2 != p)


def test_global_colour_histogram_does_not_solve_the_task():
    """Nearest class mean: near chance on global colour histograms, near perfect on head/wing colours."""
    train, test = sy.generate_split(480, seed=21), sy.generate_split(240, seed=22)

    def hist(d: cache.SplitData) -> np.ndarray:
        q = d.images.astype(np.int64) * 6 // 256
        idx = ((q[..., 0] * 6 + q[..., 1]) * 6 + q[..., 2]).reshape(len(d), -1)
        h = np.stack([np.bincount(r, minlength=216) for r in idx]).astype(np.float32)
        return h / h.sum(1, keepdims=True)

    def parts(d: cache.SplitData) -> np.ndarray:
        feats = []
        for part in (sy.HEAD, sy.WING):
            assert d.masks is not None
            m = d.masks[:, part, :, :, None].astype(np.float32)
            mean = (d.images * m).sum((1, 2)) / m.sum((1, 2))
            sq = (d.images.astype(np.float32) ** 2 * m).sum((1, 2)) / m.sum((1, 2))
            feats += [mean, np.sqrt(np.maximum(sq - mean**2, 0))]
        return np.concatenate(feats, 1) / 255

    def ncm_accuracy(f) -> float:
        ftr, fte = f(train), f(test)
        means = np.stack([ftr[train.labels == c].mean(0) for c in range(24)])
        pred = ((fte[:, None] - means[None]) ** 2).sum(-1).argmin(1)
        return float((pred == test.labels).mean())

    hist_acc, part_acc = ncm_accuracy(hist), ncm_accuracy(parts)
    assert part_acc > 0.9 and hist_acc < 0.2, (hist_acc, part_acc)


def test_source_builds_a_complete_cache(tmp_path):
    src = sy.SyntheticSource(n_classes=12, n_train=20, n_val=6, n_test=10, seed=1, captions_per_image=4)
    assert isinstance(src, Source) and src.name == "synthetic"
    key = src.cache_key()
    assert key.startswith(f"synthetic-v{sy.GENERATOR_VERSION}-c12-s64-n20-6-10-seed1")
    assert (
        sy.SyntheticSource(n_classes=12, n_train=20, n_val=6, n_test=10, seed=2, captions_per_image=4).cache_key()
        != key
    )
    assert (
        sy.SyntheticSource(
            n_classes=12, n_train=20, n_val=6, n_test=10, seed=1, clutter=0.5, captions_per_image=4
        ).cache_key()
        != key
    )
    out = tmp_path / key
    src.build(out)
    assert cache.dataset_complete(out)
    info = cache.read_info(out)
    assert info["name"] == "synthetic" and info["num_classes"] == 12 and len(info["class_names"]) == 12
    assert info["class_names"][0] == "red-head green-wing plain"
    assert info["part_names"] == list(sy.PART_NAMES) and info["class_parts"] == [0, 3]
    assert info["part_words"]["crown"] == 0 and info["part_words"]["bill"] == 1 and info["part_words"]["wings"] == 3
    assert {"red", "striped", "forked", "short"} <= set(info["attribute_words"])
    splits = {s: cache.read_split(out / s) for s in cache.SPLITS}
    assert [len(splits[s]) for s in cache.SPLITS] == [20, 6, 10]
    val_masks, test_masks = splits["val"].masks, splits["test"].masks
    assert val_masks is not None and test_masks is not None
    assert splits["test"].keys[0] == "test_000000" and val_masks.shape == (6, 5, 64, 64)
    fresh = sy.generate_split(10, n_classes=12, seed=src.split_seed("test"), captions_per_image=4, split="test")
    assert np.array_equal(splits["test"].images, fresh.images) and np.array_equal(test_masks, np.asarray(fresh.masks))
    assert splits["test"].captions == fresh.captions
    assert not np.array_equal(splits["train"].images[:10], splits["test"].images)
    # resizing the training split leaves the test split alone
    other = sy.SyntheticSource(n_classes=12, n_train=33, n_val=6, n_test=10, seed=1, captions_per_image=4)
    again = sy.generate_split(10, n_classes=12, seed=other.split_seed("test"), captions_per_image=4, split="test")
    assert np.array_equal(again.images, fresh.images)
