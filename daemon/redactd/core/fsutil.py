"""Durable, never-overwriting file operations.

The promise "nothing is lost, nothing half-written in outbound" rests on
three moves: write to a temporary name in the target folder, fsync the file
and the folder, then link the temporary into its final name (``link`` fails
with EEXIST instead of replacing, unlike ``rename``) and drop the temporary.
Filesystems without hard links (some SMB/FUSE mounts) fall back to
``renameat2(RENAME_NOREPLACE)`` where the kernel and filesystem have it,
else to an existence check plus ``rename``; the window there is documented
in ARCHITECTURE.md.

"Same filesystem" is never judged by ``st_dev``: two bind mounts of one
filesystem share it, yet a link or rename between them fails with EXDEV.
EXDEV is passed up to the caller, which copies instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

#: Prefix of every temporary file redactd creates in a visible folder, so that
#: recovery can find and remove strays and watchers can ignore them.
TMP_PREFIX = ".redactd-tmp-"


def errname(e: OSError) -> str:
    """The symbolic errno of an OSError (``ENOSPC``), safe to log: no path."""
    return errno.errorcode.get(e.errno or 0, "unknown")


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


#: errnos of ``link`` meaning "this filesystem has no hard links" (FUSE and
#: sshfs answer ENOSYS, SMB EPERM or EOPNOTSUPP). EXDEV is not one of them:
#: it means "another mount", which a rename cannot cross either.
NO_LINK_ERRNOS: frozenset[int] = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}
)

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
libc_renameat2: object = None  # unresolved; False when libc has none (the fallback is then used)


def _libc_renameat2() -> object:
    global libc_renameat2
    if libc_renameat2 is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            ]
            fn.restype = ctypes.c_int
            libc_renameat2 = fn
        except (OSError, AttributeError):
            libc_renameat2 = False
    return libc_renameat2


def rename_noreplace(
    src: str | Path,
    dst: str | Path,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (``FileExistsError``).

    Atomic where ``renameat2(RENAME_NOREPLACE)`` works (Linux >= 3.15 on
    ext4, xfs, btrfs, tmpfs, recent cifs/fuse); elsewhere an existence check
    then ``rename`` (a name created by another host in between could still
    be replaced). Raises OSError as ``rename`` does (EXDEV across mounts).
    """
    fn = _libc_renameat2()
    if fn:
        sfd = _AT_FDCWD if src_dir_fd is None else src_dir_fd
        dfd = _AT_FDCWD if dst_dir_fd is None else dst_dir_fd
        r = fn(sfd, os.fsencode(src), dfd, os.fsencode(dst), _RENAME_NOREPLACE)  # type: ignore[operator]
        if r == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists")
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err))
        # The filesystem (or kernel) has no RENAME_NOREPLACE: check, then rename.
    try:
        os.lstat(dst, dir_fd=dst_dir_fd)
    except FileNotFoundError:
        pass
    else:
        raise FileExistsError(errno.EEXIST, "target exists")
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


class NotDurable(OSError):
    """``dst`` has its new name, but a step after the link failed (the fsync
    of its folder, the removal of the old name): the file is visible and may
    be taken by a consumer at once, so the caller must treat it as published
    (never link it a second time) and make it durable before relying on it.
    Same ``errno`` as the failure, so errno checks (disk full) still apply."""


def link_noreplace(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` without ever replacing an existing ``dst``.

    Raises ``FileExistsError`` when ``dst`` exists, OSError(EXDEV) when the
    two are on different mounts (the caller copies), ``NotDurable`` when the
    new name exists but what follows failed. ``src`` is removed after the
    new name is durable.
    """
    try:
        # follow_symlinks=False: a symlink being quarantined is linked itself,
        # never the file it points to.
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists") from e
        if e.errno not in NO_LINK_ERRNOS:
            raise
        # No hard links here: a rename that refuses to replace.
        rename_noreplace(src, dst)
        _after_link(fsync_dir, dst.parent)
        return
    _after_link(fsync_dir, dst.parent)
    _after_link(src.unlink)
    _after_link(fsync_dir, dst.parent)


def _after_link(step: Callable[..., None], *args: Path) -> None:
    """A step after the new name exists: its failure is a ``NotDurable``."""
    try:
        step(*args)
    except OSError as e:
        raise NotDurable(e.errno, e.strerror) from e


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


CHUNK = 1 << 20


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer:
    a signal, a pipe, a filesystem close to full)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def digest(path: Path, *, follow: bool = True) -> tuple[str, int]:
    """The sha256 (hex) and size of ``path``, read once; ``follow=False``
    refuses a symlink (``ELOOP``) -- for files a stranger may have replaced."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        h = hashlib.sha256()
        size = 0
        while chunk := os.read(fd, CHUNK):
            h.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest(), size


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of ``path``'s bytes."""
    return digest(path)[0]


def copy_durable(src: Path, dst: Path, chunk: int = CHUNK) -> None:
    """Copy bytes to a new file ``dst`` (exclusive create) and fsync it."""
    fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with src.open("rb") as fin:
            while b := fin.read(chunk):
                write_all(fd_out, b)
        os.fsync(fd_out)
    finally:
        os.close(fd_out)
