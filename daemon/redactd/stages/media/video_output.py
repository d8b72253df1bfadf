"""The writing half of the transcoder: create the output, encode H.264, mux (PyAV).

``VideoOutput`` creates ``dst`` exclusively (mode 0600) when the first frame
is written, sets libx264 up like the input's stream (time base, size, colour
tags, display matrix: ``PictureFormat``), writes each frame at its own
timestamp together with the audio (``video_audio``), and at ``finish``
checks that every frame became exactly one packet, then fsyncs.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import av

from redactd.core.errors import PermanentInputError, RedactdError, TransientError
from redactd.stages.media.video_audio import AudioStreams
from redactd.stages.media.video_frame import EncodeSettings, Frame

if TYPE_CHECKING:
    from redactd.stages.media.video_input import VideoInput

#: Container-level metadata keys never copied even when metadata is kept.
_ALWAYS_DROP_TAGS = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands"})


def _output_error(e: OSError) -> RedactdError:
    code = errno.errorcode.get(e.errno or 0, "I/O error")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransientError("disk_full", code)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EBUSY, errno.EROFS, errno.ETXTBSY):
        return TransientError("output_unavailable", code)
    return TransientError("write_failed", code)


def _encode_failed(e: Exception) -> PermanentInputError:
    return PermanentInputError("encode_failed", type(e).__name__, stage="encode")


def _copy_metadata(src: Any, dst: Any) -> None:
    for k, v in src.metadata.items():
        if k not in _ALWAYS_DROP_TAGS and k not in ("handler_name", "vendor_id"):
            dst.metadata[k] = v


class VideoOutput:
    """The output of one transcode; nothing exists on disk before ``open``.

    ``created`` turns true once ``dst`` was created (the caller removes it
    after a failure).
    """

    def __init__(self, dst: Path, settings: EncodeSettings) -> None:
        self.dst = dst
        self.settings = settings
        self.file: BinaryIO | None = None
        self.container: Any = None
        self.audio: AudioStreams | None = None
        self._ovs: Any = None
        self._pix_fmt = "yuv420p"
        self._tb: Any = None
        self.created = False
        self.frames_written = 0
        self.packets_written = 0

    @property
    def is_open(self) -> bool:
        return self.container is not None

    def open(self, first: Frame, src: VideoInput) -> None:
        """Create ``dst`` and set the encoder up from ``src`` and its ``first`` frame."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.dst, flags, 0o600)
        except FileExistsError:
            raise
        except OSError as e:
            raise _output_error(e) from e
        self.created = True
        self.file = os.fdopen(fd, "wb")
        s = self.settings
        try:
            self.container = av.open(
                self.file, mode="w", format=s.muxer, options={"fflags": "+bitexact"}
            )
            self._ovs = self._add_video(first, src)
            if not s.strip_metadata:
                _copy_metadata(src.video_stream, self._ovs)
                for k, v in src.container.metadata.items():
                    if k not in _ALWAYS_DROP_TAGS:
                        self.container.metadata[k] = v
            self.audio = AudioStreams(self.container)
            for a in src.audio_streams:
                out = self.audio.add(a)
                if not s.strip_metadata:
                    _copy_metadata(a, out)
        except RedactdError:
            raise
        except Exception as e:
            raise _encode_failed(e) from e

    def _add_video(self, first: Frame, src: VideoInput) -> Any:
        s, pic = self.settings, src.picture
        self._pix_fmt, self._tb = pic.pix_fmt, src.time_base
        ovs = self.container.add_stream("libx264", rate=src.rate or None)
        cc = ovs.codec_context
        ovs.width, ovs.height = first.width, first.height
        ovs.pix_fmt = pic.pix_fmt
        ovs.time_base = src.time_base
        cc.time_base = src.time_base
        cc.thread_type = "FRAME"  # throughput over latency; slices cost quality
        if s.threads:
            cc.thread_count = s.threads
        cc.options = {"crf": str(s.crf), "preset": s.preset}
        for k, v in pic.color:
            setattr(cc, k, v)
        if pic.full_range:
            cc.color_range = 2
        if pic.matrix is not None:
            ovs.set_display_matrix(list(pic.matrix))
        return ovs

    def write(self, frame: Frame, pending: deque[Any]) -> None:
        """Encode ``frame`` at its own timestamp, after the ``pending`` audio."""
        assert self.audio is not None
        vf = av.VideoFrame.from_ndarray(frame.yuv, format=self._pix_fmt)
        vf.pts = frame.pts
        vf.time_base = self._tb
        try:
            self.audio.drain(pending)
            self._mux(self._ovs.encode(vf))
        except RedactdError:
            raise
        except OSError as e:
            raise _output_error(e) from e
        except Exception as e:
            raise _encode_failed(e) from e
        self.frames_written += 1

    def _mux(self, packets: list[Any]) -> None:
        for p in packets:
            self.container.mux(p)
            if p.stream is self._ovs:
                self.packets_written += 1

    def finish(self, pending: deque[Any]) -> int:
        """Flush, write the trailer, fsync; the output's size in bytes.

        Raises ``PermanentInputError("encode_failed")`` when the encoder did not
        return exactly one packet per frame (no frame may be lost or doubled).
        """
        assert self.audio is not None
        try:
            self.audio.drain(pending)
            self._mux(self._ovs.encode(None))
            self.audio.flush()
            self.container.close()
            self.container = None
        except RedactdError:
            raise
        except OSError as e:
            raise _output_error(e) from e
        except Exception as e:
            raise _encode_failed(e) from e
        if self.packets_written != self.frames_written:
            raise PermanentInputError(
                "encode_failed",
                f"{self.packets_written} packets for {self.frames_written} frames",
                stage="encode",
            )
        assert self.file is not None
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            size = os.fstat(self.file.fileno()).st_size
        except OSError as e:
            raise _output_error(e) from e
        return size

    def close(self) -> None:
        """Release the container and the file (idempotent); ``dst`` stays."""
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
            self.container = None
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None
