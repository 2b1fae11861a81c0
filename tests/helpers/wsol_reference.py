"""Test-only transcription of Choe et al. 2020's box evaluation (clovaai/wsolevaluation), cv2 replaced by numpy.

Transcribed from wsolevaluation's inference.py (``normalize_scoremap``, ``CAMComputer``'s
``cv2.resize(cam, image_size, interpolation=cv2.INTER_CUBIC)``) and evaluation.py
(``compute_bboxes_from_scoremaps``, ``calculate_multiple_iou``, ``BoxEvaluator.accumulate``).
It is deliberately slow and literal, and shares no code with jointcap.metrics.localisation:
the library counts 2×2 windows and labels components with scipy, this traces borders.

The cv2 calls, replaced for the 2-D single-channel maps used here:

* ``cv2.resize(..., INTER_CUBIC)``: separable cubic convolution, a = -0.75, source coordinate
  ``(d + 0.5) * src / dst - 0.5``, taps at floor - 1 … floor + 2 clamped to the image
  (OpenCV's resize.cpp ``interpolateCubic`` and its replicated border).
* ``cv2.threshold(src, thresh, 255, THRESH_BINARY)``: ``src > thresh``.
* ``cv2.findContours(..., RETR_TREE, CHAIN_APPROX_SIMPLE)``: Suzuki & Abe's border following
  (1985, Algorithm 1, as OpenCV's contours.cpp ``icvFetchContour``) on the image padded with
  zeros, returning every outer and hole border. CHAIN_APPROX_SIMPLE only drops points in the
  middle of straight runs, which changes neither the area nor the bounding box, so every point
  is kept here. The order of the list is raster order of the borders' first points.
* ``cv2.contourArea``: the shoelace area of the points; ``cv2.boundingRect``: (min x, min y,
  max x - min x + 1, max y - min y + 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# OpenCV's chain-code directions (x, y) with y down: 0 E, 1 NE, 2 N, 3 NW, 4 W, 5 SW, 6 S, 7 SE;
# increasing = counter-clockwise on screen. Stored as (row, col) offsets.
_DIRS = [(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)]


def normalize_scoremap(cam: np.ndarray) -> np.ndarray:
    """inference.py normalize_scoremap."""
    cam = np.array(cam, dtype=np.float64)
    if np.isnan(cam).any():
        return np.zeros_like(cam)
    if cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def _cubic_weights(x: float, a: float = -0.75) -> list[float]:
    """OpenCV interpolateCubic: the four tap weights for fractional offset x."""
    w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + 1
    w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    return [w0, w1, w2, 1.0 - w0 - w1 - w2]


def _resize_axis(src: np.ndarray, dst_len: int) -> np.ndarray:
    """Cubic resize along axis 0."""
    n = src.shape[0]
    out = np.zeros((dst_len,) + src.shape[1:])
    for d in range(dst_len):
        f = (d + 0.5) * n / dst_len - 0.5
        s = int(np.floor(f))
        for k, w in enumerate(_cubic_weights(f - s)):
            out[d] += w * src[min(max(s - 1 + k, 0), n - 1)]
    return out


def cv2_resize_cubic(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(cam, size, interpolation=cv2.INTER_CUBIC) for a 2-D map; size (H, W) (square in use)."""
    return _resize_axis(_resize_axis(np.asarray(cam, np.float64), size[0]).T, size[1]).T


def find_contours(binary: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Every border of a 0/1 image as ((N, 2) points (x, y), is_hole), by Suzuki & Abe's Algorithm 1."""
    f = np.pad((np.asarray(binary) > 0).astype(np.int64), 1)
    h, w = f.shape
    nbd = 1
    contours = []
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            if f[i, j] == 1 and f[i, j - 1] == 0:
                start, hole = 4, False  # outer border: (i2, j2) = (i, j - 1), the W neighbour
            elif f[i, j] >= 1 and f[i, j + 1] == 0:
                start, hole = 0, True  # hole border: (i2, j2) = (i, j + 1), the E neighbour
            else:
                continue
            nbd += 1
            # (3.1) clockwise from (i2, j2) around (i, j) for the first non-zero pixel
            s = start
            for _ in range(8):
                s = (s - 1) % 8
                if f[i + _DIRS[s][0], j + _DIRS[s][1]] != 0:
                    break
            else:
                f[i, j] = -nbd
                contours.append((np.array([[j - 1, i - 1]]), hole))
                continue
            i1, j1 = i + _DIRS[s][0], j + _DIRS[s][1]
            i3, j3, prev = i, j, s  # prev: direction from (i3, j3) to (i2, j2)
            points = []
            while True:
                points.append((j3 - 1, i3 - 1))
                # (3.3) counter-clockwise from the element after (i2, j2) around (i3, j3)
                east_zero = False
                d = prev
                for _ in range(8):
                    d = (d + 1) % 8
                    ni, nj = i3 + _DIRS[d][0], j3 + _DIRS[d][1]
                    if f[ni, nj] != 0:
                        break
                    east_zero |= d == 0
                # (3.4)
                if east_zero:
                    f[i3, j3] = -nbd
                elif f[i3, j3] == 1:
                    f[i3, j3] = nbd
                # (3.5)
                if (ni, nj) == (i, j) and (i3, j3) == (i1, j1):
                    break
                prev = (d + 4) % 8
                i3, j3 = ni, nj
            contours.append((np.array(points), hole))
    return contours


def contour_area(points: np.ndarray) -> float:
    """cv2.contourArea: |shoelace| / 2."""
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def bounding_rect(points: np.ndarray) -> tuple[int, int, int, int]:
    """cv2.boundingRect of integer points: x, y, w, h."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


def compute_bboxes_from_scoremaps(
    scoremap: np.ndarray, scoremap_threshold_list: Sequence[float], multi_contour_eval: bool = False
) -> tuple[list[np.ndarray], list[int]]:
    """evaluation.py compute_bboxes_from_scoremaps, line by line."""
    height, width = scoremap.shape
    scoremap_image = (scoremap * 255).astype(np.uint8)

    def scoremap2bbox(threshold):
        thr_gray_heatmap = scoremap_image > int(threshold * np.max(scoremap_image))  # cv2.threshold
        contours = [c for c, _ in find_contours(thr_gray_heatmap)]  # cv2.findContours
        if len(contours) == 0:
            return np.asarray([[0, 0, 0, 0]]), 1
        if not multi_contour_eval:
            contours = [max(contours, key=contour_area)]
        estimated_boxes = []
        for contour in contours:
            x, y, w, h = bounding_rect(contour)
            x0, y0, x1, y1 = x, y, x + w, y + h
            x1 = min(x1, width - 1)
            y1 = min(y1, height - 1)
            estimated_boxes.append([x0, y0, x1, y1])
        return np.asarray(estimated_boxes), len(contours)

    boxes, numbers = [], []
    for threshold in scoremap_threshold_list:
        b, n = scoremap2bbox(threshold)
        boxes.append(b)
        numbers.append(n)
    return boxes, numbers


def calculate_multiple_iou(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """evaluation.py calculate_multiple_iou (x0y0x1y1, inclusive +1 areas)."""
    num_a, num_b = box_a.shape[0], box_b.shape[0]
    box_a = np.tile(box_a, num_b)
    box_a = np.expand_dims(box_a, axis=1).reshape((num_a, num_b, -1))
    box_b = np.tile(box_b, num_a)
    box_b = np.expand_dims(box_b, axis=1).reshape((num_b, num_a, -1))
    box_b = np.transpose(box_b, (1, 0, 2))
    min_x = np.maximum(box_a[:, :, 0], box_b[:, :, 0])
    min_y = np.maximum(box_a[:, :, 1], box_b[:, :, 1])
    max_x = np.minimum(box_a[:, :, 2], box_b[:, :, 2])
    max_y = np.minimum(box_a[:, :, 3], box_b[:, :, 3])
    area_intersect = np.maximum(0, max_x - min_x + 1) * np.maximum(0, max_y - min_y + 1)
    area_a = (box_a[:, :, 2] - box_a[:, :, 0] + 1) * (box_a[:, :, 3] - box_a[:, :, 1] + 1)
    area_b = (box_b[:, :, 2] - box_b[:, :, 0] + 1) * (box_b[:, :, 3] - box_b[:, :, 1] + 1)
    denominator = (area_a + area_b - area_intersect).astype(np.float64)
    degenerate = np.where(denominator <= 0)
    denominator[degenerate] = 1
    ious = area_intersect / denominator
    ious[degenerate] = 0
    return ious


def box_evaluator_counts(
    cams: Sequence[np.ndarray],
    gt_xywh: Sequence[np.ndarray],
    image_size: tuple[int, int],
    cam_thresholds: Sequence[float],
    iou_thresholds: Sequence[float],
    multi_contour_eval: bool,
) -> np.ndarray:
    """num_correct (n_iou, n_cam) of CAMComputer + BoxEvaluator.accumulate over low-res CAMs and xywh GT boxes.

    GT boxes become (x, y, x + w, y + h) truncated to int, as the CUB metadata and resize_bbox do.
    """
    num_correct = np.zeros((len(iou_thresholds), len(cam_thresholds)))
    for cam, gt in zip(cams, gt_xywh, strict=False):
        scoremap = normalize_scoremap(cv2_resize_cubic(cam, image_size))
        g = np.asarray(gt, np.float64).reshape(-1, 4)
        gt_boxes = np.array([[int(x), int(y), int(x + w), int(y + h)] for x, y, w, h in g])
        boxes_at_thresholds, number_of_box_list = compute_bboxes_from_scoremaps(
            scoremap, cam_thresholds, multi_contour_eval
        )
        multiple_iou = calculate_multiple_iou(np.concatenate(boxes_at_thresholds, axis=0), gt_boxes)
        idx, sliced = 0, []
        for nr_box in number_of_box_list:
            sliced.append(max(multiple_iou.max(1)[idx : idx + nr_box]))
            idx += nr_box
        for k, delta in enumerate(iou_thresholds):
            num_correct[k, np.where(np.asarray(sliced) >= delta)[0]] += 1
    return num_correct
