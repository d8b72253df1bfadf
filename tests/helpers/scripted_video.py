"""Videos whose faces a scripted detector finds (red squares on backgrounds),
for proving that every frame is judged."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from redactd.core.types import Box, Detection

#: The scripted videos' frame size.
W, H = 320, 240


def background(i: int, moving: bool = False) -> np.ndarray:
    """A textured, still (or slowly panning) picture without red."""
    yy, xx = np.mgrid[0:H, 0:W]
    shift = i * 2 if moving else 0
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = ((xx + shift) * 200 // W) % 256
    img[..., 1] = (yy * 200 // H + 30) % 256
    img[..., 2] = (((xx + shift) // 20 + yy // 20) % 2) * 60 + 40
    return img


def write_video(path: Path, pictures: list[np.ndarray], fps: int) -> None:
    """H.264 at near-lossless quality, one picture per frame."""
    with av.open(str(path), "w") as oc:
        vs = oc.add_stream("libx264", rate=fps)
        vs.width, vs.height = W, H
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = Fraction(1, fps)
        vs.codec_context.options = {"crf": "10", "preset": "veryfast"}
        for i, pic in enumerate(pictures):
            vf = av.VideoFrame.from_ndarray(pic, format="bgr24").reformat(format="yuv420p")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for p in vs.encode(vf):
                oc.mux(p)
        for p in vs.encode(None):
            oc.mux(p)


class RedFaceDetector:
    """Finds a face wherever the red square is; records what it was shown."""

    def __init__(self) -> None:
        self.calls = 0
        self.faces_seen = 0

    def find(self, image: np.ndarray, profile: object, floor: float | None = None) -> list:
        self.calls += 1
        b = red_box(image)
        if b is None:
            return []
        self.faces_seen += 1
        return [Detection("face", b, 0.95, "red")]

    def describe(self) -> list:
        return []

    def close(self) -> None:
        pass


def red_box(img: np.ndarray) -> Box | None:
    """The bounding box of the saturated red pixels (the drawn 'face')."""
    b, g, r = (img[..., c].astype(np.int16) for c in range(3))
    ys, xs = np.nonzero((r > 180) & (g < 90) & (b < 90))
    if len(xs) < 20:
        return None
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
