"""Resistance to reconstruction (``redactd eval --attack``).

Three attacks on the masked output of the real pipeline, for each mask
method (``mosaic``, ``blur``, ``pixelate``, ``solid``; the other mask
settings of the profile are kept):

* **Re-detection**: the profile's own detectors run again on the masked
  image with their threshold lowered to ``REDETECT_FLOOR`` (0.05). A
  labelled box's *re-detection score* is the best score of a same-class
  detection overlapping it with IoU >= ``REDETECT_IOU`` (0.3, looser than
  the 0.5 of box metrics, so a shifted or partial re-detection still counts
  against the mask).
* **Deblur, then re-detection**: the masked image is first restored the way
  a curious reader would try without knowing the mask: Wiener deconvolution
  with a gaussian point-spread function of ``DEBLUR_SIGMAS`` (1.5 and 3 px),
  each followed by a mild unsharp mask (σ 1 px, amount 0.5); the better of the two restorations
  counts. A light blur that deconvolution undoes shows up here.
* **Plate readability**: the PP-OCR recogniser (``redactd.evaluation.ocr``)
  reads the labelled plate box (grown by 5 % of its width and 10 % of its
  height) in the input, in the masked output and in both restorations, and
  the reading is compared with the label's ``text``.

What counts (``AttackSummary``):

* ``redetected`` / ``redetected_deblurred`` (the headline; the defaults must
  score zero): anonymized boxes (see ``redactd.evaluation.pixels``) at least
  ``REDETECT_MIN_HEIGHT`` (24 px) tall whose re-detection score is >=
  ``REDETECT_THRESHOLD`` (0.2). Why not every box at 0.05: at that floor
  CenterFace also fires on head-shaped context around a box filled with
  solid black (the mask that keeps no information at all), most of all on
  faces under 24 px in crowds; such a count measures the surroundings, not
  the mask. ``floor_redetected*`` still report the raw count at 0.05 over
  every anonymized box, and the ``solid`` row gives the level that context
  alone reaches.
* ``found_original``: the same rule on the unmasked input -- the attack's
  teeth (most faces are found there).
* ``readable`` / ``readable_deblurred`` (must be zero for the defaults):
  anonymized plates still readable; ``readable_all``: labelled plates
  readable in the output in any way, including plates the detector missed
  (a recall failure, not a weak mask); ``readable_original``: plates read in
  the input (the recogniser's teeth).

Plates without a labelled text (labelled videos: MOT and the other video
formats carry none) can still be judged: ``with_read_text`` gives such a
plate box the recogniser's reading of the *input* crop as its text when
that reading is plate-like (at least ``PLATE_MIN_CHARS`` letters and
digits, in the form ``readable`` compares). The masked and restored crops
are then compared with that reading by the same rule; a plate whose input
crop does not read as plate text is not judged (not in
``plates_with_text``). The readings stay in memory: reports carry counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from redactd.core.boxes import box_array, iou_matrix
from redactd.core.config import MaskMethod, Profile
from redactd.core.types import Box, Detection, ObjectClass
from redactd.evaluation.labels import LabelledImage
from redactd.evaluation.ocr import TextRecognizer, normalise, readable
from redactd.evaluation.pixels import ANONYMIZED_SHARE, PixelResult

if TYPE_CHECKING:  # the pipeline is handed in; importing it here would load every detector module
    from redactd.pipeline.process import Pipeline

REDETECT_FLOOR = 0.05
REDETECT_THRESHOLD = 0.2
REDETECT_MIN_HEIGHT = 24.0
REDETECT_IOU = 0.3
DEBLUR_SIGMAS: tuple[float, ...] = (1.5, 3.0)
METHODS: tuple[MaskMethod, ...] = ("mosaic", "blur", "pixelate", "solid")
#: Wiener noise-to-signal ratio: 8-bit rounding and JPEG noise of the output.
WIENER_NSR = 0.005
UNSHARP_SIGMA = 1.0
UNSHARP_AMOUNT = 0.5
#: Margin of a plate crop given to the recogniser (share of the box's width, height).
CROP_MARGIN = (0.05, 0.10)
#: Letters and digits an unlabelled plate's input reading needs to be judged by it.
PLATE_MIN_CHARS = 4


@dataclass(frozen=True)
class Baseline:
    """What the attacks get from the unmasked input of one image."""

    scores: dict[int, float]  # label index -> best detection score at the floor (0 = none)
    read: dict[int, bool]  # plate label index -> the recogniser reads its text


@dataclass(frozen=True)
class BoxAttack:
    """What the attacks achieved on one counted box of one masked image."""

    index: int
    cls: ObjectClass
    height: float
    anonymized: bool
    score_original: float
    score_masked: float
    score_deblurred: float  # the better of the restorations
    text: str | None = None  # plate label, when given
    readable_original: bool = False
    readable: bool = False
    readable_deblurred: bool = False

    @property
    def judged(self) -> bool:
        """Part of the headline re-detection count (anonymized and tall enough)."""
        return self.anonymized and self.height >= REDETECT_MIN_HEIGHT


@dataclass(frozen=True)
class AttackSummary:
    """Attack results of one mask method and one class over a set (see the module doc)."""

    method: str
    cls: ObjectClass
    boxes: int
    anonymized: int
    judged: int
    found_original: int
    redetected: int
    redetected_deblurred: int
    floor_redetected: int
    floor_redetected_deblurred: int
    plates_with_text: int
    readable_original: int
    readable: int
    readable_deblurred: int
    readable_all: int


def wiener(region: np.ndarray, sigma: float, nsr: float = WIENER_NSR) -> np.ndarray:
    """Wiener deconvolution of a float ``HxWxC`` array by a gaussian PSF of ``sigma``."""
    pad = max(1, math.ceil(3 * sigma))
    h, w = region.shape[:2]
    # Reflect-pad so the FFT's wrap-around does not ring from the borders.
    padded = cv2.copyMakeBorder(region, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    ph, pw = padded.shape[:2]
    fy = np.fft.fftfreq(ph)[:, None]
    fx = np.fft.rfftfreq(pw)[None, :]
    otf = np.exp(-2.0 * math.pi**2 * sigma**2 * (fx**2 + fy**2))
    gain = otf / (otf * otf + nsr)
    spectrum = np.fft.rfft2(padded, axes=(0, 1))
    restored = np.fft.irfft2(spectrum * gain[..., None], s=(ph, pw), axes=(0, 1))
    return np.asarray(restored[pad : pad + h, pad : pad + w], dtype=np.float32)


def unsharp(
    region: np.ndarray, sigma: float = UNSHARP_SIGMA, amount: float = UNSHARP_AMOUNT
) -> np.ndarray:
    """Unsharp mask of a float array: ``x + amount * (x - gaussian(x))``."""
    soft = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return np.asarray(region + amount * (region - soft), dtype=np.float32)


def deblur(bgr: np.ndarray, sigma: float) -> np.ndarray:
    """The whole image restored: Wiener deconvolution at ``sigma``, then an unsharp mask."""
    restored = unsharp(wiener(bgr.astype(np.float32), sigma))
    return np.clip(np.rint(restored), 0, 255).astype(np.uint8)


def box_scores(image: LabelledImage, detections: Sequence[Detection]) -> dict[int, float]:
    """Label index -> best score of a same-class detection with IoU >= ``REDETECT_IOU``.

    Boxes nothing overlaps are absent (score 0).
    """
    out: dict[int, float] = {}
    for cls in {b.cls for b in image.boxes}:
        idx = [i for i, b in enumerate(image.boxes) if b.cls == cls]
        dets = [d for d in detections if d.cls == cls]
        if not dets:
            continue
        gt = box_array(image.boxes[i].box for i in idx)
        db = box_array(d.box for d in dets)
        scores = np.array([d.score for d in dets], dtype=np.float64)
        m = iou_matrix(gt, db)
        for i, row in zip(idx, m, strict=True):
            hit = row >= REDETECT_IOU
            if hit.any():
                out[i] = float(scores[hit].max())
    return out


def plate_crop(bgr: np.ndarray, box: Box) -> np.ndarray:
    """The labelled plate with a small margin, as the recogniser expects a text line."""
    mx, my = box.width * CROP_MARGIN[0], box.height * CROP_MARGIN[1]
    h, w = bgr.shape[:2]
    x1, y1, x2, y2 = Box(box.x1 - mx, box.y1 - my, box.x2 + mx, box.y2 + my).int_bounds(w, h)
    return bgr[y1:y2, x1:x2]


def _text(image: LabelledImage, i: int) -> str | None:
    b = image.boxes[i]
    t = b.extra.get("text") if b.cls == "plate" else None
    return t if isinstance(t, str) and t.strip() else None


def plate_like(reading: str) -> bool:
    """True when a reading looks like plate text (``PLATE_MIN_CHARS`` letters and digits)."""
    return len(normalise(reading)) >= PLATE_MIN_CHARS


def with_read_text(
    image: LabelledImage, original_bgr: np.ndarray, recognizer: TextRecognizer | None
) -> LabelledImage:
    """``image`` with each counted plate box lacking a ``text`` given its input crop's reading.

    Only plate-like readings are given (see ``plate_like``); other boxes and
    labelled texts are kept as they are. Without a recogniser: ``image``.
    """
    if recognizer is None:
        return image
    boxes = []
    for i, b in enumerate(image.boxes):
        if b.cls == "plate" and not b.ignore and _text(image, i) is None:
            reading = recognizer.read(plate_crop(original_bgr, b.box))
            if plate_like(reading):
                b = dataclasses.replace(b, extra={**b.extra, "text": reading})
        boxes.append(b)
    return dataclasses.replace(image, boxes=tuple(boxes))


def _attacked(profile: Profile, image: LabelledImage) -> list[int]:
    """Counted boxes of the classes the profile masks."""
    classes = {c for c in ("face", "plate") if profile.of(c).enabled}
    return [i for i, b in enumerate(image.boxes) if not b.ignore and b.cls in classes]


def baseline(
    image: LabelledImage,
    original_bgr: np.ndarray,
    floor_detections: Sequence[Detection],
    recognizer: TextRecognizer | None,
) -> Baseline:
    """The attacks on the unmasked input (``floor_detections``: found at the floor there)."""
    scores = box_scores(image, [d for d in floor_detections if d.score >= REDETECT_FLOOR])
    read: dict[int, bool] = {}
    if recognizer is not None:
        for i in range(len(image.boxes)):
            text = _text(image, i)
            if text is not None:
                crop = plate_crop(original_bgr, image.boxes[i].box)
                read[i] = readable(recognizer.read(crop), text)
    return Baseline(scores, read)


def attack_image(
    pipeline: Pipeline,
    profile: Profile,
    image: LabelledImage,
    masked_bgr: np.ndarray,
    pixels: PixelResult,
    recognizer: TextRecognizer | None,
    base: Baseline,
) -> tuple[BoxAttack, ...]:
    """Run the three attacks on one masked image (see the module doc).

    Only counted (non-ignore) boxes of the classes the profile masks are
    attacked. Detector failures propagate (an attack that cannot run must
    not read as "nothing found").
    """
    counted = _attacked(profile, image)
    if not counted:
        return ()
    masked = box_scores(image, pipeline.detect_frame(masked_bgr, profile, REDETECT_FLOOR))
    restored = [deblur(masked_bgr, s) for s in DEBLUR_SIGMAS]
    deb: dict[int, float] = {}
    for r in restored:
        for i, sc in box_scores(image, pipeline.detect_frame(r, profile, REDETECT_FLOOR)).items():
            deb[i] = max(deb.get(i, 0.0), sc)
    shares = {c.index: c.share for c in pixels.boxes}
    out = []
    for i in counted:
        b = image.boxes[i]
        text = _text(image, i)
        read = read_deb = False
        if text is not None and recognizer is not None:
            read = readable(recognizer.read(plate_crop(masked_bgr, b.box)), text)
            read_deb = any(readable(recognizer.read(plate_crop(r, b.box)), text) for r in restored)
        out.append(
            BoxAttack(
                index=i,
                cls=b.cls,
                height=b.box.height,
                anonymized=shares.get(i, 0.0) >= ANONYMIZED_SHARE,
                score_original=base.scores.get(i, 0.0),
                score_masked=masked.get(i, 0.0),
                score_deblurred=deb.get(i, 0.0),
                text=text,
                readable_original=base.read.get(i, False),
                readable=read,
                readable_deblurred=read_deb,
            )
        )
    return tuple(out)


def summarise(method: str, cls: ObjectClass, results: Sequence[BoxAttack]) -> AttackSummary:
    """Totals of one method and class (see the module doc for what each count means)."""
    rs = [r for r in results if r.cls == cls]
    anon = [r for r in rs if r.anonymized]
    judged = [r for r in rs if r.judged]
    tall = [r for r in rs if r.height >= REDETECT_MIN_HEIGHT]
    texts = [r for r in rs if r.text is not None]
    return AttackSummary(
        method=method,
        cls=cls,
        boxes=len(rs),
        anonymized=len(anon),
        judged=len(judged),
        found_original=sum(r.score_original >= REDETECT_THRESHOLD for r in tall),
        redetected=sum(r.score_masked >= REDETECT_THRESHOLD for r in judged),
        redetected_deblurred=sum(r.score_deblurred >= REDETECT_THRESHOLD for r in judged),
        floor_redetected=sum(r.score_masked >= REDETECT_FLOOR for r in anon),
        floor_redetected_deblurred=sum(r.score_deblurred >= REDETECT_FLOOR for r in anon),
        plates_with_text=len(texts),
        readable_original=sum(r.readable_original for r in texts),
        readable=sum(r.readable for r in texts if r.anonymized),
        readable_deblurred=sum(r.readable_deblurred for r in texts if r.anonymized),
        readable_all=sum(r.readable or r.readable_deblurred for r in texts),
    )
