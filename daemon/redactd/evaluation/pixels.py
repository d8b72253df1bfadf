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
* **Over-masking** is the share of changed pixels *far* from every labelled
  box: outside each box (any class, ignore or not) grown by ``FAR_MARGIN``
  (1.0) times its own width and height on every side (a 3x3 box-sized area
  around it). Near a face, a mask's padding (0.5 of the box by default) and
  a loose detection box are expected; far from every label, a
  change is a false positive (or an unlabelled object -- on sets with
  ``labels_complete = false`` over-masking is an upper bound).
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

import numpy as np
from PIL import Image, ImageOps

from redactd.errors import PermanentInputError, TransientError
from redactd.evaluation.labels import LabelledImage
from redactd.types import Box, JobResult, ObjectClass

if TYPE_CHECKING:  # the pipeline is handed in; importing it here would load every detector module
    from redactd.pipeline import Pipeline

CHANGE_THRESHOLD = 12
ANONYMIZED_SHARE = 0.5
STRICT_SHARE = 0.9
FAR_MARGIN = 1.0
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


@dataclass(frozen=True)
class PixelResult:
    """The pixel comparison of one image (``ok`` false: no output, nothing changed)."""

    boxes: tuple[BoxChange, ...]
    far_pixels: int
    far_changed: int
    ok: bool = True


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


def compare_arrays(image: LabelledImage, before: np.ndarray, after: np.ndarray) -> PixelResult:
    """Changed share of every labelled box and the far-pixel counts of one image."""
    ch = changed(before, after)
    h, w = ch.shape
    boxes = []
    for i, b in enumerate(image.boxes):
        x1, y1, x2, y2 = _bounds(b.box, w, h)
        region = ch[y1:y2, x1:x2]
        share = float(region.mean()) if region.size else 0.0
        boxes.append(BoxChange(i, b.cls, b.ignore, b.box.height, share))
    far = far_region(image, h, w)
    return PixelResult(
        boxes=tuple(boxes),
        far_pixels=int(far.sum()),
        far_changed=int((ch & far).sum()),
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
    shares = [
        (b.share, b.height) for r in results for b in r.boxes if b.cls == cls and not b.ignore
    ]
    small = [s for s, h in shares if h < SMALL_HEIGHT]
    return PixelSummary(
        cls=cls,
        boxes=len(shares),
        anonymized=sum(1 for s, _ in shares if s >= ANONYMIZED_SHARE),
        strict=sum(1 for s, _ in shares if s >= STRICT_SHARE),
        small_boxes=len(small),
        small_anonymized=sum(1 for s in small if s >= ANONYMIZED_SHARE),
    )


def overmask(results: Sequence[PixelResult]) -> float | None:
    """Share of far pixels that changed, over the images that have an output."""
    far = sum(r.far_pixels for r in results if r.ok)
    return sum(r.far_changed for r in results if r.ok) / far if far else None
