"""Greedy NMS over detections."""

from __future__ import annotations

import numpy as np

from redactd.core.types import Box, Detection
from redactd.stages.detect.nms import boxes_array, iou_one, nms, nms_indices


def det(x1: float, y1: float, x2: float, y2: float, score: float) -> Detection:
    return Detection("face", Box(x1, y1, x2, y2), score)


def test_empty_and_single_pass_through() -> None:
    assert nms([], 0.3) == []
    one = [det(0, 0, 10, 10, 0.5)]
    assert nms(one, 0.3) == one


def test_overlapping_boxes_keep_the_highest_score() -> None:
    low = det(0, 0, 10, 10, 0.4)
    high = det(1, 1, 11, 11, 0.9)
    assert nms([low, high], 0.3) == [high]


def test_disjoint_boxes_are_all_kept_best_first() -> None:
    a, b, c = det(0, 0, 10, 10, 0.5), det(20, 0, 30, 10, 0.9), det(40, 0, 50, 10, 0.7)
    assert nms([a, b, c], 0.3) == [b, c, a]


def test_threshold_is_strictly_greater_than() -> None:
    # IoU of these two is exactly 1/3 (intersection 50, union 150)
    a, b = det(0, 0, 10, 10, 0.9), det(5, 0, 15, 10, 0.8)
    assert abs(a.box.iou(b.box) - 1 / 3) < 1e-12
    assert nms([a, b], 1 / 3) == [a, b]
    assert nms([a, b], 0.33) == [a]


def test_suppressed_box_does_not_suppress_others() -> None:
    # b is suppressed by a; c overlaps b but not a, so c survives (greedy NMS)
    a, b, c = det(0, 0, 10, 10, 0.9), det(4, 0, 14, 10, 0.8), det(9, 0, 19, 10, 0.7)
    assert nms([a, b, c], 0.3) == [a, c]


def test_equal_scores_keep_input_order() -> None:
    a, b = det(0, 0, 10, 10, 0.5), det(1, 0, 11, 10, 0.5)
    assert nms([a, b], 0.3) == [a]
    assert nms([b, a], 0.3) == [b]


def test_vectorised_iou_matches_box_iou() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, size=(50, 2))
    wh = rng.uniform(1, 40, size=(50, 2))
    dets = [det(x, y, x + w, y + h, 0.5) for (x, y), (w, h) in zip(xy, wh, strict=True)]
    arr = boxes_array(dets)
    got = iou_one(arr[0], arr)
    want = [dets[0].box.iou(d.box) for d in dets]
    assert np.allclose(got, want)


def test_matches_a_reference_greedy_loop() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 200, size=(300, 2))
    wh = rng.uniform(5, 60, size=(300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0, 1, size=300)
    got = list(nms_indices(boxes, scores, 0.4))
    order = sorted(range(300), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        bi = Box(*boxes[i])
        if all(bi.iou(Box(*boxes[k])) <= 0.4 for k in keep):
            keep.append(i)
    assert got == keep


def test_degenerate_boxes_do_not_crash() -> None:
    dets = [det(5, 5, 5, 5, 0.9), det(0, 0, 10, 10, 0.8)]
    assert nms(dets, 0.3) == dets


def random_boxes(rng: np.random.Generator, n: int, span: float, min_side: float) -> np.ndarray:
    """``n`` random ``[x1, y1, x2, y2]`` boxes in ``[0, span]``, sides ``min_side`` to 60."""
    xy = rng.uniform(0, span, (n, 2))
    return np.hstack([xy, xy + rng.uniform(min_side, 60, (n, 2))])


def test_matrix_nms_equals_the_greedy_loop_on_random_boxes() -> None:
    # nms_indices takes the pairwise-matrix path up to _MATRIX_MAX boxes and a
    # loop above; both must keep exactly the same boxes in the same order.
    from redactd.stages.detect import nms as nms_mod

    rng = np.random.default_rng(7)
    for n in (2, 5, 40, 300):
        boxes = random_boxes(rng, n, 200, 1)
        # ties on purpose; 0.1 and 0.2 are no float32 values, so nms_indices
        # never hands these to OpenCV: its numpy loop is what is compared
        scores = rng.choice([0.1, 0.2, 0.5, 0.9], n)
        for iou in (0.0, 0.3, 0.7):
            order = np.argsort(-scores, kind="stable")
            fast = nms_mod._nms_matrix(boxes, order, iou)
            saved = nms_mod._MATRIX_MAX
            nms_mod._MATRIX_MAX = 0  # force the loop
            try:
                slow = nms_mod.nms_indices(boxes, scores, iou)
            finally:
                nms_mod._MATRIX_MAX = saved
            assert fast.tolist() == slow.tolist()


def test_opencv_path_keeps_exactly_what_the_numpy_path_keeps() -> None:
    # nms_indices hands float32 scores and positive-size boxes to OpenCV's
    # NMSBoxes; it must keep the same boxes in the same order as numpy.
    from redactd.stages.detect import nms as nms_mod

    rng = np.random.default_rng(11)
    for n in (8, 40, 300, 2000):
        boxes = random_boxes(rng, n, 400, 0.5)
        # float32 values (as detectors give them), ties on purpose
        scores = rng.choice(np.float32([0.05, 0.1, 0.2, 0.5, 0.9]), n).astype(np.float64)
        for iou in (0.0, 0.3, 0.7):
            fast = nms_mod._opencv_nms(boxes, scores, iou)
            assert fast is not None
            order = np.argsort(-scores, kind="stable")
            ref = nms_mod._nms_matrix(boxes, order, iou)  # the pairwise-matrix greedy NMS
            assert fast.tolist() == ref.tolist(), (n, iou)


def test_inputs_opencv_could_misread_take_the_numpy_path() -> None:
    from redactd.stages.detect import nms as nms_mod

    xy = np.arange(20, dtype=np.float64)[:, None] * np.array([[3.0, 3.0]])
    boxes = np.hstack([xy, xy + 10.0])
    f32 = np.linspace(0.1, 0.9, 20).astype(np.float32).astype(np.float64)
    assert nms_mod._opencv_nms(boxes, f32, 0.3) is not None
    assert nms_mod._opencv_nms(boxes, f32 + 1e-12, 0.3) is None  # not float32 values
    zero = f32.copy()
    zero[3] = 0.0
    assert nms_mod._opencv_nms(boxes, zero, 0.3) is None  # OpenCV would drop score 0
    flat = boxes.copy()
    flat[5, 2] = flat[5, 0]
    assert nms_mod._opencv_nms(flat, f32, 0.3) is None  # zero width
    assert nms_indices(flat, f32, 0.3).size > 0
