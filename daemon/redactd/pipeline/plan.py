"""What one job will do, decided once, and the mask plan both stage orders share.

``JobPlan`` is made once per job (``make_plan``): the profile resolved with
the job's instructions, the media type sniffed, the output's name. The image
and the video stage orders (``pipeline.image``, ``pipeline.video``) and the
job runner (``pipeline.job``) take it as it is: nothing below re-resolves
the profile or sniffs the file again. The helpers below are the part of
"what to mask" that images and videos have in common.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from redactd.core.config import Config, MaskConfig, Profile
from redactd.core.types import CLASSES, Box, Detection
from redactd.stages.instructions import policy as instr_mod
from redactd.stages.instructions.model import Instructions, PixelRegion
from redactd.stages.mask import MaskRegion
from redactd.stages.media.sniff import MediaType, sniff

#: ``progress(frames_done, frames_total_or_None)``; called from the caller's
#: thread after each frame is handed to the encoder. It may raise to abort
#: the job (the output is removed and the exception propagates).
ProgressFn = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class JobPlan:
    """One job's decisions, made before anything is written.

    ``profile`` already carries the instructions' overrides; ``media`` is
    what the file's bytes say it is; ``output_name`` the name its result gets.
    """

    profile_name: str
    profile: Profile
    instructions: Instructions
    media: MediaType
    output_name: str


def make_plan(
    cfg: Config,
    src: Path,
    name: str,
    profile_name: str,
    instructions: Instructions | None = None,
) -> JobPlan:
    """Resolve the profile with ``instructions`` and sniff ``src``, once.

    Raises ``ConfigError`` (unknown profile), ``PermanentInputError``
    (``instruction_not_allowed``, ``unsupported_type``, ...) or
    ``TransientError`` (unreadable for now) before any output exists.
    """
    instr = instructions if instructions is not None else Instructions.EMPTY
    profile = instr_mod.resolve(instr, cfg.profile(profile_name))
    media = sniff(src)
    return JobPlan(profile_name, profile, instr, media, output_name(media, name))


def output_name(media: MediaType, name: str) -> str:
    """The name the result of a file of type ``media`` called ``name`` gets:
    ``name``, unless the video stage writes another container (WebM ->
    ``.mkv``; AVI, TS, raw streams -> ``.mp4``). Images keep name and format."""
    if media.kind != "video":
        return name
    p = Path(name)
    suffix = output_suffix(media, p.suffix)
    return name if suffix == p.suffix else p.stem + suffix


def output_suffix(media: MediaType, src_suffix: str) -> str:
    """The suffix the output file gets for an input of type ``media``.

    MP4, MOV and Matroska keep the input's suffix (``src_suffix``, with its
    dot, may be empty); WebM becomes ``.mkv`` (WebM cannot carry H.264);
    AVI, MPEG-TS/PS, FLV, raw H.264/HEVC streams and Dahua DAV become ``.mp4``.
    """
    # Imported here: it loads PyAV, which a run on photos never needs.
    from redactd.stages.media import video

    return video.output_format(media.format, src_suffix)[1]


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
        MaskRegion(box=d.box, mask=profile.of(d.cls).mask, protect=protect) for d in detections
    )


def extra_mask_region(pr: PixelRegion) -> MaskRegion:
    """An instruction's extra mask region: its own method, no padding, exactly
    its box or polygon (upright pixels)."""
    cfg = MaskConfig(method=pr.region.method, shape="box", padding=0.0)
    return MaskRegion(box=pr.box, mask=cfg, polygon=pr.polygon)


def count_by_class(detections: Iterable[Detection]) -> dict[str, int]:
    """Detections per class, every class present (0 when none)."""
    counts: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for d in detections:
        counts[d.cls] = counts.get(d.cls, 0) + 1
    return counts
