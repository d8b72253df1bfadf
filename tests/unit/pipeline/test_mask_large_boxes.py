"""A large face box needs a higher score (``ClassConfig.large_box`` /
``large_threshold``, one step below ``medium_box`` / ``medium_threshold``):
a big low-score false face on a car costs a big mask.

Images: ``Pipeline.detect_frame`` drops such a box (stand-in detector,
plumbing only). Video: the tracker treats it as a low-score box, so it never
starts a track but still continues a confirmed one (fail closed for a real
face that turns away).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from redactd.core.config import ClassConfig, Profile, TrackConfig, default_config
from redactd.core.types import Box, Detection
from redactd.pipeline.process import Pipeline
from redactd.stages.track import MultiTracker

W, H = 640, 480


def test_the_default_face_rule() -> None:
    cc = Profile().face
    # 0.05 x 480 = 24 px, 0.08 x 480 = 38.4 px
    small, medium, large = Box(0, 0, 20, 20), Box(0, 0, 30, 30), Box(0, 0, 60, 60)
    assert cc.threshold_for(small, W, H) == cc.threshold == 0.1
    assert cc.threshold_for(medium, W, H) == 0.15
    assert cc.threshold_for(large, W, H) == 0.25
    assert Profile().plate.threshold_for(Box(0, 0, 600, 400), W, H) == Profile().plate.threshold


class _Stub:
    def __init__(self, dets: list[Detection]) -> None:
        self.dets = dets

    def find(self, image: np.ndarray, profile: object, floor: float | None = None) -> list:
        return [d for d in self.dets if d.score >= (0.1 if floor is None else floor)]

    def close(self) -> None:
        pass


def test_images_drop_a_large_low_score_box_only(tmp_path: Path) -> None:
    small_low = Detection("face", Box(10, 10, 40, 40), 0.15, "stub")
    large_low = Detection("face", Box(100, 100, 400, 400), 0.15, "stub")
    large_high = Detection("face", Box(300, 50, 500, 300), 0.35, "stub")
    p = Pipeline(default_config(tmp_path), _Stub([small_low, large_low, large_high]))  # type: ignore[arg-type]
    got = p.detect_frame(np.zeros((H, W, 3), np.uint8), Profile())
    assert got == [small_low, large_high]
    # video (a floor): everything down to the floor goes to the tracker
    assert len(p.detect_frame(np.zeros((H, W, 3), np.uint8), Profile(), 0.1)) == 3


def _tracker() -> MultiTracker:
    cc = ClassConfig(threshold=0.5, large_box=0.1, large_threshold=0.8)
    return MultiTracker(TrackConfig(low_threshold=0.1), {"face": 0.5}, W, H, classes={"face": cc})


def test_a_large_low_score_box_starts_no_track() -> None:
    tr = _tracker()
    big = Detection("face", Box(100, 100, 300, 300), 0.6, "d")  # above 0.5, below 0.8
    for f in range(4):
        step = tr.step(f, [big])
        assert step.current == () and step.assigned == ()
    assert tr.started() == {"face": 0}


def test_a_confirmed_track_still_takes_its_large_low_score_box() -> None:
    tr = _tracker()
    for f in range(3):  # confirmed on a confident box
        tr.step(f, [Detection("face", Box(100 + f, 100, 300 + f, 300), 0.9, "d")])
    step = tr.step(3, [Detection("face", Box(103, 100, 303, 300), 0.3, "d")])
    assert any(d.score == 0.3 for d in step.current)
