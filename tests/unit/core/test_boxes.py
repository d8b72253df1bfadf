"""The shared IoU matrix (redactd.core.boxes): known values, empty inputs, degenerate boxes."""

from __future__ import annotations

import numpy as np
import pytest

from redactd.core.boxes import box_array, iou_matrix
from redactd.core.types import Box


def _m(a: list[Box], b: list[Box]) -> np.ndarray:
    return iou_matrix(box_array(a), box_array(b))


def test_known_values() -> None:
    a = [Box(0, 0, 10, 10), Box(0, 0, 4, 4)]
    b = [Box(0, 0, 10, 10), Box(5, 0, 15, 10), Box(2, 2, 8, 8), Box(20, 20, 30, 30)]
    m = _m(a, b)
    assert m.shape == (2, 4) and m.dtype == np.float64
    expected = [
        [1.0, 50 / 150, 36 / 100, 0.0],
        [16 / 100, 0.0, 4 / (16 + 36 - 4), 0.0],
    ]
    np.testing.assert_allclose(m, expected)


def test_agrees_with_the_one_pair_box_iou() -> None:
    rng = np.random.default_rng(7)
    boxes = [Box.from_xywh(*rng.uniform(0, 40, 2), *rng.uniform(0.5, 20, 2)) for _ in range(30)]
    m = _m(boxes, boxes)
    assert m == pytest.approx(np.array([[x.iou(y) for y in boxes] for x in boxes]))
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)


@pytest.mark.parametrize(("n", "k"), [(0, 0), (0, 3), (2, 0)])
def test_empty_inputs_give_an_empty_matrix_of_the_right_shape(n: int, k: int) -> None:
    a = [Box(0, 0, 1, 1)] * n
    b = [Box(0, 0, 1, 1)] * k
    m = _m(a, b)
    assert m.shape == (n, k) and m.dtype == np.float64
    assert box_array([]).shape == (0, 4)


def test_touching_boxes_do_not_overlap() -> None:
    a = [Box(0, 0, 10, 10)]
    b = [Box(10, 0, 20, 10), Box(0, 10, 10, 20), Box(10, 10, 20, 20)]
    assert _m(a, b).tolist() == [[0.0, 0.0, 0.0]]


def test_degenerate_boxes_have_iou_zero_and_no_nan() -> None:
    point = Box(5, 5, 5, 5)
    line = Box(5, 0, 5, 10)
    inverted = Box(10, 10, 0, 0)
    real = Box(0, 0, 10, 10)
    boxes = [point, line, inverted, real]
    with np.errstate(all="raise"):  # a zero union is skipped, not divided by
        m = _m(boxes, boxes)
    assert not np.isnan(m).any()
    # only the real box overlaps itself; zero-area and inverted boxes overlap nothing
    assert m.tolist() == [[0.0] * 4, [0.0] * 4, [0.0] * 4, [0.0, 0.0, 0.0, 1.0]]


def test_accepts_plain_arrays_and_integer_coordinates() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 5, 15, 15]])
    assert iou_matrix(a, b).tolist() == [[25 / 175]]
