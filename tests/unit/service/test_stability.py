"""The pure stability tracker: when is an inbound file complete?"""

from __future__ import annotations

from redactd.service.stability import FileState, StabilityTracker

A = FileState(size=100, mtime_ns=1, ino=7)
B = FileState(size=200, mtime_ns=2, ino=7)


def test_first_sighting_is_due_at_once_and_not_ready() -> None:
    t = StabilityTracker(settle_seconds=2.0)
    t.event("f", now=0.0)
    assert t.due(0.0) == ["f"]
    assert t.observe("f", A, now=0.0) is False


def test_ready_after_settle_with_unchanged_state() -> None:
    t = StabilityTracker(settle_seconds=2.0)
    assert t.observe("f", A, now=0.0) is False
    assert t.due(1.9) == []
    assert t.due(2.0) == ["f"]
    assert t.observe("f", A, now=2.0) is True


def test_growing_file_is_not_ready_until_it_stops_growing() -> None:
    t = StabilityTracker(settle_seconds=2.0)
    t.observe("f", A, now=0.0)
    assert t.observe("f", B, now=2.0) is False  # grew: the quiet period restarts
    assert t.due(3.9) == []
    assert t.observe("f", B, now=4.0) is True


def test_an_event_restarts_the_quiet_period() -> None:
    t = StabilityTracker(settle_seconds=2.0)
    t.observe("f", A, now=0.0)
    t.event("f", now=1.5, kind="write")
    t.event("f", now=1.6, kind="close")
    assert t.observe("f", A, now=2.0) is False
    assert t.due(3.4) == []
    assert t.due(3.5) == ["f"]  # quiet since the write; the close only ended the open
    assert t.observe("f", A, now=3.5) is True


def test_open_for_writing_holds_the_file_back_until_closed() -> None:
    t = StabilityTracker(settle_seconds=1.0, open_grace_seconds=100.0)
    t.event("f", now=0.0, kind="open")
    t.observe("f", A, now=0.0)
    # Same size for a long time, but the writer still holds it open.
    assert t.observe("f", A, now=5.0) is False
    assert t.observe("f", A, now=50.0) is False
    t.event("f", now=60.0, kind="close")
    assert t.observe("f", A, now=61.0) is True


def test_a_write_without_a_seen_open_counts_as_open() -> None:
    t = StabilityTracker(settle_seconds=1.0, open_grace_seconds=100.0)
    t.observe("f", A, now=0.0)
    t.event("f", now=0.5, kind="write")  # opened before we started watching
    assert t.observe("f", A, now=10.0) is False
    t.event("f", now=11.0, kind="close")
    assert t.observe("f", A, now=12.0) is True


def test_a_lost_close_event_stops_holding_after_the_grace_period() -> None:
    t = StabilityTracker(settle_seconds=1.0, open_grace_seconds=30.0)
    t.event("f", now=0.0, kind="open")
    t.observe("f", A, now=0.0)
    assert t.observe("f", A, now=29.0) is False
    assert t.due(29.9) == []
    assert t.due(30.0) == ["f"]
    assert t.observe("f", A, now=30.0) is True


def test_readers_closing_never_make_the_count_negative() -> None:
    t = StabilityTracker(settle_seconds=1.0, open_grace_seconds=100.0)
    t.observe("f", A, now=0.0)
    t.event("f", now=0.1, kind="close")
    t.event("f", now=0.2, kind="close")
    t.event("f", now=0.3, kind="open")  # a writer opens after two stray closes
    assert t.observe("f", A, now=5.0) is False


def test_zero_settle_takes_the_first_quiet_look() -> None:
    t = StabilityTracker(settle_seconds=0.0)
    assert t.observe("f", A, now=0.0) is True


def test_forget_drops_the_key_and_its_schedule() -> None:
    t = StabilityTracker(settle_seconds=1.0)
    t.observe("f", A, now=0.0)
    assert "f" in t
    t.forget("f")
    assert "f" not in t
    assert len(t) == 0
    assert t.due(10.0) == []


def test_due_is_cheap_with_ten_thousand_waiting_files() -> None:
    t = StabilityTracker(settle_seconds=5.0)
    for i in range(10_000):
        t.observe(f"f{i}", A, now=float(i % 100) / 100.0)
    assert t.due(4.0) == []  # nothing is due yet: no per-file work
    due = t.due(6.0)
    assert len(due) == 10_000
    assert len(set(due)) == 10_000
    assert all(t.observe(k, A, now=6.0) for k in due)


def test_readers_opening_and_closing_do_not_restart_the_quiet_period() -> None:
    t = StabilityTracker(settle_seconds=2.0)
    t.observe("f", A, now=0.0)
    t.event("f", now=1.5, kind="open")  # a thumbnailer, or our own probe
    t.event("f", now=1.6, kind="close")
    assert t.observe("f", A, now=2.0) is True
