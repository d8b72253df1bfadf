"""The reading half of the transcoder: open, probe, demux and decode (PyAV).

``VideoInput`` opens the input through one descriptor (``sniff.open_regular``),
picks the one video stream (covers and thumbnails dropped, a second camera or
an undecodable video stream refused), reads what the headers declare into a
``VideoInfo`` and checks it against the limits. ``frames`` yields every
picture as planar I420 and fails closed on decode errors, truncation and
unread data (the contract in ``media.video``). Audio packets met on the way
are handed to the writing half through ``audio_sink``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.error
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from redactd.core.config import LimitsConfig
from redactd.core.errors import PermanentInputError, RedactdError, TransientError
from redactd.stages.media.sniff import open_regular
from redactd.stages.media.truncation import declared_size_exceeds, tail_unread
from redactd.stages.media.video_frame import Frame, PictureFormat, VideoInfo

#: Demuxers named explicitly: their probes are weak (raw streams) or the
#: sniffed name differs from FFmpeg's.
_FORCED_DEMUXER = {"h264": "h264", "hevc": "hevc", "dav": "dhav"}

#: Pixel formats passed to the encoder as they are (8-bit 4:2:0 planar).
_I420 = frozenset({"yuv420p", "yuvj420p"})


def _input_error(e: BaseException, stage: str, reason: str = "corrupt") -> RedactdError:
    if isinstance(e, RedactdError):
        return e
    if isinstance(e, MemoryError):
        return TransientError("out_of_memory", stage)
    if isinstance(e, PermissionError):
        return PermanentInputError("unreadable", "permission denied", stage=stage)
    if isinstance(e, av.error.FFmpegError):
        return PermanentInputError(reason, type(e).__name__, stage=stage)
    if isinstance(e, OSError) and e.errno is not None:
        return TransientError("read_failed", errno.errorcode.get(e.errno, "I/O"))
    return PermanentInputError(reason, type(e).__name__, stage=stage)


def _fraction(x: Any) -> Fraction | None:
    if x is None:
        return None
    f = Fraction(x)
    return f if f > 0 else None


def check_limits(
    limits: LimitsConfig, w: int, h: int, frames: int | None, seconds: float | None, stage: str
) -> None:
    """Refuse a frame size, duration or frame count over ``limits``
    (``too_many_pixels``, ``too_long``)."""
    if w * h > limits.max_pixels:
        raise PermanentInputError("too_many_pixels", f"{w * h} pixels per frame", stage=stage)
    if seconds is not None and seconds > limits.max_video_seconds:
        raise PermanentInputError("too_long", f"{seconds:.0f} s", stage=stage)
    if frames is not None and frames > limits.max_frames:
        raise PermanentInputError("too_long", f"{frames} frames", stage=stage)


def _video_stream(container: Any) -> Any:
    """The one video stream to mask.

    Cover pictures and thumbnails are video streams too: they are dropped
    (never written, they may show faces). Two real video streams (two
    cameras) cannot go into one masked stream, and dropping one would lose it
    when the original is removed: refused.
    """
    still = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
    moving = [s for s in container.streams.video if not (s.disposition & still)]
    videos = [s for s in moving if s.codec_context is not None]
    if len(videos) < len(moving):
        # A video stream this FFmpeg cannot decode may be a second camera:
        # dropping it would lose it (or deliver it unmasked) once the
        # original is removed. Only a stream flagged as a still picture
        # (a cover, masked by never being written) is provably not one.
        raise PermanentInputError(
            "undecodable_stream",
            f"{len(moving) - len(videos)} of {len(moving)} video streams",
            stage="probe",
        )
    if not videos:
        raise PermanentInputError("unsupported_type", "no video stream", stage="probe")
    if len(videos) > 1:
        raise PermanentInputError("unsupported_type", f"{len(videos)} video streams", stage="probe")
    return videos[0]


def _picture_format(vf: Any) -> PictureFormat:
    """The stored format of the first decoded frame ``vf``."""
    sd = vf.side_data.get(SideDataType.DISPLAYMATRIX) if len(vf.side_data) else None
    raw = bytes(sd) if sd is not None else b""
    matrix = struct.unpack("=9i", raw) if len(raw) == 36 else None
    return PictureFormat(
        matrix=matrix,
        rotation=int(vf.rotation) if matrix is not None else 0,
        full_range=vf.format.name.startswith("yuvj") or int(vf.color_range or 0) == 2,
        color=(
            ("color_primaries", int(vf.color_primaries or 2)),
            ("color_trc", int(vf.color_trc or 2)),
            ("colorspace", int(vf.colorspace or 2)),
        ),
    )


@dataclass
class _Reading:
    """What ``frames`` has seen so far (packets, positions, timestamps)."""

    read_end: int = 0
    packets: int = 0
    leading: int = 0  # packets before the first key frame
    seen_key: bool = False
    decode_failed: bool = False
    first_pts: int | None = None
    last_pts: int | None = None


class VideoInput:
    """The input of one transcode: ``info`` after construction, then ``frames()``.

    ``audio_sink`` receives the packets of the kept audio streams
    (``audio_streams``; none when ``keep_audio`` is off) as they are demuxed.
    Construction raises (and releases everything) when the input cannot be
    opened or breaks a limit.
    """

    def __init__(
        self,
        src: Path,
        media_format: str,
        keep_audio: bool,
        limits: LimitsConfig,
        audio_sink: deque[Any],
    ) -> None:
        self.limits = limits
        self.audio_sink = audio_sink
        self.file: BinaryIO | None = open_regular(src)
        self.container: Any = None
        self.picture = PictureFormat()
        self._first: Frame | None = None
        self.frames_decoded = 0
        self.timestamps_fixed = 0
        self.skipped_leading = 0
        try:
            self._open(media_format, keep_audio)
        except BaseException:
            self.close()
            raise

    def _open(self, media_format: str, keep_audio: bool) -> None:
        assert self.file is not None
        self._size = os.fstat(self.file.fileno()).st_size
        if declared_size_exceeds(self.file, media_format, self._size):
            raise PermanentInputError("truncated", "the container ends early", stage="probe")
        forced = _FORCED_DEMUXER.get(media_format)
        try:
            self.container = av.open(self.file, mode="r", format=forced)
        except Exception as e:
            raise _input_error(e, "probe") from e
        # Containers with a frame count are checked by it; elsewhere an unread
        # tail means lost frames, unless attachments (fonts, covers) fill it.
        self._check_tail = media_format not in ("mp4", "mov", "avi") and not any(
            st.type == "attachment" for st in self.container.streams
        )
        self.video_stream = _video_stream(self.container)
        with contextlib.suppress(Exception):  # some decoders refuse threading options
            self.video_stream.codec_context.thread_type = "AUTO"
        self.audio_streams: list[Any] = []
        if keep_audio:
            self.audio_streams = [
                s for s in self.container.streams.audio if s.codec_context is not None
            ]
        self.time_base: Fraction = _fraction(self.video_stream.time_base) or Fraction(1, 90000)
        vs = self.video_stream
        self.rate: Fraction | None = _fraction(vs.average_rate) or _fraction(vs.guessed_rate)
        self.info = self._read_info()
        check_limits(
            self.limits,
            self.info.width,
            self.info.height,
            self.info.frames,
            self.info.duration,
            stage="probe",
        )

    def _read_info(self) -> VideoInfo:
        vs, cc = self.video_stream, self.video_stream.codec_context
        dur = None
        if vs.duration:
            dur = float(vs.duration * self.time_base)
        elif self.container.duration:
            dur = self.container.duration / 1_000_000
        return VideoInfo(
            container=str(self.container.format.name),
            codec=str(cc.name),
            width=int(cc.width or 0),
            height=int(cc.height or 0),
            frames=int(vs.frames or 0) or None,
            duration=dur,
            fps=float(self.rate) if self.rate else None,
            audio_streams=len(self.audio_streams),
            dropped_streams=len(self.container.streams) - 1 - len(self.audio_streams),
        )

    # -- reading -------------------------------------------------------------

    def frames(self) -> Iterator[Frame]:
        """Every decoded picture, in presentation order. See ``media.video``."""
        seen = _Reading()
        step = self._pts_step()
        for pkt in self._video_packets(seen):
            yield from self._decode(pkt, seen, step)
        self._check_complete(seen)

    def _video_packets(self, seen: _Reading) -> Iterator[Any]:
        """The video packets in demux order; audio ones go to ``audio_sink``.

        Every stream is read (dropped ones too) so that the position of the
        last packet shows whether the demuxer gave up before the file's end.
        """
        audio = {a.index for a in self.audio_streams}
        demux = self.container.demux(*list(self.container.streams))
        while True:
            try:
                pkt = next(demux)
            except StopIteration:
                break
            except Exception as e:
                raise self._read_error(e, seen.packets) from e
            if pkt.pos is not None and pkt.pos >= 0:
                seen.read_end = max(seen.read_end, pkt.pos + pkt.size)
            if pkt.stream is not self.video_stream:
                if pkt.size and pkt.stream.index in audio:
                    self.audio_sink.append(pkt)
                continue
            if pkt.size:
                seen.packets += 1
                if pkt.is_keyframe:
                    seen.seen_key = True
                elif not seen.seen_key:
                    seen.leading += 1
            yield pkt

    def _decode(self, pkt: Any, seen: _Reading, step: int) -> Iterator[Frame]:
        try:
            decoded = self.video_stream.decode(pkt)
        except av.error.FFmpegError:
            # Before the first key frame (a stream cut mid-GOP, e.g. an NVR
            # or TS recording): those pictures cannot be shown by anyone and
            # are not delivered. After it: remember and keep reading; a cut
            # file shows as a short read too, which decides between
            # "truncated" and "corrupt" below.
            if seen.seen_key:
                seen.decode_failed = True
            return
        except Exception as e:
            raise _input_error(e, "decode") from e
        for vf in decoded:
            frame = self._frame(vf, step, seen.last_pts)
            if seen.first_pts is None:
                seen.first_pts = frame.pts
            seen.last_pts = frame.pts
            check_limits(
                self.limits,
                frame.width,
                frame.height,
                self.frames_decoded,
                (frame.pts - seen.first_pts) * float(self.time_base),
                stage="decode",
            )
            yield frame

    def _check_complete(self, seen: _Reading) -> None:
        """Fail closed at the end of the input: frames declared but missing,
        a failed decode, an unread tail, packets that gave no picture."""
        declared = self.info.frames
        packets = seen.packets
        if declared is not None and packets < declared:
            raise PermanentInputError(
                "truncated", f"{packets} of {declared} frames present", stage="decode"
            )
        if seen.decode_failed:
            raise PermanentInputError("corrupt", "a frame could not be decoded", stage="decode")
        if self._check_tail and tail_unread(self._size, seen.read_end):
            # The demuxer stopped long before the end (garbage it could not
            # resync past): the frames in there were never decoded.
            raise PermanentInputError(
                "unprocessed_frames", "data after the last readable frame", stage="decode"
            )
        if self.frames_decoded < packets - seen.leading:
            raise PermanentInputError(
                "unprocessed_frames",
                f"{packets - self.frames_decoded} of {packets} frames not decodable",
                stage="decode",
            )
        if self.frames_decoded == 0:
            raise PermanentInputError("corrupt", "no decodable frame", stage="decode")
        self.skipped_leading = max(0, packets - self.frames_decoded)

    def _read_error(self, e: BaseException, packets: int) -> RedactdError:
        declared = self.info.frames
        if isinstance(e, av.error.EOFError) or (declared is not None and packets < declared):
            return _input_error(e, "demux", "truncated")
        return _input_error(e, "demux")

    def _pts_step(self) -> int:
        """Timestamp ticks of one frame (for inputs whose frames carry none)."""
        rate = self.rate or Fraction(25)
        return max(1, round(1 / (rate * self.time_base)))

    def _frame(self, vf: Any, step: int, last_pts: int | None) -> Frame:
        pts = vf.pts
        if pts is None or (last_pts is not None and pts <= last_pts):
            # Missing or non-increasing timestamps (broken muxers, raw streams):
            # the encoder and muxer need strictly increasing ones.
            pts = (last_pts + step) if last_pts is not None else 0
            self.timestamps_fixed += 1
        if self._first is None:
            self.picture = _picture_format(vf)
            w, h = int(vf.width), int(vf.height)
        else:
            w, h = self._first.width, self._first.height
        if vf.format.name not in _I420 or vf.width != w or vf.height != h:
            # Other pixel formats become 8-bit 4:2:0; a mid-stream size change is
            # scaled to the first size (one output stream has one size).
            vf = vf.reformat(width=w, height=h, format=self.picture.pix_fmt)
        if w % 2 or h % 2:
            raise PermanentInputError("unsupported_type", "odd frame size", stage="decode")
        yuv = vf.to_ndarray()
        frame = Frame(
            index=self.frames_decoded,
            pts=int(pts),
            time=float(pts * self.time_base),
            width=w,
            height=h,
            rotation=self.picture.rotation,
            yuv=np.ascontiguousarray(yuv),
        )
        if self._first is None:
            self._first = frame
        self.frames_decoded += 1
        return frame

    def close(self) -> None:
        """Release the container and the descriptor (idempotent)."""
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
            self.container = None
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None
