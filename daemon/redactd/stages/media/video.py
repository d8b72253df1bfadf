"""Video decode, H.264 encode and stream copy with PyAV (only ``video*`` modules import ``av``).

Contract of this module:

* The input is read through one descriptor opened by ``sniff.open_regular``
  (regular file, no symlink). Raw elementary streams and Dahua ``.dav`` are
  opened with their demuxer named explicitly (``h264``, ``hevc``, ``dhav``);
  everything else is probed by FFmpeg from content.
* ``Transcoder.frames()`` yields every decoded picture of the first video
  stream in presentation order as planar I420 (``yuv420p``) arrays, with its
  presentation timestamp in the stream's time base. Other pixel formats are
  converted to 8-bit 4:2:0 on the way (H.264 output is 8-bit 4:2:0 anyway).
* ``Transcoder.write()`` encodes one frame with libx264 (CRF + preset) at the
  SAME timestamp; the stream time base, frame size, colour tags and display
  matrix (rotation) of the input are kept, so frame count, timestamps
  (variable frame rate included) and duration match the input.
* Audio streams are copied packet by packet, unchanged, when the output
  container can carry their codec, otherwise re-encoded to AAC (e.g. G.711 of
  a ``.dav`` into MP4); ``keep_audio=False`` drops them. Subtitle, data and
  attachment streams (names, GPS tracks, cover pictures) and chapters are
  never written. Container and stream metadata are not copied unless
  ``strip_metadata`` is off; the muxer's own ``encoder`` tag is suppressed
  (``fflags=+bitexact``).
* Fail closed: a decode error, a demux error, or fewer pictures than the
  container declares (truncation) raises ``PermanentInputError``; frames the
  decoder skips before the first key frame (a stream cut mid-GOP) are the
  only ones allowed to be missing, since no player can show them either.
  Limits (``max_pixels`` per frame, ``max_video_seconds``, ``max_frames``)
  are checked from the headers at open and again while decoding.
* Only counts and sizes go into exception messages (no paths, no metadata).

FFmpeg's own log output stays off (PyAV's default), so no input detail
reaches stderr.

Parts: ``video_input`` (open, probe, limits, demux and decode),
``video_output`` (create, encode and mux), ``video_audio`` (audio copy or
re-encode), ``video_frame`` (the values: ``Frame``, ``VideoInfo``,
``EncodeSettings``), ``truncation`` (container size fields). ``Transcoder``
joins them; this module is what the pipeline and the evaluation import.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from redactd.core.config import LimitsConfig
from redactd.core.errors import PermanentInputError
from redactd.stages.media.video_frame import EncodeSettings, Frame, Region, VideoInfo
from redactd.stages.media.video_input import VideoInput
from redactd.stages.media.video_output import VideoOutput

#: Sniffed input format -> (FFmpeg muxer of the output, output suffix or None to
#: keep the input's). MP4, MOV and Matroska stay what they are; WebM cannot
#: carry H.264 and becomes Matroska (which keeps its Opus/Vorbis audio as is);
#: everything else (AVI, MPEG-TS/PS, FLV, raw streams, DAV) becomes MP4.
_OUTPUT: dict[str, tuple[str, str | None]] = {
    "mp4": ("mp4", None),
    "mov": ("mov", None),
    "mkv": ("matroska", None),
    "webm": ("matroska", ".mkv"),
}
_DEFAULT_OUTPUT: tuple[str, str] = ("mp4", ".mp4")


def output_format(media_format: str, src_suffix: str) -> tuple[str, str]:
    """The FFmpeg muxer and the file suffix of the output for a sniffed input format."""
    muxer, suffix = _OUTPUT.get(media_format, _DEFAULT_OUTPUT)
    return muxer, (src_suffix if suffix is None else suffix)


def capabilities() -> dict[str, bool]:
    """What this PyAV/FFmpeg build can do that matters here (for reports and tests)."""
    names = ("h264", "hevc", "mpeg4", "mjpeg", "vp8", "vp9", "av1")
    out = {f"decode_{n}": _has_codec(n, "r") for n in names}
    out["encode_libx264"] = _has_codec("libx264", "w")
    out["encode_aac"] = _has_codec("aac", "w")
    fmts = av.formats_available
    for name in ("mov", "mp4", "matroska", "avi", "mpegts", "mpeg", "flv", "h264", "hevc", "dhav"):
        out[f"demux_{name}"] = name in fmts or any(name in f.split(",") for f in fmts)
    return out


def _has_codec(name: str, mode: Literal["r", "w"]) -> bool:
    try:
        av.codec.Codec(name, mode)
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------- transcoder


class Transcoder:
    """Decode ``src`` and write the masked result to the new file ``dst``.

    Use as a context manager::

        with Transcoder(src, dst, "mp4", settings, limits) as tx:
            for frame in tx.frames():
                ...            # detect, mask frame.yuv in place
                tx.write(frame)
            size = tx.finish()

    ``dst`` MUST NOT exist; it is created exclusively (mode 0600) when the
    first frame is written. Leaving the context without ``finish()`` (an
    error) closes everything; the caller removes ``dst``.
    ``frames()`` may run in another thread than ``write()``/``finish()``
    (one thread each): audio packets read by ``frames()`` are handed over
    through a queue and written by the writing thread.
    """

    def __init__(
        self,
        src: Path,
        dst: Path,
        media_format: str,
        settings: EncodeSettings,
        limits: LimitsConfig,
    ) -> None:
        self.dst = dst
        self.settings = settings
        self.limits = limits
        self._pending: deque[Any] = deque()
        self._output = VideoOutput(dst, settings)
        self._input = VideoInput(src, media_format, settings.keep_audio, limits, self._pending)
        self.info: VideoInfo = self._input.info

    def frames(self) -> Iterator[Frame]:
        """Every decoded picture, in presentation order. See the module contract."""
        return self._input.frames()

    def write(self, frame: Frame) -> None:
        """Encode ``frame`` (its possibly masked ``yuv``) at its own timestamp."""
        if not self._output.is_open:
            self._output.open(frame, self._input)
        self._output.write(frame, self._pending)

    def finish(self) -> int:
        """Flush, write the trailer, fsync; the output's size in bytes.

        Raises ``PermanentInputError("encode_failed")`` when the encoder did not
        return exactly one packet per frame (no frame may be lost or doubled).
        """
        if not self._output.is_open:
            raise PermanentInputError("corrupt", "no decodable frame", stage="decode")
        return self._output.finish(self._pending)

    def close(self) -> None:
        """Release everything (idempotent). Does not remove ``dst``."""
        self._output.close()
        self._input.close()
        self._pending.clear()

    def __enter__(self) -> Transcoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters (tests, diagnostics) ---------------------------------------

    @property
    def created(self) -> bool:
        """True once ``dst`` was created by this transcoder."""
        return self._output.created

    @property
    def frames_written(self) -> int:
        return self._output.frames_written

    @property
    def packets_written(self) -> int:
        return self._output.packets_written

    @property
    def frames_decoded(self) -> int:
        return self._input.frames_decoded

    @property
    def timestamps_fixed(self) -> int:
        return self._input.timestamps_fixed

    @property
    def skipped_leading(self) -> int:
        return self._input.skipped_leading

    @property
    def audio_packets(self) -> int:
        return self._output.audio.packets if self._output.audio is not None else 0

    @property
    def audio_reencoded(self) -> int:
        return self._output.audio.reencoded if self._output.audio is not None else 0


def probe(src: Path, media_format: str, limits: LimitsConfig) -> VideoInfo:
    """Headers only: size, declared frames and duration, checked against ``limits``."""
    with Transcoder(src, Path(os.devnull), media_format, EncodeSettings(), limits) as tx:
        return tx.info


def rotate_upright(bgr: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored picture upright (counter-clockwise by ``rotation`` degrees,
    a multiple of 90; other angles are left as they are)."""
    k = _quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(bgr, k)) if k else bgr


def _quarter_turns(rotation: int) -> int:
    r = rotation % 360
    return r // 90 if r % 90 == 0 else 0


def box_to_stored(
    x1: float, y1: float, x2: float, y2: float, rotation: int, width: int, height: int
) -> tuple[float, float, float, float]:
    """Map a box from the upright picture back to the stored picture
    (``width`` x ``height`` are the STORED picture's size)."""
    k = _quarter_turns(rotation)
    if k == 1:  # upright = stored turned 90 ccw: upright (u, v) <- stored (W - v, u)
        return (width - y2, x1, width - y1, x2)
    if k == 2:
        return (width - x2, height - y2, width - x1, height - y1)
    if k == 3:  # upright = stored turned 270 ccw: upright (u, v) <- stored (v, H - u)
        return (y1, height - x2, y2, height - x1)
    return (x1, y1, x2, y2)


__all__ = [
    "EncodeSettings",
    "Frame",
    "Region",
    "Transcoder",
    "VideoInfo",
    "box_to_stored",
    "capabilities",
    "output_format",
    "probe",
    "rotate_upright",
]


def stored_frames_rgb(path: Path) -> Iterator[np.ndarray]:
    """Every frame of the first video stream as stored (no rotation applied), ``HxWx3`` RGB.

    For ``redactd eval``: labels of videos are in stored pixels, and input and
    output are compared frame by frame.
    """
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def average_fps(path: Path) -> float:
    """The first video stream's average frame rate (0.0 when the container does not say)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        return float(rate) if rate else 0.0


def encode_bgr_frames(
    path: Path, frames: Iterator[np.ndarray], fps: int, crf: int = 14, preset: str = "veryfast"
) -> int:
    """Write ``HxWx3`` BGR frames as an H.264 MP4 (yuv420p); returns the frame count.

    For generated evaluation clips (``redactd.evaluation.synthvideo``), not for
    job outputs (those go through ``Transcoder``).
    """
    n = 0
    with av.open(str(path), "w") as oc:
        vs: Any = None
        for pic in frames:
            if vs is None:
                vs = oc.add_stream("libx264", rate=fps)
                vs.height, vs.width = pic.shape[:2]
                vs.pix_fmt = "yuv420p"
                vs.codec_context.options = {"crf": str(crf), "preset": preset}
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(pic), format="bgr24")
            vf.pts = n
            vf.time_base = Fraction(1, fps)
            for pkt in vs.encode(vf):
                oc.mux(pkt)
            n += 1
        if vs is not None:
            for pkt in vs.encode(None):
                oc.mux(pkt)
    return n
