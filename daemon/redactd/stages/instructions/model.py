"""The values of per-file instructions: regions as written, profile overrides,
and regions placed on a picture.

Frozen dataclasses passed between the parser (``parse``), the profile check
(``policy``), placement (``place``) and the pipeline; kept apart so each of
those reads one small vocabulary without pulling in the others' rules.
``invalid_sidecar`` builds the error every part raises for a bad document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from redactd.core.config import MaskMethod
from redactd.core.errors import PermanentInputError
from redactd.core.types import CLASSES, Box, Detection, ObjectClass

#: Slack for comparing frame times with the seconds of a sidecar (float
#: timestamps of a frame exactly at a boundary).
TIME_EPS = 1e-3

Units = Literal["px", "rel"]
Shape = Literal["box", "polygon"]
Point = tuple[float, float]


def invalid_sidecar(detail: str) -> PermanentInputError:
    """``PermanentInputError("invalid_sidecar", detail)``: ``detail`` names the
    field and the rule, never a string value of the file."""
    return PermanentInputError("invalid_sidecar", detail, stage="sidecar")


@dataclass(frozen=True)
class Region:
    """One region of a ``mask`` or ``keep`` list, as written (not yet in pixels).

    ``ref`` names it in messages (``"mask[0]"``, ``"--keep[1]"``).
    ``points``: ``((x1, y1), (x2, y2))`` for a box, the vertices of a polygon.
    ``units``: ``px`` (upright pixels) or ``rel`` (fractions of width/height).
    Mask regions: ``frames`` (``[first, end)``, ``end`` ``None`` = to the end)
    or ``times`` (seconds from the first frame, same rule), neither = every
    frame; ``follow`` moves the region with the picture content from the
    first frame of its range; ``method`` masks it. Keep regions: ``classes``
    it keeps; ``seed_frame`` or ``seed_time`` (neither = frame 0). Ranges,
    seeds and ``follow`` matter for video only.
    """

    ref: str
    shape: Shape
    points: tuple[Point, ...]
    units: Units = "px"
    classes: tuple[ObjectClass, ...] = ("face",)
    frames: tuple[int, int | None] | None = None
    times: tuple[float, float | None] | None = None
    follow: bool = False
    method: MaskMethod = "solid"
    seed_frame: int | None = None
    seed_time: float | None = None

    def in_range(self, index: int, seconds: float) -> bool:
        """Does the mask range cover frame ``index`` shown at ``seconds`` from the first?"""
        if self.frames is not None:
            a, b = self.frames
            return index >= a and (b is None or index < b)
        if self.times is not None:
            t0, t1 = self.times
            return seconds >= t0 - TIME_EPS and (t1 is None or seconds < t1 - TIME_EPS)
        return True

    def seed_reached(self, index: int, seconds: float) -> bool:
        """Is frame ``index`` at or after this keep region's seed?"""
        if self.seed_frame is not None:
            return index >= self.seed_frame
        if self.seed_time is not None:
            return seconds >= self.seed_time - TIME_EPS
        return True


@dataclass(frozen=True)
class ClassOverride:
    """Overrides of one class: ``None`` = as the profile says."""

    enabled: bool | None = None
    mask_method: MaskMethod | None = None

    @property
    def is_empty(self) -> bool:
        return self.enabled is None and self.mask_method is None


@dataclass(frozen=True)
class Overrides:
    """Profile overrides per class (``"profile"`` in a sidecar)."""

    face: ClassOverride = field(default_factory=ClassOverride)
    plate: ClassOverride = field(default_factory=ClassOverride)

    def get(self, cls: str) -> ClassOverride:
        if cls not in ("face", "plate"):
            raise KeyError(cls)
        return self.face if cls == "face" else self.plate

    @property
    def is_empty(self) -> bool:
        return self.face.is_empty and self.plate.is_empty


@dataclass(frozen=True)
class Instructions:
    """Everything the instructions for one file say."""

    mask: tuple[Region, ...] = ()
    keep: tuple[Region, ...] = ()
    overrides: Overrides = field(default_factory=Overrides)

    EMPTY: ClassVar[Instructions]

    @classmethod
    def empty(cls) -> Instructions:
        return cls.EMPTY

    @property
    def is_empty(self) -> bool:
        return not self.mask and not self.keep and self.overrides.is_empty

    def merged(self, other: Instructions) -> Instructions:
        """Both sets of regions; overrides combined (the same key set to two
        different values raises ``invalid_sidecar``)."""
        per_class: dict[str, ClassOverride] = {}
        for cls in CLASSES:
            a, b = self.overrides.get(cls), other.overrides.get(cls)
            enabled = _same(a.enabled, b.enabled, f"profile.{cls}.enabled")
            method = _same(a.mask_method, b.mask_method, f"profile.{cls}.mask.method")
            per_class[cls] = ClassOverride(enabled, method)
        return Instructions(
            self.mask + other.mask,
            self.keep + other.keep,
            Overrides(face=per_class["face"], plate=per_class["plate"]),
        )


Instructions.EMPTY = Instructions()


def _same(a: Any, b: Any, key: str) -> Any:
    if a is not None and b is not None and a != b:
        raise invalid_sidecar(f"{key}: given twice with different values")
    return a if a is not None else b


@dataclass(frozen=True)
class PixelRegion:
    """A region placed on one picture: upright pixels.

    ``box`` is the bounding box clipped to the picture (never empty);
    ``polygon`` the vertices (not clipped) for a polygon region, else ``None``.
    """

    region: Region
    box: Box
    polygon: tuple[Point, ...] | None = None

    def shifted(self, dx: float, dy: float, width: int, height: int) -> PixelRegion:
        """Moved by ``(dx, dy)`` (a followed region); ``box`` clipped again,
        possibly to an empty box once the region has left the picture."""
        poly = None
        if self.polygon is not None:
            poly = tuple((x + dx, y + dy) for x, y in self.polygon)
        return PixelRegion(self.region, self.box.shifted(dx, dy).clip(width, height), poly)


@dataclass(frozen=True)
class KeepSplit:
    """Detections of one picture split by the keep regions: ``matched`` holds
    the indices (into the keep list) of the regions that kept something."""

    masked: tuple[Detection, ...]
    kept: tuple[Detection, ...]
    matched: frozenset[int]
