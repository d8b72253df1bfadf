"""Frozen data classes passed between stages.

Everything that crosses a stage boundary is one of these, never a dict or a
bare tuple, so a reader can see what each stage consumes and produces.
Coordinates are pixels in the *upright* image (after EXIF orientation), as
floats, x to the right and y down, ``x2``/``y2`` exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ObjectClass = Literal["face", "plate"]
CLASSES: tuple[ObjectClass, ...] = ("face", "plate")


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box ``[x1, x2) x [y1, y2)`` in pixels."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> Box:
        return cls(x, y, x + w, y + h)

    def iou(self, other: Box) -> float:
        ix = min(self.x2, other.x2) - max(self.x1, other.x1)
        iy = min(self.y2, other.y2) - max(self.y1, other.y1)
        if ix <= 0 or iy <= 0:
            return 0.0
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def clip(self, width: int, height: int) -> Box:
        return Box(
            min(max(self.x1, 0.0), float(width)),
            min(max(self.y1, 0.0), float(height)),
            min(max(self.x2, 0.0), float(width)),
            min(max(self.y2, 0.0), float(height)),
        )

    def pad(self, rel: float) -> Box:
        """Grow each side by ``rel`` times the box's own width/height."""
        dx, dy = self.width * rel, self.height * rel
        return Box(self.x1 - dx, self.y1 - dy, self.x2 + dx, self.y2 + dy)

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy)

    def int_bounds(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel bounds covering the box (rounded outwards), clipped."""
        import math

        return (
            max(0, math.floor(self.x1)),
            max(0, math.floor(self.y1)),
            min(width, math.ceil(self.x2)),
            min(height, math.ceil(self.y2)),
        )


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found by a detector (or carried by the tracker)."""

    cls: ObjectClass
    box: Box
    score: float
    detector: str = ""
    track_id: int | None = None


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Milliseconds spent per stage for one job (summed over frames)."""

    decode_ms: float = 0.0
    detect_ms: float = 0.0
    track_ms: float = 0.0
    mask_ms: float = 0.0
    encode_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class JobResult:
    """What the pipeline did to one input. Counts and sizes only: no names."""

    kind: Literal["image", "video"]
    media_type: str
    counts: dict[str, int] = field(default_factory=dict)
    frames: int = 1
    width: int = 0
    height: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    timings: StageTimings = field(default_factory=StageTimings)
    #: Per class: detector hits at or above the class threshold, summed over
    #: detector frames; tracks started (video; images: = detected); objects
    #: masked (images: detections, video: tracks) and kept unmasked by a
    #: ``keep`` instruction (masked + kept = tracked).
    detected: dict[str, int] = field(default_factory=dict)
    tracked: dict[str, int] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    #: Extra ``mask`` regions of the instructions that were applied, and
    #: ``keep`` regions (video: seeds) that matched no detection.
    extra_regions: int = 0
    keep_unmatched: int = 0

    def log_fields(self) -> dict[str, str | int | float]:
        """The fields of a ``job.done`` event: counts, sizes, timings; no names.

        Per-class counts appear as ``faces_detected``, ``faces_tracked``,
        ``faces_masked``, ``faces_kept`` (and ``plates_*``).
        """
        t = self.timings
        per_class: dict[str, str | int | float] = {}
        for cls, plural in (("face", "faces"), ("plate", "plates")):
            for name, counts in (
                ("detected", self.detected),
                ("tracked", self.tracked),
                ("masked", self.masked),
                ("kept", self.kept),
            ):
                per_class[f"{plural}_{name}"] = counts.get(cls, 0)
        return {
            "kind": self.kind,
            "media_type": self.media_type,
            "faces": self.counts.get("face", 0),
            "plates": self.counts.get("plate", 0),
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "decode_ms": round(t.decode_ms, 1),
            "detect_ms": round(t.detect_ms, 1),
            "mask_ms": round(t.mask_ms, 1),
            "encode_ms": round(t.encode_ms, 1),
            **per_class,
            "extra_regions": self.extra_regions,
            "keep_unmatched": self.keep_unmatched,
        }
