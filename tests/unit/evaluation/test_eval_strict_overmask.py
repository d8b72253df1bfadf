"""The strict masked-recall rule, over-masking and text negatives, on arrays with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from redactd.core.types import Box
from redactd.evaluation import pixels
from redactd.evaluation.labels import LabelledBox, LabelledImage, parse_line


def _image(
    boxes: list[tuple[int, int, int, int]],
    w: int = 200,
    h: int = 100,
    negatives: list[tuple[int, int, int, int]] = (),  # type: ignore[assignment]
) -> LabelledImage:
    return LabelledImage(
        path=Path("/nonexistent.png"),
        width=w,
        height=h,
        labels_complete=True,
        boxes=tuple(LabelledBox(cls="face", box=Box.from_xywh(*b)) for b in boxes),
        negatives=tuple(Box.from_xywh(*n) for n in negatives),
    )


def _textured(h: int = 100, w: int = 200, seed: int = 0) -> np.ndarray:
    """A picture whose every pixel is detail (random grey levels 0..255)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def test_a_mask_that_grazes_a_box_passes_the_old_rule_and_fails_the_strict_one() -> None:
    before = _textured()
    after = before.copy()
    # The box is x 50..90, y 20..60; the mask covers its left 60 % only.
    after[20:60, 50:74] = 128
    res = pixels.compare_arrays(_image([(50, 20, 40, 40)]), before, after)
    (b,) = res.boxes
    assert b.share >= pixels.ANONYMIZED_SHARE  # old rule: half the pixels changed
    assert not b.flat
    assert b.detail_share < pixels.STRICT_DETAIL_SHARE
    s = pixels.summarise([res], "face")
    assert (s.anonymized, s.detail_masked) == (1, 0)
    assert s.masked_recall == 1.0 and s.detail_recall == 0.0


def test_a_mask_over_the_whole_box_passes_the_strict_rule() -> None:
    before = _textured()
    after = before.copy()
    after[18:62, 48:92] = 128  # the box plus 2 px
    (b,) = pixels.compare_arrays(_image([(50, 20, 40, 40)]), before, after).boxes
    # Pixels of grey ~128 change by at most 10 under a fill of 128: the rest does.
    assert b.detail_share >= pixels.STRICT_DETAIL_SHARE
    assert b.strictly_masked


def test_only_detail_pixels_are_judged_flat_skin_is_not() -> None:
    # Left half of the box flat skin, right half texture: a mask that scrambles
    # the texture but leaves the flat part as it was is strictly masked.
    before = np.full((100, 200, 3), 170, np.uint8)
    before[20:60, 70:90] = _textured(40, 20)
    after = before.copy()
    after[20:60, 70:90] = 255 - after[20:60, 70:90]
    (b,) = pixels.compare_arrays(_image([(50, 20, 40, 40)]), before, after).boxes
    assert b.share < 0.6  # by all pixels barely half changed
    assert not b.flat and b.detail_share >= pixels.STRICT_DETAIL_SHARE


def test_a_flat_box_is_judged_on_all_its_pixels() -> None:
    before = np.full((100, 200, 3), 90, np.uint8)
    im = _image([(50, 20, 40, 40)])
    untouched = pixels.compare_arrays(im, before, before.copy())
    (b,) = untouched.boxes
    assert b.flat and b.detail_share == 0.0 and not b.strictly_masked
    filled = before.copy()
    filled[20:60, 50:90] = 0  # a solid mask visibly changes the flat box
    (b,) = pixels.compare_arrays(im, before, filled).boxes
    assert b.flat and b.detail_share == pytest.approx(1.0) and b.strictly_masked
    assert pixels.summarise([untouched], "face").flat_boxes == 1


def test_detail_pixels_are_those_a_half_box_blur_moves() -> None:
    y = np.full((60, 60), 100.0, np.float32)
    y[30, 30] = 200.0  # one bright dot inside the box
    detail = pixels.detail_pixels(y, (20, 20, 40, 40))
    assert detail.shape == (20, 20)
    assert detail[10, 10] and int(detail.sum()) == 1


def test_opening_removes_single_pixel_noise_before_overmasking() -> None:
    before = np.zeros((100, 200, 3), np.uint8)
    after = before.copy()
    after[5, 150] = 255  # isolated changed pixels (compression noise)
    after[80, 20] = 255
    after[7:9, 100:160] = 255  # a 2 px line: too thin for a 3x3 opening
    res = pixels.compare_arrays(_image([(10, 10, 10, 10)]), before, after)
    assert res.out_changed == 0
    assert res.far_changed > 0  # the older measure counts them
    after[60:70, 100:110] = 255  # a real 10 x 10 patch survives the opening
    res = pixels.compare_arrays(_image([(10, 10, 10, 10)]), before, after)
    assert res.out_changed == 100
    assert res.overmask == pytest.approx(100 / res.out_pixels)


def test_growth_of_30_percent_excludes_a_ring_around_every_box() -> None:
    before = np.zeros((100, 200, 3), np.uint8)
    im = _image([(50, 20, 40, 20)])  # grown by 12 px left/right, 6 px top/bottom
    assert pixels.outside_region(im, 100, 200).sum() == 200 * 100 - 64 * 32
    ring = before.copy()
    ring[14:46, 38:102] = 255  # the box and its whole 30 % ring
    assert pixels.compare_arrays(im, before, ring).out_changed == 0
    wider = before.copy()
    wider[14:46, 35:105] = 255  # 3 px beyond the ring on the left and the right
    res = pixels.compare_arrays(im, before, wider)
    assert res.out_changed == 2 * 3 * 32
    assert pixels.overmask([res]) == pytest.approx(res.out_changed / res.out_pixels)


def test_luma_threshold_counts_changes_above_10() -> None:
    before = np.full((20, 20, 3), 100, np.uint8)
    after = before.copy()
    after[:, :10] = 110  # luma +10: not a change
    after[:, 10:] = 111
    ch = pixels.luma_changed(before, after)
    assert not ch[:, :10].any() and ch[:, 10:].all()


def test_text_regions_are_negatives_scored_by_the_strict_rule() -> None:
    before = np.full((100, 200, 3), 100, np.uint8)
    after = before.copy()
    after[2:14, 2:80] = 0  # a timestamp blacked out
    im = _image([(150, 50, 20, 20)], negatives=[(2, 2, 78, 12), (100, 80, 60, 12)])
    res = pixels.compare_arrays(im, before, after)
    assert res.negatives_masked == 1
    s = pixels.summarise_negatives([res])
    assert (s.regions, s.masked, s.images, s.images_with_masked) == (2, 1, 1, 1)
    assert s.masked_share == 0.5
    # Masking the timestamp is over-masking too (negatives are not grown).
    assert res.out_changed == 78 * 12


def test_labels_jsonl_reads_text_boxes_as_negatives() -> None:
    line = json.dumps(
        {
            "image": "images/a.jpg",
            "width": 100,
            "height": 80,
            "boxes": [
                {"cls": "face", "x": 1, "y": 2, "w": 10, "h": 12},
                {"cls": "text", "x": 0, "y": 0, "w": 50, "h": 9, "kind": "timestamp"},
            ],
        }
    )
    im = parse_line(line, Path("/set"))
    assert [b.cls for b in im.boxes] == ["face"]
    assert im.negatives == (Box.from_xywh(0, 0, 50, 9),)
    assert im.negative_kinds == ("timestamp",)


def test_worst_images_are_ranked_by_overmasking() -> None:
    from redactd.evaluation.runner import worst_images

    def res(changed: int) -> pixels.PixelResult:
        return pixels.PixelResult((), 0, 0, out_pixels=1000, out_changed=changed)

    ranked = worst_images([res(5), res(50), pixels.unchanged(_image([])), res(20)])
    assert [(w.rank, w.index, w.overmask) for w in ranked] == [
        (1, 1, 0.05),
        (2, 3, 0.02),
        (3, 0, 0.005),
    ]


def test_a_sweep_variant_changes_one_class_threshold_only() -> None:
    from redactd.core.config import default_config
    from redactd.evaluation.runner import threshold_variant

    prof = default_config().profile("default")
    v = threshold_variant(prof, "face", 0.37)
    assert v.face.threshold == 0.37 and v.plate == prof.plate
    assert v.face.mask == prof.face.mask and v.face.detectors == prof.face.detectors
