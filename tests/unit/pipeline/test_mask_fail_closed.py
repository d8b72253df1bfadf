"""A face box the detector returns with a non-finite coordinate fails the job
(``detector_failed``), image or video: never an output with that face unmasked.

The detector is a stand-in (plumbing only): the point is what the pipeline
does with what it gets back, through the real decode, mask and encode.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from redactd.core.config import default_config
from redactd.core.errors import PermanentInputError
from redactd.core.types import Box, Detection
from redactd.pipeline.process import Pipeline
from tests.helpers.synthvideo import write_clip


class _NaNDetectors:
    """Detectors that find one sound face and one with a NaN corner."""

    def find(self, image: np.ndarray, profile: object, floor: float | None = None) -> list:
        h, w = image.shape[:2]
        return [
            Detection("face", Box(10, 10, 40, 40), 0.9, "stub"),
            Detection("face", Box(w / 2, h / 2, float("nan"), h / 2 + 30), 0.9, "stub"),
        ]

    def close(self) -> None:
        pass


def test_a_non_finite_face_box_fails_an_image_job(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    rng = np.random.default_rng(1)
    cv2.imwrite(str(src), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    p = Pipeline(default_config(tmp_path), _NaNDetectors())  # type: ignore[arg-type]
    dst = tmp_path / "out.png"
    with pytest.raises(PermanentInputError) as ei:
        p.process(src, dst, "default")
    assert ei.value.reason == "detector_failed"
    assert not dst.exists()


def test_a_non_finite_face_box_fails_a_video_job(tmp_path: Path) -> None:
    src = tmp_path / "a.mp4"
    write_clip(src, frames=12, audio=None)
    p = Pipeline(default_config(tmp_path), _NaNDetectors())  # type: ignore[arg-type]
    dst = tmp_path / "out.mp4"
    with pytest.raises(PermanentInputError) as ei:
        p.process(src, dst, "default")
    assert ei.value.reason == "detector_failed"
    assert not dst.exists()
