"""Names the spool gives files in outbound and quarantine.

Separate because it is pure string work (no I/O but ``pathconf``), tested on
its own. Outbound and quarantine keep the input's name. A numbered variant
(``name (1).jpg``) or ``<name>.reason.json`` that would exceed the folder's
NAME_MAX is shortened at a UTF-8 boundary and given ``~`` plus 12 hex
digits of the SHA-256 of the full name, so it stays unique and can be
matched by whoever holds the original name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from redactd.core import fsutil

_MAX_SUFFIX_BYTES = 16


def name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def blen(s: str) -> int:
    """Length of ``s`` in encoded bytes (what NAME_MAX counts)."""
    return len(os.fsencode(s))


def truncate_name(s: str, max_bytes: int) -> str:
    """``s`` cut to at most ``max_bytes`` encoded bytes, never inside a UTF-8 sequence."""
    b = os.fsencode(s)
    if len(b) <= max_bytes:
        return s
    cut = max(0, max_bytes)
    while cut > 0 and (b[cut] & 0xC0) == 0x80:  # continuation byte: back off
        cut -= 1
    return os.fsdecode(b[:cut])


def _name_hash(s: str) -> str:
    return hashlib.sha256(os.fsencode(s)).hexdigest()[:12]


def split_suffix(name: str) -> tuple[str, str]:
    """(stem, suffix) where the suffix is kept only when short (a real extension)."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    suffix = name[dot:]
    if blen(suffix) > _MAX_SUFFIX_BYTES:
        return name, ""
    return name[:dot], suffix


def numbered(name: str, i: int, limit: int = 255) -> str:
    """``name`` for i == 0, else ``stem (i).ext``, shortened to fit ``limit`` bytes."""
    if i == 0:
        return name
    stem, suffix = split_suffix(name)
    tail = f" ({i}){suffix}"
    cand = stem + tail
    if blen(cand) <= limit:
        return cand
    mark = "~" + _name_hash(name)
    return truncate_name(stem, limit - blen(tail) - blen(mark)) + mark + tail


def reason_name(qname: str, limit: int = 255) -> str:
    """``<qname>.reason.json``, or a shortened ``<prefix>~<hash>.reason.json``."""
    ext = ".reason.json"
    cand = qname + ext
    if blen(cand) <= limit:
        return cand
    mark = "~" + _name_hash(qname)
    return truncate_name(qname, limit - blen(ext) - blen(mark)) + mark + ext


def tmp_for(folder: Path, name: str) -> Path:
    """A fresh temporary beside ``folder/name`` that keeps a short suffix."""
    _stem, suffix = split_suffix(name)
    return fsutil.tmp_name(folder / ("x" + suffix))
