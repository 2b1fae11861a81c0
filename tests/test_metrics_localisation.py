"""Localisation and CAM/attention agreement metrics on hand-made maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jointcap.metrics.localisation import (
    BoxAccuracy,
    LocalisationScores,
    box_from_map,
    box_iou,
    boxes_from_map,
    gt_known_loc,
    mask_iou,
    max_box_acc,
    normalise_map,
    part_pointing,
    peak,
    peak_agreement,
    pointing_game,
    upsample,
    word_grounding,
    xywh_to_xyxy,
)

H = W = 32


def _rect(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> torch.Tensor:
    """A (h, w) float map that is 1 on the inclusive box and 0 elsewhere."""
    m = torch.zeros(h, w)
    m[y0 : y1 + 1, x0 : x1 + 1] = 1.0
    return m


def _spike(r: int, c: int, h: int = 8, w: int = 8) -> torch.Tensor:
    """A (h, w) map peaked at one cell."""
    m = torch.zeros(h, w)
    m[r, c] = 1.0
    return m


# ----------------------------------------------------------------- basics


def test_normalise_and_upsample():
    m = torch.stack([torch.arange(16.0).view(4, 4) * 3 + 5, torch.full((4, 4), 2.0)])
    n = normalise_map(m)
    assert n[0].min() == 0 and n[0].max() == 1
    assert torch.all(n[1] == 0)  # constant map → zeros, not NaN
    assert upsample(m, (8, 12)).shape == (2, 8, 12)
    assert peak(_spike(3, 5)[None]).tolist() == [[3, 5]]


# ----------------------------------------------------------------- pointing, IoU


def test_pointing_game_hit_miss_and_tolerance():
    masks = torch.zeros(3, H, W, dtype=torch.bool)
    masks[:, 0:8, 0:8] = True  # top-left quarter of the image
    maps = torch.stack([_spike(0, 0), _spike(7, 7), _spike(2, 2)])  # 8×8 grid → 4 px cells
    hits = pointing_game(maps, masks)
    assert hits.tolist() == [True, False, False]
    # Cell (2, 2) peaks at pixel (9, 9); the nearest mask pixel (7, 7) is √8 ≈ 2.83 px away.
    assert peak(upsample(maps[2:], (H, W))).tolist() == [[9, 9]]
    assert pointing_game(maps[2:], masks[2:], tolerance=2).tolist() == [False]
    assert pointing_game(maps[2:], masks[2:], tolerance=3).tolist() == [True]
    assert pointing_game(maps[1:2], masks[1:2], tolerance=15).tolist() == [False]


def test_mask_iou():
    mask = _rect(4, 6, 20, 25).bool()
    assert mask_iou(mask.float()[None], mask[None]).item() == pytest.approx(1.0)
    assert mask_iou(_rect(25, 0, 31, 3)[None], mask[None]).item() == 0.0
    half = _rect(4, 6, 20, 15)  # the top part of the mask only
    expect = half.sum() / mask.sum()
    assert mask_iou(half[None], mask[None]).item() == pytest.approx(expect.item())


# ----------------------------------------------------------------- boxes


def test_box_from_map_largest_component_and_none():
    m = _rect(2, 3, 10, 12) + _rect(20, 20, 22, 22)  # big and small blob
    # Boxes end one past the last pixel (cv2.boundingRect's x + w, y + h).
    assert box_from_map(m, 0.5) == (2, 3, 11, 13)
    boxes, areas = boxes_from_map(m, 0.5)
    assert sorted(map(tuple, boxes.tolist())) == [(2, 3, 11, 13), (20, 20, 23, 23)]
    assert sorted(areas.tolist()) == [4.0, 72.0]  # cv2.contourArea: (w - 1)(h - 1) through pixel centres
    assert box_from_map(torch.zeros(H, W), 0.5) is None  # what normalise_map makes of a constant map
    # cv2.threshold's bar is t · max(q), so an un-normalised flat map passes everywhere.
    assert box_from_map(torch.zeros(H, W) + 0.2, 0.5) == (0, 0, 31, 31)


def test_box_from_map_largest_by_contour_area_not_pixels():
    # A 20-px line encloses no area; a 3×3 square (9 px) encloses 4: cv2 picks the square.
    m = _rect(0, 0, 19, 0) + _rect(10, 10, 12, 12)
    assert box_from_map(m, 0.5) == (10, 10, 13, 13)
    # A ring's outer contour encloses its hole too: 4×4 ring (12 px) beats a 3×4 block (12 px, area 6).
    ring = _rect(0, 10, 3, 13) - _rect(1, 11, 2, 12)
    assert box_from_map(ring + _rect(20, 20, 22, 23), 0.5) == (0, 10, 4, 14)


def test_box_clipped_at_image_border_and_threshold_is_strict_on_uint8():
    assert box_from_map(_rect(24, 24, 31, 31), 0.5) == (24, 24, 31, 31)  # x + w = 32 clipped to W - 1
    m = torch.tensor([[0.0, 0.1, 0.2, 0.0], [0.1, 0.9, 1.0, 0.1], [0.0, 0.8, 0.6, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # uint8: 0.2 → 51; at t = 0.2 the bar is int(0.2 · 255) = 51 and pixels must exceed it, so (0, 2) is out.
    assert box_from_map(m, 0.2) == (1, 1, 3, 3)
    assert box_from_map(m, 0.19) == (1, 0, 3, 3)  # int(0.19 · 255) = 48 < 51
    assert box_from_map(m, 0.0) == (0, 0, 3, 3)  # t = 0 keeps q > 0 only: here every non-zero pixel
    with pytest.raises(ValueError, match="normalised"):
        box_from_map(m * 2, 0.5)


def test_box_iou_and_xywh():
    assert xywh_to_xyxy(np.array([[2, 3, 9, 10]])).tolist() == [[2, 3, 11, 13]]  # (x, y, x + w, y + h)
    assert xywh_to_xyxy(np.array([[2.7, 3.2, 9.5, 10.5]])).tolist() == [[2, 3, 12, 13]]  # int() as resize_bbox
    a = np.array([[0, 0, 9, 9]])
    assert box_iou(a, a)[0, 0] == 1.0
    assert box_iou(a, np.array([[0, 0, 4, 9]]))[0, 0] == pytest.approx(0.5)
    assert box_iou(a, np.array([[20, 20, 25, 25]]))[0, 0] == 0.0
    # By hand: (1, 1, 3, 3) and (0, 0, 2, 2) share 2 × 2 pixels of 3 × 3 each: 4 / (9 + 9 - 4).
    assert box_iou(np.array([[1, 1, 3, 3]]), np.array([[0, 0, 2, 2]]))[0, 0] == pytest.approx(4 / 14)


def test_gt_known_loc_rectangle():
    maps = torch.stack([_rect(4, 6, 20, 25), _rect(22, 0, 31, 5)])
    boxes = torch.tensor([[4, 6, 17, 20], [4, 6, 17, 20]])  # xywh of pixels (4, 6) … (20, 25): box (4, 6, 21, 26)
    assert gt_known_loc(maps, boxes).tolist() == [True, False]
    # Low-resolution maps are upsampled to the image size first.
    small = torch.zeros(1, 4, 4)
    small[0, :2, :2] = 1.0
    assert gt_known_loc(small, torch.tensor([[0, 0, 16, 16]]), image_size=(32, 32)).tolist() == [True]


def test_max_box_acc_synthetic_rectangles():
    maps = torch.stack([_rect(4, 6, 20, 25), _rect(0, 0, 15, 15)])
    boxes = torch.tensor([[4, 6, 17, 20], [0, 0, 16, 16]])
    assert max_box_acc(maps, boxes) == pytest.approx(1.0)
    acc = BoxAccuracy()
    acc.update(maps, boxes)
    out = acc.compute()
    assert out["box_acc_iou50"].item() == pytest.approx(1.0)
    assert out["max_box_acc"].item() == pytest.approx(1.0)


def test_max_box_acc_partial_overlap_counts_per_iou_threshold():
    # Predicted box (0, 0, 12, 10) inside the GT box (0, 0, 20, 10): IoU 13·11 / 21·11 = 0.62 → hit
    # at 0.3 and 0.5 but not at 0.7, so MaxBoxAccV2 = 2/3.
    gt = torch.tensor([[0, 0, 20, 10]])  # (0, 0, 20, 10)
    m = _rect(0, 0, 11, 9)[None]  # pixels 0..11 × 0..9
    assert box_iou(np.array([[0, 0, 12, 10]]), xywh_to_xyxy(gt.numpy()))[0, 0] == pytest.approx(13 / 21)
    acc = BoxAccuracy()
    acc.update(m, gt)
    out = acc.compute()
    assert out["box_acc_iou30"].item() == 1.0 and out["box_acc_iou50"].item() == 1.0
    assert out["box_acc_iou70"].item() == 0.0
    assert out["max_box_acc"].item() == pytest.approx(2 / 3)


def test_box_accuracy_accumulates_and_multi_contour():
    # The GT box holds a small blob; a bigger decoy blob sits elsewhere. V1 (largest component)
    # misses, V2 (any component) hits.
    m = (_rect(0, 0, 5, 5) + _rect(14, 14, 31, 31))[None]
    gt = torch.tensor([[0, 0, 6, 6]])
    assert max_box_acc(m, gt, multi_contour=True) == pytest.approx(1.0)
    assert max_box_acc(m, gt, multi_contour=False) < 1.0
    # Accumulating two batches equals one batch of both.
    maps = torch.cat([m, _rect(4, 6, 20, 25)[None]])
    boxes = torch.tensor([[0, 0, 6, 6], [4, 6, 17, 20]])
    one, two = BoxAccuracy(multi_contour=False), BoxAccuracy(multi_contour=False)
    one.update(maps, boxes)
    two.update(maps[:1], boxes[:1])
    two.update(maps[1:], boxes[1:])
    assert torch.equal(one.hits, two.hits) and one.count == two.count == 2


# ----------------------------------------------------------------- parts, agreement


def test_part_pointing():
    maps = _spike(2, 5)[None]  # 8×8 grid on a 32×32 image → peak near pixel (row 9-10, col 21-22)
    rc = peak(upsample(maps, (32, 32)))[0].tolist()
    parts = torch.tensor(
        [
            [
                [rc[1], rc[0], 1],  # on the peak
                [rc[1] + 3, rc[0] + 4, 1],  # 5 px away
                [0, 0, 1],  # far away
                [rc[1], rc[0], 0],  # on the peak but not visible
            ]
        ],
        dtype=torch.float,
    )
    hits, visible = part_pointing(maps, parts, (32, 32), radius=5)
    assert (hits.item(), visible.item()) == (2, 3)
    hits, visible = part_pointing(maps, parts, (32, 32), radius=4.9)
    assert (hits.item(), visible.item()) == (1, 3)
    hits, visible = part_pointing(maps, parts, (32, 32), radius=5, subset=[2, 3])
    assert (hits.item(), visible.item()) == (0, 1)


def test_peak_agreement():
    cam = torch.stack([_spike(1, 1), _spike(4, 4)])
    attn = torch.stack([_spike(1, 1), _spike(4, 5)])
    assert peak_agreement(cam, attn).tolist() == [True, False]
    with pytest.raises(ValueError):
        peak_agreement(cam, attn[:, :4])


def _part_masks() -> torch.Tensor:
    """(2, 3, 32, 32) masks: part 0 top-left, part 1 bottom-right, part 2 top-right (image 1: none)."""
    m = torch.zeros(2, 3, H, W, dtype=torch.bool)
    m[:, 0, 0:8, 0:8] = True
    m[:, 1, 24:32, 24:32] = True
    m[0, 2, 0:8, 24:32] = True
    return m


def test_localisation_scores():
    cam = torch.stack([_spike(0, 0), _spike(7, 7)])  # image 0 → part 0, image 1 → part 1
    attn = torch.stack([_spike(0, 7), _spike(7, 7)])  # image 0 → part 2, image 1 → part 1
    metric = LocalisationScores(class_parts=[0])
    metric.update(cam, attn, _part_masks())
    out = metric.compute()
    assert out["peak_agreement"].item() == 0.5
    assert out["cam_pointing_class"].item() == 0.5  # image 0 hits part 0; image 1 misses
    assert out["attn_pointing_class"].item() == 0.0
    assert out["cam_pointing_object"].item() == 1.0  # every peak is on some part
    assert out["attn_pointing_object"].item() == 1.0
    # Per-sample class parts override: image 1's class part is part 1.
    metric = LocalisationScores()
    metric.update(cam, attn, _part_masks(), class_parts=torch.tensor([[True, False, False], [False, True, False]]))
    out = metric.compute()
    assert out["cam_pointing_class"].item() == 1.0 and out["attn_pointing_class"].item() == 0.5
    # Without masks only agreement is measured; the rest are NaN.
    metric = LocalisationScores(class_parts=[0])
    metric.update(cam, attn)
    out = metric.compute()
    assert out["peak_agreement"].item() == 0.5 and torch.isnan(out["cam_iou_object"])


def test_localisation_scores_skip_images_without_class_parts():
    masks = _part_masks()
    masks[1, 0] = False  # image 1's class part is not visible
    metric = LocalisationScores(class_parts=[0])
    metric.update(torch.stack([_spike(0, 0), _spike(0, 0)]), torch.stack([_spike(0, 0), _spike(0, 0)]), masks)
    assert metric.n_class.item() == 1 and metric.n_object.item() == 2
    out = metric.compute()
    assert out["cam_pointing_class"].item() == 1.0
    assert out["cam_pointing_object"].item() == 0.5


def test_word_grounding():
    attn = torch.zeros(2, 6, 8, 8)
    words = [
        ["a", "red", "and", "black", "wing", "."],  # "red"→wing (3 ahead), "black"→wing
        ["the", "blue", "bird", "has", "a", "tail"],  # "blue": no part word within 3
    ]
    part_words = {"wing": 1, "tail": 0, "head": 2}
    attrs = {"red", "black", "blue"}
    masks = _part_masks()
    attn[0, 1] = _spike(7, 7)  # "red" looks at part 1 (bottom-right): hit
    attn[0, 3] = _spike(0, 0)  # "black" looks at part 0: miss
    assert word_grounding(attn, words, part_words, attrs, masks) == (1, 2)
    # With a wider window "blue" reaches "tail" (part 0); its attention peaks at (0, 0): hit.
    attn[1, 1] = _spike(0, 0)
    assert word_grounding(attn, words, part_words, attrs, masks, window=4) == (2, 3)
    # A part whose mask is empty does not count: both of image 0's pairs drop out.
    masks[0, 1] = False
    assert word_grounding(attn, words, part_words, attrs, masks, window=4) == (1, 1)
