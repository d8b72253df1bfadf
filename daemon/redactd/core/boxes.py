"""Box geometry on many boxes at once: the IoU of every box with every other.

The tracker pairs detections with tracks by IoU, and the evaluation matches
detections with labels by IoU; both need the same all-pairs matrix, so it
lives here once, in the base layer, beside :class:`~redactd.core.types.Box`
(whose ``iou`` is the one-pair version). Separate from ``types`` because it
is numpy arithmetic, not a value passed between stages.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from redactd.core.types import Box


def box_array(boxes: Iterable[Box]) -> np.ndarray:
    """``boxes`` as an N x 4 float64 array of ``x1 y1 x2 y2`` rows (0 x 4 when empty)."""
    rows = [(b.x1, b.y1, b.x2, b.y2) for b in boxes]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N x 4, x1 y1 x2 y2) with every box in ``b`` (M x 4).

    Returns an N x M float64 array. Boxes that only touch, or do not overlap,
    have IoU 0; so does any pair whose union has no area (two zero-area
    boxes). Areas are taken as given (``(x2 - x1) * (y2 - y1)``), not clipped
    at zero: an inverted box never overlaps anything, so its IoU is 0 anyway.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out
