"""Truncation seen from a container's structure, without decoding it.

A cut file often still demuxes cleanly up to the cut: its own size fields
(MP4/MOV boxes, the Matroska Segment, the AVI RIFF size) or a long tail the
demuxer never reached show what is missing. Plain byte parsing, kept apart
from the PyAV code that uses it.
"""

from __future__ import annotations

from typing import BinaryIO

#: Bytes after the last demuxed packet that an index may take (MP4 ``moov``
#: at the end, Matroska cues, AVI ``idx1``) before the tail counts as unread.
TAIL_BYTES = 64 * 1024
TAIL_SHARE = 0.05


def declared_size_exceeds(f: BinaryIO, media_format: str, size: int) -> bool:
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


def tail_unread(size: int, read_end: int) -> bool:
    """Did the demuxer stop long before the end of a ``size``-byte file, its
    last packet ending at ``read_end`` (0: no position known)?"""
    return bool(read_end) and size - read_end > max(TAIL_BYTES, size * TAIL_SHARE)
