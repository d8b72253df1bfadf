"""Licence plates as text: the PP-OCR text detector (DB) plus a plate filter.

Model: ``PP-OCRv6_det_small.onnx`` of the rapidocr 3.10.0 wheel (weights
Apache-2.0, PaddleOCR), manifest entry ``ppocr_det``. It installs from the
package registry alone, which is why it is the default plate detector: no
permissively licensed plate-specific model can be had that way.

Recipe (manifest ``decoder = "ppocr_det"``): BGR, ``(x / 255 - 0.5) / 0.5``,
NCHW, dynamic H and W (multiples of 32). The image is stretched to the next
multiple of 32 in each dimension (the network runs at the size it is given;
``redactd.stages.detect.multiscale`` decides that size). One output: a text
probability map ``[1, 1, H, W]`` at input size.

DB post-processing (the PaddleOCR recipe): binarise at ``BIN_THRESHOLD``
(0.3), dilate 2x2, take contours; each contour's minimum-area rectangle is a
text region scored by the mean probability inside it (the detector's
``threshold`` applies to that score, 0.5 in the recipe); the rectangle is
grown ("unclipped") by ``area * UNCLIP_RATIO / perimeter`` on every side,
because the network is trained on shrunk text kernels.

The plate filter turns text regions into plate candidates. Every rule below
was measured on ../shared/eval (plates_openalpr_us/eu/br and 90 face-set
photos, ``benchmarks/plate_eval.py``); none costs a labelled plate of normal
size there:

1. **grouping**: nearly horizontal regions of similar height on one baseline
   with a gap under half a text height are one line (DB may split a plate at
   a wide gap, a sticker or a dash, and the geometry tests must see the whole
   line; a wider gap would join a plate to the lettering beside it on vans);
2. **aspect**: a plate line is 1.5 to 14 times longer than high; longer lines
   are sentences, phone numbers, URLs and shop signs;
3. **size**: the text height is at most 30 % of the frame's shorter side (the
   largest labelled plate text is 11 %); PP-OCR also "sees" text in large
   smooth areas (skin, sky) at some scales, which this rule removes;
4. **angle**: the line is within 30 degrees of horizontal (vertical text);
5. **paragraphs**: a line in a stack of four or more similar-height lines
   (each directly above the next) is a paragraph, a poster or a document,
   not a plate (a plate has at most one other line of its own size; three
   is too few: on the US set a plate sits between two lines of a van's
   lettering).

A kept line becomes a plate box: the text box grown by 5 % of its width on
each side, 20 % of its height upwards and 15 % downwards (the state name,
the plate frame and the border above and below the characters), and widened
to at least 1.6 times its height (a short registration still sits on a
plate-wide plate). Lines mostly inside a taller line's plate box (state
names, slogans, dealer frames) join that plate instead of forming their own.

Measured effect (docs/PLATES.md): on 90 face photos the filter cuts the
masked area by three quarters (15.1 % -> 3.6 % of the image); on the plate
sets it costs no plate of normal size and 1-6 points of far (24-39 px) plates.
``text_only=True`` turns the filter off (every text region is a candidate,
grown the same way): the highest recall, and every sign masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from redactd.core.types import Box, Detection, ObjectClass
from redactd.models.manifest import ModelSpec
from redactd.stages.detect.runtime import Network, NetworkIO, Runtime, TensorSpec

#: Probability above which a map pixel is text (the DB recipe).
BIN_THRESHOLD = 0.3
#: How far a shrunk text kernel is grown back: ``area * ratio / perimeter``.
UNCLIP_RATIO = 1.6
#: A text kernel thinner than this (network pixels) is noise.
MIN_KERNEL_SIDE = 3.0
#: At most this many contours per map (the recipe's cap; a noisy map has thousands).
MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class TextLine:
    """One text region in image pixels.

    ``box``: axis-aligned bounds of the (unclipped) region. ``length`` and
    ``height``: the long and short side of its rotated rectangle; ``angle``:
    of the long side against the horizontal, degrees in [-90, 90).
    ``parts``: how many DB regions were grouped into it.
    """

    box: Box
    length: float
    height: float
    angle: float
    score: float
    parts: int = 1

    @property
    def aspect(self) -> float:
        return self.length / max(self.height, 1e-6)


@dataclass(frozen=True)
class PlateFilter:
    """Plate geometry a text line must have (see the module doc for the measurements)."""

    min_aspect: float = 1.5
    max_aspect: float = 14.0
    max_height: float = 0.3  # text height / the frame's shorter side
    max_angle: float = 30.0  # degrees from horizontal
    max_stacked: int = 2  # other similar-height lines in the line's vertical stack
    group_gap: float = 0.5  # grouping: largest gap, in text heights
    # plate box from the text box
    grow_x: float = 0.05
    grow_up: float = 0.20
    grow_down: float = 0.15
    min_plate_aspect: float = 1.6


DEFAULT_FILTER = PlateFilter()


def network_io(spec: ModelSpec) -> NetworkIO:
    """One rank-4 input and one rank-4 probability map, looked up by the recipe's names."""
    input_name = str(spec.input.get("name", "x"))
    names = spec.output.get("names", ["fetch_name_0"])
    output_name = str(names[0]) if isinstance(names, list) and names else "fetch_name_0"
    return NetworkIO(input=TensorSpec((input_name,), 4), outputs=(TensorSpec((output_name,), 4),))


def input_size(width: int, height: int) -> tuple[int, int]:
    """Network input ``(W, H)``: each side rounded up to a multiple of 32."""
    return (max(32, math.ceil(width / 32) * 32), max(32, math.ceil(height / 32) * 32))


def _rect_line(
    rect: tuple[tuple[float, float], tuple[float, float], float], score: float, sx: float, sy: float
) -> TextLine:
    """A rotated rectangle in map pixels -> a ``TextLine`` in image pixels."""
    pts = cv2.boxPoints(rect) * np.array([sx, sy], dtype=np.float32)
    (_cx, _cy), (a, b), ang = cv2.minAreaRect(pts)
    length, height, angle = (a, b, ang) if a >= b else (b, a, ang + 90.0)
    angle = (angle + 90.0) % 180.0 - 90.0
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    return TextLine(
        box=Box(float(x1), float(y1), float(x2), float(y2)),
        length=float(length),
        height=float(height),
        angle=float(angle),
        score=score,
    )


def db_lines(
    prob: np.ndarray, threshold: float, sx: float = 1.0, sy: float = 1.0
) -> list[TextLine]:
    """DB post-processing of a probability map ``(H, W)``; ``sx, sy`` map to image pixels.

    Returns regions whose mean probability is >= ``threshold``, unclipped.
    """
    bitmap = cv2.dilate((prob > BIN_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    mh, mw = prob.shape
    lines: list[TextLine] = []
    for contour in contours[:MAX_CANDIDATES]:
        if len(contour) < 3:
            continue
        rect = cv2.minAreaRect(contour)
        (cx, cy), (rw, rh), ang = rect
        if min(rw, rh) < MIN_KERNEL_SIDE:
            continue
        pts = cv2.boxPoints(rect)
        x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, mw - 1))
        x1 = int(np.clip(np.ceil(pts[:, 0].max()), 0, mw - 1))
        y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, mh - 1))
        y1 = int(np.clip(np.ceil(pts[:, 1].max()), 0, mh - 1))
        inside = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        cv2.fillPoly(inside, [np.round(pts - [x0, y0]).astype(np.int32)], 1)
        score = float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], inside)[0])
        if score < threshold:
            continue
        d = rw * rh * UNCLIP_RATIO / (2.0 * (rw + rh))
        grown = ((cx, cy), (rw + 2 * d, rh + 2 * d), ang)
        lines.append(_rect_line(grown, score, sx, sy))
    return lines


def _joinable(a: TextLine, b: TextLine, gap: float) -> bool:
    if abs(a.angle) > 30.0 or abs(b.angle) > 30.0:
        return False
    ha, hb = a.box.height, b.box.height
    if max(ha, hb) > 1.7 * min(ha, hb):
        return False
    if abs(a.box.center[1] - b.box.center[1]) > 0.35 * max(ha, hb):
        return False
    dx = max(a.box.x1, b.box.x1) - min(a.box.x2, b.box.x2)
    return dx <= gap * max(ha, hb)


def group_lines(lines: Sequence[TextLine], gap: float = DEFAULT_FILTER.group_gap) -> list[TextLine]:
    """Join regions of one text line (same baseline, similar height, small gap)."""
    out = sorted(lines, key=lambda t: t.box.x1)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if not _joinable(a, b, gap):
                    continue
                box = Box(
                    min(a.box.x1, b.box.x1),
                    min(a.box.y1, b.box.y1),
                    max(a.box.x2, b.box.x2),
                    max(a.box.y2, b.box.y2),
                )
                out[i] = TextLine(
                    box=box,
                    length=box.width,
                    height=max(a.height, b.height),
                    angle=0.0,
                    score=max(a.score, b.score),
                    parts=a.parts + b.parts,
                )
                del out[j]
                merged = True
                break
            if merged:
                break
    return out


def stack_sizes(lines: Sequence[TextLine]) -> list[int]:
    """For each line, how many other lines share its vertical stack.

    Two lines are stacked neighbours when their heights differ by at most
    35 %, they overlap horizontally by at least 30 % of the narrower one and
    the vertical gap between them is under 1.2 text heights; a stack is a
    connected group of neighbours (so every line of a paragraph counts the
    whole paragraph, not only the lines next to it).
    """
    n = len(lines)
    if n < 2:
        return [0] * n
    b = np.array([(t.box.x1, t.box.y1, t.box.x2, t.box.y2) for t in lines], dtype=np.float64)
    h = b[:, 3] - b[:, 1]
    w = b[:, 2] - b[:, 0]
    similar = np.abs(h[:, None] - h[None, :]) <= 0.35 * np.maximum(h[:, None], h[None, :])
    overlap = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    overlapping = overlap >= 0.3 * np.minimum(w[:, None], w[None, :])
    gap = np.maximum(b[None, :, 1] - b[:, None, 3], b[:, None, 1] - b[None, :, 3])
    close = gap < 1.2 * np.minimum(h[:, None], h[None, :])
    adjacent = similar & overlapping & close
    np.fill_diagonal(adjacent, False)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(adjacent)), strict=True):
        parent[root(int(i))] = root(int(j))
    roots = [root(i) for i in range(n)]
    size: dict[int, int] = {}
    for r in roots:
        size[r] = size.get(r, 0) + 1
    return [size[r] - 1 for r in roots]


def is_plate_like(line: TextLine, stack: int, width: int, height: int, f: PlateFilter) -> bool:
    """The plate-geometry tests of the module doc; ``stack`` from ``stack_sizes``."""
    if not f.min_aspect <= line.aspect <= f.max_aspect:
        return False
    if line.height > f.max_height * min(width, height):
        return False
    if abs(line.angle) > f.max_angle:
        return False
    return stack <= f.max_stacked


def plate_box(line: TextLine, f: PlateFilter) -> Box:
    """The plate around a text line (grown, then widened to ``min_plate_aspect``)."""
    b = line.box
    x1, x2 = b.x1 - f.grow_x * b.width, b.x2 + f.grow_x * b.width
    y1, y2 = b.y1 - f.grow_up * b.height, b.y2 + f.grow_down * b.height
    min_w = f.min_plate_aspect * (y2 - y1)
    if x2 - x1 < min_w:
        cx = (x1 + x2) / 2.0
        x1, x2 = cx - min_w / 2.0, cx + min_w / 2.0
    return Box(x1, y1, x2, y2)


def plates_from_lines(
    lines: Sequence[TextLine], width: int, height: int, f: PlateFilter | None
) -> list[tuple[Box, float]]:
    """Plate boxes and scores in image pixels (unclipped); ``f=None`` keeps every line."""
    grouped = group_lines(lines, f.group_gap if f is not None else DEFAULT_FILTER.group_gap)
    shape = f if f is not None else DEFAULT_FILTER
    if f is None:
        kept = grouped
    else:
        stacks = stack_sizes(grouped)
        kept = [
            t for t, n in zip(grouped, stacks, strict=True) if is_plate_like(t, n, width, height, f)
        ]
    plates: list[tuple[Box, float]] = []
    # tallest first, so the characters' line is the plate and smaller lines on it join it
    for t in sorted(kept, key=lambda t: -t.box.height):
        for k, (pb, score) in enumerate(plates):
            ix = min(pb.x2, t.box.x2) - max(pb.x1, t.box.x1)
            iy = min(pb.y2, t.box.y2) - max(pb.y1, t.box.y1)
            inter = max(0.0, ix) * max(0.0, iy)
            if inter >= 0.5 * t.box.area:
                plates[k] = (
                    Box(
                        min(pb.x1, t.box.x1),
                        min(pb.y1, t.box.y1),
                        max(pb.x2, t.box.x2),
                        max(pb.y2, t.box.y2),
                    ),
                    max(score, t.score),
                )
                break
        else:
            plates.append((plate_box(t, shape), t.score))
    return plates


class PpocrPlate:
    """PP-OCR text detector with the plate filter (a ``Detector``)."""

    cls: ObjectClass = "plate"

    def __init__(
        self,
        network: Network,
        name: str = "ppocr_plate",
        plate_filter: PlateFilter | None = None,
        *,
        text_only: bool = False,
    ) -> None:
        self.name = name
        self.network = network
        self.filter: PlateFilter | None = None if text_only else (plate_filter or DEFAULT_FILTER)

    def text_lines(self, image: np.ndarray, threshold: float) -> list[TextLine]:
        """Every text region (score >= ``threshold``) of a BGR uint8 image, in its pixels."""
        h, w = image.shape[:2]
        in_w, in_h = input_size(w, h)
        # (x - 127.5) / 127.5 == (x / 255 - 0.5) / 0.5; BGR kept (swapRB False)
        blob = cv2.dnn.blobFromImage(
            image, 1.0 / 127.5, (in_w, in_h), (127.5, 127.5, 127.5), swapRB=False, crop=False
        )
        (prob,) = self.network.infer(blob)
        return db_lines(prob.reshape(prob.shape[-2:]), threshold, w / in_w, h / in_h)

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """Plates with score >= ``threshold`` (the DB region score) in a BGR uint8 image."""
        h, w = image.shape[:2]
        lines = self.text_lines(image, threshold)
        out = []
        for box, score in plates_from_lines(lines, w, h, self.filter):
            clipped = box.clip(w, h)
            if clipped.area > 0:
                out.append(Detection("plate", clipped, score, self.name))
        return out

    def close(self) -> None:
        self.network.close()


def _load(spec: ModelSpec, runtime: Runtime, store: Path) -> Network:
    spec.verify(store)
    return runtime.load(spec.main_path(store), network_io(spec), name=spec.name, policy="dynamic")


def create(spec: ModelSpec, runtime: Runtime, store: Path) -> PpocrPlate:
    """``ppocr_plate``: text regions with plate geometry. Verifies (sha256) and compiles."""
    return PpocrPlate(_load(spec, runtime, store), name="ppocr_plate")


def create_text(spec: ModelSpec, runtime: Runtime, store: Path) -> PpocrPlate:
    """``ppocr_text``: every text region is a plate candidate (no filter)."""
    return PpocrPlate(_load(spec, runtime, store), name="ppocr_text", text_only=True)
