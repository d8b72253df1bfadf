"""The stage order of one image: probe limits -> decode -> place the
instructions' regions -> detect -> split kept -> mask -> encode.

Pages (multi-page TIFF) are handled one by one; every page is judged by every
enabled detector (``DetectFn`` raises on failure, so nothing is encoded then).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from redactd.core.config import LimitsConfig
from redactd.core.types import Box, Detection, JobResult, StageTimings
from redactd.pipeline.plan import FrameResult, JobPlan, count_by_class, extra_mask_region
from redactd.stages.instructions import place as instr_mod
from redactd.stages.instructions.model import PixelRegion
from redactd.stages.mask import MaskRegion
from redactd.stages.media import image as image_io

#: ``detect(upright_bgr)``: every enabled detector of the job's profile on one
#: picture, at the class thresholds. MUST raise on failure.
DetectImage = Callable[[np.ndarray], list[Detection]]

#: ``mask(bgr, detections, protect, extra)``: masks in place.
MaskImage = Callable[
    [np.ndarray, list[Detection], tuple[Box, ...], tuple[MaskRegion, ...]], FrameResult
]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _directions(
    plan: JobPlan, bgr: np.ndarray
) -> tuple[tuple[MaskRegion, ...], list[PixelRegion]]:
    """The instructions' extra mask regions and keep regions placed on one page.

    Placed per page (pages may differ in size); a region wholly outside the
    picture fails here, before any work."""
    ph, pw = bgr.shape[:2]
    instr = plan.instructions
    extra = tuple(extra_mask_region(instr_mod.to_pixels(r, pw, ph)) for r in instr.mask)
    share = plan.profile.instructions.keep_max_share
    return extra, [instr_mod.place_keep(r, pw, ph, share) for r in instr.keep]


def process_image(
    src: Path,
    dst: Path,
    plan: JobPlan,
    limits: LimitsConfig,
    detect: DetectImage,
    mask: MaskImage,
) -> JobResult:
    """Anonymize the image ``src`` into the new file ``dst`` (same format)."""
    prof, instr = plan.profile, plan.instructions
    t0 = time.perf_counter()
    width, height, _pages = image_io.probe(src, limits)
    decoded = image_io.decode(src, limits)
    decode_ms = _ms(t0)

    detect_ms = mask_ms = 0.0
    all_dets: list[Detection] = []
    all_kept: list[Detection] = []
    matched: set[int] = set()
    out_pages: list[np.ndarray] = []
    for page in decoded.pages:
        extra, keeps = _directions(plan, page.bgr)
        t1 = time.perf_counter()
        dets = detect(page.bgr)
        detect_ms += _ms(t1)
        t2 = time.perf_counter()
        split = instr_mod.split_kept(dets, keeps)
        canvas = np.array(page.bgr, copy=True)  # decoded pages stay read-only
        mask(canvas, list(split.masked), instr_mod.protected(split.kept), extra)
        mask_ms += _ms(t2)
        all_dets.extend(dets)
        all_kept.extend(split.kept)
        matched |= split.matched
        out_pages.append(canvas)

    t3 = time.perf_counter()
    out_bytes = image_io.encode(decoded, out_pages, dst, prof.output)
    encode_ms = _ms(t3)
    detected = count_by_class(all_dets)
    kept = count_by_class(all_kept)
    return JobResult(
        kind="image",
        media_type=plan.media.format,
        counts=detected,
        frames=len(out_pages),
        width=width,
        height=height,
        input_bytes=src.stat().st_size,
        output_bytes=out_bytes,
        timings=StageTimings(
            decode_ms=decode_ms, detect_ms=detect_ms, mask_ms=mask_ms, encode_ms=encode_ms
        ),
        detected=detected,
        tracked=dict(detected),
        masked={c: detected[c] - kept.get(c, 0) for c in detected},
        kept=kept,
        extra_regions=len(instr.mask),
        keep_unmatched=len(instr.keep) - len(matched),
    )
