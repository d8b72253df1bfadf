"""Box metrics on hand-computed cases (redactd.evaluation.metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from redactd.core.types import Box, Detection
from redactd.evaluation.labels import LabelledBox, LabelledImage
from redactd.evaluation.metrics import (
    average_precision,
    class_metrics,
    match_image,
)


def _img(
    boxes: list[tuple[float, float, float, float, bool]], complete: bool = True
) -> LabelledImage:
    return LabelledImage(
        path=Path("/nonexistent.jpg"),
        width=1000,
        height=1000,
        labels_complete=complete,
        boxes=tuple(
            LabelledBox(cls="face", box=Box.from_xywh(x, y, w, h), ignore=ign)
            for x, y, w, h, ign in boxes
        ),
    )


def _det(x: float, y: float, w: float, h: float, score: float, cls: str = "face") -> Detection:
    return Detection(cls=cls, box=Box.from_xywh(x, y, w, h), score=score)  # type: ignore[arg-type]


def test_average_precision_all_point_interpolation_by_hand() -> None:
    # Ranks: TP, FP, TP over 2 boxes -> recall .5 .5 1, precision 1 .5 2/3.
    # Envelope: 1 up to recall .5, 2/3 up to 1 -> AP = .5*1 + .5*2/3.
    assert average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 1 / 3)


def test_ap50_tp_fp_tp_over_two_faces() -> None:
    im = _img([(0, 0, 100, 100, False), (500, 500, 100, 100, False)])
    dets = [_det(0, 0, 100, 100, 0.9), _det(800, 800, 50, 50, 0.8), _det(500, 500, 100, 100, 0.7)]
    m = class_metrics([im], [dets], "face", threshold=0.75)
    assert m.ap50 == pytest.approx(0.5 + 1 / 3)
    # Operating point 0.75: only the 0.9 TP and the 0.8 FP count.
    assert m.recall == pytest.approx(0.5)
    assert m.precision == pytest.approx(0.5)
    assert m.fnr == pytest.approx(0.5)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 1, 1)
    assert m.detections == 2


def test_ap50_95_counts_iou_thresholds_a_detection_passes() -> None:
    # IoU exactly 0.75 (75 x 100 inside 100 x 100): a hit at 0.50..0.75 (6 of 10).
    im = _img([(0, 0, 100, 100, False)])
    m = class_metrics([im], [[_det(0, 0, 75, 100, 0.9)]], "face", threshold=0.5)
    assert m.ap50 == pytest.approx(1.0)
    assert m.ap50_95 == pytest.approx(0.6)


def test_detection_on_ignore_box_is_neither_true_nor_false_positive() -> None:
    im = _img([(0, 0, 100, 100, False), (300, 300, 8, 8, True)])
    dets = [_det(300, 300, 8, 8, 0.95), _det(0, 0, 100, 100, 0.9)]
    match = match_image(im, dets, "face")
    assert match.outcomes == ("ignored", "tp")
    m = class_metrics([im], [dets], "face", threshold=0.5)
    assert m.precision == pytest.approx(1.0)
    assert m.false_positives == 0
    assert m.ap50 == pytest.approx(1.0)
    assert m.ignored_boxes == 1


def test_missed_ignore_box_is_not_a_false_negative() -> None:
    im = _img([(0, 0, 100, 100, False), (300, 300, 8, 8, True), (400, 400, 9, 9, True)])
    m = class_metrics([im], [[_det(0, 0, 100, 100, 0.9)]], "face", threshold=0.5)
    assert m.boxes == 1
    assert m.false_negatives == 0
    assert m.recall == pytest.approx(1.0)


def test_counted_box_preferred_over_an_ignore_box_it_overlaps_more() -> None:
    # The detection overlaps the ignore box (IoU 1) and the face (IoU ~0.68).
    im = _img([(0, 0, 100, 100, False), (10, 0, 100, 100, True)])
    match = match_image(im, [_det(10, 0, 100, 100, 0.9)], "face")
    assert match.outcomes == ("tp",)


def test_duplicate_detection_is_a_false_positive() -> None:
    im = _img([(0, 0, 100, 100, False)])
    dets = [_det(0, 0, 100, 100, 0.9), _det(2, 2, 100, 100, 0.8)]
    m = class_metrics([im], [dets], "face", threshold=0.5)
    assert (m.true_positives, m.false_positives) == (1, 1)
    assert m.precision == pytest.approx(0.5)
    # AP: TP then FP -> recall reaches 1 at precision 1.
    assert m.ap50 == pytest.approx(1.0)


def test_precision_and_ap_left_out_when_labels_are_incomplete() -> None:
    im = _img([(0, 0, 100, 100, False)], complete=False)
    dets = [_det(0, 0, 100, 100, 0.9), _det(500, 500, 60, 30, 0.8)]
    m = class_metrics([im], [dets], "face", threshold=0.5)
    assert m.recall == pytest.approx(1.0)
    assert m.precision is None
    assert m.false_positives is None
    assert m.ap50 is None and m.ap50_95 is None
    assert m.pr_curve is None
    assert m.images_complete == 0


def test_precision_counts_only_images_with_complete_labels() -> None:
    full = _img([(0, 0, 100, 100, False)])
    partial = _img([(0, 0, 100, 100, False)], complete=False)
    dets_full = [_det(0, 0, 100, 100, 0.9), _det(500, 500, 50, 50, 0.8)]
    dets_partial = [
        _det(0, 0, 100, 100, 0.9),
        _det(500, 500, 50, 50, 0.8),
        _det(700, 0, 50, 50, 0.7),
    ]
    m = class_metrics([full, partial], [dets_full, dets_partial], "face", threshold=0.5)
    assert m.recall == pytest.approx(1.0)  # recall over both images
    assert m.precision == pytest.approx(0.5)  # 1 TP, 1 FP on the complete image only
    assert m.false_positives == 1
    assert m.images_complete == 1


def test_small_object_recall_uses_boxes_under_32_px() -> None:
    im = _img([(0, 0, 20, 20, False), (100, 100, 40, 40, False), (300, 300, 10, 10, False)])
    dets = [_det(0, 0, 20, 20, 0.9)]
    m = class_metrics([im], [dets], "face", threshold=0.5)
    assert m.small_boxes == 2
    assert m.small_recall == pytest.approx(0.5)
    assert m.recall == pytest.approx(1 / 3)
    by = {(b.lo, b.hi): (b.boxes, b.found) for b in m.by_size}
    assert by[(16.0, 32.0)] == (1, 1)
    assert by[(0.0, 16.0)] == (1, 0)
    assert by[(32.0, 64.0)] == (1, 0)


def test_detections_below_the_operating_threshold_count_for_ap_not_recall() -> None:
    im = _img([(0, 0, 100, 100, False)])
    m = class_metrics([im], [[_det(0, 0, 100, 100, 0.2)]], "face", threshold=0.3)
    assert m.recall == pytest.approx(0.0)
    assert m.small_recall is None
    assert m.ap50 == pytest.approx(1.0)
    assert m.precision is None  # nothing detected at the operating threshold


def test_other_class_detections_are_not_scored() -> None:
    im = _img([(0, 0, 100, 100, False)])
    m = class_metrics([im], [[_det(0, 0, 100, 100, 0.9, cls="plate")]], "face", threshold=0.3)
    assert m.recall == pytest.approx(0.0)
    assert m.detections == 0
