"""Which filesystem a folder is on, and whether inotify can see its writes.

Separate from the watcher because the start-up check and ``status`` ask it
too, and because it is pure parsing of ``/proc/self/mountinfo``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from redactd.core.config import WatchConfig

#: Filesystem types on which inotify does not see writes made by other hosts.
NETWORK_FS: frozenset[str] = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "sshfs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "afs",
        "davfs",
        "virtiofs",
    }
)

ResolvedMode = Literal["inotify", "poll"]

# --------------------------------------------------------------------------- filesystem type


def _unescape_mount(field: str) -> str:
    r"""Undo the octal escapes of /proc/self/mountinfo (``\040`` = space ...)."""
    out: list[str] = []
    i = 0
    while i < len(field):
        c = field[i]
        if c == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) for every line of a mountinfo file."""
    mounts: list[tuple[str, str]] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split(" ")
        rest = right.split(" ")
        if len(fields) < 5 or not rest:
            continue
        mounts.append((_unescape_mount(fields[4]), rest[0]))
    return mounts


def fs_type(path: Path, mountinfo: str | None = None) -> str:
    """The filesystem type holding ``path`` (longest matching mount point)."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
                mountinfo = f.read()
        except OSError:
            return ""
    target = os.path.realpath(path)
    best, best_type = "", ""
    for mnt, typ in parse_mountinfo(mountinfo):
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):  # later lines win ties: they mount over
            best, best_type = mnt, typ
    return best_type


def is_network_fs(typ: str) -> bool:
    return typ in NETWORK_FS or typ.startswith("fuse.") or typ == "fuse"


def resolve_mode(w: WatchConfig, mountinfo: str | None = None) -> ResolvedMode:
    """``inotify`` or ``poll`` for a watch; ``auto`` polls on network filesystems."""
    if w.mode == "poll":
        return "poll"
    if w.mode == "inotify":
        return "inotify"
    return "poll" if is_network_fs(fs_type(w.inbound, mountinfo)) else "inotify"
