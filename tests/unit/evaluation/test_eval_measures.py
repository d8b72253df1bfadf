"""Pixel comparison, plate-string matching, the deblur attack and dataset picking, by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from redactd.core.types import Box
from redactd.evaluation import pixels
from redactd.evaluation.attack import deblur
from redactd.evaluation.dataset import evenly_spaced
from redactd.evaluation.labels import LabelledBox, LabelledImage
from redactd.evaluation.ocr import edit_distance, normalise, readable


def _image(
    boxes: list[tuple[int, int, int, int, bool]], w: int = 200, h: int = 100
) -> LabelledImage:
    return LabelledImage(
        path=Path("/nonexistent.png"),
        width=w,
        height=h,
        labels_complete=True,
        boxes=tuple(
            LabelledBox(cls="face", box=Box.from_xywh(x, y, bw, bh), ignore=ign)
            for x, y, bw, bh, ign in boxes
        ),
    )


def test_changed_share_per_box_counts_pixels_over_the_threshold() -> None:
    before = np.full((100, 200, 3), 100, np.uint8)
    after = before.copy()
    after[10:20, 10:15] = 113  # left half of box 1 changed by 13 (> 12)
    after[10:20, 15:20] = 112  # right half by 12: not a change
    after[50:60, 100:110, 2] = 0  # box 2: one channel, far over the threshold
    im = _image([(10, 10, 10, 10, False), (100, 50, 10, 10, False)])
    res = pixels.compare_arrays(im, before, after)
    assert [b.share for b in res.boxes] == [pytest.approx(0.5), pytest.approx(1.0)]
    s = pixels.summarise([res], "face")
    assert (s.boxes, s.anonymized, s.strict) == (2, 2, 1)
    assert s.masked_recall == pytest.approx(1.0) and s.strict_recall == pytest.approx(0.5)


def test_ignore_boxes_are_not_counted_and_small_boxes_are_reported_apart() -> None:
    before = np.zeros((100, 200, 3), np.uint8)
    after = before.copy()
    after[0:40, 0:40] = 200
    im = _image([(0, 0, 40, 40, False), (100, 10, 20, 20, False), (150, 50, 8, 8, True)])
    s = pixels.summarise([pixels.compare_arrays(im, before, after)], "face")
    assert (s.boxes, s.anonymized) == (2, 1)
    assert (s.small_boxes, s.small_anonymized) == (1, 0)  # the 20 px box was not masked


def test_overmasking_counts_only_pixels_far_from_every_box() -> None:
    before = np.zeros((100, 200, 3), np.uint8)
    after = before.copy()
    after[40:60, 40:60] = 255  # the box plus padding: near
    after[0:10, 190:200] = 255  # far corner: 100 far pixels changed
    im = _image([(45, 45, 10, 10, False)])
    res = pixels.compare_arrays(im, before, after)
    # Near = the box grown by its own size on each side: 30 x 30 pixels.
    assert res.far_pixels == 200 * 100 - 30 * 30
    assert res.far_changed == 100
    assert pixels.overmask_far([res]) == pytest.approx(100 / res.far_pixels)


def test_an_image_without_output_masks_nothing() -> None:
    im = _image([(0, 0, 10, 10, False)])
    res = pixels.unchanged(im)
    assert not res.ok
    assert pixels.summarise([res], "face").masked_recall == 0.0
    assert pixels.overmask([res]) is None and pixels.overmask_far([res]) is None


def test_plate_strings_compare_on_letters_and_digits_with_one_error_allowed() -> None:
    assert normalise("ab-12 3·o") == "AB1230"
    assert readable("AB 123", "ab123")
    assert readable("0Y09 FEU", "OYO9FEU")  # O and 0 are one character
    assert readable("WA5666O", "WA56660")
    assert readable("WA5660", "WA56660")  # one character lost, label >= 5
    assert not readable("WA56", "WA56660")
    assert not readable("AB12", "AB13")  # short labels must match exactly
    assert not readable("", "AB123")
    assert edit_distance("kitten", "sitting") == 3


def test_deblur_undoes_a_light_gaussian_blur() -> None:
    rng = np.random.default_rng(0)
    sharp = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (160, 120))
    blurred = cv2.GaussianBlur(sharp, (0, 0), sigmaX=1.5)
    restored = deblur(blurred, 1.5)

    def err(x: np.ndarray) -> float:
        return float(np.abs(x.astype(np.float64) - sharp).mean())

    assert err(restored) < 0.85 * err(blurred)


def test_limit_picks_images_spread_over_the_set() -> None:
    assert evenly_spaced(10, None) == list(range(10))
    assert evenly_spaced(10, 3) == [0, 3, 6]
    assert evenly_spaced(3, 5) == [0, 1, 2]
