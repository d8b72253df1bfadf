"""Video decode, H.264 encode and stream copy with PyAV: the only module that imports ``av``.

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
from typing import Any, BinaryIO, Literal

import av
import av.error
import cv2
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from redactd.core.config import LimitsConfig
from redactd.core.errors import PermanentInputError, RedactdError, TransientError
from redactd.stages.media.sniff import open_regular

#: Demuxers named explicitly: their probes are weak (raw streams) or the
#: sniffed name differs from FFmpeg's.
_FORCED_DEMUXER = {"h264": "h264", "hevc": "hevc", "dav": "dhav"}

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

#: Pixel formats passed to the encoder as they are (8-bit 4:2:0 planar).
_I420 = frozenset({"yuv420p", "yuvj420p"})

#: Container-level metadata keys never copied even when metadata is kept.
_ALWAYS_DROP_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands"})


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


# --------------------------------------------------------------------------- data


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


# --------------------------------------------------------------------------- structure

#: Bytes after the last demuxed packet that an index may take (MP4 ``moov``
#: at the end, Matroska cues, AVI ``idx1``) before the tail counts as unread.
_TAIL_BYTES = 64 * 1024
_TAIL_SHARE = 0.05


def _declared_size_exceeds(f: BinaryIO, media_format: str, size: int) -> bool:
    """True when the container's own size fields say the file was cut.

    MP4/MOV: a top-level box reaching past the end. Matroska/WebM: the
    Segment's declared size (unless "unknown", as in live recordings). AVI:
    the RIFF size. Other formats declare nothing checkable here.
    """
    pos = f.tell()
    try:
        f.seek(0)
        if media_format in ("mp4", "mov"):
            return _boxes_exceed(f, size)
        head = f.read(64)
        if media_format in ("mkv", "webm"):
            return _ebml_segment_exceeds(f, size)
        if media_format == "avi" and len(head) >= 8:
            return 8 + int.from_bytes(head[4:8], "little") > size + 1  # +1: odd-size pad
        return False
    finally:
        f.seek(pos)


def _boxes_exceed(f: BinaryIO, size: int) -> bool:
    pos = 0
    while pos + 8 <= size:
        f.seek(pos)
        hdr = f.read(16)
        n = int.from_bytes(hdr[0:4], "big")
        if n == 1 and len(hdr) >= 16:
            n = int.from_bytes(hdr[8:16], "big")
        elif n == 0:  # "to the end of the file"
            return False
        if n < 8:
            return False  # not a box structure we understand: let FFmpeg judge
        pos += n
    return pos > size


def _vint(f: BinaryIO, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at the file position: (value, length)."""
    b = f.read(1)
    if not b:
        return None
    first = b[0]
    length, mask = 1, 0x80
    while length <= 8 and not first & mask:
        mask >>= 1
        length += 1
    if length > 8:
        return None
    rest = f.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = first if keep_marker else first & (mask - 1)
    for c in rest:
        value = (value << 8) | c
    return value, length


def _ebml_segment_exceeds(f: BinaryIO, size: int) -> bool:
    f.seek(0)
    hdr_id, hdr_len = _vint(f, True) or (0, 0)
    hdr_size = _vint(f, False)
    if hdr_id != 0x1A45DFA3 or hdr_size is None:
        return False
    f.seek(hdr_len + hdr_size[1] + hdr_size[0])
    seg = _vint(f, True)
    seg_size = _vint(f, False)
    if seg is None or seg_size is None or seg[0] != 0x18538067:
        return False
    value, length = seg_size
    if value == (1 << (7 * length)) - 1:  # unknown size: a live recording
        return False
    return f.tell() + value > size


# --------------------------------------------------------------------------- errors


def _output_error(e: OSError) -> RedactdError:
    code = errno.errorcode.get(e.errno or 0, "I/O error")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransientError("disk_full", code)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EBUSY, errno.EROFS, errno.ETXTBSY):
        return TransientError("output_unavailable", code)
    return TransientError("write_failed", code)


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


# --------------------------------------------------------------------------- transcoder


def _fraction(x: Any) -> Fraction | None:
    if x is None:
        return None
    f = Fraction(x)
    return f if f > 0 else None


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
        self._in_file: BinaryIO | None = open_regular(src)
        self._in: Any = None
        self._out: Any = None
        self._out_file: BinaryIO | None = None
        self._ovs: Any = None
        self._audio_out: dict[int, Any] = {}
        self._audio_coders: dict[int, _AudioReencoder] = {}
        self._pending: deque[Any] = deque()
        self._first: Frame | None = None
        self.created = False  # True once dst was created by this transcoder
        self._matrix: tuple[int, ...] | None = None
        self._rotation = 0
        self._color: dict[str, int] = {}
        self._full_range = False
        self._pix_fmt = "yuv420p"
        self.frames_written = 0
        self.packets_written = 0
        self.frames_decoded = 0
        self.timestamps_fixed = 0
        self.skipped_leading = 0
        self.audio_packets = 0
        self.audio_reencoded = 0
        try:
            self._open_input(media_format)
        except BaseException:
            self.close()
            raise

    # -- input ---------------------------------------------------------------

    def _open_input(self, media_format: str) -> None:
        assert self._in_file is not None
        self._size = os.fstat(self._in_file.fileno()).st_size
        if _declared_size_exceeds(self._in_file, media_format, self._size):
            raise PermanentInputError("truncated", "the container ends early", stage="probe")
        forced = _FORCED_DEMUXER.get(media_format)
        try:
            self._in = av.open(self._in_file, mode="r", format=forced)
        except Exception as e:
            raise _input_error(e, "probe") from e
        # Containers with a frame count are checked by it; elsewhere an unread
        # tail means lost frames, unless attachments (fonts, covers) fill it.
        self._check_tail = media_format not in ("mp4", "mov", "avi") and not any(
            st.type == "attachment" for st in self._in.streams
        )
        # Cover pictures and thumbnails are video streams too: they are dropped
        # (never written, they may show faces). Two real video streams (two
        # cameras) cannot go into one masked stream, and dropping one would
        # lose it when the original is removed: refused.
        still = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails
        moving = [s for s in self._in.streams.video if not (s.disposition & still)]
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
            raise PermanentInputError(
                "unsupported_type", f"{len(videos)} video streams", stage="probe"
            )
        self._vs = videos[0]
        cc = self._vs.codec_context
        with contextlib.suppress(Exception):  # some decoders refuse threading options
            cc.thread_type = "AUTO"
        if self.settings.keep_audio:
            self._audio_in = [s for s in self._in.streams.audio if s.codec_context is not None]
        else:
            self._audio_in = []
        tb = self._vs.time_base
        self._tb: Fraction = _fraction(tb) or Fraction(1, 90000)
        rate = _fraction(self._vs.average_rate) or _fraction(self._vs.guessed_rate)
        self._rate = rate
        dur = None
        if self._vs.duration:
            dur = float(self._vs.duration * self._tb)
        elif self._in.duration:
            dur = self._in.duration / 1_000_000
        declared = int(self._vs.frames or 0) or None
        self.info = VideoInfo(
            container=str(self._in.format.name),
            codec=str(cc.name),
            width=int(cc.width or 0),
            height=int(cc.height or 0),
            frames=declared,
            duration=dur,
            fps=float(rate) if rate else None,
            audio_streams=len(self._audio_in),
            dropped_streams=len(self._in.streams) - 1 - len(self._audio_in),
        )
        self._check_limits(self.info.width, self.info.height, declared, dur, stage="probe")

    def _check_limits(
        self, w: int, h: int, frames: int | None, seconds: float | None, stage: str
    ) -> None:
        if w * h > self.limits.max_pixels:
            raise PermanentInputError("too_many_pixels", f"{w * h} pixels per frame", stage=stage)
        if seconds is not None and seconds > self.limits.max_video_seconds:
            raise PermanentInputError("too_long", f"{seconds:.0f} s", stage=stage)
        if frames is not None and frames > self.limits.max_frames:
            raise PermanentInputError("too_long", f"{frames} frames", stage=stage)

    def frames(self) -> Iterator[Frame]:
        """Every decoded picture, in presentation order. See the module contract."""
        # Every stream is read (dropped ones too) so that the position of the
        # last packet shows whether the demuxer gave up before the file's end.
        streams = list(self._in.streams)
        audio = {a.index for a in self._audio_in}
        read_end = 0
        packets = 0
        leading = 0  # packets before the first key frame
        seen_key = False
        decode_failed = False
        first_pts: int | None = None
        last_pts: int | None = None
        step = self._pts_step()
        demux = self._in.demux(*streams)
        while True:
            try:
                pkt = next(demux)
            except StopIteration:
                break
            except Exception as e:
                raise self._read_error(e, packets) from e
            if pkt.pos is not None and pkt.pos >= 0:
                read_end = max(read_end, pkt.pos + pkt.size)
            if pkt.stream is not self._vs:
                if pkt.size and pkt.stream.index in audio:
                    self._pending.append(pkt)
                continue
            if pkt.size:
                packets += 1
                if pkt.is_keyframe:
                    seen_key = True
                elif not seen_key:
                    leading += 1
            try:
                decoded = self._vs.decode(pkt)
            except av.error.FFmpegError:
                # Before the first key frame (a stream cut mid-GOP, e.g. an NVR
                # or TS recording): those pictures cannot be shown by anyone and
                # are not delivered. After it: remember and keep reading; a cut
                # file shows as a short read too, which decides between
                # "truncated" and "corrupt" below.
                if seen_key:
                    decode_failed = True
                continue
            except Exception as e:
                raise _input_error(e, "decode") from e
            for vf in decoded:
                frame = self._frame(vf, step, last_pts)
                if first_pts is None:
                    first_pts = frame.pts
                last_pts = frame.pts
                self._check_limits(
                    frame.width,
                    frame.height,
                    self.frames_decoded,
                    (frame.pts - first_pts) * float(self._tb),
                    stage="decode",
                )
                yield frame
        declared = self.info.frames
        if declared is not None and packets < declared:
            raise PermanentInputError(
                "truncated", f"{packets} of {declared} frames present", stage="decode"
            )
        if decode_failed:
            raise PermanentInputError("corrupt", "a frame could not be decoded", stage="decode")
        tail = self._size - read_end
        if read_end and self._check_tail and tail > max(_TAIL_BYTES, self._size * _TAIL_SHARE):
            # The demuxer stopped long before the end (garbage it could not
            # resync past): the frames in there were never decoded.
            raise PermanentInputError(
                "unprocessed_frames", "data after the last readable frame", stage="decode"
            )
        if self.frames_decoded < packets - leading:
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
        rate = self._rate or Fraction(25)
        return max(1, round(1 / (rate * self._tb)))

    def _frame(self, vf: Any, step: int, last_pts: int | None) -> Frame:
        pts = vf.pts
        if pts is None or (last_pts is not None and pts <= last_pts):
            # Missing or non-increasing timestamps (broken muxers, raw streams):
            # the encoder and muxer need strictly increasing ones.
            pts = (last_pts + step) if last_pts is not None else 0
            self.timestamps_fixed += 1
        if self._first is None:
            self._first_frame_props(vf)
            w, h = int(vf.width), int(vf.height)
        else:
            w, h = self._first.width, self._first.height
        if vf.format.name not in _I420 or vf.width != w or vf.height != h:
            # Other pixel formats become 8-bit 4:2:0; a mid-stream size change is
            # scaled to the first size (one output stream has one size).
            vf = vf.reformat(width=w, height=h, format=self._pix_fmt)
        if w % 2 or h % 2:
            raise PermanentInputError("unsupported_type", "odd frame size", stage="decode")
        yuv = vf.to_ndarray()
        frame = Frame(
            index=self.frames_decoded,
            pts=int(pts),
            time=float(pts * self._tb),
            width=w,
            height=h,
            rotation=self._rotation,
            yuv=np.ascontiguousarray(yuv),
        )
        if self._first is None:
            self._first = frame
        self.frames_decoded += 1
        return frame

    def _first_frame_props(self, vf: Any) -> None:
        sd = vf.side_data.get(SideDataType.DISPLAYMATRIX) if len(vf.side_data) else None
        raw = bytes(sd) if sd is not None else b""
        self._matrix = struct.unpack("=9i", raw) if len(raw) == 36 else None
        self._rotation = int(vf.rotation) if self._matrix is not None else 0
        self._full_range = vf.format.name.startswith("yuvj") or int(vf.color_range or 0) == 2
        # Full-range (JPEG) pictures stay full range: no contrast change.
        self._pix_fmt = "yuvj420p" if self._full_range else "yuv420p"
        self._color = {
            "color_primaries": int(vf.color_primaries or 2),
            "color_trc": int(vf.color_trc or 2),
            "colorspace": int(vf.colorspace or 2),
        }

    # -- output --------------------------------------------------------------

    def _open_output(self, first: Frame) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.dst, flags, 0o600)
        except FileExistsError:
            raise
        except OSError as e:
            raise _output_error(e) from e
        self.created = True
        self._out_file = os.fdopen(fd, "wb")
        s = self.settings
        try:
            self._out = av.open(
                self._out_file, mode="w", format=s.muxer, options={"fflags": "+bitexact"}
            )
            ovs = self._out.add_stream("libx264", rate=self._rate or None)
            cc = ovs.codec_context
            ovs.width, ovs.height = first.width, first.height
            ovs.pix_fmt = self._pix_fmt
            ovs.time_base = self._tb
            cc.time_base = self._tb
            cc.thread_type = "FRAME"  # throughput over latency; slices cost quality
            if s.threads:
                cc.thread_count = s.threads
            cc.options = {"crf": str(s.crf), "preset": s.preset}
            for k, v in self._color.items():
                setattr(cc, k, v)
            if self._full_range:
                cc.color_range = 2
            if self._matrix is not None:
                ovs.set_display_matrix(list(self._matrix))
            if not s.strip_metadata:
                self._copy_metadata(self._vs, ovs)
                for k, v in self._in.metadata.items():
                    if k not in _ALWAYS_DROP_TAGS:
                        self._out.metadata[k] = v
            self._ovs = ovs
            for a in self._audio_in:
                self._add_audio(a)
        except RedactdError:
            raise
        except Exception as e:
            raise PermanentInputError("encode_failed", type(e).__name__, stage="encode") from e

    def _copy_metadata(self, src: Any, dst: Any) -> None:
        for k, v in src.metadata.items():
            if k not in _ALWAYS_DROP_TAGS and k not in ("handler_name", "vendor_id"):
                dst.metadata[k] = v

    def _add_audio(self, a: Any) -> None:
        codec = a.codec_context.name
        if codec in self._out.supported_codecs:
            out = self._out.add_stream_from_template(a)
            out.metadata.clear()
        else:
            coder = _AudioReencoder(self._out, a)
            self._audio_coders[a.index] = coder
            out = coder.stream
        if not self.settings.strip_metadata:
            self._copy_metadata(a, out)
        self._audio_out[a.index] = out

    def write(self, frame: Frame) -> None:
        """Encode ``frame`` (its possibly masked ``yuv``) at its own timestamp."""
        if self._out is None:
            self._open_output(frame)
        vf = av.VideoFrame.from_ndarray(frame.yuv, format=self._pix_fmt)
        vf.pts = frame.pts
        vf.time_base = self._tb
        try:
            self._drain_audio()
            packets = self._ovs.encode(vf)
            self._mux(packets)
        except RedactdError:
            raise
        except OSError as e:
            raise _output_error(e) from e
        except Exception as e:
            raise PermanentInputError("encode_failed", type(e).__name__, stage="encode") from e
        self.frames_written += 1

    def _mux(self, packets: list[Any]) -> None:
        for p in packets:
            self._out.mux(p)
            if p.stream is self._ovs:
                self.packets_written += 1

    def _drain_audio(self) -> None:
        while self._pending:
            pkt = self._pending.popleft()
            idx = pkt.stream.index
            coder = self._audio_coders.get(idx)
            if coder is not None:
                self._out.mux(coder.encode(pkt))
                self.audio_reencoded += 1
            else:
                pkt.stream = self._audio_out[idx]
                self._out.mux(pkt)
            self.audio_packets += 1

    def finish(self) -> int:
        """Flush, write the trailer, fsync; the output's size in bytes.

        Raises ``PermanentInputError("encode_failed")`` when the encoder did not
        return exactly one packet per frame (no frame may be lost or doubled).
        """
        if self._out is None:
            raise PermanentInputError("corrupt", "no decodable frame", stage="decode")
        try:
            self._drain_audio()
            self._mux(self._ovs.encode(None))
            for coder in self._audio_coders.values():
                self._out.mux(coder.flush())
            self._out.close()
            self._out = None
        except RedactdError:
            raise
        except OSError as e:
            raise _output_error(e) from e
        except Exception as e:
            raise PermanentInputError("encode_failed", type(e).__name__, stage="encode") from e
        if self.packets_written != self.frames_written:
            raise PermanentInputError(
                "encode_failed",
                f"{self.packets_written} packets for {self.frames_written} frames",
                stage="encode",
            )
        assert self._out_file is not None
        try:
            self._out_file.flush()
            os.fsync(self._out_file.fileno())
            size = os.fstat(self._out_file.fileno()).st_size
        except OSError as e:
            raise _output_error(e) from e
        return size

    def close(self) -> None:
        """Release everything (idempotent). Does not remove ``dst``."""
        for attr in ("_out", "_in"):
            c = getattr(self, attr, None)
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()
                setattr(self, attr, None)
        for attr in ("_out_file", "_in_file"):
            f = getattr(self, attr, None)
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
                setattr(self, attr, None)
        self._pending.clear()

    def __enter__(self) -> Transcoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AudioReencoder:
    """Audio whose codec the output container cannot hold, re-encoded to AAC."""

    def __init__(self, out: Any, src: Any) -> None:
        cc = src.codec_context
        self.rate = int(cc.sample_rate or 48000)
        # By channel count: G.711 streams often declare an unordered layout
        # ("1 channels") that the AAC encoder refuses.
        layout = "mono" if int(cc.channels or 1) == 1 else "stereo"
        self.stream = out.add_stream("aac", rate=self.rate)
        self.stream.layout = layout
        self.stream.format = "fltp"
        # AAC allows at most 6 bits per sample and channel: G.711 at 8 kHz
        # cannot take the encoder's default 128 kbit/s.
        channels = int(cc.channels or 1) if layout == "mono" else 2
        self.stream.bit_rate = min(64000, 6 * self.rate) * channels
        self.src = src
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)

    def encode(self, pkt: Any) -> list[Any]:
        out: list[Any] = []
        try:
            frames = self.src.decode(pkt)
        except av.error.FFmpegError:
            return out  # an undecodable audio packet is silence, not a privacy risk
        for f in frames:
            # The resampler carries the input's timestamps over (audio that
            # starts after the video stays in sync).
            for r in self.resampler.resample(f):
                out.extend(self.stream.encode(r))
        return out

    def flush(self) -> list[Any]:
        out: list[Any] = []
        for r in self.resampler.resample(None):
            out.extend(self.stream.encode(r))
        out.extend(self.stream.encode(None))
        return out


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
