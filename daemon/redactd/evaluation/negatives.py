"""A labelled *text negatives* set: photos with burned-in text that must stay unmasked.

A privacy filter that blacks out a CCTV timestamp, a caption or a shop sign
destroys evidence and context without protecting anyone. This module makes
a set to measure that: it draws text overlays onto photos of labelled sets
(the shared face and plate sets, or your own) and writes the result as a
set in the ``labels.jsonl`` format, each overlay a box of class ``"text"``
(a negative, see ``redactd.evaluation.labels``) with its ``kind``:

* ``timestamp``: a CCTV-style burned-in date and time with a camera name
  (``2026-03-14 08:21:07  CAM 03``), white or yellow with a dark outline,
  in a corner, at several sizes -- every image gets one;
* ``caption``: a line of sentence-case text on a dark band (news, press);
* ``poster``: a large title on a coloured rectangle;
* ``sign``: a badge or sign word (``DOMINION``, ``SALE 50%``, ``EXIT``);
* ``logo``: a short word in an outlined box.

The photo's own face and plate boxes are kept, so masking them is not
counted against the text (overlays are placed clear of every labelled box
grown by ``pixels.GROWTH``). Images are written as ``images/NNNN.jpg``
(JPEG quality 95): no source file name reaches the new set. Nothing here is
committed: the set is generated where it is needed (tests, ``redactd eval
--negatives N``), from the same seed to the same pictures.

``python -m redactd.evaluation.negatives SOURCE_DIR OUT_DIR [--count N] [--seed S]``
writes such a set from the labelled set(s) at ``SOURCE_DIR``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from redactd.evaluation import pixels
from redactd.evaluation.dataset import LabelledSet
from redactd.evaluation.dataset import load as load_sets
from redactd.evaluation.labels import LABELS_FILE, LabelledImage

KINDS = ("timestamp", "caption", "poster", "sign", "logo")
SIGN_WORDS = ("DOMINION", "SALE 50%", "EXIT", "POLICE", "OPEN 24H", "PHARMACY", "NO PARKING")
LOGO_WORDS = ("ACME", "K2", "NOVA", "ZETA", "ORBIT", "AXO")
CAPTIONS = (
    "Press conference at the city hall",
    "Live: protest in the market square",
    "Breaking news - traffic on the ring road",
    "Annual meeting of the rowing club",
)
POSTER_WORDS = ("SUMMER FESTIVAL", "VOTE FOR CHANGE", "GRAND OPENING", "JAZZ NIGHT", "FREEDOM")
#: Text colours of burned-in timestamps: white and the yellow of many DVRs.
STAMP_COLOURS = ((255, 255, 255), (255, 230, 0))


@dataclass(frozen=True)
class Overlay:
    """One drawn text region."""

    kind: str
    text: str
    x: int
    y: int
    w: int
    h: int


def _font(size: int, mono: bool = False, bold: bool = True) -> ImageFont.FreeTypeFont:
    """DejaVu from matplotlib's data (a dependency), else Pillow's own scalable font."""
    try:
        import matplotlib

        name = "DejaVuSansMono" if mono else "DejaVuSans"
        name += "-Bold.ttf" if bold else ".ttf"
        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        font = ImageFont.load_default(size)
        assert isinstance(font, ImageFont.FreeTypeFont)
        return font


def _timestamp(rng: random.Random) -> str:
    return (
        f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        f"  CAM {rng.randint(1, 16):02d}"
    )


def _free(
    box: tuple[int, int, int, int], taken: Sequence[tuple[int, int, int, int]], margin: int
) -> bool:
    x, y, w, h = box
    m = margin
    return not any(
        x < tx + tw + m and tx < x + w + m and y < ty + th + m and ty < y + h + m
        for tx, ty, tw, th in taken
    )


def _blocked(image: LabelledImage) -> list[tuple[int, int, int, int]]:
    """The labelled boxes grown by ``pixels.GROWTH`` (overlays stay clear of them)."""
    out = []
    for b in image.boxes:
        gx, gy = pixels.GROWTH * b.box.width, pixels.GROWTH * b.box.height
        x1, y1 = int(b.box.x1 - gx), int(b.box.y1 - gy)
        x2, y2 = int(b.box.x2 + gx) + 1, int(b.box.y2 + gy) + 1
        out.append((x1, y1, x2 - x1, y2 - y1))
    return out


def _place(
    rng: random.Random,
    size: tuple[int, int],
    wh: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
    corners: bool,
) -> tuple[int, int] | None:
    """A free top-left corner for a ``wh`` region (corners first for timestamps)."""
    W, H = size
    w, h = wh
    if w + 8 > W or h + 8 > H:
        return None
    pad = max(4, H // 60)
    spots = []
    if corners:
        spots = [(pad, pad), (W - w - pad, pad), (pad, H - h - pad), (W - w - pad, H - h - pad)]
    spots += [(rng.randint(pad, W - w - pad), rng.randint(pad, H - h - pad)) for _ in range(40)]
    for x, y in spots:
        if _free((x, y, w, h), taken, 4):
            return x, y
    return None


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: ImageFont.FreeTypeFont,
    fill: tuple[int, int, int],
    stroke: int,
) -> None:
    draw.text(xy, text, font=font, fill=fill, stroke_width=stroke, stroke_fill=(10, 10, 10))


def _text_size(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, stroke: int
) -> tuple[int, int, int, int]:
    """(offset x, offset y, width, height) of the ink of ``text`` drawn at (0, 0)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    return int(left), int(top), int(right - left), int(bottom - top)


def overlay_image(rgb: Image.Image, image: LabelledImage, rng: random.Random) -> list[Overlay]:
    """Draw a timestamp and up to three other overlays onto ``rgb`` (in place)."""
    W, H = rgb.size
    draw = ImageDraw.Draw(rgb)
    taken = _blocked(image)
    out: list[Overlay] = []
    kinds = ["timestamp", *rng.sample(KINDS[1:], rng.randint(1, 3))]
    for kind in kinds:
        # Sizes relative to the picture (a 720 p DVR stamp is ~14-30 px tall).
        if kind == "timestamp":
            text = _timestamp(rng)
            font = _font(max(10, round(H * rng.uniform(0.022, 0.045))), mono=True)
            fill, stroke, plate = rng.choice(STAMP_COLOURS), rng.choice((1, 2)), None
        elif kind == "caption":
            text = rng.choice(CAPTIONS)
            font = _font(max(10, round(H * rng.uniform(0.03, 0.05))), bold=False)
            fill, stroke, plate = (255, 255, 255), 0, (20, 20, 30)
        elif kind == "poster":
            text = rng.choice(POSTER_WORDS)
            font = _font(max(14, round(H * rng.uniform(0.06, 0.11))))
            fill, stroke = (255, 255, 255), 0
            plate = rng.choice(((180, 20, 40), (20, 60, 160), (230, 120, 0)))
        elif kind == "sign":
            text = rng.choice(SIGN_WORDS)
            font = _font(max(12, round(H * rng.uniform(0.04, 0.08))))
            fill, stroke = rng.choice(((255, 255, 255), (250, 250, 90))), 0
            plate = rng.choice(((0, 110, 50), (200, 0, 0), (30, 30, 30)))
        else:  # logo: a short word in an outlined box
            text = rng.choice(LOGO_WORDS)
            font = _font(max(12, round(H * rng.uniform(0.04, 0.07))))
            fill, stroke, plate = (240, 240, 240), 0, None
        ox, oy, tw, th = _text_size(draw, text, font, stroke)
        pad = 0 if plate is None and kind == "timestamp" else max(3, th // 4)
        w, h = tw + 2 * pad, th + 2 * pad
        spot = _place(rng, (W, H), (w, h), taken, corners=kind == "timestamp")
        if spot is None:
            continue
        x, y = spot
        if plate is not None:
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=plate)
        if kind == "logo":
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=fill, width=max(2, th // 10))
        _draw_text(draw, (x + pad - ox, y + pad - oy), text, font, fill, stroke)
        taken.append((x, y, w, h))
        out.append(Overlay(kind, text, x, y, w, h))
    return out


def _pick(sets: Sequence[LabelledSet], count: int, rng: random.Random) -> list[LabelledImage]:
    pool = [im for s in sets for im in s.images]
    return rng.sample(pool, min(count, len(pool)))


def generate(sets: Sequence[LabelledSet], out: Path, count: int, seed: int = 0) -> int:
    """Write ``count`` overlaid images and their ``labels.jsonl`` into ``out``.

    ``out`` must not hold a set yet. Returns the number of images written
    (fewer than ``count`` when the sources have fewer images).
    """
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=False)
    lines = []
    for n, image in enumerate(_pick(sets, count, rng)):
        with Image.open(image.path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        if rgb.size != (image.width, image.height):
            continue  # labels are in stored pixels; an EXIF-rotated source would shift them
        overlays = overlay_image(rgb, image, rng)
        name = f"images/{n:04d}.jpg"
        rgb.save(out / name, quality=95, subsampling=0)
        boxes: list[dict[str, object]] = [
            {
                "cls": b.cls,
                "x": round(b.box.x1),
                "y": round(b.box.y1),
                "w": round(b.box.width),
                "h": round(b.box.height),
                "ignore": b.ignore,
            }
            for b in image.boxes
        ]
        boxes += [
            {"cls": "text", "kind": o.kind, "text": o.text, "x": o.x, "y": o.y, "w": o.w, "h": o.h}
            for o in overlays
        ]
        lines.append(
            json.dumps(
                {
                    "image": name,
                    "width": image.width,
                    "height": image.height,
                    "labels_complete": image.labels_complete,
                    "boxes": boxes,
                }
            )
        )
    (out / LABELS_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m redactd.evaluation.negatives",
        description="write a labelled text-negatives set (burned-in text that must stay)",
    )
    ap.add_argument("source", help="a labelled set or a folder of sets (photos to draw on)")
    ap.add_argument("out", help="new folder for the set (must not exist)")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        written = generate(load_sets(Path(args.source)), Path(args.out), args.count, args.seed)
    except FileExistsError:
        sys.stderr.write("error: the output folder already holds a set\n")
        return 73
    sys.stderr.write(f"{written} images written\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
