"""Mask stability from per-track verdicts, and validation-record verdicts (no models needed)."""

from __future__ import annotations

from redactd.evaluation import stability
from redactd.evaluation.stability import TrackFrame
from redactd.models import validation


def _frames(track: int, pattern: str, start: int = 0) -> list[TrackFrame]:
    return [TrackFrame(start + i, track, "face", c == "1") for i, c in enumerate(pattern)]


def test_flicker_events_count_mask_dropouts_and_stable_tracks_have_none() -> None:
    per = stability.tracks(
        _frames(1, "1111111111") + _frames(2, "1100011001", 5) + _frames(3, "0011111111")
    )
    by = {t.track: t for t in per}
    assert by[1].stable and by[1].flicker_events == 0
    assert by[2].flicker_events == 2 and by[2].masked == 5 and (by[2].first, by[2].last) == (5, 14)
    # a track first masked late is not stable, but it never lost its mask: no flicker
    assert not by[3].stable and by[3].flicker_events == 0
    s = stability.summarise(per, "face", minutes=0.5)
    assert (s.tracks, s.stable_tracks, s.track_frames, s.masked_track_frames) == (3, 1, 30, 23)
    assert s.flicker_per_minute == 4.0
    assert stability.pool([s, s], "face").flicker_per_minute == 4.0


def _record(digest: str, passed: bool) -> dict:
    return {"schema_version": 1, "passed": passed,
            "candidate": {"models": [{"name": "m", "sha256": digest}]}}  # fmt: skip


def test_verdict_needs_a_passing_record_of_the_same_digest_and_a_valid_hmac() -> None:
    d, other = "a" * 64, "b" * 64
    assert validation.verdict("m", d, []).status == "missing"
    assert validation.verdict("m", d, [("x", _record(other, True))]).status == "missing"
    assert validation.verdict("m", d, [("x", _record(d, False))]).status == "failed"
    v = validation.verdict("m", d, [("x", _record(d, False)), ("y", _record(d, True))])
    assert v.passed and v.record == "y"
    signed = _record(d, True)
    signed["hmac"] = validation.sign(signed, b"k")
    assert validation.verdict("m", d, [("y", _record(d, True))], b"k").status == "unsigned"
    assert validation.verdict("m", d, [("s", signed)], b"k").passed
    assert validation.verdict("m", d, [("s", signed)], b"other").status == "unsigned"
    assert "no validation record" in validation.verdict("m", d, []).message()
