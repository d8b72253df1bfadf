"""The loaded detectors and the fail-closed rules of one file's processing.

``Pipeline.run`` takes a planned job (``pipeline.plan.JobPlan``: profile
resolved, media sniffed) and routes it to the image or the video stage order
(``pipeline.image``, ``pipeline.video``); ``detect_frame`` and
``mask_frame`` are the two steps both orders call, with the rule that an
error in a detector never lets a frame through unjudged.

It knows nothing of folders, queues or systemd: the service (and the CLI)
hand it a claimed source file and a not-yet-existing destination path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from redactd.core.config import Config, Profile
from redactd.core.errors import ModelError, PermanentInputError, RedactdError
from redactd.core.types import Box, Detection, JobResult
from redactd.pipeline import video as pipeline_video
from redactd.pipeline.image import process_image
from redactd.pipeline.plan import (
    FrameResult,
    JobPlan,
    ProgressFn,
    make_plan,
    mask_plan,
)
from redactd.stages.detect import registry
from redactd.stages.instructions.model import Instructions
from redactd.stages.mask import MaskRegion, apply_masks
from redactd.stages.media import image as image_io
from redactd.stages.media.sniff import sniff


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

    def run(
        self, src: Path, dst: Path, plan: JobPlan, progress: ProgressFn | None = None
    ) -> JobResult:
        """Anonymize ``src`` into the new file ``dst`` as ``plan`` says.

        ``dst`` MUST NOT exist; it is created exclusively, written and fsynced.
        On any error ``dst`` is removed and the error propagates:
        ``PermanentInputError`` (quarantine), ``TransientError`` (retry),
        ``ModelError`` (stop the service).
        Videos: ``progress(frames_done, frames_total_or_None)`` is called per
        frame; ``dst`` is named by ``plan.output_name``'s suffix (the output
        container may differ from the input's).
        """
        # Remove only what this call created: an existing dst is never touched.
        existed = dst.exists() or dst.is_symlink()
        prof = plan.profile
        try:
            if plan.media.kind == "image":
                return process_image(
                    src,
                    dst,
                    plan,
                    self.cfg.limits,
                    lambda bgr: self.detect_frame(bgr, prof),
                    lambda bgr, dets, protect, extra: self.mask_frame(
                        bgr, dets, prof, protect, extra
                    ),
                )
            # decode -> detect -> track -> mask -> encode, streaming.
            return pipeline_video.process_video(
                src,
                dst,
                plan.media,
                prof,
                self.cfg.limits,
                lambda bgr, floor: self.detect_frame(bgr, prof, floor),
                progress,
                plan.instructions,
            )
        except BaseException:
            if not existed:
                with contextlib.suppress(FileNotFoundError):
                    dst.unlink()
            raise

    def process(
        self,
        src: Path,
        dst: Path,
        profile: str,
        progress: ProgressFn | None = None,
        instructions: Instructions | None = None,
    ) -> JobResult:
        """Plan and run in one call (evaluation, benchmarks, tests): the
        instructions (a sidecar's or the command line's) add mask regions, keep
        people unmasked and override the profile within what it allows
        (``instruction_not_allowed`` / ``invalid_sidecar`` otherwise, before
        anything is written). Jobs of the CLI and the daemon go through
        ``pipeline.job`` instead, which also records them."""
        # The plan raises before anything is written: nothing to clean up here.
        plan = make_plan(self.cfg, src, dst.name, profile, instructions)
        return self.run(src, dst, plan, progress)

    def detect_file(self, src: Path, profile: str) -> list[Detection]:
        """Detections on the first page of an image (for ``redactd detect``)."""
        prof = self.cfg.profile(profile)
        media = sniff(src)
        if media.kind != "image":
            raise PermanentInputError("unsupported_type", "detect takes images", "sniff")
        image_io.probe(src, self.cfg.limits)
        decoded = image_io.decode(src, self.cfg.limits)
        return self.detect_frame(decoded.pages[0].bgr, prof)


__all__ = ["FrameResult", "ModelError", "Pipeline"]
