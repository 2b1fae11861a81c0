"""A harder procedural bird benchmark (issue 11): many classes told apart only by SMALL parts.

A class is a combination of five attributes of small parts — crown colour, eyering colour,
throat colour, wingbar colour and beak shape — drawn from a palette with confusable shades
(red/orange/yellow/buff, green/olive, white/grey). The same colours come back as nuisance
attributes elsewhere on the bird (head, body, wing, beak colour) and in the clutter: decoy
heads with an eye, eyering, crown, throat and beak in *another* class's attributes, a decoy
wing with another class's wingbars, random shapes, and leaf occluders laid over the bird's
parts. Scale, tilt, facing and position vary widely; images are 80–128 px so that a part
spans a few cells of the feature map.

Each image has CUB-like captions; `captions="field_marks"` (the default, issue 28) names the visible
class-defining parts first, as a field guide does, and a nuisance part only sometimes; `"random_parts"`
(the references before issue 28) names a random subset of what is visible (not always the class-defining
parts). Every attribute word sits before the part noun it describes
("a long black beak", "white wingbars"). The split's `extra` holds per image `facts` (every
true, visible "PART ATTRIBUTE") and `class_facts` (the visible class-defining subset); with
`shortcut=true` the body and wing colours name the class in train (with probability
`shortcut_p`) but only half the time in val/test, and `extra["group"]` says per image whether they agree
(0, "aligned") or not (1, "conflicting") for worst-group accuracy. `per_class` sets the
training images per class (low-data: 10–20). Drawing helpers come from `synthetic`.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from jointcap.data import cache
from jointcap.data.synthetic import (
    BACKGROUND_RGB,
    BLOCK,
    BODY_AB,
    BODY_C,
    BODY_TILT,
    SUB_PIXELS,
    TAIL_ANCHOR,
    TAIL_ANGLE,
    TAIL_HALF_W,
    TAIL_LEN,
    WING_AB,
    WING_C,
    WING_TILT,
    _article,
    _background,
    _col,
    _contrast_color,
    _join,
    _layer,
    _rotate,
)
from jointcap.data.synthetic import _color_index as _base_color_index

GENERATOR_VERSION = 1
PART_NAMES = ("crown", "eyering", "throat", "beak", "head", "body", "wing", "wingbar", "tail")
CROWN, EYERING, THROAT, BEAK, HEAD, BODY, WING, WINGBAR, TAIL = range(len(PART_NAMES))
CLASS_PARTS = (CROWN, EYERING, THROAT, BEAK, WINGBAR)

# Confusable shades on purpose: red/orange/yellow/buff/brown, green/olive, blue/purple, white/grey.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40),
    "orange": (235, 125, 30),
    "yellow": (235, 210, 55),
    "buff": (210, 180, 125),
    "olive": (125, 130, 45),
    "green": (50, 145, 60),
    "blue": (45, 85, 215),
    "purple": (125, 55, 165),
    "white": (238, 238, 238),
    "grey": (140, 140, 140),
    "black": (28, 28, 28),
    "brown": (120, 75, 35),
}
COLOR_NAMES = tuple(PALETTE)
PALETTE_RGB = np.array([PALETTE[c] for c in COLOR_NAMES], dtype=np.float32)  # (C, 3)
LEAF_RGB = np.array([(55, 85, 40), (85, 65, 40), (70, 100, 55)], dtype=np.float32)  # occluders: not palette colours
BEAK_SHAPES = ("short", "long", "hooked")
TAIL_SHAPES = ("forked", "rounded", "pointed")
# The class-defining attributes and their values: 6 × 2 × 4 × 3 × 3 = 432 combinations.
CLASS_VALUES: dict[str, tuple[str, ...]] = {
    "crown": ("red", "orange", "yellow", "olive", "blue", "black"),
    "eyering": ("white", "black"),
    "throat": ("white", "buff", "yellow", "grey"),
    "wingbar": ("white", "yellow", "orange"),
    "beak": BEAK_SHAPES,
}
BEAK_COLORS = ("black", "grey", "orange", "yellow", "buff")
ATTRIBUTE_WORDS = list(COLOR_NAMES) + list(BEAK_SHAPES) + list(TAIL_SHAPES)
PART_WORDS = {
    "crown": CROWN,
    "cap": CROWN,
    "eyering": EYERING,
    "eyerings": EYERING,
    "throat": THROAT,
    "beak": BEAK,
    "bill": BEAK,
    "head": HEAD,
    "face": HEAD,
    "body": BODY,
    "breast": BODY,
    "belly": BODY,
    "wing": WING,
    "wings": WING,
    "wingbar": WINGBAR,
    "wingbars": WINGBAR,
    "tail": TAIL,
}
GROUP_NAMES = ("aligned", "conflicting")  # shortcut split: body/wing colours agree with the class's, or not
EVAL_ALIGNED = 0.5  # shortcut split: share of val/test images drawn aligned (both groups well populated)

# Geometry in image-size units for scale 1, facing right, y down (body, wing and tail as in `synthetic`).
HEAD_C, HEAD_R = (0.16, -0.12), 0.105
EYE_C, EYE_R, RING_R = (0.195, -0.135), 0.017, 0.037
CROWN_CUT, THROAT_CUT = -0.4, 0.3  # crown: head above HEAD_C.y + CROWN_CUT·R; throat: below + THROAT_CUT·R, front half
BEAK_BASE = (0.245, -0.105)
BEAK_GEOM = {
    "short": (0.075, 0.042, 0.0),
    "long": (0.16, 0.026, 0.0),
    "hooked": (0.105, 0.04, 0.55),
}  # len, half-w, droop
WINGBAR_U, WINGBAR_HALF = (-0.005, 0.06), 0.017  # two bars across the wing, in the wing's frame
BIRD_X_EXTENT, BIRD_Y_EXTENT = 0.44, (-0.24, 0.2)
SCALE_RANGE, TILT_RANGE = (0.7, 1.15), 0.35
N_HEAD_DECOYS, N_SHAPES, N_OCCLUDERS = 2, 3, 2
VISIBLE_FRACTION = 0.4  # a part's attributes count as visible when ≥ this share of its pixels is unoccluded

# Layer ids of the label map: 0 background, decoy heads, the decoy wing, shapes, the bird, occluders.
_HEAD_LAYERS = ("beak", "head", "crown", "throat", "eyering", "eye")
_D_HEAD0 = 1
_D_WING, _D_WINGBAR = _D_HEAD0 + N_HEAD_DECOYS * len(_HEAD_LAYERS), _D_HEAD0 + N_HEAD_DECOYS * len(_HEAD_LAYERS) + 1
_SHAPE0 = _D_WINGBAR + 1
_TAIL, _BODY, _WING, _WINGBAR = range(_SHAPE0 + N_SHAPES, _SHAPE0 + N_SHAPES + 4)
_BIRD_HEAD0 = _WINGBAR + 1
_OCC0 = _BIRD_HEAD0 + len(_HEAD_LAYERS)
_N_LAYERS = _OCC0 + N_OCCLUDERS
_PART_LAYERS = {CROWN: ("crown",), EYERING: ("eyering", "eye"), THROAT: ("throat",), BEAK: ("beak",), HEAD: ("head",)}


@dataclass(frozen=True)
class HardClassSpec:
    """The class-defining attributes of one class."""

    crown: str
    eyering: str
    throat: str
    wingbar: str
    beak: str

    @property
    def name(self) -> str:
        return f"{self.crown}-crown {self.eyering}-eyering {self.throat}-throat {self.wingbar}-wingbar {self.beak}-beak"


def max_classes() -> int:
    """How many distinct class attribute combinations exist."""
    return math.prod(len(v) for v in CLASS_VALUES.values())


def class_specs(n_classes: int) -> list[HardClassSpec]:
    """The first `n_classes` of a fixed random order of all combinations (a smaller set is a prefix of a larger one).

    A random half of the grid keeps most classes with neighbours that differ in one attribute only.
    """
    if not 1 <= n_classes <= max_classes():
        raise ValueError(
            f"n_classes must be in [1, {max_classes()}] (the combinations of {', '.join(CLASS_VALUES)}), "
            f"got {n_classes}"
        )
    grid = list(itertools.product(*CLASS_VALUES.values()))
    order = np.random.default_rng(20200611).permutation(len(grid))
    return [HardClassSpec(*grid[i]) for i in order[:n_classes]]


def _color_index(names) -> np.ndarray:
    return _base_color_index(names, COLOR_NAMES)


def _contrast(color_idx: np.ndarray) -> np.ndarray:
    """Eye colour on each head colour: white on dark colours, black on light ones."""
    return _contrast_color(color_idx, PALETTE_RGB, COLOR_NAMES)


def shortcut_pairs(specs: list[HardClassSpec]) -> np.ndarray:
    """(K, 2) palette indices: the (body, wing) colours that name each class in a shortcut training split.

    Distinct per class (so they alone identify it), body ≠ wing, wing ≠ the class's wingbar, body ≠ its throat.
    """
    rng = np.random.default_rng(7)
    c = len(COLOR_NAMES)
    pairs = [(b, w) for b in range(c) for w in range(c) if b != w]
    order = rng.permutation(len(pairs))
    used: set[tuple[int, int]] = set()
    out = np.zeros((len(specs), 2), np.int64)
    for k, s in enumerate(specs):
        bar, throat = COLOR_NAMES.index(s.wingbar), COLOR_NAMES.index(s.throat)
        for i in order:
            b, w = pairs[i]
            if (b, w) not in used and w != bar and b != throat:
                used.add((b, w))
                out[k] = (b, w)
                break
        else:
            raise ValueError(f"no free (body, wing) colour pair for class {k}: too many classes for a shortcut split")
    return out


# ----------------------------------------------------------------------------------- sampling
@dataclass
class _Params:
    """Per-image random parameters of one block (arrays of length B; the bird's attributes as indices)."""

    labels: np.ndarray
    crown: np.ndarray  # palette indices …
    eyering: np.ndarray
    throat: np.ndarray
    wingbar: np.ndarray
    beak: np.ndarray  # index into BEAK_SHAPES
    head: np.ndarray  # palette indices of the nuisance colours …
    body: np.ndarray
    wing: np.ndarray
    beak_color: np.ndarray
    tail: np.ndarray  # index into TAIL_SHAPES
    group: np.ndarray  # 0 aligned, 1 conflicting (shortcut split)
    scale: np.ndarray
    facing: np.ndarray
    tilt: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    dh_active: np.ndarray  # (B, H) decoy heads
    dh_colors: np.ndarray  # (B, H, 5): head, crown, throat, eyering, beak colour
    dh_beak: np.ndarray  # (B, H)
    dh_geom: np.ndarray  # (B, H, 4): cx, cy, scale, facing·tilt packed as (cx, cy, scale, angle)
    dh_facing: np.ndarray  # (B, H)
    dw_active: np.ndarray  # (B,) decoy wing
    dw_colors: np.ndarray  # (B, 2): wing, wingbar
    dw_geom: np.ndarray  # (B, 4): cx, cy, scale, angle
    s_active: np.ndarray  # (B, N) random shapes
    s_kind: np.ndarray  # (B, N) 0 disc, 1 ellipse, 2 triangle
    s_color: np.ndarray
    s_geom: np.ndarray  # (B, N, 5): cx, cy, a, b, angle
    o_active: np.ndarray  # (B, O) leaf occluders over the bird
    o_color: np.ndarray  # (B, O) index into LEAF_RGB
    o_geom: np.ndarray  # (B, O, 5)
    gain: np.ndarray  # (B, 3) lighting: per-channel gain
    bg_pair: np.ndarray  # (B, 2) what synthetic._background reads
    bg_field: np.ndarray  # (B, 5, 5)
    stripe: np.ndarray  # (B, 4)


def _other(rng: np.random.Generator, avoid: list[np.ndarray], choices: np.ndarray) -> np.ndarray:
    """Per image a random entry of `choices` (palette indices) equal to none of the `avoid` arrays (B,)."""
    b = len(avoid[0])
    cand = choices[rng.integers(0, len(choices), (b, 16))]  # (B, 16)
    ok = np.ones(cand.shape, bool)
    for a in avoid:
        ok &= cand != a[:, None]
    return cand[np.arange(b), ok.argmax(1)]  # 16 tries: failing all is vanishingly rare and only merges two shades


def _to_image(bx: np.ndarray, by: np.ndarray, cx, cy, scale, facing, angle) -> tuple[np.ndarray, np.ndarray]:
    """Bird-frame points → image coordinates (the inverse of the frame `_frame` builds)."""
    u, v = bx * scale * facing, by * scale
    c, s = np.cos(angle), np.sin(angle)
    return cx + u * c - v * s, cy + u * s + v * c


def _place_away(
    rng: np.random.Generator, cx, cy, keep_out: np.ndarray, radius: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (B, K) for objects of `radius` (B, K) outside a disc of `keep_out` (B,) around (cx, cy); 16 tries."""
    b, k = radius.shape
    cand = rng.random((b, k, 16, 2))
    dist = np.hypot(cand[..., 0] - cx[:, None, None], cand[..., 1] - cy[:, None, None])
    ok = dist > (keep_out[:, None, None] + radius[..., None])
    first = ok.argmax(-1)
    pick = np.take_along_axis(cand, first[..., None, None], axis=2)[:, :, 0]
    return pick[..., 0], pick[..., 1], ok.any(-1)


def _sample_params(
    rng: np.random.Generator,
    start: int,
    b: int,
    specs: list[HardClassSpec],
    clutter: float,
    occlusion: float,
    lighting: float,
    shortcut_p: float | None,
    pairs: np.ndarray | None,
) -> _Params:
    """Every per-image random choice of a block (labels balanced within the block)."""
    k = len(specs)
    labels = (np.arange(start, start + b) % k)[rng.permutation(b)]
    crown_all, ring_all = _color_index([s.crown for s in specs]), _color_index([s.eyering for s in specs])
    throat_all, bar_all = _color_index([s.throat for s in specs]), _color_index([s.wingbar for s in specs])
    beak_all = np.array([BEAK_SHAPES.index(s.beak) for s in specs])
    crown, ring, throat, bar, beak = (a[labels] for a in (crown_all, ring_all, throat_all, bar_all, beak_all))
    allc = np.arange(len(COLOR_NAMES))
    head = _other(rng, [crown, ring, throat], allc)  # the small parts stay visible against the head
    body = _other(rng, [throat], allc)
    wing = _other(rng, [bar, body], allc)
    group = np.zeros(b, np.int64)
    if shortcut_p is not None:
        assert pairs is not None  # given together with shortcut_p
        aligned = rng.random(b) < shortcut_p
        body = np.where(aligned, pairs[labels, 0], body)
        wing = np.where(aligned, pairs[labels, 1], wing)
        group = (~((body == pairs[labels, 0]) & (wing == pairs[labels, 1]))).astype(np.int64)
    beak_color = _other(rng, [head], _color_index(BEAK_COLORS))
    tail = rng.integers(0, len(TAIL_SHAPES), b)
    scale = rng.uniform(*SCALE_RANGE, b)
    facing = np.where(rng.random(b) < 0.5, 1.0, -1.0)
    tilt = rng.uniform(-TILT_RANGE, TILT_RANGE, b)
    lo_x, hi_x = 0.01 + BIRD_X_EXTENT * scale, 0.99 - BIRD_X_EXTENT * scale
    lo_y, hi_y = 0.01 - BIRD_Y_EXTENT[0] * scale, 0.99 - BIRD_Y_EXTENT[1] * scale
    cx, cy = lo_x + (hi_x - lo_x) * rng.random(b), lo_y + (hi_y - lo_y) * rng.random(b)
    keep_out = 0.36 * scale

    # Decoy heads: another class's crown/throat/eyering/beak on a nuisance-coloured head.
    h = N_HEAD_DECOYS
    dcls = (labels[:, None] + rng.integers(1, max(k, 2), (b, h))) % k  # (B, H), never the label
    dh_colors = np.stack(
        [np.zeros((b, h), np.int64), crown_all[dcls], throat_all[dcls], ring_all[dcls], np.zeros((b, h), np.int64)], -1
    )
    for j in range(h):
        dh_colors[:, j, 0] = _other(rng, [dh_colors[:, j, 1], dh_colors[:, j, 2], dh_colors[:, j, 3]], allc)
        dh_colors[:, j, 4] = _other(rng, [dh_colors[:, j, 0]], _color_index(BEAK_COLORS))
    dh_scale = scale[:, None] * rng.uniform(0.8, 1.2, (b, h))
    dh_x, dh_y, dh_ok = _place_away(rng, cx, cy, keep_out, HEAD_R * 1.6 * dh_scale)
    dh_active = dh_ok & (rng.random((b, h)) < min(1.0, 0.8 * clutter))
    dh_geom = np.stack([dh_x, dh_y, dh_scale, rng.uniform(-0.5, 0.5, (b, h))], -1)
    # A decoy wing with another class's wingbars, in another nuisance colour.
    wcls = (labels + rng.integers(1, max(k, 2), b)) % k
    dw_colors = np.stack([_other(rng, [bar_all[wcls]], allc), bar_all[wcls]], -1)
    dw_scale = scale * rng.uniform(0.8, 1.2, b)
    dw_x, dw_y, dw_ok = _place_away(rng, cx, cy, keep_out, (WING_AB[0] * dw_scale)[:, None])
    dw_active = dw_ok[:, 0] & (rng.random(b) < min(1.0, 0.6 * clutter))
    dw_geom = np.stack([dw_x[:, 0], dw_y[:, 0], dw_scale, rng.uniform(0, np.pi, b)], -1)
    # Random shapes in palette colours.
    n = N_SHAPES
    size = rng.uniform(0.04, 0.09, (b, n))
    stretch = rng.uniform(1.0, 1.8, (b, n))
    s_x, s_y, s_ok = _place_away(rng, cx, cy, keep_out, size * stretch)
    s_active = s_ok & (rng.random((b, n)) < min(1.0, 0.6 * clutter))
    s_kind = rng.integers(0, 3, (b, n))
    s_geom = np.stack([s_x, s_y, np.where(s_kind == 0, size, size * stretch), size, rng.uniform(0, np.pi, (b, n))], -1)
    # Leaf occluders centred near one of the bird's parts (crown, throat, beak, wingbars, eye).
    o = N_OCCLUDERS
    targets = np.array([(0.15, -0.2), (0.2, -0.07), (0.3, -0.1), (-0.03, 0.0), (0.195, -0.135)])
    t = targets[rng.integers(0, len(targets), (b, o))] + rng.normal(0, 0.03, (b, o, 2))
    ang = (tilt * facing)[:, None]
    ox, oy = _to_image(t[..., 0], t[..., 1], cx[:, None], cy[:, None], scale[:, None], facing[:, None], ang)
    o_size = scale[:, None] * rng.uniform(0.035, 0.065, (b, o))
    o_geom = np.stack([ox, oy, o_size * rng.uniform(1.3, 2.2, (b, o)), o_size, rng.uniform(0, np.pi, (b, o))], -1)
    o_active = rng.random((b, o)) < occlusion
    gain = (1.0 + rng.uniform(-lighting, lighting, (b, 1)) + rng.uniform(-lighting / 3, lighting / 3, (b, 3))).astype(
        np.float32
    )
    stripe = np.stack(
        [
            (rng.random(b) < 0.5) * rng.uniform(10, 30, b) * clutter,
            rng.uniform(4, 12, b),
            rng.uniform(0, np.pi, b),
            rng.uniform(0, 2 * np.pi, b),
        ],
        -1,
    )
    return _Params(
        labels=labels,
        crown=crown,
        eyering=ring,
        throat=throat,
        wingbar=bar,
        beak=beak,
        head=head,
        body=body,
        wing=wing,
        beak_color=beak_color,
        tail=tail,
        group=group,
        scale=scale,
        facing=facing,
        tilt=tilt,
        cx=cx,
        cy=cy,
        dh_active=dh_active,
        dh_colors=dh_colors,
        dh_beak=rng.integers(0, len(BEAK_SHAPES), (b, h)),
        dh_geom=dh_geom,
        dh_facing=np.where(rng.random((b, h)) < 0.5, 1.0, -1.0),
        dw_active=dw_active,
        dw_colors=dw_colors,
        dw_geom=dw_geom,
        s_active=s_active,
        s_kind=s_kind,
        s_color=rng.integers(0, len(COLOR_NAMES), (b, n)),
        s_geom=s_geom,
        o_active=o_active,
        o_color=rng.integers(0, len(LEAF_RGB), (b, o)),
        o_geom=o_geom,
        gain=gain,
        bg_pair=rng.integers(0, len(BACKGROUND_RGB), (b, 2)),
        bg_field=rng.random((b, 5, 5), dtype=np.float32),
        stripe=stripe,
    )


# ----------------------------------------------------------------------------------- drawing
def _frame(x, y, cx, cy, scale, facing, angle) -> tuple[np.ndarray, np.ndarray]:
    """Image grid → a bird frame (x forward, y down, scale 1) centred at (cx, cy); per-image (B,) parameters."""
    u, v = _rotate(x, y, _col(cx), _col(cy), _col(angle))
    return u * _col(facing / scale), v * _col(1 / scale)


def _draw_head(
    label: np.ndarray, bx: np.ndarray, by: np.ndarray, beak: np.ndarray, active: np.ndarray, first: int
) -> None:
    """In place: a head with beak, crown, throat, eyering and eye in layers first … first+5 (`_HEAD_LAYERS`)."""
    act = active[:, None, None]
    length, half, droop = (_col(np.array([BEAK_GEOM[BEAK_SHAPES[i]][j] for i in beak])) for j in range(3))
    du = bx - BEAK_BASE[0]
    t = du / length
    centre = BEAK_BASE[1] + droop * length * t * t  # a hooked beak's axis bends down towards the tip
    _layer(label, act & (du >= -0.02) & (t <= 1) & (np.abs(by - centre) <= half * (1 - np.clip(t, 0, 1))), first)
    hx, hy = bx - HEAD_C[0], by - HEAD_C[1]
    head = act & (hx * hx + hy * hy <= HEAD_R**2)
    _layer(label, head, first + 1)
    _layer(label, head & (hy < CROWN_CUT * HEAD_R), first + 2)
    _layer(label, head & (hy > THROAT_CUT * HEAD_R) & (hx > -0.15 * HEAD_R), first + 3)
    ex, ey = bx - EYE_C[0], by - EYE_C[1]
    r2 = ex * ex + ey * ey
    _layer(label, act & (r2 <= RING_R**2), first + 4)
    _layer(label, act & (r2 <= EYE_R**2), first + 5)


def _wing_layers(
    label: np.ndarray, wu: np.ndarray, wv: np.ndarray, active: np.ndarray, wing_id: int, bar_id: int
) -> None:
    """In place: a wing ellipse (in its own frame) with two wingbars across it."""
    wing = active[:, None, None] & ((wu / WING_AB[0]) ** 2 + (wv / WING_AB[1]) ** 2 <= 1.0)
    _layer(label, wing, wing_id)
    bars = (np.abs(wu - WINGBAR_U[0]) <= WINGBAR_HALF) | (np.abs(wu - WINGBAR_U[1]) <= WINGBAR_HALF)
    _layer(label, wing & bars, bar_id)


def _ellipses(
    label: np.ndarray, x, y, geom: np.ndarray, active: np.ndarray, first: int, kind: np.ndarray | None = None
) -> None:
    """In place: per slot k an ellipse (or disc / triangle by `kind`) of geometry (B, K, 5) in layer first + k."""
    for k in range(geom.shape[1]):
        if not active[:, k].any():
            continue
        cx, cy, a, bb, ang = (_col(geom[:, k, i]) for i in range(5))
        u, v = _rotate(x, y, cx, cy, ang)
        shape = (u / a) ** 2 + (v / bb) ** 2 <= 1.0
        if kind is not None and (kind[:, k] == 2).any():  # a triangle in the ellipse's frame: tip at (a, 0)
            tri = (u >= -0.5 * a) & (np.abs(v) <= (a - u) * (bb / (1.5 * a)) * 1.2)
            shape = np.where((kind[:, k] == 2)[:, None, None], tri, shape)
        _layer(label, shape & active[:, k, None, None], first + k)


def _shapes(p: _Params, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label maps (B, S, S) uint8 of which layer each pixel shows: with occluders, and without them."""
    b = len(p.labels)
    label = np.zeros((b, y.shape[1], x.shape[2]), np.uint8)
    for j in range(N_HEAD_DECOYS):
        g = p.dh_geom[:, j]
        bx, by = _frame(x, y, g[:, 0], g[:, 1], g[:, 2], p.dh_facing[:, j], g[:, 3])
        # centre the decoy on its head, not on a missing body
        _draw_head(
            label, bx + HEAD_C[0], by + HEAD_C[1], p.dh_beak[:, j], p.dh_active[:, j], _D_HEAD0 + j * len(_HEAD_LAYERS)
        )
    g = p.dw_geom
    wu, wv = _frame(x, y, g[:, 0], g[:, 1], g[:, 2], np.ones(b), g[:, 3])
    _wing_layers(label, wu, wv, p.dw_active, _D_WING, _D_WINGBAR)
    _ellipses(label, x, y, p.s_geom, p.s_active, _SHAPE0, p.s_kind)

    bx, by = _frame(x, y, p.cx, p.cy, p.scale, p.facing, p.tilt * p.facing)
    t, w = _rotate(bx, by, TAIL_ANCHOR[0], TAIL_ANCHOR[1], math.pi - TAIL_ANGLE)  # along the tail, across it
    w = np.abs(w)
    shape = p.tail[:, None, None]
    fan = (t >= -0.03) & (t <= TAIL_LEN) & (w <= TAIL_HALF_W * (0.45 + 0.55 * t / TAIL_LEN))
    forked = fan & ~((t > 0.6 * TAIL_LEN) & (w < 0.35 * TAIL_HALF_W))  # a notch cut from the end
    rounded = (t >= -0.03) & ((t / TAIL_LEN) ** 2 + (w / (0.8 * TAIL_HALF_W)) ** 2 <= 1.0)
    pointed = (t >= -0.03) & (w <= 0.7 * TAIL_HALF_W * (1 - t / (1.15 * TAIL_LEN)))
    _layer(label, np.where(shape == 0, forked, np.where(shape == 1, rounded, pointed)), _TAIL)
    bu, bv = _rotate(bx, by, BODY_C[0], BODY_C[1], BODY_TILT)
    _layer(label, (bu / BODY_AB[0]) ** 2 + (bv / BODY_AB[1]) ** 2 <= 1.0, _BODY)
    wu, wv = _rotate(bx, by, WING_C[0], WING_C[1], WING_TILT)
    _wing_layers(label, wu, wv, np.ones(b, bool), _WING, _WINGBAR)
    _draw_head(label, bx, by, p.beak, np.ones(b, bool), _BIRD_HEAD0)
    bare = label.copy()
    _ellipses(label, x, y, p.o_geom, p.o_active, _OCC0)
    return label, bare


def _layer_rgb(p: _Params) -> np.ndarray:
    """RGB of every layer of every image: (B, L, 3) float32 (layer 0, the background, unused)."""
    b = len(p.labels)
    rgb = np.zeros((b, _N_LAYERS, 3), np.float32)
    for j in range(N_HEAD_DECOYS):
        c = p.dh_colors[:, j]  # head, crown, throat, eyering, beak
        first = _D_HEAD0 + j * len(_HEAD_LAYERS)
        for off, col in enumerate((c[:, 4], c[:, 0], c[:, 1], c[:, 2], c[:, 3], _contrast(c[:, 0]))):
            rgb[:, first + off] = PALETTE_RGB[col]
    rgb[:, _D_WING], rgb[:, _D_WINGBAR] = PALETTE_RGB[p.dw_colors[:, 0]], PALETTE_RGB[p.dw_colors[:, 1]]
    rgb[:, _SHAPE0 : _SHAPE0 + N_SHAPES] = PALETTE_RGB[p.s_color]
    rgb[:, _TAIL], rgb[:, _BODY] = PALETTE_RGB[p.body] * 0.75, PALETTE_RGB[p.body]  # a darker tail shows its outline
    rgb[:, _WING], rgb[:, _WINGBAR] = PALETTE_RGB[p.wing], PALETTE_RGB[p.wingbar]
    bird = (p.beak_color, p.head, p.crown, p.throat, p.eyering, _contrast(p.head))
    for off, col in enumerate(bird):
        rgb[:, _BIRD_HEAD0 + off] = PALETTE_RGB[col]
    rgb[:, _OCC0 : _OCC0 + N_OCCLUDERS] = LEAF_RGB[p.o_color]
    return rgb


def _part_masks(label: np.ndarray) -> np.ndarray:
    """(B, P, S, S) bool visible pixels of each of the bird's parts in a label map."""
    ids = {i: [_BIRD_HEAD0 + _HEAD_LAYERS.index(n) for n in names] for i, names in _PART_LAYERS.items()}
    ids.update({BODY: [_BODY], WING: [_WING], WINGBAR: [_WINGBAR], TAIL: [_TAIL]})
    return np.stack([np.isin(label, ids[i]) for i in range(len(PART_NAMES))], 1)


def _draw_block(
    rng: np.random.Generator, p: _Params, size: int, clutter: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images uint8 (B, S, S, 3), visible part masks uint8 (B, P, S, S) and each part's visible share (B, P)."""
    b = len(p.labels)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = g[None, None, :], g[None, :, None]
    img = _background(cast(Any, p), x, y, clutter)  # (B, S, S, 3); this _Params has the fields it reads
    label, bare = _shapes(p, x, y)
    colors = _layer_rgb(p).reshape(-1, 3)
    flat = label.astype(np.int64) + (np.arange(b) * _N_LAYERS)[:, None, None]
    np.copyto(img, colors[flat], where=(label > 0)[..., None])
    img *= p.gain[:, None, None, :]
    img += rng.standard_normal(img.shape, dtype=np.float32) * (3.0 + 4.0 * min(clutter, 2.0))
    masks = _part_masks(label)
    whole = _part_masks(bare).sum((2, 3))
    share = masks.sum((2, 3)) / np.maximum(whole, 1)  # (B, P)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), masks.view(np.uint8), share


# ----------------------------------------------------------------------------------- captions
def _image_attributes(p: _Params, i: int) -> dict[str, list[str]]:
    """Every true attribute of image `i`, by part name (a part may have several: the beak's shape and colour)."""
    return {
        "crown": [COLOR_NAMES[p.crown[i]]],
        "eyering": [COLOR_NAMES[p.eyering[i]]],
        "throat": [COLOR_NAMES[p.throat[i]]],
        "beak": [BEAK_SHAPES[p.beak[i]], COLOR_NAMES[p.beak_color[i]]],
        "head": [COLOR_NAMES[p.head[i]]],
        "body": [COLOR_NAMES[p.body[i]]],
        "wing": [COLOR_NAMES[p.wing[i]]],
        "wingbar": [COLOR_NAMES[p.wingbar[i]]],
        "tail": [TAIL_SHAPES[p.tail[i]]],
    }


def _facts(attrs: dict[str, list[str]], share: np.ndarray) -> tuple[list[str], list[str]]:
    """(facts, class_facts): "PART ATTRIBUTE" of every visible part; the class-defining subset (beak shape only)."""
    facts, class_facts = [], []
    for i, part in enumerate(PART_NAMES):
        if share[i] < VISIBLE_FRACTION:
            continue
        for j, value in enumerate(attrs[part]):
            facts.append(f"{part} {value}")
            if i in CLASS_PARTS and j == 0:
                class_facts.append(f"{part} {value}")
    return facts, class_facts


def _phrase(r: random.Random, part: str, values: list[str]) -> str:
    """One caption phrase: the attribute words, then the part noun."""
    if part == "beak":
        words = r.choice((values, values[:1], values[1:]))
        return _article(" ".join(words) + " " + r.choice(("beak", "bill")))
    if part == "crown":
        return _article(f"{values[0]} {r.choice(('crown', 'crown', 'cap'))}")
    if part == "head":
        return _article(f"{values[0]} {r.choice(('head', 'face'))}")
    if part == "body":
        return _article(f"{values[0]} {r.choice(('breast', 'belly', 'body'))}")
    if part in ("wing", "wingbar"):
        return f"{values[0]} {part}s"
    return _article(f"{values[0]} {part}")


def _captions(r: random.Random, attrs: dict[str, list[str]], share: np.ndarray, n: int, size_word: str) -> list[str]:
    """`n` captions, each naming a random subset (1–5 parts) of the visible parts' true attributes."""
    visible = [part for i, part in enumerate(PART_NAMES) if share[i] >= VISIBLE_FRACTION] or ["body"]
    out = []
    for _ in range(n):
        k = min(len(visible), r.choice((1, 2, 2, 3, 3, 3, 4, 4, 5)))
        chosen = r.sample(visible, k)
        if "wing" in chosen and "wingbar" in chosen and r.random() < 0.6:  # "olive wings with white wingbars"
            chosen.remove("wingbar")
            phrases = [f"{_phrase(r, 'wing', attrs['wing'])} with {_phrase(r, 'wingbar', attrs['wingbar'])}"]
        else:
            phrases = []
        phrases += [_phrase(r, part, attrs[part]) for part in chosen if not (phrases and part == "wing")]
        r.shuffle(phrases)
        bird = f"{size_word} bird" if size_word else "bird"
        opener = r.choice(
            ("this bird has {}", "the bird has {}", "a {} with {}", "this {} has {}", "this is a {} with {}", "{}")
        )
        text = opener.format(bird, _join(phrases)) if opener.count("{}") == 2 else opener.format(_join(phrases))
        out.append(text + ("." if r.random() < 0.5 else ""))
    return out


CAPTION_STYLES = ("field_marks", "random_parts")  # data.source.captions: how a reference chooses what to name
FIELD_MARK_P = 0.9  # field_marks: the chance that a reference names each visible class-defining part
NUISANCE_COUNTS = (0, 0, 0, 1, 1, 2)  # field_marks: nuisance phrases after the field marks (mean 2/3), drawn uniformly
_FIELD_OPENERS = (
    "this bird has {}",
    "a {} with {}",
    "this is a {} with {}",
    "this {} has {}",
    "look for {}",
    "note {}",
    "field marks: {}",
    "{}",
)
_NUISANCE_LINKS = (", with {}", "; also {}", ", plus {}")  # after a list of field marks (" and {}" after one)


def _field_mark_captions(
    r: random.Random, attrs: dict[str, list[str]], share: np.ndarray, n: int, size_word: str
) -> list[str]:
    """`n` field-guide references: the visible class-defining parts first (each with FIELD_MARK_P, in varied
    order, the beak by its shape), then sometimes a nuisance part or two (head, body, wing, tail, beak colour)."""
    visible = {part for i, part in enumerate(PART_NAMES) if share[i] >= VISIBLE_FRACTION}
    marks = [PART_NAMES[i] for i in CLASS_PARTS if PART_NAMES[i] in visible]
    nuisance = [p for p in ("head", "body", "wing", "tail") if p in visible] or ["body"]
    out = []
    for _ in range(n):
        chosen = [p for p in marks if r.random() < FIELD_MARK_P] or marks[:1]
        r.shuffle(chosen)
        phrases = []
        for part in chosen:
            if part == "beak":  # the shape is the field mark; its colour (a nuisance) only sometimes
                words = attrs["beak"] if r.random() < 0.25 else attrs["beak"][:1]
                phrases.append(_article(" ".join(words) + " " + r.choice(("beak", "bill"))))
            elif part == "wingbar" and "wing" in visible and r.random() < 0.2:  # "white wingbars on olive wings"
                phrases.append(f"{attrs['wingbar'][0]} wingbars on {attrs['wing'][0]} wings")
            else:
                phrases.append(_phrase(r, part, attrs[part]))
        extra = r.sample(nuisance, min(len(nuisance), r.choice(NUISANCE_COUNTS)))
        text = _join(phrases) if phrases else ""
        if extra:
            tail = _join([_phrase(r, part, attrs[part]) for part in extra])
            link = r.choice(_NUISANCE_LINKS if len(phrases) > 1 else (*_NUISANCE_LINKS, " and {}"))
            text = text + link.format(tail) if text else tail
        bird = f"{size_word} bird" if size_word else "bird"
        opener = r.choice(_FIELD_OPENERS)
        text = opener.format(bird, text) if opener.count("{}") == 2 else opener.format(text)
        out.append(text + ("." if r.random() < 0.5 else ""))
    return out


# ----------------------------------------------------------------------------------- public API
def generate_split(
    n: int,
    n_classes: int = 120,
    image_size: int = 96,
    seed: int = 0,
    captions_per_image: int = 10,
    clutter: float = 1.0,
    occlusion: float = 0.3,
    lighting: float = 0.1,
    shortcut_p: float | None = None,
    split: str = "train",
    captions: str = "random_parts",
) -> cache.SplitData:
    """Generate `n` hard birds with labels, captions, keys f"{split}_{i:06d}", part masks and facts.

    `shortcut_p`: None draws body and wing colours freely; a probability gives them the class's
    shortcut pair (`shortcut_pairs`) that often, and stores the group of each image.
    `captions`: how each reference chooses what to name (CAPTION_STYLES): "random_parts" a random 1–5 visible
    parts; "field_marks" the class-defining parts first, nuisance parts sometimes. Images are the same in both.
    Image i depends only on (seed, i), so a shorter split is a prefix of a longer one.
    """
    if captions not in CAPTION_STYLES:
        raise ValueError(f"data.source.captions must be one of {', '.join(CAPTION_STYLES)}, got {captions!r}")
    if (
        n < 0
        or image_size < 32
        or captions_per_image < 1
        or clutter < 0
        or seed < 0
        or not 0 <= occlusion <= 1
        or not 0 <= lighting < 1
        or (shortcut_p is not None and not 0 <= shortcut_p <= 1)
    ):
        raise ValueError(
            f"bad synthetic_hard split arguments: n={n} image_size={image_size} (≥ 32) captions={captions_per_image} "
            f"clutter={clutter} occlusion={occlusion} lighting={lighting} shortcut_p={shortcut_p} seed={seed}"
        )
    specs = class_specs(n_classes)
    pairs = shortcut_pairs(specs) if shortcut_p is not None else None
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    masks = np.empty((n, len(PART_NAMES), image_size, image_size), np.uint8)
    labels = np.empty(n, np.int64)
    references: list[list[str]] = []
    facts: list[list[str]] = []
    class_facts: list[list[str]] = []
    groups: list[int] = []
    attributes: dict[str, list[str]] = {}
    sub = max(1, SUB_PIXELS // (image_size * image_size))
    for start in range(0, n, BLOCK):
        rng = np.random.default_rng([GENERATOR_VERSION, seed, start // BLOCK, 11])
        p = _sample_params(rng, start, BLOCK, specs, clutter, occlusion, lighting, shortcut_p, pairs)
        r = random.Random(int(rng.integers(0, 2**63)))
        m = min(BLOCK, n - start)
        share = np.empty((m, len(PART_NAMES)))
        for lo in range(0, m, sub):
            hi = min(m, lo + sub)
            part = _Params(*(getattr(p, k)[lo:hi] for k in p.__dataclass_fields__))
            noise_rng = np.random.default_rng([GENERATOR_VERSION, seed, start // BLOCK, lo, 11])
            images[start + lo : start + hi], masks[start + lo : start + hi], share[lo:hi] = _draw_block(
                noise_rng, part, image_size, clutter
            )
        labels[start : start + m] = p.labels[:m]
        for i in range(m):
            a = _image_attributes(p, i)
            f, cf = _facts(a, share[i])
            facts.append(f)
            class_facts.append(cf)
            s = p.scale[i]
            size_word = r.choice(("small", "little")) if s < 0.85 else r.choice(("large", "big")) if s > 1.02 else ""
            write = _field_mark_captions if captions == "field_marks" else _captions
            references.append(write(r, a, share[i], captions_per_image, size_word))
            for key in ("head", "body", "wing", "tail"):
                attributes.setdefault(key, []).append(a[key][0])
            attributes.setdefault("beak_color", []).append(a["beak"][1])
            groups.append(int(p.group[i]))
    keys = [f"{split}_{i:06d}" for i in range(n)]
    extra: dict = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "facts": facts,
        "class_facts": class_facts,
        "attributes": attributes,
    }
    if shortcut_p is not None:
        extra.update(group=groups, group_names=list(GROUP_NAMES), shortcut_p=shortcut_p)
    if captions != "random_parts":
        extra["captions"] = captions
    data = cache.SplitData(images, labels, references, keys, masks=masks, extra=extra)
    data.validate(f"synthetic_hard {split}")
    return data


def dataset_info(n_classes: int, shortcut: bool = False) -> dict:
    """The info.json content: classes, parts and caption vocabulary roles (the correctness metrics' interface)."""
    specs = class_specs(n_classes)
    info = {
        "name": "synthetic_hard",
        "num_classes": n_classes,
        "class_names": [s.name for s in specs],
        "class_attributes": [
            {"crown": s.crown, "eyering": s.eyering, "throat": s.throat, "wingbar": s.wingbar, "beak": s.beak}
            for s in specs
        ],
        "part_names": list(PART_NAMES),
        "part_words": dict(PART_WORDS),
        "attribute_words": list(ATTRIBUTE_WORDS),
        "class_parts": list(CLASS_PARTS),
        "generator_version": GENERATOR_VERSION,
    }
    if shortcut:
        pairs = shortcut_pairs(specs)
        info["shortcut"] = {
            "features": ["body", "wing"],
            "group_names": list(GROUP_NAMES),
            "class_colors": [[COLOR_NAMES[b], COLOR_NAMES[w]] for b, w in pairs],
        }
    return info


class HardSyntheticSource:
    """The hard procedural birds as a `jointcap.data.source.Source`: train/val/test from one seed.

    `per_class` training images per class (n_train = per_class × n_classes; 10–20 is the low-data
    option); val and test have `val_per_class` / `test_per_class`. `shortcut=true`: in train the
    body and wing colours are the class's own pair with probability `shortcut_p`; in val and test
    with probability EVAL_ALIGNED = 0.5, so the shortcut predicts little there and both groups of
    `extra["group"]` (aligned / conflicting) hold about half the images.
    """

    name = "synthetic_hard"

    def __init__(
        self,
        n_classes: int = 100,
        image_size: int = 80,
        per_class: int = 50,
        val_per_class: int = 5,
        test_per_class: int = 10,
        seed: int = 0,
        captions_per_image: int = 10,
        clutter: float = 0.5,
        occlusion: float = 0.15,
        lighting: float = 0.05,
        shortcut: bool = False,
        shortcut_p: float = 0.95,
        captions: str = "field_marks",
    ) -> None:
        class_specs(n_classes)  # fail early on an impossible class count
        if shortcut:
            shortcut_pairs(class_specs(n_classes))
        if min(per_class, val_per_class, test_per_class) < 1:
            raise ValueError(
                "per_class, val_per_class and test_per_class must be ≥ 1, "
                f"got {per_class}, {val_per_class}, {test_per_class}"
            )
        if not 0 <= shortcut_p <= 1:
            raise ValueError(f"shortcut_p must be in [0, 1], got {shortcut_p}")
        if captions not in CAPTION_STYLES:
            raise ValueError(f"data.source.captions must be one of {', '.join(CAPTION_STYLES)}, got {captions!r}")
        self.captions = captions
        self.n_classes, self.image_size, self.seed = int(n_classes), int(image_size), int(seed)
        self.per_class = {"train": int(per_class), "val": int(val_per_class), "test": int(test_per_class)}
        self.sizes = {k: v * self.n_classes for k, v in self.per_class.items()}
        self.captions_per_image, self.clutter, self.occlusion, self.lighting = (
            int(captions_per_image),
            float(clutter),
            float(occlusion),
            float(lighting),
        )
        self.shortcut, self.shortcut_p = bool(shortcut), float(shortcut_p)

    def cache_key(self) -> str:
        """Folder name; changes whenever any argument or the generator version does."""
        n = self.per_class
        key = (
            f"synthetic_hard-v{GENERATOR_VERSION}-c{self.n_classes}-s{self.image_size}-pc{n['train']}-{n['val']}-{n['test']}"
            f"-seed{self.seed}-cap{self.captions_per_image}-clutter{self.clutter:g}-occ{self.occlusion:g}-light{self.lighting:g}"
        )
        key += f"-shortcut{self.shortcut_p:g}" if self.shortcut else ""
        return key + ("" if self.captions == "random_parts" else f"-{self.captions}")  # random_parts: the old folders

    def split_seed(self, split: str) -> int:
        """Each split has its own stream, so resizing one split never changes another."""
        return self.seed * 1000 + cache.SPLITS.index(split)

    def build(self, out: Path) -> None:
        """Write out/{train,val,test} and out/info.json."""
        out = Path(out)
        for split in cache.SPLITS:
            p = (self.shortcut_p if split == "train" else EVAL_ALIGNED) if self.shortcut else None
            data = generate_split(
                self.sizes[split],
                self.n_classes,
                self.image_size,
                self.split_seed(split),
                self.captions_per_image,
                self.clutter,
                self.occlusion,
                self.lighting,
                p,
                split,
                self.captions,
            )
            cache.write_split(out / split, data)
        cache.write_info(out, dataset_info(self.n_classes, self.shortcut))
