"""The tracker only adds masks: bridging, look-back, hold, second association."""

from __future__ import annotations

import numpy as np

from redactd.core.config import TrackConfig
from redactd.core.types import Box, Detection
from redactd.stages.track import Backfill, KalmanBox, MultiTracker

W, H = 640, 360


def face(x: float, y: float, w: float = 40, h: float = 50, score: float = 0.9) -> Detection:
    return Detection("face", Box(x, y, x + w, y + h), score, "test")


def covers(boxes: list[Detection] | tuple[Detection, ...], target: Box, share: float = 0.9) -> bool:
    """The union of ``boxes`` covers at least ``share`` of ``target``'s area."""
    x1, y1, x2, y2 = target.int_bounds(W, H)
    m = np.zeros((H, W), bool)
    for d in boxes:
        bx1, by1, bx2, by2 = d.box.int_bounds(W, H)
        m[by1:by2, bx1:bx2] = True
    region = m[y1:y2, x1:x2]
    return region.size > 0 and float(region.mean()) >= share


def tracker(**kw: object) -> MultiTracker:
    return MultiTracker(TrackConfig(**kw), {"face": 0.5}, W, H)  # type: ignore[arg-type]


def test_raw_detections_always_pass_through() -> None:
    tr = tracker()
    for t in range(5):
        dets = [face(100 + 4 * t, 100), face(400, 200, score=0.51)]
        step = tr.step(t, dets)
        for d in dets:
            assert any(o.box == d.box for o in step.current), "a raw detection was dropped"


def test_tracking_off_classes_untracked_pass_through() -> None:
    tr = MultiTracker(TrackConfig(), {"face": 0.5}, W, H)
    plate = Detection("plate", Box(10, 10, 50, 30), 0.9, "p")
    step = tr.step(0, [plate])
    assert plate in step.current


def test_missed_frames_are_bridged_with_growing_boxes() -> None:
    tr = tracker(max_age=10, hold=0)
    vx = 5.0
    for t in range(8):
        tr.step(t, [face(100 + vx * t, 100)])
    areas = []
    for t in range(8, 14):  # detector misses 6 frames while the face keeps moving
        step = tr.step(t, [])
        truth = Box(100 + vx * t, 100, 140 + vx * t, 150)
        assert covers(step.current, truth), f"frame {t}: the moving face is not covered"
        areas.append(max(d.box.area for d in step.current))
    assert areas[-1] > areas[0], "predicted boxes must grow with their uncertainty"
    # detected again: the same track continues (no new track started)
    tr.step(14, [face(100 + vx * 14, 100)])
    assert tr.started()["face"] == 1


def test_mask_ends_after_max_age_or_hold() -> None:
    tr = tracker(max_age=3, hold=7)
    for t in range(5):
        tr.step(t, [face(200, 100)])
    masked = []
    for t in range(5, 20):
        masked.append(bool(tr.step(t, []).current))
    assert masked[:7] == [True] * 7, "held for max(max_age, hold) frames"
    assert not any(masked[7:]), "and no longer"


def test_low_score_detection_continues_confirmed_track_only() -> None:
    tr = MultiTracker(TrackConfig(low_threshold=0.1), {"face": 0.5}, W, H)
    for t in range(4):
        tr.step(t, [face(100, 100)])
    low = face(102, 101, score=0.2)
    stray = face(400, 250, score=0.2)
    step = tr.step(4, [low, stray])
    assert any(d.box == low.box for d in step.current), "low detection on a track is masked"
    assert not any(d.box == stray.box for d in step.current), "a stray low detection is not"
    # A low detection never starts a track, and an unconfirmed (1 hit) track takes none.
    tr2 = MultiTracker(TrackConfig(max_age=0, hold=0), {"face": 0.5}, W, H)
    tr2.step(0, [face(300, 100)])
    step = tr2.step(1, [face(301, 100, score=0.2)])
    assert not any(d.score == 0.2 and d.box.x1 == 301 for d in step.current)


def test_lookback_reaches_frames_before_the_first_detection() -> None:
    tr = MultiTracker(TrackConfig(lookback=5), {"face": 0.5}, W, H)
    for t in range(10):
        assert not tr.step(t, []).backfill
    step = tr.step(10, [face(300, 100)])
    frames = sorted({b.frame for b in step.backfill})
    assert frames == [5, 6, 7, 8, 9]
    for b in step.backfill:
        assert covers([b.detection], Box(300, 100, 340, 150)), "look-back box covers the face"


def test_lookback_follows_the_velocity_once_known() -> None:
    vx = 6.0
    tr = MultiTracker(TrackConfig(lookback=6), {"face": 0.5}, W, H)
    backfill: list[Backfill] = []
    for t in range(10, 14):
        step = tr.step(t, [face(200 + vx * t, 120)])
        backfill.extend(step.backfill)
    # The face was moving before it was first detected (frame 10): its true
    # position at frames 8 and 9 (still in a 6-frame buffer at frame 13).
    for f in (8, 9):
        truth = Box(200 + vx * f, 120, 240 + vx * f, 170)
        boxes = [b.detection for b in backfill if b.frame == f]
        assert covers(boxes, truth), f"frame {f} before birth not covered"


def test_lookback_never_before_the_video_start() -> None:
    tr = MultiTracker(TrackConfig(lookback=6), {"face": 0.5}, W, H)
    tr.step(0, [])
    step = tr.step(1, [face(100, 100)])
    assert {b.frame for b in step.backfill} == {0}


def test_frames_without_detector_get_predictions() -> None:
    """detect_every = k: the caller steps with None between detector frames."""
    tr = tracker()
    vx = 4.0
    for t in range(0, 30):
        dets = [face(100 + vx * t, 100)] if t % 3 == 0 else None
        step = tr.step(t, dets)
        truth = Box(100 + vx * t, 100, 140 + vx * t, 150)
        if t > 3:
            assert covers(step.current, truth), f"frame {t} not covered"


def test_classes_are_tracked_separately() -> None:
    tr = MultiTracker(TrackConfig(), {"face": 0.5, "plate": 0.5}, W, H)
    for t in range(3):
        tr.step(t, [face(100, 100)])
    plate = Detection("plate", Box(100, 100, 140, 150), 0.9, "p")
    tr.step(3, [plate])
    assert tr.started() == {"face": 1, "plate": 1}


def test_boxes_are_clipped_and_tracks_leaving_the_frame_end() -> None:
    tr = tracker(max_age=30, hold=30)
    for t in range(6):
        tr.step(t, [face(560 + 15 * t, 100)])
    for t in range(6, 30):
        for d in tr.step(t, []).current:
            assert 0 <= d.box.x1 <= d.box.x2 <= W and 0 <= d.box.y1 <= d.box.y2 <= H
    assert not tr.step(30, []).current, "a track that left the frame is dropped"


def test_kalman_learns_constant_velocity() -> None:
    kf = KalmanBox(Box(0, 0, 20, 20))
    for t in range(1, 20):
        kf.predict()
        kf.update(Box(3.0 * t, 2.0 * t, 3.0 * t + 20, 2.0 * t + 20))
    vx, vy, _vw, _vh = kf.velocity
    assert abs(vx - 3.0) < 0.3 and abs(vy - 2.0) < 0.3
    kf.predict()
    b = kf.box()
    assert abs(b.x1 - 60.0) < 2.0 and abs(b.y1 - 40.0) < 2.0


def _union_area(boxes: list[Box]) -> int:
    m = np.zeros((H, W), bool)
    for b in boxes:
        x1, y1, x2, y2 = b.int_bounds(W, H)
        m[y1:y2, x1:x2] = True
    return int(m.sum())


def test_a_steady_face_keeps_a_face_sized_mask_over_gaps() -> None:
    """Predictions, look-back and hold follow the face's size: over a clip
    detected every 2nd frame, with missed detections and a face that
    disappears, the mask of each frame (tracker boxes with the face mask's
    padding, united with the look-back boxes that reach that frame) stays
    within 2x of the mask the same face gets in a still image, and the
    tracker's own boxes within 2x the face box (before: up to 3x the box per
    side, 9x its area, padding on top). Every pixel of the face is still
    masked on every frame (fail closed)."""
    from redactd.core.config import MaskConfig
    from redactd.stages.mask import mask_area

    rng = np.random.default_rng(7)
    face_box = Box(300, 120, 360, 195)  # 60 x 75, seated
    tr = MultiTracker(TrackConfig(), {"face": 0.5}, W, H, lookback=6)
    per_frame: dict[int, list[Detection]] = {}
    missed = set(range(20, 31)) | {36, 44}  # a long gap and two short misses
    last = 60  # the face leaves after frame 59
    for t in range(last + 20):
        if t % 2 == 1:
            dets = None  # detect_every = 2
        elif t in missed or t >= last:
            dets = []
        else:
            j = rng.normal(0.0, 1.5, 4)  # detector jitter, pixels
            b = Box(face_box.x1 + j[0], face_box.y1 + j[1], face_box.x2 + j[2], face_box.y2 + j[3])
            dets = [Detection("face", b, 0.9, "test")]
        step = tr.step(t, dets)
        per_frame.setdefault(t, []).extend(step.current)
        for bf in step.backfill:
            per_frame.setdefault(bf.frame, []).append(bf.detection)
    mask = MaskConfig()
    still = _union_area([mask_area(face_box, mask, W, H)])
    for t in range(last):
        boxes = [d.box for d in per_frame.get(t, [])]
        assert _union_area(boxes) <= 2.0 * face_box.area, f"frame {t}: tracker boxes too large"
        areas = [mask_area(b, mask, W, H) for b in boxes]
        assert _union_area([*areas, face_box]) == _union_area(areas), f"frame {t}: face uncovered"
        masked = _union_area(areas)
        assert masked <= 2.0 * still, f"frame {t}: mask {masked / still:.2f}x the still mask"
