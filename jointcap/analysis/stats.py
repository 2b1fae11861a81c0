"""Paired comparisons of two settings: seed-level t intervals and p-values, bootstrap intervals, Holm and BH.

Verdicts rest on the seeds (issue 28): `seed_level(a, b)` reduces each run's per-image scores to one value
per seed and runs a paired t-test over the seeds (`paired_t`, with its p-value); `hierarchical_bootstrap`
gives a second interval that resamples seeds, then classes as clusters of test images. `holm` and
`benjamini_hochberg` adjust a family of p-values. The older `paired_difference` (a percentile bootstrap over
seeds × independent images) is kept for description only: with few seeds it is too narrow
(tests/test_stats.py measures its under-coverage).

A study scores every test image under every (setting, seed). To ask "does λ > 0 beat λ = 0?",
`paired_difference(a, b)` takes the per-image scores of both settings as (seeds, images) arrays,
row s of both from the same seed and column i from the same test image, and returns the
difference of their means with a two-level (seeds, then images) bootstrap interval: each
replicate resamples seeds with replacement and, independently, test images with replacement,
and recomputes both settings' statistic on the same resample (so the pairing cancels the
image difficulty and the seed's shared randomness). The statistic is the mean, or with
`groups` the worst-group mean (e.g. the shortcut split's aligned / conflicting images).
The difference is significant at the interval's level when the interval excludes 0.
Run-level metrics (one value per run) get `paired_t` instead: a t interval over the seeds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

CHUNK = 250  # bootstrap replicates computed at once (memory: CHUNK × images floats)


@dataclass(frozen=True)
class Comparison:
    """stat(a) − stat(b), its bootstrap interval and what it rests on."""

    diff: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_images: int
    n_boot: int
    stat_a: float
    stat_b: float
    min_seeds: int = 1  # fewer seeds than this: the interval is shown but judges nothing (see `judged`)
    p: float = math.nan  # two-sided p-value of "no difference" (paired t over seeds); nan where not computed

    CSV_HEADER = ("diff", "ci_low", "ci_high", "n_seeds", "n_images", "p")

    def csv_cells(self) -> list[float | int]:
        """The cells under CSV_HEADER: one layout for every table that lists comparisons."""
        return [self.diff, self.low, self.high, self.n_seeds, self.n_images, self.p]

    @staticmethod
    def check_cells(check: Comparison | None) -> list[float | str]:
        """boot_low, boot_high: a second interval shown beside the verdict (blank where none was made)."""
        return [check.low, check.high] if check is not None else ["", ""]

    @property
    def judged(self) -> bool:
        """Whether it rests on enough seeds to judge: a bootstrap over the images of 1–2 seeds leaves out how
        much the seed moves the result, so its narrow interval would read as a finding."""
        return self.n_seeds >= self.min_seeds

    @property
    def significant(self) -> bool:
        """The interval excludes 0, on enough seeds."""
        return self.judged and (self.low > 0 or self.high < 0)

    def verdict(self) -> str:
        """`higher` / `lower` (significant at the level), `no significant difference`, or `too few seeds`."""
        if not self.judged:
            return f"too few seeds ({self.n_seeds} < {self.min_seeds})"
        if not self.significant:
            return "no significant difference"
        return "higher" if self.diff > 0 else "lower"

    def cell(self, scale: float = 1.0, digits: int = 3) -> str:
        """`+9.4 [+2.8, +15.9]` (Δ and interval × scale), bold (markdown) where the interval excludes 0."""
        text = f"{self.diff * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"
        return f"**{text}**" if self.significant else text

    def as_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant, "verdict": self.verdict()}


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """(seeds, images) float64; a 1-D array is one seed."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name}: expected scores shaped (seeds, images), got {arr.shape}")
    return arr


def group_stat(scores: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Mean of (seeds, images) scores; with per-image `groups`, the lowest group mean (worst-group)."""
    scores = _as_matrix(scores, "scores")
    if groups is None:
        return float(scores.mean())
    groups = np.asarray(groups)
    return float(min(scores[:, groups == g].mean() for g in np.unique(groups)))


def group_means(scores: np.ndarray, groups: np.ndarray) -> dict:
    """{group: mean score} over seeds and the group's images."""
    scores, groups = _as_matrix(scores, "scores"), np.asarray(groups)
    return {g.item() if hasattr(g, "item") else g: float(scores[:, groups == g].mean()) for g in np.unique(groups)}


def _replicate_stats(x: np.ndarray, cs: np.ndarray, ci: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Statistic of each bootstrap replicate: seed counts cs (R, S), image counts ci (R, N) → (R,)."""
    per_image = (cs @ x) * ci  # (R, N): each image's score summed over the resampled seeds, times its multiplicity
    s = cs.sum(1, keepdims=True)  # (R, 1) = n_seeds
    if groups is None:
        return per_image.sum(1) / (s[:, 0] * ci.sum(1))
    out = np.full(len(cs), np.inf)
    for g in np.unique(groups):
        sel = groups == g
        weight = ci[:, sel].sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = per_image[:, sel].sum(1) / (s[:, 0] * weight)
        out = np.minimum(out, np.where(weight > 0, mean, np.inf))  # a group absent from a resample does not count
    return out


def _paired_finite(
    a: np.ndarray, b: np.ndarray, level: float, n_boot: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked (seeds, images) matrices a, b reduced to the images finite in both, and the kept-image mask (N,)."""
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same (seeds, images) shape: a {a.shape}, b {b.shape}")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot ≥ 1, got level={level}, n_boot={n_boot}")
    keep = np.isfinite(a).all(0) & np.isfinite(b).all(0)
    if not keep.any():
        raise ValueError("no image has a finite score in both settings")
    return a[:, keep], b[:, keep], keep


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    min_seeds: int = 1,
) -> Comparison:
    """stat(a) − stat(b) for paired (seeds, images) scores, with a percentile bootstrap interval at `level`.

    Images with a non-finite score in either setting are left out (e.g. a caption score with no
    reference). `groups` (per image) switches the statistic to the worst-group mean. On fewer than
    `min_seeds` seeds the comparison is not judged (`Comparison.judged`).
    """
    a, b, keep = _paired_finite(a, b, level, n_boot)
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(keep):
            raise ValueError(f"groups has {len(groups)} entries for {len(keep)} images")
        groups = groups[keep]
    n_seeds, n_images = a.shape
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, CHUNK):
        r = min(CHUNK, n_boot - start)
        cs = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=r).astype(np.float64)  # (R, S)
        ci = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=r).astype(np.float64)  # (R, N)
        diffs.append(_replicate_stats(a, cs, ci, groups) - _replicate_stats(b, cs, ci, groups))
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    low, high = (float(np.quantile(d, q)) for q in (alpha, 1 - alpha)) if len(d) else (math.nan, math.nan)
    sa, sb = group_stat(a, groups), group_stat(b, groups)
    return Comparison(
        diff=sa - sb,
        low=low,
        high=high,
        level=level,
        n_seeds=n_seeds,
        n_images=n_images,
        n_boot=n_boot,
        stat_a=sa,
        stat_b=sb,
        min_seeds=min_seeds,
    )


def paired_t(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Comparison:
    """mean(a − b) over paired runs (one value per seed) with a Student-t interval on n − 1 degrees of freedom.

    For run-level metrics (3–5 seeds) a percentile bootstrap is too narrow: it ignores the t quantile and
    underestimates the spread by √((n−1)/n). Runs with a non-finite value in either setting are left out."""
    a, b = (np.asarray(x, dtype=np.float64).ravel() for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"paired runs must match: a has {a.size}, b {b.size}")
    if not 0 < level < 1:
        raise ValueError(f"need 0 < level < 1, got {level}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 paired runs, got {n}")
    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
    if sd > 0:
        p = float(2 * student_t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    else:  # every seed differs by the same amount: certain, or no difference at all
        p = 1.0 if mean == 0 else 0.0
    return Comparison(
        diff=mean,
        low=mean - half,
        high=mean + half,
        level=level,
        n_seeds=n,
        n_images=0,
        n_boot=0,
        stat_a=float(a.mean()),
        stat_b=float(b.mean()),
        p=p,
    )


def per_seed(scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """(seeds,) the statistic of each seed's row of (seeds, images) scores: the mean over its finite images, or
    with `groups` the worst-group mean."""
    x = _as_matrix(scores, "scores")
    out = []
    for row in x:
        keep = np.isfinite(row)
        out.append(group_stat(row[keep][None], None if groups is None else np.asarray(groups)[keep]))
    return np.array(out)


def seed_level(
    a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None, level: float = 0.95, min_seeds: int = 2
) -> Comparison:
    """stat(a) − stat(b) from paired (seeds, images) scores, judged at the seed level: each seed's statistic
    (mean, or worst-group mean with `groups`) over the images finite in both, then `paired_t` over the seeds.
    The test images' spread enters through each seed's value, so it is not counted twice."""
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same (seeds, images) shape: a {a.shape}, b {b.shape}")
    keep = np.isfinite(a).all(0) & np.isfinite(b).all(0)
    if not keep.any():
        raise ValueError("no image has a finite score in both settings")
    g = None if groups is None else np.asarray(groups)[keep]
    if groups is not None and len(np.asarray(groups)) != len(keep):
        raise ValueError(f"groups has {len(np.asarray(groups))} entries for {len(keep)} images")
    sa, sb = per_seed(a[:, keep], g), per_seed(b[:, keep], g)
    if len(sa) < 2:
        return Comparison(
            diff=float(sa.mean() - sb.mean()),
            low=math.nan,
            high=math.nan,
            level=level,
            n_seeds=len(sa),
            n_images=int(keep.sum()),
            n_boot=0,
            stat_a=float(sa.mean()),
            stat_b=float(sb.mean()),
            min_seeds=max(min_seeds, 2),
        )
    t = paired_t(sa, sb, level)
    return Comparison(
        diff=t.diff,
        low=t.low,
        high=t.high,
        level=level,
        n_seeds=t.n_seeds,
        n_images=int(keep.sum()),
        n_boot=0,
        stat_a=t.stat_a,
        stat_b=t.stat_b,
        min_seeds=min_seeds,
        p=t.p,
    )


def hierarchical_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Comparison:
    """stat(a) − stat(b) with a two-stage percentile bootstrap: each replicate resamples the seeds, then the
    `clusters` (per image, e.g. its class) with replacement, every image of a drawn cluster coming along
    (images of one class are not independent). A second interval beside `seed_level`'s, never the verdict."""
    a, b, keep = _paired_finite(a, b, level, n_boot)
    clusters = np.asarray(clusters)
    if clusters.ndim != 1 or len(clusters) != len(keep):
        raise ValueError(f"need one cluster per image: {clusters.shape} clusters for {len(keep)} images")
    clusters = clusters[keep]
    g = None if groups is None else np.asarray(groups)[keep]
    _, index = np.unique(clusters, return_inverse=True)  # (N,) cluster number of each image
    n_seeds, n_clusters = a.shape[0], int(index.max()) + 1
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, CHUNK):
        r = min(CHUNK, n_boot - start)
        cs = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=r).astype(np.float64)  # (R, S)
        cc = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=r).astype(np.float64)  # (R, K)
        ci = cc[:, index]  # (R, N): each image weighted by its cluster's count
        diffs.append(_replicate_stats(a, cs, ci, g) - _replicate_stats(b, cs, ci, g))
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    low, high = (float(np.quantile(d, q)) for q in (alpha, 1 - alpha)) if len(d) else (math.nan, math.nan)
    sa, sb = group_stat(a, g), group_stat(b, g)
    return Comparison(sa - sb, low, high, level, n_seeds, a.shape[1], n_boot, sa, sb)


def holm(p: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error): sorted ascending, p_(i) × (m − i + 1), made
    monotone, capped at 1. Reject where adjusted < α. nan p-values stay nan and do not count in m."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def benjamini_hochberg(p: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate; scipy's `false_discovery_control`), nan
    p-values left out of the family and kept nan. Call a row significant where adjusted < q."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out
