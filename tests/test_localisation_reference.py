"""Box localisation against an independent transcription of Choe et al. 2020's wsolevaluation (tests/helpers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from jointcap.metrics.localisation import (
    CHOE_THRESHOLDS,
    BoxAccuracy,
    _hole_boxes,
    boxes_from_map,
    gt_known_loc,
    max_box_acc,
    normalise_map,
    upsample,
)
from tests.helpers import wsol_reference as ref


def _random_masks(n: int, seed: int = 0) -> list[np.ndarray]:
    """Binary masks of 4–19 px sides: speckle (many components, holes, islands) and smooth blobs."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        side = int(rng.integers(4, 20))
        noise = rng.random((side, side))
        out.append(noise < rng.uniform(0.2, 0.8) if k % 2 else ndimage.gaussian_filter(noise, 1.0) > 0.5)
    return out


def _reference_contours(mask: np.ndarray) -> tuple[list, list]:
    """Border following: sorted (box, area) of outer contours, sorted boxes of hole contours."""
    h, w = mask.shape

    def box(points: np.ndarray) -> tuple[int, int, int, int]:
        x, y, bw, bh = ref.bounding_rect(points)
        return x, y, min(x + bw, w - 1), min(y + bh, h - 1)

    contours = ref.find_contours(mask)
    outer = sorted((box(p), ref.contour_area(p)) for p, hole in contours if not hole)
    return outer, sorted(box(p) for p, hole in contours if hole)


def _random_cams(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n low-res (6, 6) CAMs (a Gaussian bump plus noise) and 1–2 xywh GT boxes each on a 32-px image."""
    rng = np.random.default_rng(seed)
    grid = np.arange(6.0)
    cams, gts = [], []
    for _ in range(n):
        cy, cx, s = rng.uniform(0, 5), rng.uniform(0, 5), rng.uniform(1, 6)
        bump = np.exp(-((grid[:, None] - cy) ** 2 + (grid[None] - cx) ** 2) / s)
        cams.append(bump + 0.3 * rng.random((6, 6)))
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            x, y = rng.uniform(0, 20, 2)
            boxes.append([x, y, rng.uniform(4, 30 - x), rng.uniform(4, 30 - y)])
        gts.append(np.array(boxes))
    return cams, gts


def test_bicubic_upsample_is_cv2_inter_cubic():
    cam = np.random.default_rng(0).random((7, 7))
    ours = upsample(torch.tensor(cam)[None], (40, 40), mode="bicubic")[0].numpy()
    np.testing.assert_allclose(ours, ref.cv2_resize_cubic(cam, (40, 40)), atol=1e-12)
    assert not np.allclose(upsample(torch.tensor(cam)[None], (40, 40))[0].numpy(), ours, atol=1e-3)  # ≠ bilinear


def test_normalise_map_zeroes_nan_maps_as_normalize_scoremap():
    m = torch.tensor([[[0.0, float("nan")], [1.0, 2.0]], [[1.0, 3.0], [5.0, 9.0]]], dtype=torch.float64)
    out = normalise_map(m)
    assert out.dtype == torch.float64 and torch.all(out[0] == 0)
    np.testing.assert_allclose(out[1].numpy(), ref.normalize_scoremap(m[1].numpy()))


def test_contours_match_border_following_on_random_masks():
    for mask in _random_masks(120):
        outer, holes = _reference_contours(mask)
        boxes, areas = boxes_from_map(mask.astype(np.float64), 0.5)
        found = sorted((tuple(b), a) for b, a in zip(boxes.tolist(), areas.tolist(), strict=False))
        assert found == outer, mask.astype(int)
        assert sorted(map(tuple, _hole_boxes(mask).tolist())) == holes, mask.astype(int)


def test_hole_contours_are_v2_candidates():
    # A thick ring: the hole's contour runs through pixels 4 and 16, box (4, 4, 17, 17), which is the GT box;
    # the outer box (0, 0, 21, 21) has IoU 14² / 22² ≈ 0.40 < 0.5.
    ring = torch.zeros(32, 32)
    ring[0:21, 0:21] = 1.0
    ring[5:16, 5:16] = 0.0
    mask = ring.numpy() > 0.5
    assert _reference_contours(mask)[1] == [(4, 4, 17, 17)]
    gt = torch.tensor([[4.0, 4.0, 13.0, 13.0]])
    assert max_box_acc(ring[None], gt, iou_thresholds=(0.5,), multi_contour=True) == 1.0
    assert max_box_acc(ring[None], gt, iou_thresholds=(0.5,), multi_contour=False) == 0.0


@pytest.mark.parametrize("multi_contour, ious", [(False, (0.5,)), (True, (0.3, 0.5, 0.7))])
def test_box_accuracy_counts_equal_reference_transcription(multi_contour: bool, ious: tuple[float, ...]):
    cams, gts = _random_cams(6, seed=int(multi_contour))
    expect = ref.box_evaluator_counts(cams, gts, (32, 32), list(CHOE_THRESHOLDS), ious, multi_contour)
    acc = BoxAccuracy(iou_thresholds=ious, multi_contour=multi_contour, image_size=(32, 32))
    for cam, gt in zip(cams, gts, strict=False):
        acc.update(torch.tensor(cam)[None], gt[None])
    np.testing.assert_array_equal(acc.hits.numpy(), expect)
    assert 0 < expect.sum() < expect.size * len(cams)  # the maps are neither all hits nor all misses


def test_gt_known_loc_equals_reference_at_0_2_and_defaults_to_it():
    cams, gts = _random_cams(6, seed=2)
    expect = ref.box_evaluator_counts(cams, gts, (32, 32), [0.2], (0.5,), False)[0, 0]
    hits = [
        gt_known_loc(torch.tensor(c)[None], g[None], image_size=(32, 32))[0].item()
        for c, g in zip(cams, gts, strict=False)
    ]
    assert sum(hits) == expect
    # A faint halo (0.3) around a bright core: 0.2 keeps the halo (the object), 0.5 only the core.
    m = torch.zeros(1, 32, 32)
    m[0, 4:28, 4:28] = 0.3
    m[0, 14:18, 14:18] = 1.0
    box = torch.tensor([[4.0, 4.0, 24.0, 24.0]])
    assert gt_known_loc(m, box).tolist() == [True]
    assert gt_known_loc(m, box, threshold=0.5).tolist() == [False]


def test_against_opencv_when_installed():
    """Where cv2 is importable (it is no dependency), the border-following transcription must match it."""
    cv2 = pytest.importorskip("cv2")
    for mask in _random_masks(60, seed=3):
        contours = cv2.findContours(mask.astype(np.uint8) * 255, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        h, w = mask.shape
        got = []
        for c in contours:
            x, y, bw, bh = cv2.boundingRect(c)
            got.append(((x, y, min(x + bw, w - 1), min(y + bh, h - 1)), cv2.contourArea(c)))
        mine = ref.find_contours(mask)
        want = []
        for p, _ in mine:
            x, y, bw, bh = ref.bounding_rect(p)
            want.append(((x, y, min(x + bw, w - 1), min(y + bh, h - 1)), ref.contour_area(p)))
        assert sorted(got) == sorted(want)
    cam = np.random.default_rng(4).random((7, 7))
    resized = cv2.resize(cam, (40, 40), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(ref.cv2_resize_cubic(cam, (40, 40)), resized, atol=1e-5)
