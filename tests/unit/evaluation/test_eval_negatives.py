"""The generated text-negatives set: labelled overlays, clear of the photo's own labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from redactd.evaluation import dataset, negatives, pixels


def _source(root: Path, n: int = 6) -> Path:
    """A small labelled set of textured pictures, each with one face box."""
    src = root / "src"
    (src / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        w, h = (640, 360) if i % 2 else (400, 300)
        base = rng.integers(60, 200, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR).save(
            src / "images" / f"secret-name-{i}.jpg", quality=95
        )
        rows.append(
            {
                "image": f"images/secret-name-{i}.jpg",
                "width": w,
                "height": h,
                "boxes": [{"cls": "face", "x": w // 2, "y": h // 3, "w": 50, "h": 60}],
            }
        )
    (src / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def test_generated_set_labels_every_overlay_and_keeps_the_photos_labels(tmp_path: Path) -> None:
    sources = dataset.load(_source(tmp_path))
    out = tmp_path / "neg"
    assert negatives.generate(sources, out, 6, seed=0) == 6
    assert "secret-name" not in (out / "labels.jsonl").read_text()
    (lset,) = dataset.load(out)
    assert lset.classes == ("face",)
    kinds = [k for im in lset.images for k in im.negative_kinds]
    assert kinds.count("timestamp") == 6  # one per image
    assert set(kinds) - {"timestamp"}, "only timestamps drawn"
    for im in lset.images:
        (face,) = im.boxes
        outside = pixels.outside_region(im, im.height, im.width)
        for b in im.negatives:
            x1, y1, x2, y2 = b.int_bounds(im.width, im.height)
            assert (x2 - x1, y2 - y1) == (round(b.width), round(b.height)), "box leaves image"
            assert outside[y1:y2, x1:x2].all(), "overlay inside a grown labelled box"
        # The timestamp sits in a corner of the picture.
        ts = im.negatives[im.negative_kinds.index("timestamp")]
        assert min(ts.x1, im.width - ts.x2) < im.width * 0.05
        assert min(ts.y1, im.height - ts.y2) < im.height * 0.05
        assert face.box.width == 50 and face.box.height == 60


def test_overlays_change_the_pixels_inside_their_boxes_only(tmp_path: Path) -> None:
    src = _source(tmp_path, 2)
    (srcset,) = dataset.load(src)
    out = tmp_path / "neg"
    negatives.generate([srcset], out, 2, seed=5)
    (lset,) = dataset.load(out)
    by_size = {(im.width, im.height): im for im in srcset.images}
    for im in lset.images:
        before = pixels.read_rgb(by_size[(im.width, im.height)].path)
        after = pixels.read_rgb(im.path)
        ch = pixels.opened(pixels.luma_changed(before, after))
        inside = np.zeros(ch.shape, bool)
        for b in im.negatives:
            x1, y1, x2, y2 = b.int_bounds(im.width, im.height)
            inside[y1:y2, x1:x2] = True
            assert ch[y1:y2, x1:x2].mean() > 0.05, "an overlay drew nothing in its box"
        assert not (ch & ~inside).any(), "an overlay drew outside its labelled box"


def test_same_seed_same_set(tmp_path: Path) -> None:
    sources = dataset.load(_source(tmp_path))
    negatives.generate(sources, tmp_path / "a", 4, seed=9)
    negatives.generate(sources, tmp_path / "b", 4, seed=9)
    assert (tmp_path / "a" / "labels.jsonl").read_bytes() == (
        tmp_path / "b" / "labels.jsonl"
    ).read_bytes()
