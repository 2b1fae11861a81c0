"""Procedural fine-grained "birds": the embedded default dataset (no download, seconds to make).

Every image holds one bird drawn from five parts (head, beak, body, wing, tail) at a random
position, scale, tilt and facing, on a textured background with distractor shapes painted
in the class colours of *another* class, so no global colour statistic names the class.
The class is the combination (head colour, wing colour, wing pattern): it can only be read
off the head and the wing, which is what the CAM and the caption attention should look at.
Body colour, tail shape, beak length and colour, size and facing vary within a class.

Each image comes with `captions_per_image` templated captions that name class-defining and
nuisance attributes with synonyms and varied order; every attribute word sits directly
before a part noun ("red crown", "blue striped wings", "forked tail"), so a metric can map
an attribute to the part it describes by the next part noun. Ground-truth masks give the
visible pixels of every part. Everything is deterministic from the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jointcap.data import cache

GENERATOR_VERSION = 2  # 2: per-image facts ("head red", …) stored for the caption-correctness metrics
PART_NAMES = ("head", "beak", "body", "wing", "tail")
HEAD, BEAK, BODY, WING, TAIL = range(5)
CLASS_PARTS = (HEAD, WING)

# Colours chosen to stay distinct at 64 px under the pixel noise.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (250, 135, 10),
    "yellow": (245, 220, 40),
    "green": (35, 155, 55),
    "blue": (35, 75, 225),
    "purple": (135, 45, 170),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "brown": (120, 70, 30),
    "grey": (130, 130, 130),
}
COLOR_NAMES = tuple(PALETTE)
PALETTE_RGB = np.array([PALETTE[c] for c in COLOR_NAMES], dtype=np.float32)  # (C, 3)
# Head and wing colours in the order classes use them; the two orders share no colour among
# their first four entries, so the small default class sets never have head colour == wing colour.
HEAD_COLORS = ("red", "blue", "yellow", "white", "green", "purple", "black", "orange")
WING_COLORS = ("green", "purple", "orange", "black", "red", "yellow", "blue", "white")
PATTERNS = ("plain", "striped", "spotted")
TAIL_SHAPES = ("forked", "rounded", "pointed")
BEAK_LENGTHS = ("short", "long")
BEAK_COLORS = ("black", "orange", "yellow", "grey")
BACKGROUND_RGB = np.array(  # (K, 3) muted foliage / sky / sand / bark tones
    [(95, 120, 75), (150, 175, 195), (190, 170, 130), (125, 115, 100), (200, 200, 185), (110, 140, 110)],
    dtype=np.float32,
)

PART_WORDS = {
    "head": 0,
    "crown": 0,
    "beak": 1,
    "bill": 1,
    "body": 2,
    "belly": 2,
    "breast": 2,
    "wing": 3,
    "wings": 3,
    "tail": 4,
}
ATTRIBUTE_WORDS = list(COLOR_NAMES) + list(PATTERNS) + list(TAIL_SHAPES) + list(BEAK_LENGTHS)
ATTRIBUTE_KINDS = {
    **dict.fromkeys(COLOR_NAMES, "colour"),
    **dict.fromkeys(PATTERNS, "pattern"),
    **dict.fromkeys(TAIL_SHAPES, "shape"),
    **dict.fromkeys(BEAK_LENGTHS, "length"),
}
CLASS_SLOTS = ("head colour", "wing colour", "wing pattern")  # what defines a class, as "PART KIND"
SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("", "", "medium sized"), "large": ("large", "big")}

# Canonical bird geometry, in image-size units for scale 1, facing right, y pointing down.
HEAD_C, HEAD_R = (0.16, -0.11), 0.095
EYE_C, EYE_R = (0.19, -0.125), 0.022
BEAK_BASE_X, BEAK_HALF_W, BEAK_LEN = 0.215, 0.05, {"short": 0.1, "long": 0.165}  # tip at base + len
BODY_C, BODY_AB, BODY_TILT = (0.0, 0.0), (0.185, 0.112), -0.15
WING_C, WING_AB, WING_TILT = (-0.035, -0.005), (0.16, 0.078), 0.30
TAIL_ANCHOR, TAIL_ANGLE, TAIL_LEN, TAIL_HALF_W = (-0.15, 0.03), 0.35, 0.165, 0.065
STRIPE_PERIOD, SPOT_PERIOD, SPOT_THRESHOLD = 0.072, 0.11, 0.35
BIRD_X_EXTENT, BIRD_Y_EXTENT = 0.40, (-0.28, 0.2)  # conservative half-width / y range incl. tilt
SCALE_RANGE, TILT_RANGE = (0.8, 1.1), 0.15
MAX_DISTRACTORS = 6
BLOCK = 256  # images per random-number block: image i depends only on (seed, i // BLOCK)
SUB_PIXELS = 1 << 17  # pixels rendered at once (32 images of 64 px): float grids stay in cache


@dataclass(frozen=True)
class ClassSpec:
    """The class-defining attributes of one class."""

    head: str
    wing: str
    pattern: str

    @property
    def name(self) -> str:
        return f"{self.head}-head {self.wing}-wing {self.pattern}"


def max_classes() -> int:
    """How many distinct (head colour, wing colour, wing pattern) classes exist."""
    pairs = sum(h != w for h in HEAD_COLORS for w in WING_COLORS)
    return pairs * len(PATTERNS)


def class_specs(n_classes: int) -> list[ClassSpec]:
    """The first `n_classes` classes, in a fixed order that grows a head × wing colour grid.

    Pairs are taken shell by shell ((0,0), (0,1), (1,0), (1,1), (0,2), …) with all patterns
    of a pair next to each other, so any prefix mixes few colours densely: most classes have
    a neighbour that differs only in head colour, only in wing colour and only in pattern.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if n_classes > max_classes():
        raise ValueError(
            f"n_classes={n_classes} is more than the {max_classes()} distinct (head colour, wing colour, wing pattern)"
            f" combinations the synthetic birds have ({len(HEAD_COLORS)} head colours x {len(WING_COLORS)} wing colours"
            f" x {len(PATTERNS)} patterns, head != wing)"
        )
    n = len(HEAD_COLORS)
    pairs = sorted(((i, j) for i in range(n) for j in range(n)), key=lambda ij: (max(ij), ij[1] == max(ij), ij))
    specs = [
        ClassSpec(HEAD_COLORS[i], WING_COLORS[j], p)
        for i, j in pairs
        if HEAD_COLORS[i] != WING_COLORS[j]
        for p in PATTERNS
    ]
    return specs[:n_classes]


def _color_index(names, palette: Sequence[str] = COLOR_NAMES) -> np.ndarray:
    """Indices of colour names in `palette` (this module's by default; the hard birds pass theirs)."""
    return np.array([palette.index(c) for c in names], dtype=np.int64)


def _contrast_color(
    color_idx: np.ndarray, rgb: np.ndarray = PALETTE_RGB, palette: Sequence[str] = COLOR_NAMES
) -> np.ndarray:
    """Stripe/spot/eye colour for each colour: white on dark colours, black on light ones."""
    lum = rgb[color_idx] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.where(lum < 100, palette.index("white"), palette.index("black"))


# ----------------------------------------------------------------------------------- sampling
@dataclass
class _Params:
    """Per-image random parameters of one block (all arrays have length B)."""

    labels: np.ndarray
    head: np.ndarray  # palette indices
    wing: np.ndarray
    pattern: np.ndarray
    body: np.ndarray
    beak_color: np.ndarray
    beak_long: np.ndarray  # bool
    tail: np.ndarray  # index into TAIL_SHAPES
    scale: np.ndarray
    facing: np.ndarray  # +1 right, -1 left
    tilt: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    d_active: np.ndarray  # (B, D) bool
    d_kind: np.ndarray  # (B, D) 0 disc, 1 ellipse, 2 triangle
    d_color: np.ndarray  # (B, D) palette index
    d_pattern: np.ndarray  # (B, D)
    d_geom: np.ndarray  # (B, D, 5): cx, cy, a, b, angle
    bg_pair: np.ndarray  # (B, 2) background tones
    bg_field: np.ndarray  # (B, 5, 5) coarse blend field of the two tones
    stripe: np.ndarray  # (B, 4): amplitude, frequency, angle, phase


def _sample_params(rng: np.random.Generator, start: int, b: int, specs: list[ClassSpec], clutter: float) -> _Params:
    """Draw every per-image random choice of a block (labels balanced within the block)."""
    k = len(specs)
    labels = (np.arange(start, start + b) % k)[rng.permutation(b)]
    head_all, wing_all = _color_index([s.head for s in specs]), _color_index([s.wing for s in specs])
    pat_all = np.array([PATTERNS.index(s.pattern) for s in specs])
    head, wing, pattern = head_all[labels], wing_all[labels], pat_all[labels]
    # Body: any palette colour but the head's and the wing's (so the parts stay separable).
    lo, hi = np.minimum(head, wing), np.maximum(head, wing)
    body = rng.integers(0, len(COLOR_NAMES) - 2, b)
    body = body + (body >= lo)
    body = body + (body >= hi)
    beak_cols = _color_index(BEAK_COLORS)
    bi = rng.integers(0, len(beak_cols), b)
    bi = np.where(beak_cols[bi] == head, (bi + 1) % len(beak_cols), bi)
    beak_color = beak_cols[bi]
    scale = rng.uniform(*SCALE_RANGE, b)
    facing = np.where(rng.random(b) < 0.5, 1.0, -1.0)
    tilt = rng.uniform(-TILT_RANGE, TILT_RANGE, b)
    lo_x, hi_x = 0.02 + BIRD_X_EXTENT * scale, 0.98 - BIRD_X_EXTENT * scale
    lo_y, hi_y = 0.02 - BIRD_Y_EXTENT[0] * scale, 0.98 - BIRD_Y_EXTENT[1] * scale
    cx, cy = lo_x + (hi_x - lo_x) * rng.random(b), lo_y + (hi_y - lo_y) * rng.random(b)

    # Distractors: two decoy classes each get a head-sized disc in their head colour and a
    # wing-sized ellipse in their wing colour and pattern (slots 0-3), so the bird's own head and
    # wing colours are never the only class colours in view; slots 4-5 are random shapes.
    d = MAX_DISTRACTORS
    decoys = (labels[:, None] + rng.integers(1, max(k, 2), (b, 2))) % k  # (B, 2), never the label
    decoy_slot = np.arange(d) < 4
    d_active = rng.random((b, d)) < np.where(decoy_slot, min(1.0, 0.85 * clutter), min(1.0, 0.5 * clutter))
    d_kind = rng.integers(0, 3, (b, d))
    d_color = rng.integers(0, len(COLOR_NAMES), (b, d))
    d_pattern = np.zeros((b, d), np.int64)  # only slots 1, 3 and 4 are patterned (patterns cost time)
    for j in range(2):
        d_kind[:, 2 * j], d_color[:, 2 * j] = 0, head_all[decoys[:, j]]
        d_kind[:, 2 * j + 1], d_color[:, 2 * j + 1], d_pattern[:, 2 * j + 1] = (
            1,
            wing_all[decoys[:, j]],
            pat_all[decoys[:, j]],
        )
    d_kind[:, 4], d_pattern[:, 4] = 1, rng.integers(0, len(PATTERNS), b)
    size = rng.uniform(0.06, 0.11, (b, d))
    stretch = rng.uniform(1.0, 1.6, (b, d))
    geom = np.stack([np.zeros((b, d)), np.zeros((b, d)), size * stretch, size, rng.uniform(0, np.pi, (b, d))], -1)
    geom[:, 0:4:2, 2:4] = (HEAD_R * scale[:, None] * rng.uniform(0.85, 1.15, (b, 2)))[..., None]  # head-like discs
    wing_like = scale[:, None] * rng.uniform(0.85, 1.15, (b, 2))
    geom[:, 1:4:2, 2], geom[:, 1:4:2, 3] = WING_AB[0] * wing_like, WING_AB[1] * wing_like
    geom[..., 2] = np.where(d_kind == 0, geom[..., 3], geom[..., 2])
    # Place each distractor away from the bird (16 tries, else drop it).
    cand = rng.random((b, d, 16, 2))
    dist = np.hypot(cand[..., 0] - cx[:, None, None], cand[..., 1] - cy[:, None, None])
    ok = dist > (0.34 * scale[:, None, None] + geom[..., 2:3])
    first = ok.argmax(-1)
    pick = np.take_along_axis(cand, first[..., None, None], axis=2)[:, :, 0]
    geom[..., 0], geom[..., 1] = pick[..., 0], pick[..., 1]
    d_active &= ok.any(-1)
    bg_pair = rng.integers(0, len(BACKGROUND_RGB), (b, 2))
    stripe = np.stack(
        [
            (rng.random(b) < 0.5) * rng.uniform(10, 30, b) * clutter,
            rng.uniform(4, 12, b),
            rng.uniform(0, np.pi, b),
            rng.uniform(0, 2 * np.pi, b),
        ],
        -1,
    )
    beak_long = rng.random(b) < 0.5
    tail = rng.integers(0, len(TAIL_SHAPES), b)
    bg_field = rng.random((b, 5, 5), dtype=np.float32)
    return _Params(
        labels=labels,
        head=head,
        wing=wing,
        pattern=pattern,
        body=body,
        beak_color=beak_color,
        beak_long=beak_long,
        tail=tail,
        scale=scale,
        facing=facing,
        tilt=tilt,
        cx=cx,
        cy=cy,
        d_active=d_active,
        d_kind=d_kind,
        d_color=d_color,
        d_pattern=d_pattern,
        d_geom=geom,
        bg_pair=bg_pair,
        bg_field=bg_field,
        stripe=stripe,
    )


# ----------------------------------------------------------------------------------- drawing
def _col(x: np.ndarray) -> np.ndarray:
    """Per-image scalars (B,) → (B, 1, 1), to broadcast against (B, S, S) grids."""
    return np.asarray(x, dtype=np.float32)[:, None, None]


def _rotate(x: np.ndarray, y: np.ndarray, cx, cy, angle) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of (x, y) in a frame centred at (cx, cy) and rotated by `angle` (radians)."""
    if isinstance(angle, float):  # math keeps Python floats weak, so float32 grids stay float32
        c, s = math.cos(angle), math.sin(angle)
    else:
        c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    return dx * c + dy * s, dy * c - dx * s


def _ellipse(x, y, cx, cy, a, b, angle) -> np.ndarray:
    """Boolean mask of a filled rotated ellipse; (B, S, S) from broadcastable parameters."""
    u, v = _rotate(x, y, cx, cy, angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _pattern_mask(u: np.ndarray, v: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Stripes across / a lattice of spots on a shape, in its local (u along, v across) frame."""
    pattern = pattern.reshape(-1, *([1] * (u.ndim - 1)))
    k = 2 * math.pi / STRIPE_PERIOD
    stripes = np.sin(u * k) > 0.25
    k = 2 * math.pi / SPOT_PERIOD
    spots = np.cos(u * k) * np.cos(v * k) > SPOT_THRESHOLD  # spots at (0, 0), (p/2, p/2), …
    return np.where(pattern == 1, stripes, (pattern == 2) & spots)


def _upsample_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear interpolation matrix, for smooth low-frequency noise fields."""
    pos = (np.arange(dst) + 0.5) / dst * (src - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, src - 2)
    w = pos - lo
    m = np.zeros((dst, src), dtype=np.float32)
    m[np.arange(dst), lo] = 1 - w
    m[np.arange(dst), lo + 1] = w
    return m


def _background(p: _Params, x, y, clutter: float) -> np.ndarray:
    """Two muted tones blended by smooth noise, plus optional stripes; (B, S, S, 3) float32."""
    _b, s = len(p.labels), x.shape[-1]
    up = _upsample_matrix(5, s)
    field = np.einsum("ik,bkl,jl->bij", up, p.bg_field, up)  # (B, S, S)
    field = np.clip(0.5 + (field - 0.5) * (0.6 + 1.4 * min(clutter, 1.5)), 0, 1)[..., None]
    tone_a, tone_b = BACKGROUND_RGB[p.bg_pair[:, 0]], BACKGROUND_RGB[p.bg_pair[:, 1]]
    img = tone_a[:, None, None] * field + tone_b[:, None, None] * (1 - field)
    amp, freq, ang, phase = (_col(p.stripe[:, i]) for i in range(4))
    waves = amp * np.sin(2 * np.pi * freq * (x * np.cos(ang) + y * np.sin(ang)) + phase)
    return img + waves[..., None]


def _layer(label: np.ndarray, mask: np.ndarray, layer: int) -> None:
    """In place: pixels under `mask` now show `layer` (later layers occlude earlier ones)."""
    np.copyto(label, np.uint8(layer), where=mask)


# Layer ids of the label map: 0 background, then each distractor (plain, pattern), then the bird.
_D0 = 1
_TAIL, _BODY, _WING, _WING_PAT, _BEAK, _HEAD, _EYE = range(_D0 + 2 * MAX_DISTRACTORS, _D0 + 2 * MAX_DISTRACTORS + 7)
_N_LAYERS = _EYE + 1


def _shapes(p: _Params, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Label map (B, S, S) uint8 of which layer each pixel shows: distractors, then the bird."""
    b = len(p.labels)
    label = np.zeros((b, y.shape[1], x.shape[2]), np.uint8)
    for k in range(MAX_DISTRACTORS):
        active = p.d_active[:, k]
        if not active.any():
            continue
        cx, cy, a, bb, ang = (_col(p.d_geom[:, k, i]) for i in range(5))
        u, v = _rotate(x, y, cx, cy, ang)
        shape = (u / a) ** 2 + (v / bb) ** 2 <= 1.0
        tri = p.d_kind[:, k] == 2
        if tri.any():  # triangles share the ellipse's frame: tip at (a, 0), base at u = -a/2
            in_tri = (u >= -0.5 * a) & (np.abs(v) <= (a - u) * (bb / (1.5 * a)) * 1.2)
            shape = np.where(tri[:, None, None], in_tri, shape)
        shape &= active[:, None, None]
        _layer(label, shape, _D0 + 2 * k)
        if p.d_pattern[:, k].any():
            _layer(label, shape & _pattern_mask(u, v, p.d_pattern[:, k]), _D0 + 2 * k + 1)

    # Bird frame: canonical coordinates (X forward, Y down) at scale 1, facing right.
    s, f = _col(p.scale), _col(p.facing)
    u, v = _rotate(x, y, _col(p.cx), _col(p.cy), _col(p.tilt * p.facing))
    bx, by = u * (f / s), v * (1 / s)  # (B, S, S)

    # Tail in its own frame: t along the tail (backwards, slightly down), w across it.
    t, w = _rotate(bx, by, TAIL_ANCHOR[0], TAIL_ANCHOR[1], math.pi - TAIL_ANGLE)
    w = np.abs(w)
    half = TAIL_HALF_W * (0.45 + 0.55 / TAIL_LEN * t)  # widening fan
    start = t >= -0.03
    fan = start & (t <= TAIL_LEN) & (w <= half)
    tail = np.where(
        p.tail[:, None, None] == 0,
        fan & (t < TAIL_LEN - 0.09 * (1 - w / (0.8 * TAIL_HALF_W))),  # forked: notch cut from the end
        np.where(
            p.tail[:, None, None] == 1,
            start
            & (
                (((t - 0.045) / (TAIL_LEN - 0.045)) ** 2 + (w / (0.85 * TAIL_HALF_W)) ** 2 <= 1.0)
                | (fan & (t <= 0.045))
            ),
            start & (w <= 0.75 * TAIL_HALF_W * (1 - t / (TAIL_LEN * 1.1))),  # pointed
        ),
    )
    _layer(label, tail, _TAIL)
    _layer(label, _ellipse(bx, by, BODY_C[0], BODY_C[1], BODY_AB[0], BODY_AB[1], BODY_TILT), _BODY)
    wu, wv = _rotate(bx, by, WING_C[0], WING_C[1], WING_TILT)
    wing = (wu / WING_AB[0]) ** 2 + (wv / WING_AB[1]) ** 2 <= 1.0
    _layer(label, wing, _WING)
    _layer(label, wing & _pattern_mask(wu, wv, p.pattern), _WING_PAT)
    beak_len = _col(np.where(p.beak_long, BEAK_LEN["long"], BEAK_LEN["short"]))
    du, dv = bx - BEAK_BASE_X, np.abs(by - HEAD_C[1])
    _layer(label, (du >= 0) & (dv <= BEAK_HALF_W * (1 - du / beak_len)), _BEAK)
    _layer(label, (bx - HEAD_C[0]) ** 2 + (by - HEAD_C[1]) ** 2 <= HEAD_R**2, _HEAD)
    _layer(label, (bx - EYE_C[0]) ** 2 + (by - EYE_C[1]) ** 2 <= EYE_R**2, _EYE)
    return label


def _layer_colors(p: _Params) -> np.ndarray:
    """RGB of every layer of every image: (B, L, 3) float32 (layer 0, the background, unused)."""
    b = len(p.labels)
    idx = np.zeros((b, _N_LAYERS), np.int64)
    idx[:, _D0 : _D0 + 2 * MAX_DISTRACTORS : 2] = p.d_color
    idx[:, _D0 + 1 : _D0 + 2 * MAX_DISTRACTORS : 2] = _contrast_color(p.d_color)
    idx[:, _TAIL], idx[:, _BODY], idx[:, _WING], idx[:, _WING_PAT] = p.body, p.body, p.wing, _contrast_color(p.wing)
    idx[:, _BEAK], idx[:, _HEAD], idx[:, _EYE] = p.beak_color, p.head, _contrast_color(p.head)
    rgb = PALETTE_RGB[idx]
    rgb[:, _TAIL] *= 0.75  # a darker tail, so its outline shows against the body
    return rgb


def _draw_block(rng: np.random.Generator, p: _Params, size: int, clutter: float) -> tuple[np.ndarray, np.ndarray]:
    """Render birds: images uint8 (B, S, S, 3), visible part masks uint8 (B, 5, S, S); `rng` only adds pixel noise."""
    b = len(p.labels)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = g[None, None, :], g[None, :, None]  # image coordinates in [0, 1]
    img = _background(p, x, y, clutter)  # (B, S, S, 3)
    label = _shapes(p, x, y)  # (B, S, S)
    colors = _layer_colors(p).reshape(-1, 3)
    flat = label.astype(np.int64) + (np.arange(b) * _N_LAYERS)[:, None, None]
    np.copyto(img, colors[flat], where=(label > 0)[..., None])
    img += rng.standard_normal(img.shape, dtype=np.float32) * (3.0 + 4.0 * min(clutter, 2.0))
    part_layers = {HEAD: (_HEAD, _EYE), BEAK: (_BEAK,), BODY: (_BODY,), WING: (_WING, _WING_PAT), TAIL: (_TAIL,)}
    masks = np.stack([np.isin(label, part_layers[i]) for i in range(len(PART_NAMES))], 1).view(np.uint8)  # (B, 5, S, S)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), masks


# ----------------------------------------------------------------------------------- captions
def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _flags(r: random.Random, n: int, frac: float) -> list[bool]:
    """`round(frac * n)` True values (at least one), in random order."""
    k = max(1, round(frac * n))
    flags = [i < k for i in range(n)]
    r.shuffle(flags)
    return flags


def _captions(r: random.Random, a: dict[str, str], n: int) -> list[str]:
    """`n` captions for one bird with attributes `a` (head, wing, pattern, body, beak, beak_color, tail, size)."""
    said_head, said_wing = _flags(r, n, 0.6), _flags(r, n, 0.6)
    said_body, said_beak, said_tail = _flags(r, n, 0.5), _flags(r, n, 0.4), _flags(r, n, 0.4)
    n_wing = sum(said_wing)
    # The pattern goes with all wing mentions but one (half of them when plain).
    keep = n_wing - 1 if a["pattern"] != "plain" else n_wing // 2
    said_pat = [i < max(keep, 1) for i in range(n_wing)]
    r.shuffle(said_pat)
    out = []
    for i in range(n):
        phrases = []
        if said_head[i]:
            phrases.append(_article(f"{a['head']} {r.choice(('head', 'head', 'crown'))}"))
        if said_wing[i]:
            pat = a["pattern"] if said_pat.pop() else ""
            words = [a["wing"], pat] if r.random() < 0.6 else [pat, a["wing"]]
            said = " ".join(w for w in words if w)
            phrases.append(f"{said} wings" if r.random() < 0.85 else _article(f"{said} wing"))
        if said_body[i] or not phrases:
            noun = r.choice(("belly", "breast", "body", "mostly body"))
            phrases.append(f"a mostly {a['body']} body" if noun == "mostly body" else _article(f"{a['body']} {noun}"))
        if said_beak[i]:
            noun = r.choice(("beak", "bill"))
            beak: tuple[str, ...] = r.choice(((a["beak"],), (a["beak"], a["beak_color"]), (a["beak_color"],)))
            phrases.append(_article(" ".join(beak) + " " + noun))
        if said_tail[i]:
            phrases.append(_article(f"{a['tail']} tail"))
        r.shuffle(phrases)
        size = r.choice(SIZE_WORDS[a["size"]])
        sized = f"{size} bird" if size else "bird"
        opener = r.choice(
            (
                "this bird has {}",
                "the bird has {}",
                "a {} with {}",
                "this {} has {}",
                "this is a {} with {}",
                "a {} that has {}",
                "{}",
            )
        )
        text = opener.format(sized, _join(phrases)) if opener.count("{}") == 2 else opener.format(_join(phrases))
        out.append(text + ("." if r.random() < 0.5 else ""))
    return out


def _image_attributes(p: _Params, i: int) -> dict[str, str]:
    """The named attributes of image `i` of a block, for captions and the split's extra field."""
    s = p.scale[i]
    return {
        "head": COLOR_NAMES[p.head[i]],
        "wing": COLOR_NAMES[p.wing[i]],
        "pattern": PATTERNS[p.pattern[i]],
        "body": COLOR_NAMES[p.body[i]],
        "beak": "long" if p.beak_long[i] else "short",
        "beak_color": COLOR_NAMES[p.beak_color[i]],
        "tail": TAIL_SHAPES[p.tail[i]],
        "size": "small" if s < 0.9 else "large" if s > 1.0 else "medium",
        "facing": "right" if p.facing[i] > 0 else "left",
    }


def image_facts(a: dict[str, str]) -> tuple[list[str], list[str]]:
    """Every fact "PART ATTRIBUTE" a caption of this bird may state, and the class-defining ones it should.

    A plain wing needs no pattern word among the class facts (references name "plain" in only
    half their wing mentions; "green wings" describes a plain green wing correctly), but
    naming a pattern the wing lacks is still wrong.
    """
    facts = [
        f"head {a['head']}",
        f"wing {a['wing']}",
        f"wing {a['pattern']}",
        f"body {a['body']}",
        f"beak {a['beak']}",
        f"beak {a['beak_color']}",
        f"tail {a['tail']}",
    ]
    required = [f"head {a['head']}", f"wing {a['wing']}"] + (
        [f"wing {a['pattern']}"] if a["pattern"] != "plain" else []
    )
    return facts, required


# ----------------------------------------------------------------------------------- public API
def generate_split(
    n: int,
    n_classes: int = 24,
    image_size: int = 64,
    seed: int = 0,
    captions_per_image: int = 10,
    clutter: float = 1.0,
    split: str = "train",
) -> cache.SplitData:
    """Generate `n` birds with labels, captions, keys f"{split}_{i:06d}" and part masks.

    Image i depends only on (seed, i): blocks of BLOCK images use their own random stream, so
    a shorter split is a prefix of a longer one with the same seed.
    """
    if n < 0 or image_size < 16 or captions_per_image < 1 or clutter < 0 or seed < 0:
        raise ValueError(
            f"bad synthetic split arguments: n={n} image_size={image_size} captions={captions_per_image} "
            f"clutter={clutter} seed={seed}"
        )
    specs = class_specs(n_classes)
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    masks = np.empty((n, len(PART_NAMES), image_size, image_size), np.uint8)
    labels = np.empty(n, np.int64)
    captions: list[list[str]] = []
    attrs: dict[str, list[Any]] = {}  # attribute names, and fact lists
    sub = max(1, SUB_PIXELS // (image_size * image_size))  # images rendered at once
    for start in range(0, n, BLOCK):
        rng = np.random.default_rng([GENERATOR_VERSION, seed, start // BLOCK])
        p = _sample_params(rng, start, BLOCK, specs, clutter)
        r = random.Random(int(rng.integers(0, 2**63)))
        m = min(BLOCK, n - start)
        for lo in range(0, m, sub):
            hi = min(m, lo + sub)
            part = _Params(*(getattr(p, k)[lo:hi] for k in p.__dataclass_fields__))
            noise_rng = np.random.default_rng([GENERATOR_VERSION, seed, start // BLOCK, lo])
            images[start + lo : start + hi], masks[start + lo : start + hi] = _draw_block(
                noise_rng, part, image_size, clutter
            )
        labels[start : start + m] = p.labels[:m]
        for i in range(m):
            a = _image_attributes(p, i)
            captions.append(_captions(r, a, captions_per_image))
            for key in ("body", "beak", "beak_color", "tail", "size", "facing"):
                attrs.setdefault(key, []).append(a[key])
            facts, required = image_facts(a)
            attrs.setdefault("facts", []).append(facts)
            attrs.setdefault("class_facts", []).append(required)
    keys = [f"{split}_{i:06d}" for i in range(n)]
    facts, class_facts = attrs.pop("facts", []), attrs.pop("class_facts", [])
    extra = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "attributes": attrs,
        "facts": facts,
        "class_facts": class_facts,
    }
    data = cache.SplitData(images, labels, captions, keys, masks=masks, extra=extra)
    data.validate(f"synthetic {split}")
    return data


def dataset_info(n_classes: int) -> dict:
    """The info.json content of a synthetic cache: classes, parts and the caption vocabulary roles."""
    specs = class_specs(n_classes)
    return {
        "name": "synthetic",
        "num_classes": n_classes,
        "class_names": [s.name for s in specs],
        "class_attributes": [{"head": s.head, "wing": s.wing, "pattern": s.pattern} for s in specs],
        "part_names": list(PART_NAMES),
        "part_words": dict(PART_WORDS),
        "attribute_words": list(ATTRIBUTE_WORDS),
        "attribute_kinds": dict(ATTRIBUTE_KINDS),
        "class_slots": list(CLASS_SLOTS),
        "class_parts": list(CLASS_PARTS),
        "generator_version": GENERATOR_VERSION,
    }


class SyntheticSource:
    """The procedural birds as a `jointcap.data.source.Source`: train/val/test from one seed."""

    name = "synthetic"

    def __init__(
        self,
        n_classes: int = 24,
        image_size: int = 64,
        n_train: int = 4000,
        n_val: int = 500,
        n_test: int = 1000,
        seed: int = 0,
        captions_per_image: int = 10,
        clutter: float = 1.0,
    ) -> None:
        class_specs(n_classes)  # fail early on an impossible class count
        self.n_classes, self.image_size, self.seed = int(n_classes), int(image_size), int(seed)
        self.sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
        self.captions_per_image, self.clutter = int(captions_per_image), float(clutter)

    def cache_key(self) -> str:
        """Folder name; changes whenever any argument or the generator version does."""
        n = self.sizes
        return (
            f"synthetic-v{GENERATOR_VERSION}-c{self.n_classes}-s{self.image_size}-n{n['train']}-{n['val']}-{n['test']}"
            f"-seed{self.seed}-cap{self.captions_per_image}-clutter{self.clutter:g}"
        )

    def split_seed(self, split: str) -> int:
        """Each split has its own stream, so resizing one split never changes another."""
        return self.seed * 1000 + cache.SPLITS.index(split)

    def build(self, out: Path) -> None:
        """Write out/{train,val,test} and out/info.json."""
        out = Path(out)
        for split in cache.SPLITS:
            data = generate_split(
                self.sizes[split],
                self.n_classes,
                self.image_size,
                self.split_seed(split),
                self.captions_per_image,
                self.clutter,
                split,
            )
            cache.write_split(out / split, data)
        cache.write_info(out, dataset_info(self.n_classes))
