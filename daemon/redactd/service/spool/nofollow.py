"""File primitives of the spool that never follow a symlink a stranger planted.

Separate because every step (claim, quarantine, delivery) walks folders a
producer can write to: the inbound sub-folders are opened with
``O_NOFOLLOW`` directory descriptors, and files are copied only when they
are regular files opened without following. Callers look these up through
the module (``nofollow.copy_nofollow``), so a test can replace one.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Protocol

from redactd.core import fsutil
from redactd.core.errors import PermanentInputError

_DIR_MODE = 0o750


class Digest(Protocol):
    """What ``copy_nofollow`` feeds (a hashlib object)."""

    def update(self, data: bytes, /) -> None: ...


def lexists(p: Path) -> bool:
    try:
        os.lstat(p)
        return True
    except FileNotFoundError:
        return False


def unlink_quiet(p: Path | str | None) -> None:
    if p is None:
        return
    with contextlib.suppress(FileNotFoundError):
        Path(p).unlink()


def ensure_dirs(base: Path, parts: tuple[str, ...]) -> Path:
    """``base/parts...`` as real directories (created 0750 when missing).

    A component that exists as anything but a directory (a file, a symlink
    someone planted) makes the name unusable: ``bad_name``.
    """
    cur = base
    for part in parts:
        cur = cur / part
        with contextlib.suppress(FileExistsError):
            cur.mkdir(_DIR_MODE)
        st = os.lstat(cur)
        if not stat.S_ISDIR(st.st_mode):
            raise PermanentInputError("bad_name", "a folder of the relative path is not a folder")
    return cur


def open_dir_nofollow(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of ``root/parts...``, refusing any component that is a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy_nofollow(
    src: Path,
    dst: Path,
    src_dir_fd: int | None = None,
    digest: Digest | None = None,
    mode: int | None = None,
) -> None:
    """Durable exclusive copy of a regular file, refusing anything else.

    ``digest`` (a hashlib object) is fed the bytes on the way: the copy is the
    one read of the input a job needs for its sha256. ``mode``: the copy's
    final mode, set before it is fsynced (it is created 0600).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd_in = os.open(src, flags, dir_fd=src_dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd_in).st_mode):
            raise PermanentInputError("not_regular_file", stage="claim")
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while b := os.read(fd_in, fsutil.CHUNK):
                if digest is not None:
                    digest.update(b)
                fsutil.write_all(fd_out, b)
            if mode is not None:
                os.fchmod(fd_out, mode)
            os.fsync(fd_out)
        except BaseException:
            os.close(fd_out)
            unlink_quiet(dst)
            raise
        os.close(fd_out)
    finally:
        os.close(fd_in)


def write_new(
    path: Path, data: bytes, *, create_mode: int = 0o600, mode: int | None = None
) -> None:
    """Create ``path`` (exclusive, ``create_mode`` under the umask) with
    ``data``, set to ``mode`` when given, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, create_mode)
    try:
        fsutil.write_all(fd, data)
        if mode is not None:
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
