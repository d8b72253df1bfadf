"""Decide what an input is from its content, never from its name.

A file called ``holiday.jpg`` may hold a video, a text or an exploit for some
other decoder; routing by extension would hand it to the wrong parser. Only
the first bytes are read (``HEAD_BYTES``), through a descriptor opened with
``O_NOFOLLOW`` whose ``fstat`` says "regular file": a symlink, directory,
FIFO, socket or device is refused before a single byte is parsed. Callers
that go on to decode keep using that same descriptor (``open_regular``), so
the file checked is the file decoded.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from redactd.core.errors import PermanentInputError, TransientError

#: Bytes read to decide the type: enough for 20 MPEG-TS packets and any
#: container header we look at.
HEAD_BYTES = 4096

IMAGE_FORMATS: tuple[str, ...] = ("jpeg", "png", "tiff", "webp", "bmp")
VIDEO_FORMATS: tuple[str, ...] = (
    "mp4",
    "mov",
    "mkv",
    "webm",
    "avi",
    "mpegts",
    "mpegps",
    "h264",
    "hevc",
    "dav",
    "flv",
)


@dataclass(frozen=True)
class MediaType:
    """What a file holds: ``kind`` routes it, ``format`` picks the codec path.

    ``format`` is one of ``IMAGE_FORMATS`` or ``VIDEO_FORMATS``.
    """

    kind: Literal["image", "video"]
    format: str


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file.

    The last path component is not followed if it is a symlink
    (``O_NOFOLLOW``); ``O_NONBLOCK`` keeps a FIFO from blocking the open.
    The caller owns (and must close) the returned file.

    Raises ``PermanentInputError`` with ``not_regular_file`` (symlink,
    directory, FIFO, socket, device), ``unreadable`` (permissions, or the
    file vanished), and ``TransientError("read_failed")`` on other I/O errors.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _open_error(e) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermanentInputError("not_regular_file", stage="sniff")
        # Back to blocking reads: a regular file never blocks, but the flag
        # must not leak into decoders that check it.
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_error(e: OSError) -> Exception:
    if e.errno == errno.ELOOP:  # the final component is a symlink
        return PermanentInputError("not_regular_file", "symlink", stage="sniff")
    if e.errno in (errno.ENXIO, errno.ENODEV, errno.EISDIR):  # socket, device, directory
        return PermanentInputError("not_regular_file", stage="sniff")
    if e.errno in (errno.EACCES, errno.EPERM):
        return PermanentInputError("unreadable", "permission denied", stage="sniff")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return PermanentInputError("unreadable", "no such file", stage="sniff")
    return TransientError("read_failed", errno.errorcode.get(e.errno or 0, "I/O error"))


def sniff(path: Path) -> MediaType:
    """The media type of the regular file at ``path``, from its first bytes.

    Raises ``PermanentInputError``: ``empty_file`` for zero bytes,
    ``unsupported_type`` for content that is none of the known types, and the
    reasons of ``open_regular``.
    """
    with open_regular(path) as f:
        return sniff_file(f)


def sniff_file(f: BinaryIO) -> MediaType:
    """Like ``sniff`` on an already opened file; its position is restored."""
    pos = f.tell()
    try:
        f.seek(0)
        head = f.read(HEAD_BYTES)
    except PermissionError as e:
        raise PermanentInputError("unreadable", "permission denied", stage="sniff") from e
    except OSError as e:
        raise TransientError("read_failed", errno.errorcode.get(e.errno or 0, "I/O error")) from e
    finally:
        f.seek(pos)
    if not head:
        raise PermanentInputError("empty_file", stage="sniff")
    mt = sniff_bytes(head)
    if mt is None:
        raise PermanentInputError("unsupported_type", stage="sniff")
    return mt


def sniff_bytes(head: bytes) -> MediaType | None:
    """The media type of content starting with ``head``, or ``None``.

    Pure function on the first bytes (``HEAD_BYTES`` are enough).
    """
    fmt = _image_format(head)
    if fmt is not None:
        return MediaType("image", fmt)
    fmt = _video_format(head)
    if fmt is not None:
        return MediaType("video", fmt)
    return None


# --------------------------------------------------------------------------- images


def _image_format(h: bytes) -> str | None:
    if h[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if h[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    # Classic TIFF (42) and BigTIFF (43), both byte orders.
    if h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return "webp"
    # "BM" alone is two bytes of chance: also require a known DIB header size.
    if (
        h[:2] == b"BM"
        and len(h) >= 18
        and int.from_bytes(h[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)
    ):
        return "bmp"
    return None


# --------------------------------------------------------------------------- videos

#: ISO-BMFF major brands that are still images or audio, not video: an HEIC
#: photo must not be routed to the video decoder as "mp4".
_NON_VIDEO_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
     b"crx ", b"jp2 ", b"jpx ", b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
)  # fmt: skip

#: Top-level atoms that may open an old QuickTime file that has no ``ftyp``.
_QT_FIRST_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


def _video_format(h: bytes) -> str | None:
    if len(h) >= 12 and h[4:8] == b"ftyp":
        brand = h[8:12]
        if brand in _NON_VIDEO_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if len(h) >= 8 and h[4:8] in _QT_FIRST_ATOMS and int.from_bytes(h[:4], "big") >= 8:
        return "mov"
    if h[:4] == b"\x1a\x45\xdf\xa3":
        doctype = _ebml_doctype(h)
        if doctype == b"webm":
            return "webm"
        if doctype == b"matroska":
            return "mkv"
        return None
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return "avi"
    if h[:4] == b"DHAV":
        return "dav"
    if h[:3] == b"FLV" and h[3:4] == b"\x01":
        return "flv"
    if h[:4] == b"\x00\x00\x01\xba":
        return "mpegps"
    if _ts_sync(h, 0, 188) or _ts_sync(h, 4, 192):  # plain TS, and M2TS with 4-byte timecodes
        return "mpegts"
    return _annexb_format(h)


def _ts_sync(h: bytes, first: int, stride: int) -> bool:
    """0x47 at every packet start; at least 5 packets when the file is that long."""
    n = (len(h) - first + stride - 1) // stride
    if n < 2:
        return False
    n = min(n, 20)
    return all(h[first + i * stride] == 0x47 for i in range(n))


def _read_vint(h: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, next position)."""
    if pos >= len(h):
        return None
    first = h[pos]
    length = 1
    mask = 0x80
    while length <= 8 and not first & mask:
        mask >>= 1
        length += 1
    if length > 8 or pos + length > len(h):
        return None
    value = first if keep_marker else first & (mask - 1)
    for b in h[pos + 1 : pos + length]:
        value = (value << 8) | b
    return value, pos + length


def _ebml_doctype(h: bytes) -> bytes | None:
    """The DocType string of the EBML header at the start of ``h``."""
    hdr = _read_vint(h, 4, keep_marker=False)
    if hdr is None:
        return None
    size, pos = hdr
    end = min(len(h), pos + size)
    while pos < end:
        el = _read_vint(h, pos, keep_marker=True)
        if el is None:
            return None
        el_id, pos = el
        sz = _read_vint(h, pos, keep_marker=False)
        if sz is None:
            return None
        el_size, pos = sz
        if el_id == 0x4282:  # DocType
            return h[pos : pos + el_size].rstrip(b"\x00")
        pos += el_size
    return None


def _annexb_format(h: bytes) -> str | None:
    """Raw H.264 / HEVC elementary streams (Annex B byte stream).

    The stream must open with a start code followed by a parameter set,
    access unit delimiter or SEI NAL unit, and hold a second start code soon
    after: a lone ``00 00 01`` is too likely by chance.
    """
    if h[:4] == b"\x00\x00\x00\x01":
        nal = 4
    elif h[:3] == b"\x00\x00\x01":
        nal = 3
    else:
        return None
    if len(h) < nal + 2 or h.find(b"\x00\x00\x01", nal) < 0:
        return None
    b0, b1 = h[nal], h[nal + 1]
    if b0 & 0x80:  # forbidden_zero_bit
        return None
    # HEVC: 2-byte header, type in bits 1..6, nuh_layer_id 0, temporal_id_plus1 >= 1.
    hevc_type = (b0 >> 1) & 0x3F
    if hevc_type in (32, 33, 34, 35, 39) and (b0 & 0x01) == 0 and (b1 >> 3) == 0 and b1 & 0x07:
        return "hevc"
    # H.264: 1-byte header; SPS (7), AUD (9) or SEI (6, nal_ref_idc 0).
    h264_type = b0 & 0x1F
    ref_idc = (b0 >> 5) & 0x03
    if h264_type == 7 and ref_idc and b1 in _H264_PROFILES:
        return "h264"
    if h264_type == 9 or (h264_type == 6 and ref_idc == 0):
        return "h264"
    return None


#: profile_idc values of H.264 (the byte after an SPS NAL header).
_H264_PROFILES = frozenset(
    {44, 66, 77, 83, 86, 88, 100, 110, 118, 122, 128, 134, 135, 138, 139, 144, 244}
)
