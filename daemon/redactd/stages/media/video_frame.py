"""The values of the video stage: decoded frames, what the headers say, how
the output is written, and the stored picture format of the input.

Numpy and OpenCV only (no PyAV): the pipeline reads and changes ``Frame``
objects, and the input and output halves of the transcoder
(``video_input``, ``video_output``) pass these values between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What the headers say about an input (before any frame is decoded).

    ``frames`` and ``duration`` are ``None`` when the container does not
    declare them (raw streams, MPEG-TS, some Matroska files).
    """

    container: str
    codec: str
    width: int
    height: int
    frames: int | None
    duration: float | None
    fps: float | None
    audio_streams: int
    dropped_streams: int


@dataclass(frozen=True)
class EncodeSettings:
    """How the output is written."""

    muxer: str = "mp4"
    crf: int = 20
    preset: str = "veryfast"
    keep_audio: bool = True
    strip_metadata: bool = True
    threads: int = 0  # 0: libx264 picks


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded picture as planar I420: ``yuv`` is ``(height * 3 / 2, width)`` uint8.

    ``pts`` is the presentation timestamp in the input stream's time base,
    ``time`` the same in seconds. ``rotation`` is the display matrix's
    counter-clockwise rotation in degrees (the picture must be turned by it to
    be upright). ``yuv`` is this frame's own buffer: callers may change it in
    place (masking) before handing the frame to ``Transcoder.write``.
    """

    index: int
    pts: int
    time: float
    width: int
    height: int
    rotation: int
    yuv: np.ndarray

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y, U and V planes of ``yuv``."""
        w, h = self.width, self.height
        flat = self.yuv.reshape(-1)
        y = flat[: w * h].reshape(h, w)
        cw, ch = w // 2, h // 2
        u = flat[w * h : w * h + cw * ch].reshape(ch, cw)
        v = flat[w * h + cw * ch : w * h + 2 * cw * ch].reshape(ch, cw)
        return y, u, v

    def bgr(self) -> np.ndarray:
        """The whole picture as a new BGR uint8 array (as stored, not rotated)."""
        return np.asarray(cv2.cvtColor(self.yuv, cv2.COLOR_YUV2BGR_I420))

    def region(self, x1: int, y1: int, x2: int, y2: int) -> Region:
        """A BGR copy of the rectangle ``[x1, x2) x [y1, y2)``, widened to even
        coordinates (4:2:0 chroma covers 2x2 pixels)."""
        x1, y1 = max(0, x1 - (x1 & 1)), max(0, y1 - (y1 & 1))
        x2, y2 = min(self.width, x2 + (x2 & 1)), min(self.height, y2 + (y2 & 1))
        y, u, v = self.planes()
        cy1, cy2, cx1, cx2 = y1 // 2, y2 // 2, x1 // 2, x2 // 2
        i420 = np.concatenate(
            [
                y[y1:y2, x1:x2].reshape(-1),
                u[cy1:cy2, cx1:cx2].reshape(-1),
                v[cy1:cy2, cx1:cx2].reshape(-1),
            ]
        ).reshape((y2 - y1) * 3 // 2, x2 - x1)
        return Region(x1, y1, np.asarray(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)))

    def paste(self, region: Region) -> None:
        """Write a (changed) ``Region`` back into the frame's planes."""
        h, w = region.bgr.shape[:2]
        if h == 0 or w == 0:
            return
        i420 = cv2.cvtColor(region.bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
        y, u, v = self.planes()
        x1, y1 = region.x, region.y
        cw, ch = w // 2, h // 2
        y[y1 : y1 + h, x1 : x1 + w] = i420[: w * h].reshape(h, w)
        u[y1 // 2 : y1 // 2 + ch, x1 // 2 : x1 // 2 + cw] = i420[w * h : w * h + cw * ch].reshape(
            ch, cw
        )
        v[y1 // 2 : y1 // 2 + ch, x1 // 2 : x1 // 2 + cw] = i420[w * h + cw * ch :].reshape(ch, cw)


@dataclass(frozen=True, eq=False)
class Region:
    """A BGR crop of a frame at ``(x, y)``; even position and size."""

    x: int
    y: int
    bgr: np.ndarray


@dataclass(frozen=True)
class PictureFormat:
    """How the input stores its pictures, from its first decoded frame; the
    output is encoded the same way.

    ``matrix``: the display matrix (rotation), ``None`` when absent;
    ``rotation``: its counter-clockwise degrees (0 without a matrix);
    ``full_range``: JPEG-range pictures, which stay full range (no contrast
    change); ``color``: primaries, transfer and colour space codes.
    """

    matrix: tuple[int, ...] | None = None
    rotation: int = 0
    full_range: bool = False
    color: tuple[tuple[str, int], ...] = ()

    @property
    def pix_fmt(self) -> str:
        """The 8-bit 4:2:0 pixel format frames are converted to and encoded in."""
        return "yuvj420p" if self.full_range else "yuv420p"
