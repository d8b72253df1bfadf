"""Mask stability of a video: are tracks masked in every frame of their lifetime?

Input: for every labelled, counted (not ignore) track-frame, whether the
output masked it by the strict pixel rule of ``redactd.evaluation.pixels``
(``BoxChange.strictly_masked``). Definitions (docs/EVAL.md):

* a track's **lifetime** runs from its first to its last labelled frame;
  its counted frames in there are its *track-frames*;
* **track-frames masked**: masked track-frames / track-frames (over all
  tracks of a class);
* **stable tracks**: share of tracks none of whose track-frames is unmasked;
* a **flicker event** is a masked track-frame followed, at the track's next
  counted frame, by an unmasked one (the mask drops out); **flicker per
  minute** divides their count by the video's duration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from redactd.core.types import ObjectClass


@dataclass(frozen=True)
class TrackFrame:
    frame: int
    track: int
    cls: ObjectClass
    masked: bool


@dataclass(frozen=True)
class TrackStability:
    """One track: its class, lifetime and a "1"/"0" string per counted frame."""

    track: int
    cls: ObjectClass
    first: int
    last: int
    frames: int
    masked: int
    flicker_events: int
    pattern: str

    @property
    def stable(self) -> bool:
        return self.masked == self.frames


@dataclass(frozen=True)
class StabilitySummary:
    """Stability of one class over one video (or a set: tracks pooled, minutes summed)."""

    cls: ObjectClass
    tracks: int
    stable_tracks: int
    track_frames: int
    masked_track_frames: int
    flicker_events: int
    minutes: float

    @property
    def masked_share(self) -> float | None:
        return self.masked_track_frames / self.track_frames if self.track_frames else None

    @property
    def stable_share(self) -> float | None:
        return self.stable_tracks / self.tracks if self.tracks else None

    @property
    def flicker_per_minute(self) -> float | None:
        return self.flicker_events / self.minutes if self.minutes > 0 else None


def tracks(frames: Iterable[TrackFrame]) -> list[TrackStability]:
    """Per (class, track id): its lifetime, masked frames and flicker events."""
    by: dict[tuple[str, int], list[TrackFrame]] = {}
    for f in frames:
        by.setdefault((f.cls, f.track), []).append(f)
    out = []
    for (_cls, tid), fs in sorted(by.items()):
        fs.sort(key=lambda f: f.frame)
        flags = [f.masked for f in fs]
        events = sum(1 for a, b in pairwise(flags) if a and not b)
        out.append(
            TrackStability(
                track=tid,
                cls=fs[0].cls,
                first=fs[0].frame,
                last=fs[-1].frame,
                frames=len(fs),
                masked=sum(flags),
                flicker_events=events,
                pattern="".join("1" if m else "0" for m in flags),
            )
        )
    return out


def summarise(
    per_track: Sequence[TrackStability], cls: ObjectClass, minutes: float
) -> StabilitySummary:
    ts = [t for t in per_track if t.cls == cls]
    return StabilitySummary(
        cls=cls,
        tracks=len(ts),
        stable_tracks=sum(1 for t in ts if t.stable),
        track_frames=sum(t.frames for t in ts),
        masked_track_frames=sum(t.masked for t in ts),
        flicker_events=sum(t.flicker_events for t in ts),
        minutes=minutes,
    )


def pool(summaries: Sequence[StabilitySummary], cls: ObjectClass) -> StabilitySummary:
    """A set's summary of ``cls``: every video's tracks and minutes added up."""
    ss = [s for s in summaries if s.cls == cls]
    return StabilitySummary(
        cls=cls,
        tracks=sum(s.tracks for s in ss),
        stable_tracks=sum(s.stable_tracks for s in ss),
        track_frames=sum(s.track_frames for s in ss),
        masked_track_frames=sum(s.masked_track_frames for s in ss),
        flicker_events=sum(s.flicker_events for s in ss),
        minutes=sum(s.minutes for s in ss),
    )
