"""Durable, never-overwriting file operations.

The promise "nothing is lost, nothing half-written in outbound" rests on
three moves: write to a temporary name in the target folder, fsync the file
and the folder, then link the temporary into its final name (``link`` fails
with EEXIST instead of replacing, unlike ``rename``) and drop the temporary.
Filesystems without hard links (some SMB/FUSE mounts) fall back to an
existence check plus ``rename``; the window there is documented in
ARCHITECTURE.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

#: Prefix of every temporary file redactd creates in a visible folder, so that
#: recovery can find and remove strays and watchers can ignore them.
TMP_PREFIX = ".redactd-tmp-"


def fsync_dir(path: Path) -> None:
    """Make a directory entry change (create, rename, unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(final: Path) -> Path:
    """A fresh temporary name beside ``final`` (same folder, same filesystem).

    The suffix of ``final`` is kept so that encoders choosing the format by
    extension still see it.
    """
    return final.with_name(f"{TMP_PREFIX}{secrets.token_hex(6)}{final.suffix}")


def link_noreplace(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` without ever replacing an existing ``dst``.

    Raises ``FileExistsError`` when ``dst`` exists. ``src`` is removed after
    the new name is durable.
    """
    try:
        # follow_symlinks=False: a symlink being quarantined is linked itself,
        # never the file it points to.
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists") from e
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here: check-then-rename (a racing writer of the same
        # name could still be replaced; only redactd writes outbound).
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(errno.EEXIST, "target exists") from e
        src.rename(dst)
        fsync_dir(dst.parent)
        return
    fsync_dir(dst.parent)
    src.unlink()
    fsync_dir(dst.parent)


def free_name(final: Path) -> Path:
    """``final`` if free, else ``stem (1).ext``, ``stem (2).ext`` ... (never overwrite)."""
    if not final.exists() and not final.is_symlink():
        return final
    for i in range(1, 100000):
        cand = final.with_name(f"{final.stem} ({i}){final.suffix}")
        if not cand.exists() and not cand.is_symlink():
            return cand
    raise FileExistsError(errno.EEXIST, "no free name")


def publish(tmp: Path, final: Path, mode: int | None = None) -> Path:
    """Durably move a finished temporary file to a free name near ``final``.

    Returns the name actually used (``final`` or a numbered variant when
    ``final`` is taken). ``tmp`` must be in the same folder.
    """
    if mode is not None:
        tmp.chmod(mode)
    fsync_file(tmp)
    while True:
        target = free_name(final)
        try:
            link_noreplace(tmp, target)
            return target
        except FileExistsError:
            continue  # somebody took the name between check and link: next one


@contextlib.contextmanager
def temporary_beside(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; remove it if still there afterwards."""
    tmp = tmp_name(final)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def copy_durable(src: Path, dst: Path, chunk: int = 1 << 20) -> None:
    """Copy bytes to a new file ``dst`` (exclusive create) and fsync it."""
    fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with src.open("rb") as fin:
            while True:
                b = fin.read(chunk)
                if not b:
                    break
                os.write(fd_out, b)
        os.fsync(fd_out)
    finally:
        os.close(fd_out)
