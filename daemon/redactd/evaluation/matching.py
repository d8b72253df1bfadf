"""Matching detections to ground truth: IoU recall and mask-coverage recall.

Two views of "was this face found":

* **IoU recall** (the WIDER/PASCAL rule): detections, best score first, are
  matched one-to-one to the unmatched ground-truth box they overlap most; a
  match needs IoU >= ``iou``. A detection matching only an ``ignore`` box is
  neither a hit nor a false positive.
* **Coverage recall** (what anonymisation needs): a box counts as covered
  when the union of the *padded* detection boxes (the regions a mask would
  change, padding as in ``MaskConfig.padding``) covers at least ``min_cover``
  of its area. A loose or shifted box that still hides the face counts; a
  tight box that IoU would accept but the mask would miss does not happen.

Only non-ignore boxes of the scored class enter recall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from redactd.core.boxes import box_array, iou_matrix
from redactd.core.types import Box, Detection, ObjectClass
from redactd.evaluation.labels import LabelledImage

MaskShapeName = Literal["box", "ellipse"]

#: Ground-truth boxes shorter than this (pixels) are reported as "small".
SMALL_HEIGHT = 32.0


@dataclass(frozen=True)
class GtResult:
    """One counted (non-ignore) ground-truth box and how it was found."""

    box: Box
    iou_hit: bool
    coverage: float  # share of the box's area inside the padded detection union


@dataclass(frozen=True)
class ImageResult:
    """Matching outcome for one image and one class."""

    gts: tuple[GtResult, ...]
    detections: int
    false_positives: int  # matched no ground truth, not even an ignore box
    labels_complete: bool


@dataclass(frozen=True)
class Summary:
    """Recall over many images (``small_*``: boxes shorter than ``SMALL_HEIGHT``)."""

    images: int
    boxes: int
    iou_recall: float
    coverage_recall: float
    small_boxes: int
    small_iou_recall: float
    small_coverage_recall: float
    detections: int
    false_positives: int  # counted on images with complete labels only


def coverage(gt: Box, masks: Sequence[Box], shape: MaskShapeName = "box") -> float:
    """Share of ``gt``'s area inside the union of ``masks`` (boxes or inscribed ellipses).

    Computed on the integer pixel grid of ``gt`` (pixel centres), so it is
    exact for the integer boxes of the label files.
    """
    x0, y0 = math.floor(gt.x1), math.floor(gt.y1)
    w, h = max(1, math.ceil(gt.x2) - x0), max(1, math.ceil(gt.y2) - y0)
    px = x0 + np.arange(w) + 0.5
    py = y0 + np.arange(h) + 0.5
    inside_gt = ((px >= gt.x1) & (px < gt.x2))[None, :] & ((py >= gt.y1) & (py < gt.y2))[:, None]
    total = int(inside_gt.sum())
    if total == 0:
        return 0.0
    covered = np.zeros((h, w), dtype=bool)
    for m in masks:
        if m.x2 <= gt.x1 or m.x1 >= gt.x2 or m.y2 <= gt.y1 or m.y1 >= gt.y2:
            continue
        if shape == "box":
            covered |= ((px >= m.x1) & (px < m.x2))[None, :] & ((py >= m.y1) & (py < m.y2))[:, None]
        else:
            cx, cy = (m.x1 + m.x2) / 2, (m.y1 + m.y2) / 2
            rx, ry = max(m.width / 2, 1e-9), max(m.height / 2, 1e-9)
            covered |= ((px[None, :] - cx) / rx) ** 2 + ((py[:, None] - cy) / ry) ** 2 <= 1.0
    return float((covered & inside_gt).sum()) / total


def match_image(
    image: LabelledImage,
    detections: Sequence[Detection],
    cls: ObjectClass,
    *,
    iou: float = 0.5,
    padding: float = 0.15,
    shape: MaskShapeName = "box",
) -> ImageResult:
    """Match one image's detections of ``cls`` against its labels."""
    dets = sorted((d for d in detections if d.cls == cls), key=lambda d: -d.score)
    counted = image.of_class(cls, ignore=False)
    ignored = image.of_class(cls, ignore=True)
    gt = box_array(b.box for b in counted)
    ig = box_array(b.box for b in ignored)
    db = box_array(d.box for d in dets)
    hit = np.zeros(len(counted), dtype=bool)
    false_pos = 0
    if len(dets):
        m_gt = iou_matrix(db, gt)
        m_ig = iou_matrix(db, ig)
        for k in range(len(dets)):
            cand = np.where(hit, -1.0, m_gt[k]) if len(counted) else m_gt[k]
            if cand.size and cand.max() >= iou:
                hit[int(cand.argmax())] = True
            elif not (m_ig.shape[1] and m_ig[k].max() >= iou) and not (
                m_gt.shape[1] and m_gt[k].max() >= iou
            ):
                false_pos += 1  # a duplicate of a matched box is not counted as false
    masks = [d.box.pad(padding) for d in dets]
    results = tuple(
        GtResult(box=b.box, iou_hit=bool(hit[i]), coverage=coverage(b.box, masks, shape))
        for i, b in enumerate(counted)
    )
    return ImageResult(
        gts=results,
        detections=len(dets),
        false_positives=false_pos,
        labels_complete=image.labels_complete,
    )


def summarise(
    results: Sequence[ImageResult],
    *,
    min_cover: float = 0.5,
    small_height: float = SMALL_HEIGHT,
) -> Summary:
    """Aggregate recall over images (a box counts as covered at ``>= min_cover``)."""
    gts = [g for r in results for g in r.gts]
    small = [g for g in gts if g.box.height < small_height]

    def rate(items: Sequence[GtResult], covered: bool) -> float:
        if not items:
            return float("nan")
        ok = sum(1 for g in items if (g.coverage >= min_cover if covered else g.iou_hit))
        return ok / len(items)

    return Summary(
        images=len(results),
        boxes=len(gts),
        iou_recall=rate(gts, False),
        coverage_recall=rate(gts, True),
        small_boxes=len(small),
        small_iou_recall=rate(small, False),
        small_coverage_recall=rate(small, True),
        detections=sum(r.detections for r in results),
        false_positives=sum(r.false_positives for r in results if r.labels_complete),
    )
