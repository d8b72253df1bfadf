"""Box metrics of a detector against labelled boxes, one class at a time.

Definitions (also in ``docs/EVAL.md``):

* **Matching** at an IoU threshold ``t``, per image: detections are taken
  best score first. A detection is a *true positive* when it overlaps a
  not-yet-matched counted (non-ignore) box with IoU >= ``t`` (the one with
  the highest IoU is taken). Otherwise, when it overlaps an ``ignore`` box
  with IoU >= ``t``, it is *ignored*: neither true nor false positive, as in
  the WIDER FACE protocol (an ignore box may absorb any number of
  detections). Otherwise it is a *false positive* -- including a second
  detection of an already matched box (PASCAL/COCO rule). A counted box no
  detection matched is a *false negative*; a missed ignore box is nothing.
  Counted boxes are preferred over ignore boxes (COCO's order), so a face
  beside an ignored one is not lost to its neighbour.
* Because matching is greedy in score order, the matches of the detections
  scoring >= ``s`` are exactly those of a run at threshold ``s``: one
  matching at a low floor yields the whole precision-recall curve and the
  operating point.
* **AP** is the area under the precision-recall curve with all-point
  interpolation (PASCAL VOC 2010+: precision made monotone from the right,
  summed over every recall step). ``AP50`` uses ``t = 0.5``; ``AP50:95`` is
  the mean AP over ``t = 0.50, 0.55, ..., 0.95`` (COCO).
* **Precision left out where labels are incomplete.** On an image with
  ``labels_complete = false`` an unmatched detection may be an unlabelled
  object, so precision (and AP, which is built on it) is computed over the
  images with complete labels only, and is ``None`` when there are none.
  Recall uses every image.
* **Operating point**: recall, precision and false-negative rate
  (``1 - recall``) of the detections scoring >= the profile's threshold.
  **Small-object recall**: recall over counted boxes less than
  ``SMALL_HEIGHT`` (32) pixels tall.

Everything here is pure arithmetic on frozen inputs (no I/O, no models).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from redactd.core.boxes import box_array, iou_matrix
from redactd.core.types import Detection, ObjectClass
from redactd.evaluation.labels import LabelledImage

#: Counted boxes shorter than this (pixels) make up "small-object recall".
SMALL_HEIGHT = 32.0

#: COCO's IoU thresholds 0.50:0.05:0.95.
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

#: Height bins (pixels, lower bound inclusive) for recall by object size.
SIZE_BINS: tuple[float, ...] = (0.0, 16.0, 32.0, 64.0, 128.0)

Outcome = Literal["tp", "fp", "ignored"]


@dataclass(frozen=True)
class ImageMatch:
    """Matching of one image's detections of one class at one IoU threshold.

    ``scores``/``outcomes`` are per detection, best score first.
    ``gt_heights``/``gt_hit_score`` are per counted box in label order;
    ``gt_hit_score`` is the score of the detection that matched the box,
    ``None`` when none did.
    """

    scores: tuple[float, ...]
    outcomes: tuple[Outcome, ...]
    gt_heights: tuple[float, ...]
    gt_hit_score: tuple[float | None, ...]
    labels_complete: bool


@dataclass(frozen=True)
class PRCurve:
    """Precision-recall points, one per detection rank (images with complete labels)."""

    recall: tuple[float, ...]
    precision: tuple[float, ...]
    scores: tuple[float, ...]


@dataclass(frozen=True)
class SizeBin:
    """Recall at the operating threshold for counted boxes in ``[lo, hi)`` pixels tall."""

    lo: float
    hi: float | None
    boxes: int
    found: int

    @property
    def recall(self) -> float | None:
        return self.found / self.boxes if self.boxes else None


@dataclass(frozen=True)
class ClassMetrics:
    """Box metrics of one class over one set (``None`` = undefined, see the module doc)."""

    cls: ObjectClass
    threshold: float
    images: int
    images_complete: int
    boxes: int  # counted (non-ignore) boxes
    ignored_boxes: int
    small_boxes: int
    true_positives: int
    false_positives: int | None  # images with complete labels only
    false_negatives: int
    detections: int  # at the operating threshold, all images
    recall: float | None
    precision: float | None
    fnr: float | None
    small_recall: float | None
    ap50: float | None
    ap50_95: float | None
    by_size: tuple[SizeBin, ...]
    pr_curve: PRCurve | None


def match_image(
    image: LabelledImage, detections: Sequence[Detection], cls: ObjectClass, iou: float = 0.5
) -> ImageMatch:
    """Match ``image``'s detections of ``cls`` to its boxes at IoU ``iou`` (see module doc)."""
    dets = sorted((d for d in detections if d.cls == cls), key=lambda d: -d.score)
    counted = image.of_class(cls, ignore=False)
    ignored = image.of_class(cls, ignore=True)
    db = box_array(d.box for d in dets)
    gt = box_array(b.box for b in counted)
    ig = box_array(b.box for b in ignored)
    m_gt = iou_matrix(db, gt)
    m_ig = iou_matrix(db, ig)
    hit: list[float | None] = [None] * len(counted)
    outcomes: list[Outcome] = []
    for k, d in enumerate(dets):
        best, best_iou = -1, iou
        for j in range(len(counted)):
            if hit[j] is None and m_gt[k, j] >= best_iou:
                best, best_iou = j, float(m_gt[k, j])
        if best >= 0:
            hit[best] = d.score
            outcomes.append("tp")
        elif ignored and float(m_ig[k].max()) >= iou:
            outcomes.append("ignored")
        else:
            outcomes.append("fp")
    return ImageMatch(
        scores=tuple(d.score for d in dets),
        outcomes=tuple(outcomes),
        gt_heights=tuple(b.box.height for b in counted),
        gt_hit_score=tuple(hit),
        labels_complete=image.labels_complete,
    )


def average_precision(recall: Sequence[float], precision: Sequence[float]) -> float:
    """All-point interpolated AP of a PR curve given in rank order (VOC 2010+)."""
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    # Precision envelope: the best precision at any recall at least this high.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def pr_curve(matches: Sequence[ImageMatch]) -> PRCurve | None:
    """The PR curve over the images with complete labels (``None`` when there are none
    or they hold no counted box)."""
    complete = [m for m in matches if m.labels_complete]
    n_gt = sum(len(m.gt_heights) for m in complete)
    if not complete or n_gt == 0:
        return None
    scores: list[float] = []
    is_tp: list[bool] = []
    for m in complete:
        for s, o in zip(m.scores, m.outcomes, strict=True):
            if o != "ignored":
                scores.append(s)
                is_tp.append(o == "tp")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(is_tp, dtype=bool)[order]
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(~tp)
    ranks = np.arange(1, len(tp) + 1)
    rec = tp_cum / n_gt
    prec = tp_cum / np.maximum(ranks, 1)
    assert np.all(fp_cum + tp_cum == ranks)
    sorted_scores = np.asarray(scores, dtype=np.float64)[order]
    return PRCurve(
        recall=tuple(float(v) for v in rec),
        precision=tuple(float(v) for v in prec),
        scores=tuple(float(v) for v in sorted_scores),
    )


def ap(matches: Sequence[ImageMatch]) -> float | None:
    """AP of one matching (``None`` where precision is undefined, see ``pr_curve``)."""
    curve = pr_curve(matches)
    if curve is None:
        return None
    return average_precision(curve.recall, curve.precision)


def _size_bins(heights: Sequence[float], found: Sequence[bool]) -> tuple[SizeBin, ...]:
    bins = []
    edges = [*SIZE_BINS, None]
    for lo, hi in itertools.pairwise(edges):
        assert lo is not None
        idx = [i for i, h in enumerate(heights) if h >= lo and (hi is None or h < hi)]
        bins.append(SizeBin(lo=lo, hi=hi, boxes=len(idx), found=sum(1 for i in idx if found[i])))
    return tuple(bins)


def _complete_counts(m50: Sequence[ImageMatch], threshold: float) -> tuple[int, int, int]:
    """Images with complete labels, and their true and false positives at ``threshold``.

    Precision is only defined on those: elsewhere an unlabelled object
    would count as a false positive.
    """
    complete = [m for m in m50 if m.labels_complete]

    def count(outcome: Outcome) -> int:
        return sum(
            1
            for m in complete
            for s, o in zip(m.scores, m.outcomes, strict=True)
            if o == outcome and s >= threshold
        )

    return len(complete), count("tp"), count("fp")


def _average_precisions(
    by_t: dict[float, list[ImageMatch]],
) -> tuple[float | None, float | None]:
    """AP at IoU 0.5, and COCO's AP 0.5:0.95 (the mean, when every threshold's AP is defined)."""
    aps = [ap(by_t[t]) for t in IOU_THRESHOLDS]
    defined = [a for a in aps if a is not None]
    return aps[0], float(np.mean(defined)) if len(defined) == len(aps) else None


def class_metrics(
    images: Sequence[LabelledImage],
    detections: Sequence[Sequence[Detection]],
    cls: ObjectClass,
    threshold: float,
) -> ClassMetrics:
    """Box metrics of ``cls`` over a set.

    ``detections[i]`` are image ``i``'s detections, found at a score floor
    at or below ``threshold`` (the lower the floor, the fuller the PR curve
    and the AP; the operating point only uses scores >= ``threshold``).
    """
    if len(images) != len(detections):
        raise ValueError("one detection list per image is needed")
    by_t = {
        t: [match_image(im, d, cls, t) for im, d in zip(images, detections, strict=True)]
        for t in IOU_THRESHOLDS
    }
    m50 = by_t[0.5]
    heights = [h for m in m50 for h in m.gt_heights]
    found = [s is not None and s >= threshold for m in m50 for s in m.gt_hit_score]
    n_gt = len(heights)
    tp = sum(found)
    n_complete, tp_complete, fp_complete = _complete_counts(m50, threshold)
    small = [f for h, f in zip(heights, found, strict=True) if h < SMALL_HEIGHT]
    precision: float | None = None
    if n_complete and tp_complete + fp_complete > 0:
        precision = tp_complete / (tp_complete + fp_complete)
    ap50, ap50_95 = _average_precisions(by_t)
    recall = tp / n_gt if n_gt else None
    return ClassMetrics(
        cls=cls,
        threshold=threshold,
        images=len(images),
        images_complete=n_complete,
        boxes=n_gt,
        ignored_boxes=sum(len(im.of_class(cls, ignore=True)) for im in images),
        small_boxes=len(small),
        true_positives=tp,
        false_positives=fp_complete if n_complete else None,
        false_negatives=n_gt - tp,
        detections=sum(1 for m in m50 for s in m.scores if s >= threshold),
        recall=recall,
        precision=precision,
        fnr=None if recall is None else 1.0 - recall,
        small_recall=(sum(small) / len(small)) if small else None,
        ap50=ap50,
        ap50_95=ap50_95,
        by_size=_size_bins(heights, found),
        pr_curve=pr_curve(m50),
    )
