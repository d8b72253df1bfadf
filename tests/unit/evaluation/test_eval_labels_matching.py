"""labels.jsonl parsing, IoU recall and mask-coverage recall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redactd.core.types import Box, Detection
from redactd.evaluation.labels import LabelError, LabelledBox, LabelledImage, load_set, parse_line
from redactd.evaluation.matching import coverage, match_image, summarise

LINE = {
    "image": "images/a/b.jpg",
    "width": 200,
    "height": 100,
    "labels_complete": True,
    "boxes": [
        {"cls": "face", "x": 10, "y": 20, "w": 30, "h": 40, "ignore": False, "wider_level": "hard"},
        {"cls": "face", "x": 100, "y": 10, "w": 8, "h": 8, "ignore": True},
    ],
}


def test_parse_line_reads_boxes_ignore_and_extra_keys(tmp_path: Path) -> None:
    im = parse_line(json.dumps(LINE), tmp_path, 1)
    assert im.path == tmp_path / "images/a/b.jpg"
    assert (im.width, im.height, im.labels_complete) == (200, 100, True)
    first, second = im.boxes
    assert first.box == Box(10, 20, 40, 60) and not first.ignore
    assert first.extra == {"wider_level": "hard"}
    assert second.ignore
    assert im.of_class("face", ignore=False) == [first]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "../x.jpg"}, "relative path"),
        ({"image": "/etc/passwd"}, "relative path"),
        ({"width": "wide"}, "integers"),
        ({"boxes": [{"cls": "cat", "x": 0, "y": 0, "w": 1, "h": 1}]}, "cls"),
        ({"boxes": [{"cls": "face", "x": 0, "y": 0, "w": 0, "h": 1}]}, "positive"),
        ({"boxes": [{"cls": "face", "x": 0, "y": 0, "w": 1, "h": 1, "ignore": "no"}]}, "ignore"),
        ({"labels_complete": "yes"}, "labels_complete"),
    ],
)
def test_bad_lines_are_rejected_with_the_line_number(change: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(LabelError, match=f"line 7.*{message}"):
        parse_line(json.dumps({**LINE, **change}), Path("/set"), 7)


def test_load_set_reads_every_line(tmp_path: Path) -> None:
    lines = [json.dumps(LINE), "", json.dumps({**LINE, "image": "images/c.jpg", "boxes": []})]
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n")
    images = load_set(tmp_path)
    assert [i.path.name for i in images] == ["b.jpg", "c.jpg"]


def test_coverage_of_boxes_and_ellipses() -> None:
    gt = Box(0, 0, 10, 10)
    assert coverage(gt, []) == 0.0
    assert coverage(gt, [Box(-5, -5, 15, 15)]) == 1.0
    assert coverage(gt, [Box(0, 0, 5, 10)]) == 0.5
    assert coverage(gt, [Box(0, 0, 5, 10), Box(3, 0, 10, 10)]) == 1.0  # union, not sum
    # the ellipse inscribed in the box covers about pi/4 of it
    assert coverage(gt, [Box(0, 0, 10, 10)], "ellipse") == pytest.approx(0.785, abs=0.03)


def image(boxes: list[LabelledBox], complete: bool = True) -> LabelledImage:
    return LabelledImage(Path("x.jpg"), 200, 200, complete, tuple(boxes))


def face(x: float, y: float, w: float, h: float, ignore: bool = False) -> LabelledBox:
    return LabelledBox("face", Box.from_xywh(x, y, w, h), ignore)


def det(x1: float, y1: float, x2: float, y2: float, score: float = 0.9) -> Detection:
    return Detection("face", Box(x1, y1, x2, y2), score)


def test_iou_matching_is_one_to_one_and_ignores_ignore_boxes() -> None:
    im = image([face(0, 0, 20, 20), face(50, 50, 20, 20), face(100, 100, 10, 10, ignore=True)])
    dets = [
        det(1, 1, 21, 21, 0.9),  # hit
        det(0, 0, 20, 20, 0.5),  # duplicate of the same face: not a second hit, not an FP
        det(100, 100, 110, 110, 0.8),  # on an ignore box: neither
        det(150, 150, 170, 170, 0.7),  # false positive
    ]
    r = match_image(im, dets, "face")
    assert [g.iou_hit for g in r.gts] == [True, False]
    assert r.false_positives == 1 and r.detections == 4


def test_a_loose_box_counts_for_coverage_but_not_for_iou() -> None:
    im = image([face(50, 50, 20, 20)])
    loose = det(40, 40, 90, 90)  # IoU 0.16, but it hides the face
    r = match_image(im, [loose], "face", padding=0.0)
    assert not r.gts[0].iou_hit and r.gts[0].coverage == 1.0


def test_padding_grows_detection_boxes_before_coverage() -> None:
    im = image([face(50, 50, 20, 20)])
    small = det(55, 55, 65, 65)  # covers 1/4 of the face
    assert match_image(im, [small], "face", padding=0.0).gts[0].coverage == 0.25
    assert match_image(im, [small], "face", padding=0.5).gts[0].coverage == 1.0


def test_summary_counts_small_faces_and_complete_images_only_for_fp() -> None:
    a = match_image(image([face(0, 0, 10, 10), face(50, 50, 40, 40)]), [det(0, 0, 10, 10)], "face")
    b = match_image(image([], complete=False), [det(0, 0, 10, 10)], "face")
    s = summarise([a, b])
    assert (s.images, s.boxes, s.small_boxes) == (2, 2, 1)
    assert s.iou_recall == 0.5 and s.coverage_recall == 0.5
    assert s.small_iou_recall == 1.0 and s.small_coverage_recall == 1.0
    assert s.false_positives == 0  # the unmatched one is on an image with incomplete labels
    assert s.detections == 2
