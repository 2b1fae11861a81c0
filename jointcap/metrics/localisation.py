"""Where do the CAM and the captioner's attention look? Localisation and agreement metrics.

Conventions used throughout:

* maps are (B, h, w) score maps on the embedding grid; masks are (B, H, W) bool at image
  size. Maps are bilinearly upsampled to image size (``align_corners=False``) *before*
  min-max normalisation (a constant or NaN map becomes all zeros).
* a map's peak is its argmax (the first one in raster order on ties), as (row, col).
* mask IoU thresholds the normalised map as ``normalised >= threshold``.

Box localisation (GT-known Loc, MaxBoxAcc, MaxBoxAccV2) follows Choe et al. 2020's reference
code (clovaai/wsolevaluation: inference.py ``CAMComputer``/``normalize_scoremap``, evaluation.py
``compute_bboxes_from_scoremaps``/``calculate_multiple_iou``/``BoxEvaluator``), without cv2:

* a map is resized to image size bicubically (cv2.INTER_CUBIC: a = -0.75, half-pixel centres,
  replicated border; torch's ``bicubic`` with ``align_corners=False`` is the same kernel),
  then min-max normalised, in float64.
* it is quantised to ``uint8(map * 255)`` (truncation) and a CAM threshold t keeps the pixels
  ``q > int(t * q.max())`` (cv2.threshold, THRESH_BINARY: strict); t runs over
  np.arange(0, 1, 0.01).
* contours are cv2.findContours(RETR_TREE)'s: one outer contour per 8-connected component
  (the image is zero-padded, so components touching the border count), plus one hole contour
  per 4-connected background region enclosed by a component. A contour's box is cv2.boundingRect
  (x, y, w, h) of its pixels turned into (x, y, x + w, y + h) with x + w clipped to W - 1 and
  y + h to H - 1: one past the last pixel. A hole contour runs through the pixels around the
  hole, so its box is the hole's extent grown by 1 px.
* V1 and GT-known Loc take the contour with the largest cv2.contourArea (the polygon through
  the border pixels' centres: a w×h rectangle has area (w-1)(h-1), a line 0); V2 takes the best
  of all contours. A map with no contour gets the box (0, 0, 0, 0).
* ground-truth boxes come as (x, y, w, h) in image pixels and become
  (int(x), int(y), int(x + w), int(y + h)), as wsolevaluation's CUB metadata and resize_bbox;
  IoU uses the inclusive ``+1`` areas of ``calculate_multiple_iou``; a hit is IoU >= δ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric

from jointcap.data.part_words import WINDOW, described_parts
from jointcap.data.tokenizer import clean_word

if TYPE_CHECKING:
    from jointcap.data.tokenizer import Tokenizer

__all__ = [
    "word_attention",
    "normalise_map",
    "upsample",
    "peak",
    "pointing_game",
    "mask_iou",
    "box_from_map",
    "boxes_from_map",
    "box_image",
    "quantise",
    "threshold_map",
    "xywh_to_xyxy",
    "box_iou",
    "gt_known_loc",
    "max_box_acc",
    "BoxAccuracy",
    "part_pointing",
    "peak_agreement",
    "LocalisationScores",
    "word_grounding",
    "CHOE_THRESHOLDS",
]

# wsolevaluation's CAM thresholds with cam_curve_interval=0.01: 0.00, 0.01, ..., 0.99.
CHOE_THRESHOLDS = np.arange(0, 1, 0.01)
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as cv2.findContours' outer contours


# --------------------------------------------------------------------------- basic maps


def _floating(m: Tensor) -> Tensor:
    """float64 maps stay float64; anything else becomes float32."""
    return m if m.dtype == torch.float64 else m.float()


def normalise_map(m: Tensor) -> Tensor:
    """Min-max each map of (B, h, w) to [0, 1]; a constant map, or one with a NaN, becomes all zeros."""
    flat = _floating(m).flatten(1)  # (B, hw)
    bad = flat.isnan().any(dim=1, keepdim=True)  # (B, 1) wsolevaluation's normalize_scoremap zeroes these
    flat = torch.where(bad, torch.zeros_like(flat), flat)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    out = (flat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return out.view(m.shape)


def upsample(m: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize maps (B, h, w) to (B, H, W) = size, ``align_corners=False``; mode "bicubic" is cv2.INTER_CUBIC's."""
    size = (int(size[0]), int(size[1]))
    if tuple(m.shape[-2:]) == size:
        return _floating(m)
    return F.interpolate(_floating(m)[:, None], size=size, mode=mode, align_corners=False)[:, 0]


def peak(maps: Tensor) -> Tensor:
    """(row, col) of each map's maximum: (B, h, w) -> (B, 2) long."""
    w = maps.shape[-1]
    flat_arg = maps.flatten(1).argmax(dim=1)  # (B,)
    return torch.stack([flat_arg // w, flat_arg % w], dim=1)


def _to_image(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Upsample then min-max normalise: (B, h, w) -> (B, H, W) in [0, 1]."""
    return normalise_map(upsample(maps, size))


# --------------------------------------------------------------------------- pointing, IoU


def pointing_game(maps: Tensor, masks: Tensor, tolerance: float = 0.0) -> Tensor:
    """Hit when the upsampled map's peak lies within `tolerance` px of the mask: (B,) bool.

    Zhang et al. (excitation backprop) use tolerance 15 px; an empty mask is always a miss.
    """
    up = upsample(maps, masks.shape[-2:])  # (B, H, W)
    rc = peak(up)  # (B, 2)
    b = torch.arange(maps.shape[0], device=maps.device)
    if tolerance <= 0:
        return masks[b, rc[:, 0], rc[:, 1]].bool()
    h, w = masks.shape[-2:]
    yy = torch.arange(h, device=maps.device).view(1, h, 1)
    xx = torch.arange(w, device=maps.device).view(1, 1, w)
    d2 = (yy - rc[:, 0].view(-1, 1, 1)) ** 2 + (xx - rc[:, 1].view(-1, 1, 1)) ** 2  # (B, H, W)
    return (masks.bool() & (d2 <= tolerance**2)).flatten(1).any(dim=1)


def cell_hits(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Which one-hot maps on an h×w grid point into each mask (N, S, S), scored as a model's map is
    (`pointing_game`): (N, h·w) bool. Its mean over cells is chance, its `any` the grid's ceiling."""
    n, cells = masks.shape[0], grid[0] * grid[1]
    hits = torch.zeros(n, cells, dtype=torch.bool, device=masks.device)
    for c in range(cells):
        onehot = torch.zeros(n, cells, device=masks.device)
        onehot[:, c] = 1.0
        hits[:, c] = pointing_game(onehot.view(n, *grid), masks)
    return hits


def mask_iou(maps: Tensor, masks: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of the thresholded, upsampled, normalised map with the mask: (B,) float (0 if both empty)."""
    pred = _to_image(maps, masks.shape[-2:]) >= threshold  # (B, H, W)
    m = masks.bool()
    inter = (pred & m).flatten(1).sum(1).float()
    union = (pred | m).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


# --------------------------------------------------------------------------- boxes


def _as_numpy(m: Tensor | np.ndarray) -> np.ndarray:
    """A 2-D map as a float64 numpy array."""
    return m.detach().double().cpu().numpy() if isinstance(m, Tensor) else np.asarray(m, np.float64)


def box_image(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Maps (B, h, w) → (B, H, W) float64 in [0, 1] as wsolevaluation scores them: bicubic resize, then min-max."""
    return normalise_map(upsample(maps.detach().double(), size, mode="bicubic"))


def quantise(m: Tensor | np.ndarray) -> np.ndarray:
    """A normalised map (H, W) in [0, 1] → uint8 ``(m * 255).astype(np.uint8)`` (truncation), as wsolevaluation."""
    a = _as_numpy(m)
    if a.ndim != 2:
        raise ValueError(f"score map must be 2-D (H, W), got shape {a.shape}")
    if np.isnan(a).any() or (a < 0).any() or (a > 1).any():
        raise ValueError(f"score map must be normalised to [0, 1] without NaN (min {np.nanmin(a)}, max {np.nanmax(a)})")
    return (a * 255).astype(np.uint8)


def threshold_map(q: np.ndarray, threshold: float) -> np.ndarray:
    """cv2.threshold(q, int(threshold · max q), 255, THRESH_BINARY) on a uint8 map (H, W): strict ``>``, bool."""
    return q > int(threshold * q.max())


def _reference_boxes(
    slices: Sequence[tuple[slice, slice] | None], shape: tuple[int, int], grow: int = 0, offset: int = 0
) -> np.ndarray:
    """(K, 4) (x, y, x + w, y + h) of cv2.boundingRect over objects' extents ± grow, x1/y1 clipped to W-1/H-1.

    `offset` is subtracted from the slices (1 for slices of a padded array); None slices are skipped.
    """
    h, w = shape
    lo, hi = offset + grow, grow - offset
    rows = [
        [s[1].start - lo, s[0].start - lo, min(s[1].stop + hi, w - 1), min(s[0].stop + hi, h - 1)]
        for s in slices
        if s is not None
    ]
    return np.array(rows, np.int64).reshape(-1, 4)


def _background(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels (H+2, W+2) of the 4-connected background of the zero-padded mask, and the outside's label.

    Every other background label is a hole: a region that does not reach the image border
    (cv2.findContours pads the image with zeros, so a region touching the border is outside).
    """
    bg, _ = ndimage.label(np.pad(~mask, 1, constant_values=True))  # default structure: 4-connected
    return bg, int(bg[0, 0])


def _fill_label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels (H, W) of the mask with its holes filled, and their count."""
    bg, outside = _background(mask)
    inner = bg[1:-1, 1:-1]
    return ndimage.label(mask | ((inner > 0) & (inner != outside)), structure=_EIGHT)


def _window_areas(labels: np.ndarray, k: int) -> np.ndarray:
    """cv2.contourArea of each labelled region's outer contour (K,), from its 2×2 pixel windows.

    The contour joins the centres of the region's border pixels with 8-connected steps, cutting
    a concave corner diagonally, so each 2×2 window of pixels contributes 1 to the enclosed area
    when all four pixels are in the region, 1/2 when three are, and 0 otherwise (lines and single
    pixels enclose nothing). The region must have its holes filled (an outer contour encloses them).
    """
    p = np.pad(labels, 1)
    a, b, c, d = p[:-1, :-1], p[1:, :-1], p[:-1, 1:], p[1:, 1:]  # the windows' four corners, (H+1, W+1) each
    n_on = (a > 0).astype(np.int8) + (b > 0) + (c > 0) + (d > 0)
    sel = n_on >= 3  # all pixels of a window belong to one region (they are 8-adjacent)
    lab = np.maximum(np.maximum(a[sel], b[sel]), np.maximum(c[sel], d[sel]))
    return np.bincount(lab, weights=np.where(n_on[sel] == 4, 1.0, 0.5), minlength=k + 1)[1:]


def _outer_contours(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 4) and cv2.contourArea (K,) of the outer contour of every 8-connected component of mask."""
    labels, k = ndimage.label(mask, structure=_EIGHT)
    if k == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0)
    slices = ndimage.find_objects(labels)
    filled, kf = _fill_label(mask)
    top_area = _window_areas(filled, kf)  # (kf,) areas of the top-level components (holes filled)
    top_slices = ndimage.find_objects(filled)
    areas = np.empty(k)
    for i, sl in enumerate(slices):
        top = int(filled[sl][labels[sl] == i + 1][0])  # the filled region that holds component i
        if top_slices[top - 1] == sl:  # an enclosed island lies strictly inside its region's extent
            areas[i] = top_area[top - 1]
        else:  # an island inside another component's hole: fill its own holes
            own = ndimage.binary_fill_holes(labels[sl] == i + 1)
            areas[i] = _window_areas(own.astype(np.int64), 1)[0]
    return _reference_boxes(slices, mask.shape), areas


def _hole_boxes(mask: np.ndarray) -> np.ndarray:
    """Boxes (K, 4) of the hole contours cv2.RETR_TREE also returns: each hole's extent grown by 1 px."""
    bg, outside = _background(mask)
    slices = ndimage.find_objects(bg)
    holes = [sl for i, sl in enumerate(slices) if i + 1 != outside]
    return _reference_boxes(holes, mask.shape, grow=1, offset=1)


def _largest_box(mask: np.ndarray) -> np.ndarray | None:
    """Box (1, 4) of the outer contour with the largest cv2.contourArea (first in raster order on ties), or None.

    Only top-level components compete: one inside another's hole encloses less than it.
    """
    labels, k = ndimage.label(mask, structure=_EIGHT)
    if k <= 1:  # no contour, or one component: its extent
        return _reference_boxes(ndimage.find_objects(labels), mask.shape) if k else None
    filled, k = _fill_label(mask)
    best = int(_window_areas(filled, k).argmax())
    return _reference_boxes(ndimage.find_objects(filled, max_label=best + 1)[best:], mask.shape)


def boxes_from_map(m: Tensor | np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 4) and contour areas (K,) of every 8-connected component of the thresholded map (H, W).

    Thresholding and boxes follow wsolevaluation's compute_bboxes_from_scoremaps: see the
    module docstring. `m` must already be normalised to [0, 1] at image size. Components come
    in raster order of their first pixel.
    """
    return _outer_contours(threshold_map(quantise(m), threshold))


def box_from_map(m: Tensor | np.ndarray, threshold: float) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) box of the outer contour with the largest cv2.contourArea; None when no pixel passes.

    (wsolevaluation scores a map with no contour as the box [0, 0, 0, 0].) Ties go to the first
    component in raster order; cv2's contour order may differ, which matters only for equal areas.
    """
    box = _largest_box(threshold_map(quantise(m), threshold))
    return None if box is None else tuple(int(v) for v in box[0])  # type: ignore[return-value]


def xywh_to_xyxy(boxes: Tensor | np.ndarray) -> np.ndarray:
    """(…, 4) x, y, w, h (image pixels, >= 0) → (x0, y0, x1, y1) = int(x), int(y), int(x + w), int(y + h) (float64).

    wsolevaluation's CUB boxes are (x, y, x + w, y + h) and are truncated to int when resized.
    """
    b = np.asarray(boxes.detach().cpu() if isinstance(boxes, Tensor) else boxes, dtype=np.float64)
    return np.floor(np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (K, M) of boxes a (K, 4) and b (M, 4), wsolevaluation's calculate_multiple_iou (``+1`` areas)."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _gt_boxes(boxes: Tensor | np.ndarray) -> list[np.ndarray]:
    """(B, 4) or (B, K, 4) xywh → per image a (K', 4) x0y0x1y1 array without empty (w or h <= 0) boxes."""
    xyxy = xywh_to_xyxy(boxes)
    if xyxy.ndim == 2:
        xyxy = xyxy[:, None]
    wh = np.asarray(boxes.detach().cpu() if isinstance(boxes, Tensor) else boxes, np.float64)
    wh = wh.reshape(xyxy.shape)[..., 2:]
    return [xyxy[i][(wh[i] > 0).all(axis=-1)] for i in range(xyxy.shape[0])]


_NO_BOX = np.zeros((1, 4), np.int64)  # wsolevaluation's box when no pixel passes the threshold


def _best_iou(q: np.ndarray, gt: np.ndarray, threshold: float, multi_contour: bool) -> float:
    """Best IoU with any GT box of the largest contour's box (or of every contour's, holes included)."""
    if gt.shape[0] == 0:
        return 0.0
    mask = threshold_map(q, threshold)
    boxes: np.ndarray | None
    if multi_contour:
        labels, k = ndimage.label(mask, structure=_EIGHT)
        boxes = np.concatenate([_reference_boxes(ndimage.find_objects(labels), mask.shape), _hole_boxes(mask)])
    else:
        boxes = _largest_box(mask)
    if boxes is None or boxes.shape[0] == 0:
        boxes = _NO_BOX
    return float(box_iou(boxes, gt).max())


def gt_known_loc(
    maps: Tensor,
    boxes: Tensor | np.ndarray,
    threshold: float = 0.2,
    iou: float = 0.5,
    image_size: Sequence[int] | None = None,
) -> Tensor:
    """GT-known localisation hit per image: the largest contour's box at `threshold` has IoU >= `iou`.

    maps (B, h, w) are bicubically resized to image_size (H, W) (default: their own size) and
    min-max normalised; boxes (B, 4) or (B, K, 4) xywh in image pixels. Zhou et al.'s CAM
    paper and the WSOL literature threshold at 0.2.
    """
    size = tuple(image_size) if image_size is not None else tuple(maps.shape[-2:])
    img = box_image(maps, size).cpu().numpy()  # (B, H, W)
    gts = _gt_boxes(boxes)
    hits = [_best_iou(quantise(img[i]), gts[i], threshold, False) >= iou for i in range(img.shape[0])]
    return torch.tensor(hits, dtype=torch.bool)


class BoxAccuracy(Metric):
    """Box accuracy at every (IoU threshold, CAM threshold) pair, summed over a split.

    ``compute()`` gives MaxBoxAccV2 of Choe et al. 2020: for each IoU threshold δ in
    ``iou_thresholds`` the best box accuracy over CAM thresholds, then their mean; with
    ``multi_contour=True`` (V2) every contour's box (outer and hole contours, as cv2.RETR_TREE
    returns them) is a candidate, with False (V1) only the largest contour's. CAM thresholds
    default to wsolevaluation's np.arange(0, 1, 0.01). Sum states, so DDP-safe.
    """

    hits: Tensor  # (n_iou, n_thr) states, declared for the type checker
    count: Tensor

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        thresholds: Sequence[float] | np.ndarray = CHOE_THRESHOLDS,
        iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
        multi_contour: bool = True,
        image_size: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.multi_contour = multi_contour
        self.image_size = tuple(image_size) if image_size is not None else None
        shape = (len(self.iou_thresholds), len(self.thresholds))
        self.add_state("hits", default=torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, maps: Tensor, boxes: Tensor | np.ndarray) -> None:
        """Add maps (B, h, w) and their GT boxes (B, 4) or (B, K, 4) xywh in image pixels."""
        size = self.image_size or tuple(maps.shape[-2:])
        img = box_image(maps, size).cpu().numpy()  # (B, H, W)
        gts = _gt_boxes(boxes)
        deltas = np.asarray(self.iou_thresholds)[:, None]  # (n_iou, 1)
        hits = np.zeros((len(self.iou_thresholds), len(self.thresholds)), dtype=np.int64)
        for m, gt in zip(img, gts, strict=False):
            q = quantise(m)
            best = np.array([_best_iou(q, gt, t, self.multi_contour) for t in self.thresholds])
            hits += best[None] >= deltas
        self.hits += torch.as_tensor(hits, device=self.hits.device)
        self.count += img.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """max_box_acc (mean over δ of the max over CAM thresholds) and per-δ curves' maxima."""
        acc = self.hits.double() / self.count.clamp(min=1).double()  # (n_iou, n_thr)
        best, where = acc.max(dim=1)
        out = {"max_box_acc": best.mean()}
        for k, d in enumerate(self.iou_thresholds):
            out[f"box_acc_iou{int(round(d * 100))}"] = best[k]
            out[f"best_threshold_iou{int(round(d * 100))}"] = torch.tensor(
                float(self.thresholds[int(where[k])]), dtype=torch.float64
            )
        return out


def max_box_acc(
    maps: Tensor,
    boxes: Tensor | np.ndarray,
    thresholds: Sequence[float] | np.ndarray = CHOE_THRESHOLDS,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    multi_contour: bool = True,
    image_size: Sequence[int] | None = None,
) -> float:
    """MaxBoxAccV2 (Choe et al. 2020) of one batch of maps (B, h, w) and boxes (B, 4) xywh."""
    acc = BoxAccuracy(thresholds, iou_thresholds, multi_contour, image_size)
    acc.update(maps, boxes)
    return float(acc.compute()["max_box_acc"])


# --------------------------------------------------------------------------- parts, agreement


def part_pointing(
    maps: Tensor,
    parts: Tensor,
    image_size: Sequence[int],
    radius: float,
    subset: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Visible parts within `radius` px of the map's peak: (hits (B,), visible (B,)) long.

    maps (B, h, w) are upsampled to image_size (H, W) and their peak (row, col) taken;
    parts (B, P, 3) hold (x, y, visible) in image pixels (CUB's part_locs.txt). Only parts
    in `subset` (default all) that are visible count; the score over a split is
    hits.sum() / visible.sum() (fraction of visible annotated parts the peak lands near).
    """
    rc = peak(upsample(maps, image_size)).float()  # (B, 2)
    sel = parts if subset is None else parts[:, list(subset)]  # (B, P', 3)
    visible = sel[..., 2] > 0  # (B, P')
    d2 = (sel[..., 0] - rc[:, 1:2]) ** 2 + (sel[..., 1] - rc[:, 0:1]) ** 2  # (B, P')
    hits = visible & (d2 <= radius**2)
    return hits.sum(1).long(), visible.sum(1).long()


def peak_agreement(cam: Tensor, attn: Tensor) -> Tensor:
    """Whether CAM and attention (B, h, w), on the same grid, peak in the same cell: (B,) bool."""
    if cam.shape != attn.shape:
        raise ValueError(f"cam {tuple(cam.shape)} and attention {tuple(attn.shape)} differ")
    return (peak(cam) == peak(attn)).all(dim=1)


class LocalisationScores(Metric):
    """CAM vs attention: peak agreement, and pointing game / mask IoU against part masks.

    Per batch: cam and attention maps (B, h, w); optionally part masks (B, P, H, W) bool.
    "class" scores use the union of the class-defining parts' masks (``class_parts`` at
    construction, or a per-sample (B, P) bool in ``update``); "object" scores the union of
    all parts. Images whose union is empty are left out of that score's mean. Sum states,
    so DDP-safe; a score with no images is NaN.
    """

    n_images: Tensor  # scalar states, declared for the type checker
    agree: Tensor
    n_class: Tensor
    n_object: Tensor

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    _SCORES = ("point_class", "iou_class", "point_object", "iou_object")

    def __init__(
        self,
        class_parts: Sequence[int] | None = None,
        tolerance: float = 0.0,
        iou_threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.class_parts = None if class_parts is None else list(class_parts)
        self.tolerance = tolerance
        self.iou_threshold = iou_threshold
        for name in ("n_images", "agree", "n_class", "n_object"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for src in ("cam", "attn"):
            for s in self._SCORES:
                self.add_state(f"{src}_{s}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _add(self, src: str, maps: Tensor, mask: Tensor, kind: str) -> None:
        """Accumulate pointing and IoU of maps against masks (B, H, W) for valid rows."""
        point = pointing_game(maps, mask, self.tolerance).double()
        iou = mask_iou(maps, mask, self.iou_threshold).double()
        setattr(self, f"{src}_point_{kind}", getattr(self, f"{src}_point_{kind}") + point.sum())
        setattr(self, f"{src}_iou_{kind}", getattr(self, f"{src}_iou_{kind}") + iou.sum())

    def update(
        self,
        cam: Tensor,
        attn: Tensor,
        part_masks: Tensor | None = None,
        class_parts: Tensor | None = None,
    ) -> None:
        """Add cam, attn (B, h, w) and optional part masks (B, P, H, W) / class parts (B, P)."""
        cam, attn = cam.detach(), attn.detach()
        self.n_images += cam.shape[0]
        self.agree += peak_agreement(cam, attn).double().sum()
        if part_masks is None:
            return
        masks = part_masks.bool()  # (B, P, H, W)
        if class_parts is None:
            class_parts = torch.zeros(masks.shape[:2], dtype=torch.bool, device=masks.device)
            if self.class_parts is not None:
                class_parts[:, self.class_parts] = True
        sel = class_parts.bool()[..., None, None]  # (B, P, 1, 1)
        for kind, union in (("class", (masks & sel).any(1)), ("object", masks.any(1))):
            ok = union.flatten(1).any(1)  # (B,) images with something to find
            if ok.any():
                setattr(self, f"n_{kind}", getattr(self, f"n_{kind}") + ok.sum())
                self._add("cam", cam[ok], union[ok], kind)
                self._add("attn", attn[ok], union[ok], kind)

    def compute(self) -> dict[str, Tensor]:
        """Means: peak_agreement, {cam,attn}_{pointing,iou}_{class,object}."""
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        div = lambda a, n: a / n if n > 0 else nan  # noqa: E731
        out = {"peak_agreement": div(self.agree, self.n_images)}
        for src in ("cam", "attn"):
            for kind in ("class", "object"):
                n = getattr(self, f"n_{kind}")
                out[f"{src}_pointing_{kind}"] = div(getattr(self, f"{src}_point_{kind}"), n)
                out[f"{src}_iou_{kind}"] = div(getattr(self, f"{src}_iou_{kind}"), n)
        return out


# --------------------------------------------------------------------------- words


def word_grounding(
    attn: Tensor,
    words: Sequence[Sequence[str]],
    part_words: Mapping[str, int],
    attribute_words: set[str] | frozenset[str],
    part_masks: Tensor,
    window: int = WINDOW,
) -> tuple[int, int]:
    """Attribute words whose attention peak lies on the part they describe: (hits, count).

    attn (B, T, h, w) is the attention at each generated *word* (the caller maps subwords to
    words); words[b][t] is that word. For every attribute word, the part it describes is
    the first word among the next `window` words that is in `part_words` (word → part
    index into part_masks (B, P, H, W)). The pair counts when that part's mask is non-empty
    and hits when the upsampled attention's peak falls inside it.
    """
    triples = []  # (b, t, p)
    for b, ws in enumerate(words):
        for t, _, p in described_parts(ws, part_words, frozenset(attribute_words), window):
            if t < attn.shape[1] and bool(part_masks[b, p].any()):
                triples.append((b, t, p))
    if not triples:
        return 0, 0
    idx = torch.tensor(triples, dtype=torch.long, device=attn.device)  # (K, 3)
    maps = attn[idx[:, 0], idx[:, 1]]  # (K, h, w)
    masks = part_masks[idx[:, 0], idx[:, 2]]  # (K, H, W)
    return int(pointing_game(maps, masks).sum()), len(triples)


def word_attention(
    tokens: torch.Tensor, alphas: torch.Tensor, tokenizer: Tokenizer, grid: tuple[int, int]
) -> tuple[torch.Tensor, list[list[str]]]:
    """Per-step attention (B, T, h·w) → per-word maps (B, W, h, w) (mean over a word's pieces) and the words."""
    words = [tokenizer.word_steps(row.tolist()) for row in tokens.cpu()]
    width = max([len(w) for w in words] + [1])
    out = alphas.new_zeros(tokens.shape[0], width, alphas.shape[-1]).float()  # (B, W, L)
    for b, ws in enumerate(words):
        for k, (_, steps) in enumerate(ws):
            out[b, k] = alphas[b, steps].float().mean(0)
    names = [[clean_word(w) for w, _ in ws] for ws in words]
    return out.view(tokens.shape[0], width, *grid), names
