"""End-to-end masked recall: trust nothing but the pixels of the output file.

The real pipeline (``Pipeline.process``) anonymizes each labelled image into
a private temporary folder; input and output are then both decoded to RGB
(Pillow, EXIF orientation applied, first page) and compared pixel by pixel.

Definitions (also in ``docs/EVAL.md``):

* A pixel is **changed** when any of its R, G, B values differs by more than
  ``CHANGE_THRESHOLD`` (12) between input and output. Re-encoding a JPEG at
  the default quality 92 changes about 0.1 % of the pixels of the shared
  sets by more than that (at most 0.6 % of an image), so the threshold sees
  masks, not compression noise.
* For every labelled box, its **changed share** is the share of its pixels
  that changed. A box is **anonymized** when the share is at least
  ``ANONYMIZED_SHARE`` (0.5, most of it); ``STRICT_SHARE`` (0.9) is
  reported too. **Masked recall** is the share of counted (non-ignore)
  boxes that are anonymized. A mask that leaves a flat, uniform face almost
  unchanged is not counted: what the pixels do not show is not claimed.
* **Strict masked recall** (a mask that only grazes a box passes the rule
  above): a pixel is **luma-changed** when its luma (BT.601) differs by more
  than ``LUMA_THRESHOLD`` (10). A box's **detail pixels** are those of the
  input that a box blur of half the box's size (``w/2`` x ``h/2``) would
  move by more than ``DETAIL_THRESHOLD`` (10) in luma: flat skin carries no
  identity and changes under no mask. A box is **strictly masked** when at
  least ``STRICT_DETAIL_SHARE`` (0.7) of its detail pixels are
  luma-changed. A box whose detail pixels are fewer than
  ``MIN_DETAIL_SHARE`` (10 %) of its pixels is judged on all its pixels
  instead (a flat box counts only when a mask visibly changed 70 % of it:
  nothing is claimed that the pixels do not show).
* **Over-masking** is the share of *outside* pixels that changed: the
  luma-changed map after a 3x3 morphological opening (single-pixel
  compression noise goes), outside every labelled box (any class, ignore
  or not) grown by ``GROWTH`` (0.3) of its own width and height on every
  side. A mask fitted to a labelled object plus a little slack changes
  nothing outside; everything else it changes (a poster, a timestamp, a
  wall) counts -- on sets with ``labels_complete = false`` unlabelled
  objects count too, so there it is an upper bound. Text regions labelled
  as negatives (``redactd.evaluation.negatives``) are not grown: they are
  outside pixels like any other.
* **Far over-masking** (the older measure, kept for comparison): changed
  pixels outside each box grown by ``FAR_MARGIN`` (1.0) of its size.
* **Text regions** (negatives): a region is masked when it is strictly
  masked by the rule above.
* An image the pipeline refused (quarantine) has no output: its boxes count
  as not anonymized, and it is reported as failed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageOps

from redactd.core.errors import PermanentInputError, TransientError
from redactd.core.types import Box, JobResult, ObjectClass
from redactd.evaluation.labels import LabelledImage

if TYPE_CHECKING:  # the pipeline is handed in; importing it here would load every detector module
    from redactd.pipeline.process import Pipeline

CHANGE_THRESHOLD = 12
ANONYMIZED_SHARE = 0.5
STRICT_SHARE = 0.9
FAR_MARGIN = 1.0
LUMA_THRESHOLD = 10.0
DETAIL_THRESHOLD = 10.0
STRICT_DETAIL_SHARE = 0.7
MIN_DETAIL_SHARE = 0.1
GROWTH = 0.3
#: Side of the square structuring element of the opening before over-masking.
OPENING = 3
#: Counted boxes shorter than this (pixels) make up the "small" masked recall.
SMALL_HEIGHT = 32.0


class PixelError(ValueError):
    """An input or output cannot be decoded for comparison, or their sizes differ."""


@dataclass(frozen=True)
class BoxChange:
    """How much of one labelled box the output changed."""

    index: int  # position of the box in the image's label list
    cls: ObjectClass
    ignore: bool
    height: float
    share: float
    #: Share of the judged pixels (detail pixels, or all when the box is flat) luma-changed.
    detail_share: float = 0.0
    #: Whether the box had too few detail pixels and was judged on all its pixels.
    flat: bool = False

    @property
    def strictly_masked(self) -> bool:
        return self.detail_share >= STRICT_DETAIL_SHARE


@dataclass(frozen=True)
class PixelResult:
    """The pixel comparison of one image (``ok`` false: no output, nothing changed)."""

    boxes: tuple[BoxChange, ...]
    far_pixels: int
    far_changed: int
    ok: bool = True
    #: Pixels outside every labelled box grown by ``GROWTH``, and how many changed (opened map).
    out_pixels: int = 0
    out_changed: int = 0
    #: Negative (text) regions: share of judged pixels luma-changed, in label order.
    negatives: tuple[float, ...] = ()

    @property
    def overmask(self) -> float | None:
        """This image's over-masking (``None`` without output or outside pixels)."""
        return self.out_changed / self.out_pixels if self.ok and self.out_pixels else None

    @property
    def negatives_masked(self) -> int:
        return sum(1 for s in self.negatives if s >= STRICT_DETAIL_SHARE)


@dataclass(frozen=True)
class MaskedImage:
    """One run of the pipeline on a labelled image and its pixel comparison.

    ``output`` is the masked file (inside the caller's work folder; the
    caller deletes it), ``None`` when the pipeline refused the input, with
    ``error`` the reason code.
    """

    pixels: PixelResult
    job: JobResult | None
    wall_ms: float
    output: Path | None
    error: str | None = None


@dataclass(frozen=True)
class PixelSummary:
    """Masked recall of one class over a set."""

    cls: ObjectClass
    boxes: int
    anonymized: int
    strict: int
    small_boxes: int
    small_anonymized: int
    detail_masked: int = 0  # boxes strictly masked (detail-pixel rule)
    flat_boxes: int = 0  # boxes judged on all pixels (too few detail pixels)

    @property
    def detail_recall(self) -> float | None:
        """Strict masked recall: the detail-pixel rule (see the module doc)."""
        return self.detail_masked / self.boxes if self.boxes else None

    @property
    def masked_recall(self) -> float | None:
        return self.anonymized / self.boxes if self.boxes else None

    @property
    def strict_recall(self) -> float | None:
        return self.strict / self.boxes if self.boxes else None

    @property
    def small_masked_recall(self) -> float | None:
        return self.small_anonymized / self.small_boxes if self.small_boxes else None


def read_rgb(path: Path) -> np.ndarray:
    """First page of an image as upright ``HxWx3`` uint8 RGB (``PixelError`` if unreadable)."""
    try:
        with Image.open(path) as im:
            im.seek(0)
            upright = ImageOps.exif_transpose(im)
            return np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise PixelError(f"image cannot be decoded ({type(e).__name__})") from e


def changed(before: np.ndarray, after: np.ndarray, threshold: int = CHANGE_THRESHOLD) -> np.ndarray:
    """``HxW`` bool: pixels whose largest channel difference exceeds ``threshold``."""
    if before.shape != after.shape:
        raise PixelError("input and output differ in size")
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=2)
    return np.asarray(diff > threshold)


def luma(rgb: np.ndarray) -> np.ndarray:
    """``HxW`` float32 BT.601 luma of an RGB image."""
    f = rgb.astype(np.float32)
    return np.asarray(0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2])


def luma_changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``HxW`` bool: pixels whose luma changed by more than ``LUMA_THRESHOLD``."""
    if before.shape != after.shape:
        raise PixelError("input and output differ in size")
    return np.asarray(np.abs(luma(after) - luma(before)) > LUMA_THRESHOLD)


def opened(mask: np.ndarray) -> np.ndarray:
    """``mask`` after a ``OPENING`` x ``OPENING`` morphological opening (isolated pixels go)."""
    kernel = np.ones((OPENING, OPENING), np.uint8)
    out = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return np.asarray(out.astype(bool))


def detail_pixels(y: np.ndarray, bounds: tuple[int, int, int, int]) -> np.ndarray:
    """Bool map of the box ``bounds`` (x1, y1, x2, y2) in luma ``y``: its detail pixels.

    A pixel is detail when a box blur of half the box's size (with the
    image around the box, mirrored at the image's edge) moves it by more
    than ``DETAIL_THRESHOLD``.
    """
    x1, y1, x2, y2 = bounds
    bw, bh = x2 - x1, y2 - y1
    kw, kh = max(1, round(bw / 2)), max(1, round(bh / 2))
    h, w = y.shape
    # Context of half a kernel around the box so the blur sees the surroundings.
    cx1, cy1 = max(0, x1 - kw // 2 - 1), max(0, y1 - kh // 2 - 1)
    cx2, cy2 = min(w, x2 + kw // 2 + 1), min(h, y2 + kh // 2 + 1)
    crop = np.ascontiguousarray(y[cy1:cy2, cx1:cx2])
    blurred = cv2.blur(crop, (kw, kh), borderType=cv2.BORDER_REFLECT)
    moved = np.abs(blurred - crop) > DETAIL_THRESHOLD
    return np.asarray(moved[y1 - cy1 : y2 - cy1, x1 - cx1 : x2 - cx1])


def judged_share(
    y_before: np.ndarray, lchanged: np.ndarray, bounds: tuple[int, int, int, int]
) -> tuple[float, bool]:
    """(share of the box's judged pixels that are luma-changed, whether it was flat)."""
    x1, y1, x2, y2 = bounds
    region = lchanged[y1:y2, x1:x2]
    if not region.size:
        return 0.0, True
    detail = detail_pixels(y_before, bounds)
    n = int(detail.sum())
    if n < MIN_DETAIL_SHARE * detail.size or n == 0:
        return float(region.mean()), True
    return float(region[detail].mean()), False


def _bounds(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    # Label boxes are integer pixels; round any fractional one to the pixels it touches.
    return box.int_bounds(width, height)


def far_region(image: LabelledImage, height: int, width: int) -> np.ndarray:
    """``HxW`` bool: pixels far from every labelled box (see the module doc)."""
    far = np.ones((height, width), dtype=bool)
    for b in image.boxes:
        grown = Box(
            b.box.x1 - FAR_MARGIN * b.box.width,
            b.box.y1 - FAR_MARGIN * b.box.height,
            b.box.x2 + FAR_MARGIN * b.box.width,
            b.box.y2 + FAR_MARGIN * b.box.height,
        )
        x1, y1, x2, y2 = _bounds(grown, width, height)
        far[y1:y2, x1:x2] = False
    return far


def outside_region(image: LabelledImage, height: int, width: int) -> np.ndarray:
    """``HxW`` bool: pixels outside every labelled box grown by ``GROWTH`` on every side."""
    out = np.ones((height, width), dtype=bool)
    for b in image.boxes:
        grown = Box(
            b.box.x1 - GROWTH * b.box.width,
            b.box.y1 - GROWTH * b.box.height,
            b.box.x2 + GROWTH * b.box.width,
            b.box.y2 + GROWTH * b.box.height,
        )
        x1, y1, x2, y2 = _bounds(grown, width, height)
        out[y1:y2, x1:x2] = False
    return out


def compare_arrays(image: LabelledImage, before: np.ndarray, after: np.ndarray) -> PixelResult:
    """Changed shares of every labelled box and region, and the over-masking counts."""
    ch = changed(before, after)
    h, w = ch.shape
    y_before = luma(before)
    lch = np.asarray(np.abs(luma(after) - y_before) > LUMA_THRESHOLD)
    boxes = []
    for i, b in enumerate(image.boxes):
        bounds = _bounds(b.box, w, h)
        x1, y1, x2, y2 = bounds
        region = ch[y1:y2, x1:x2]
        share = float(region.mean()) if region.size else 0.0
        dshare, flat = judged_share(y_before, lch, bounds)
        boxes.append(BoxChange(i, b.cls, b.ignore, b.box.height, share, dshare, flat))
    negatives = tuple(judged_share(y_before, lch, _bounds(n, w, h))[0] for n in image.negatives)
    far = far_region(image, h, w)
    out = outside_region(image, h, w)
    return PixelResult(
        boxes=tuple(boxes),
        far_pixels=int(far.sum()),
        far_changed=int((ch & far).sum()),
        out_pixels=int(out.sum()),
        out_changed=int((opened(lch) & out).sum()),
        negatives=negatives,
    )


def unchanged(image: LabelledImage) -> PixelResult:
    """The result for an image without output: no box anonymized."""
    return PixelResult(
        boxes=tuple(
            BoxChange(i, b.cls, b.ignore, b.box.height, 0.0) for i, b in enumerate(image.boxes)
        ),
        far_pixels=0,
        far_changed=0,
        ok=False,
        negatives=tuple(0.0 for _ in image.negatives),
    )


def compare_file(
    image: LabelledImage, output: Path, before: np.ndarray | None = None
) -> PixelResult:
    """Compare a masked file (made by redactd or another tool) with its labelled original."""
    if before is None:
        before = read_rgb(image.path)
    return compare_arrays(image, before, read_rgb(output))


def run_pipeline(pipeline: Pipeline, image: LabelledImage, profile: str, dst: Path) -> MaskedImage:
    """Anonymize ``image`` into the new file ``dst`` with the real pipeline and compare.

    A refused input (``PermanentInputError``/``TransientError``) gives an
    unchanged result with its reason code (``io_error`` when the file cannot
    be read at all); ``ModelError`` propagates.
    """
    t0 = time.perf_counter()
    try:
        job = pipeline.process(image.path, dst, profile)
    except (PermanentInputError, TransientError) as e:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        wall_ms = (time.perf_counter() - t0) * 1000.0
        return MaskedImage(unchanged(image), None, wall_ms, None, e.reason)
    except OSError:  # e.g. a labelled image that is not there
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        wall_ms = (time.perf_counter() - t0) * 1000.0
        return MaskedImage(unchanged(image), None, wall_ms, None, "io_error")
    wall_ms = (time.perf_counter() - t0) * 1000.0
    try:
        pixels = compare_file(image, dst)
    except PixelError:
        return MaskedImage(unchanged(image), job, wall_ms, dst, "compare_failed")
    return MaskedImage(pixels, job, wall_ms, dst)


def summarise(results: Sequence[PixelResult], cls: ObjectClass) -> PixelSummary:
    """Masked recall of counted boxes of ``cls`` over a set."""
    counted = [b for r in results for b in r.boxes if b.cls == cls and not b.ignore]
    shares = [(b.share, b.height) for b in counted]
    small = [s for s, h in shares if h < SMALL_HEIGHT]
    return PixelSummary(
        cls=cls,
        boxes=len(shares),
        anonymized=sum(1 for s, _ in shares if s >= ANONYMIZED_SHARE),
        strict=sum(1 for s, _ in shares if s >= STRICT_SHARE),
        small_boxes=len(small),
        small_anonymized=sum(1 for s in small if s >= ANONYMIZED_SHARE),
        detail_masked=sum(1 for b in counted if b.strictly_masked),
        flat_boxes=sum(1 for b in counted if b.flat),
    )


def overmask(results: Sequence[PixelResult]) -> float | None:
    """Over-masking of a set: changed outside pixels / outside pixels, over images with output."""
    out = sum(r.out_pixels for r in results if r.ok)
    return sum(r.out_changed for r in results if r.ok) / out if out else None


def overmask_far(results: Sequence[PixelResult]) -> float | None:
    """The older measure: share of far pixels that changed, over the images with output."""
    far = sum(r.far_pixels for r in results if r.ok)
    return sum(r.far_changed for r in results if r.ok) / far if far else None


@dataclass(frozen=True)
class NegativeSummary:
    """Text regions (negatives) of a set and how many the output masked (strict rule)."""

    regions: int
    masked: int
    images: int  # images that carry at least one region
    images_with_masked: int
    #: Per image (regions, masked), most masked first: ranks, not positions in the set.
    per_image: tuple[tuple[int, int], ...] = ()

    @property
    def masked_share(self) -> float | None:
        return self.masked / self.regions if self.regions else None


def summarise_negatives(results: Sequence[PixelResult]) -> NegativeSummary:
    with_regions = [r for r in results if r.negatives]
    return NegativeSummary(
        regions=sum(len(r.negatives) for r in with_regions),
        masked=sum(r.negatives_masked for r in with_regions),
        images=len(with_regions),
        images_with_masked=sum(1 for r in with_regions if r.negatives_masked),
        per_image=tuple(
            sorted(
                ((len(r.negatives), r.negatives_masked) for r in with_regions),
                key=lambda t: (-t[1], -t[1] / t[0]),
            )
        ),
    )
