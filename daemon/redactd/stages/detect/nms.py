"""Greedy non-maximum suppression over detections.

Boxes are ``[x1, y1, x2, y2]`` rows. A box is suppressed when its IoU with a
higher-scoring kept box is *greater than* ``iou``; ties in score keep the
earlier box (stable order), so the result does not depend on sort noise.

OpenCV's ``cv2.dnn.NMSBoxes`` implements exactly this rule (stable
descending sort, suppress on IoU > threshold) in C++, 5-7x faster than
numpy on the hundreds of candidate cells a low threshold gives CenterFace;
it is used whenever its input conventions cannot change the result
(positive scores that are float32 values, boxes of positive size), else
the numpy path below runs. ``tests/unit/test_nms.py`` checks both agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from redactd.core.types import Detection


def boxes_array(dets: Sequence[Detection]) -> np.ndarray:
    """``(n, 4)`` float64 array of ``[x1, y1, x2, y2]``."""
    if not dets:
        return np.zeros((0, 4), dtype=np.float64)
    return np.array([(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in dets], dtype=np.float64)


def area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(n, 4)`` boxes (0 for degenerate boxes)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def intersection(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection areas of one ``(4,)`` box with each of ``(n, 4)`` boxes."""
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    return np.clip(iw, 0, None) * np.clip(ih, 0, None)


def iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box with each of ``(n, 4)`` boxes."""
    inter = intersection(box, boxes)
    a = float(area(box[None, :])[0])
    union = a + area(boxes) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, highest score first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    fast = _opencv_nms(boxes, scores, iou)
    if fast is not None:
        return fast
    # stable sort on -score: equal scores keep input order
    order = np.argsort(-scores, kind="stable")
    if len(boxes) <= _MATRIX_MAX:
        return _nms_matrix(boxes, order, iou)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        order = rest[iou_one(boxes[i], boxes[rest]) <= iou]
    return np.array(keep, dtype=np.int64)


def _opencv_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray | None:
    """``nms_indices`` by ``cv2.dnn.NMSBoxes``, or ``None`` where it could differ:
    it drops scores <= its score threshold (0), takes float32 scores (a
    rounding could reorder them) and gives a zero-size box a NaN overlap."""
    if len(boxes) < 8:  # the call's own overhead: numpy is as fast
        return None
    s32 = scores.astype(np.float32)
    wh = boxes[:, 2:] - boxes[:, :2]
    if not (
        np.isfinite(boxes).all()
        and (wh > 0).all()
        and (s32 > 0).all()
        and np.array_equal(s32.astype(np.float64), scores)
    ):
        return None
    rects = np.concatenate([boxes[:, :2], wh], axis=1).astype(np.float64)
    # The stubs say sequences; OpenCV takes the (n, 4) and (n,) arrays as they are.
    keep = cv2.dnn.NMSBoxes(rects, s32, 0.0, float(iou))  # type: ignore[arg-type]
    return np.asarray(keep, dtype=np.int64).reshape(-1)


#: Up to this many boxes, NMS computes every pair's IoU at once (n*n floats).
_MATRIX_MAX = 1500


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """``(n, n)`` IoU of every pair of ``(n, 4)`` boxes."""
    iw = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(
        boxes[:, None, 0], boxes[None, :, 0]
    )
    ih = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(
        boxes[:, None, 1], boxes[None, :, 1]
    )
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    a = area(boxes)
    union = a[:, None] + a[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _nms_matrix(boxes: np.ndarray, order: np.ndarray, iou: float) -> np.ndarray:
    """The same greedy NMS as the loop in ``nms_indices``, from the pairwise IoU matrix."""
    over = pairwise_iou(boxes) > iou
    alive = np.ones(len(boxes), dtype=bool)
    keep: list[int] = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        alive &= ~over[i]
    return np.array(keep, dtype=np.int64)


def nms(dets: Sequence[Detection], iou: float) -> list[Detection]:
    """Greedy NMS over detections of one class; returns the kept ones, best first."""
    if len(dets) <= 1:
        return list(dets)
    keep = nms_indices(boxes_array(dets), np.array([d.score for d in dets]), iou)
    return [dets[i] for i in keep]
