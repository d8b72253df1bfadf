"""The processing order for one input: the only place that knows the stage list.

``sniff -> probe limits -> decode -> detect -> mask -> encode`` for images;
videos are routed to the video stage once it is installed. The steps live in
their stage modules (``media``, ``detect``, ``mask``); this module holds the
order, the fail-closed rules between them and the counts and timings.

It knows nothing of folders, queues or systemd: the service (and the CLI)
hand it a claimed source file and a not-yet-existing destination path.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from redactd.core.config import Config, Profile
from redactd.core.errors import ModelError, PermanentInputError, RedactdError
from redactd.core.types import CLASSES, Box, Detection, JobResult, StageTimings
from redactd.pipeline import video as pipeline_video
from redactd.stages import instructions as instr_mod
from redactd.stages.detect import registry
from redactd.stages.instructions import Instructions
from redactd.stages.mask import MaskRegion, apply_masks
from redactd.stages.media import image as image_io
from redactd.stages.media.sniff import MediaType, sniff


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


@dataclass(frozen=True)
class FrameResult:
    """Detections found in one frame and the regions that were masked."""

    detections: tuple[Detection, ...]
    regions: tuple[MaskRegion, ...]


def mask_plan(
    detections: Iterable[Detection], profile: Profile, protect: tuple[Box, ...] = ()
) -> tuple[MaskRegion, ...]:
    """Turn detections into mask regions with each class's mask settings.

    ``protect``: areas (kept people) their padding leaves alone; each
    detection's own box is masked regardless (``mask.MaskRegion``).
    """
    return tuple(
        MaskRegion(box=d.box, mask=profile.of(d.cls).mask, protect=protect)
        for d in detections
    )


def count_by_class(detections: Iterable[Detection]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for d in detections:
        counts[d.cls] = counts.get(d.cls, 0) + 1
    return counts


class Pipeline:
    """Anonymizes single files with loaded detectors. Thread-safe: the daemon's
    workers and ``process --jobs`` run several jobs on one instance at once
    (every job's state is local; ``Network.infer`` pools its requests)."""

    def __init__(self, cfg: Config, detectors: registry.Detectors) -> None:
        self.cfg = cfg
        self.detectors = detectors

    @classmethod
    def load(
        cls, cfg: Config, profiles: Iterable[str] | None = None, concurrency: int = 1
    ) -> Pipeline:
        """Load every detector the given profiles (default: all watched ones) use;
        ``concurrency``: how many jobs will run on this pipeline at once.

        Raises ``ModelError`` when a model is missing or fails verification.
        """
        names = set(profiles) if profiles is not None else {w.profile for w in cfg.watch}
        names = names or {"default"}
        for n in names:
            cfg.profile(n)  # ConfigError for an unknown profile name
        return cls(cfg, registry.load(cfg, sorted(names), concurrency))

    def describe(self) -> list[registry.ModelInfo]:
        return self.detectors.describe()

    def close(self) -> None:
        self.detectors.close()

    # ------------------------------------------------------------------ stages

    def detect_frame(
        self, bgr: np.ndarray, profile: Profile, floor: float | None = None
    ) -> list[Detection]:
        """Run every enabled detector of the profile; any failure is fail-closed.

        Without ``floor`` the class thresholds apply, a large box's own among
        them (``ClassConfig.threshold_for``); with it (video) the tracker
        applies them, so a track can still take a large low-score box."""
        try:
            found = self.detectors.find(bgr, profile, floor)
            if floor is not None:
                return found
            h, w = bgr.shape[:2]
            return [
                d for d in found if d.score >= profile.of(d.cls).threshold_for(d.box, w, h)
            ]
        except (RedactdError, MemoryError):
            raise
        except Exception as e:
            # Inference failed on this input: never deliver it unmasked.
            raise PermanentInputError("detector_failed", type(e).__name__, stage="detect") from e

    def mask_frame(
        self,
        bgr: np.ndarray,
        detections: list[Detection],
        profile: Profile,
        protect: tuple[Box, ...] = (),
        extra: tuple[MaskRegion, ...] = (),
    ) -> FrameResult:
        """Mask ``detections`` (their padding kept out of ``protect``) and the
        ``extra`` regions of the instructions, in place."""
        regions = mask_plan(detections, profile, protect) + extra
        apply_masks(bgr, regions)
        return FrameResult(tuple(detections), regions)

    # ------------------------------------------------------------------ entry points

    def process(
        self,
        src: Path,
        dst: Path,
        profile: str,
        progress: pipeline_video.ProgressFn | None = None,
        instructions: Instructions | None = None,
    ) -> JobResult:
        """Anonymize ``src`` into the new file ``dst`` (same format).

        ``dst`` MUST NOT exist; it is created exclusively, written and fsynced.
        On any error ``dst`` is removed and the error propagates:
        ``PermanentInputError`` (quarantine), ``TransientError`` (retry),
        ``ModelError`` (stop the service).
        Videos: ``progress(frames_done, frames_total_or_None)`` is called per
        frame; the output container may differ from the input's
        (``pipeline_video.output_suffix`` names the suffix to give ``dst``).
        ``instructions`` (a sidecar's or the command line's; ``None`` = none)
        add mask regions, keep people unmasked and override the profile
        within what the profile allows: ``instruction_not_allowed`` /
        ``invalid_sidecar`` otherwise (before anything is written).
        """
        instr = instructions if instructions is not None else Instructions.EMPTY
        prof = instr_mod.resolve(instr, self.cfg.profile(profile))
        # Remove only what this call created: an existing dst is never touched.
        existed = dst.exists() or dst.is_symlink()
        try:
            media = sniff(src)
            if media.kind == "image":
                return self._process_image(src, dst, prof, media, instr)
            return self._process_video(src, dst, prof, media, progress, instr)
        except BaseException:
            if not existed:
                with contextlib.suppress(FileNotFoundError):
                    dst.unlink()
            raise

    def output_name(self, src: Path, name: str) -> str:
        """The name the result of ``src`` gets: ``name``, unless the video stage
        writes another container (WebM -> .mkv; AVI, TS, raw streams -> .mp4).

        Images keep their name (and format). An input that cannot be sniffed
        keeps its name too; processing it will fail with its reason.
        """
        try:
            media = sniff(src)
        except RedactdError:
            return name
        if media.kind != "video":
            return name
        p = Path(name)
        suffix = pipeline_video.output_suffix(media, p.suffix)
        return name if suffix == p.suffix else p.stem + suffix

    def _process_image(
        self, src: Path, dst: Path, prof: Profile, media: MediaType, instr: Instructions
    ) -> JobResult:
        limits = self.cfg.limits
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
            ph, pw = page.bgr.shape[:2]
            # Placed per page (pages may differ in size); a region wholly
            # outside the picture fails here, before any work.
            extra = tuple(
                pipeline_video.extra_mask_region(instr_mod.to_pixels(r, pw, ph))
                for r in instr.mask
            )
            share = prof.instructions.keep_max_share
            keeps = [instr_mod.place_keep(r, pw, ph, share) for r in instr.keep]
            t1 = time.perf_counter()
            dets = self.detect_frame(page.bgr, prof)
            detect_ms += _ms(t1)
            t2 = time.perf_counter()
            split = instr_mod.split_kept(dets, keeps)
            canvas = np.array(page.bgr, copy=True)  # decoded pages stay read-only
            self.mask_frame(
                canvas, list(split.masked), prof, instr_mod.protected(split.kept), extra
            )
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
            media_type=media.format,
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

    def _process_video(
        self,
        src: Path,
        dst: Path,
        prof: Profile,
        media: MediaType,
        progress: pipeline_video.ProgressFn | None = None,
        instr: Instructions | None = None,
    ) -> JobResult:
        # decode -> detect -> track -> mask -> encode, streaming (pipeline_video).
        return pipeline_video.process_video(
            src,
            dst,
            media,
            prof,
            self.cfg.limits,
            lambda bgr, floor: self.detect_frame(bgr, prof, floor),
            progress,
            instr,
        )

    def detect_file(self, src: Path, profile: str) -> list[Detection]:
        """Detections on the first page of an image (for ``redactd detect``)."""
        prof = self.cfg.profile(profile)
        media = sniff(src)
        if media.kind != "image":
            raise PermanentInputError("unsupported_type", "detect takes images", "sniff")
        image_io.probe(src, self.cfg.limits)
        decoded = image_io.decode(src, self.cfg.limits)
        return self.detect_frame(decoded.pages[0].bgr, prof)


__all__ = ["FrameResult", "ModelError", "Pipeline", "count_by_class", "mask_plan"]
