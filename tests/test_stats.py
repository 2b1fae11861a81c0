"""Paired bootstrap comparisons (jointcap.analysis.stats): a known difference is found, a null one is not."""

from __future__ import annotations

import numpy as np
import pytest

from jointcap.analysis import stats


def _scores(rng, p, n_seeds=5, n_images=400):
    return (rng.random((n_seeds, n_images)) < p).astype(float)


def test_known_difference_is_significant_and_covered():
    rng = np.random.default_rng(0)
    difficulty = rng.random(600)  # shared per-image difficulty: pairing should cancel it
    base = (rng.random((5, 600)) < 0.3 + 0.4 * difficulty).astype(float)
    better = np.maximum(base, (rng.random((5, 600)) < 0.1))  # +~0.06 accuracy
    c = stats.paired_difference(better, base, n_boot=1000)
    true = better.mean() - base.mean()
    assert c.significant and c.verdict() == "higher" and c.low <= true <= c.high and c.low > 0
    assert c.n_seeds == 5 and c.n_images == 600
    assert stats.paired_difference(base, better, n_boot=300).verdict() == "lower"


def test_null_difference_interval_covers_zero():
    rng = np.random.default_rng(1)
    covered = 0
    for rep in range(20):
        a, b = _scores(rng, 0.6), _scores(rng, 0.6)
        c = stats.paired_difference(a, b, n_boot=400, seed=rep)
        covered += c.low <= 0 <= c.high
    assert covered >= 17  # ≈ 95 % coverage; 17/20 tolerates chance


def test_seed_variation_widens_the_interval():
    rng = np.random.default_rng(2)
    a = _scores(rng, 0.6, n_seeds=5)
    b = a.copy()
    shift = np.array([0.2, -0.2, 0.15, -0.15, 0.0])[:, None]  # seed effects that average to 0
    noisy = np.clip(a + shift, 0, 1)
    wide = stats.paired_difference(noisy, b, n_boot=600)
    narrow = stats.paired_difference(a + 0.0, b, n_boot=600)
    assert (wide.high - wide.low) > 5 * (narrow.high - narrow.low) and not wide.significant


def test_worst_group_statistic():
    groups = np.array([0] * 50 + [1] * 50)
    a = np.concatenate([np.ones(50), np.full(50, 0.5)])[None]
    b = np.concatenate([np.ones(50), np.full(50, 0.2)])[None]
    assert stats.group_stat(a, groups) == 0.5 and stats.group_means(b, groups) == {0: 1.0, 1: pytest.approx(0.2)}
    c = stats.paired_difference(a, b, groups=groups, n_boot=200)
    assert c.diff == pytest.approx(0.3) and c.stat_a == 0.5 and c.significant


def test_non_finite_images_are_left_out_and_bad_shapes_named():
    a, b = np.array([[1.0, np.nan, 0.0, 1.0]]), np.array([[0.0, 1.0, 0.0, 1.0]])
    c = stats.paired_difference(a, b, n_boot=50)
    assert c.n_images == 3 and c.diff == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same"):
        stats.paired_difference(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="groups"):
        stats.paired_difference(np.zeros((1, 3)), np.zeros((1, 3)), groups=np.zeros(2))


def test_paired_t_matches_scipy_and_is_wider_than_a_bootstrap_over_few_runs():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(3)
    b = rng.normal(0.6, 0.05, size=4)
    a = b + rng.normal(0.03, 0.02, size=4)
    t = stats.paired_t(a, b)
    ref = ttest_rel(a, b).confidence_interval(0.95)
    assert t.diff == pytest.approx(float(np.mean(a - b)))
    assert (t.low, t.high) == pytest.approx((ref.low, ref.high))
    assert t.n_seeds == 4 and t.stat_a == pytest.approx(a.mean())
    boot = stats.paired_difference(a[:, None], b[:, None], n_boot=4000)  # the old run-level interval
    assert t.high - t.low > 1.5 * (boot.high - boot.low)
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_t(a[:1], b[:1])
    with pytest.raises(ValueError, match="must match"):
        stats.paired_t(a, b[:3])


def test_a_comparison_on_too_few_seeds_keeps_its_interval_but_judges_nothing():
    rng = np.random.default_rng(4)
    base = _scores(rng, 0.4, n_seeds=2)
    c = stats.paired_difference(np.ones_like(base), base, n_boot=300)  # a huge gain on 2 seeds
    assert c.low > 0 and c.significant  # by default every seed count is judged
    few = stats.paired_difference(np.ones_like(base), base, n_boot=300, min_seeds=3)
    assert few.low > 0 and not few.judged and not few.significant and few.verdict() == "too few seeds (2 < 3)"
    assert "**" not in few.cell() and few.as_dict()["verdict"].startswith("too few seeds")
