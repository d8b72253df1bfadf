"""Durable delivery never overwrites and leaves no temporaries."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from redactd.core import fsutil


def _tmp_with(final: Path, data: bytes) -> Path:
    tmp = fsutil.tmp_name(final)
    tmp.write_bytes(data)
    return tmp


def test_publish_moves_the_temporary_into_place(tmp_path: Path) -> None:
    final = tmp_path / "a.jpg"
    tmp = _tmp_with(final, b"new")
    assert tmp.name.startswith(fsutil.TMP_PREFIX) and tmp.suffix == ".jpg"
    used = fsutil.publish(tmp, final, 0o640)
    assert used == final
    assert final.read_bytes() == b"new"
    assert (final.stat().st_mode & 0o777) == 0o640
    assert not tmp.exists()


def test_publish_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "a.jpg"
    final.write_bytes(b"old")
    used = fsutil.publish(_tmp_with(final, b"new"), final)
    assert final.read_bytes() == b"old"
    assert used == tmp_path / "a (1).jpg"
    assert used.read_bytes() == b"new"
    used2 = fsutil.publish(_tmp_with(final, b"newer"), final)
    assert used2 == tmp_path / "a (2).jpg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a (1).jpg", "a (2).jpg", "a.jpg"]


def test_publish_does_not_replace_a_dangling_symlink(tmp_path: Path) -> None:
    final = tmp_path / "a.png"
    final.symlink_to(tmp_path / "nowhere")
    used = fsutil.publish(_tmp_with(final, b"x"), final)
    assert used != final
    assert final.is_symlink()


def test_copy_durable_refuses_to_replace(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.write_bytes(b"1" * 3_000_000)
    dst = tmp_path / "d"
    fsutil.copy_durable(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    try:
        fsutil.copy_durable(src, dst)
    except FileExistsError:
        pass
    else:  # pragma: no cover
        raise AssertionError("copy_durable replaced an existing file")


def test_rename_noreplace_never_replaces(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"new")
    b.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(a, b)
    assert b.read_bytes() == b"old" and a.read_bytes() == b"new"
    fsutil.rename_noreplace(a, tmp_path / "c")
    assert (tmp_path / "c").read_bytes() == b"new" and not a.exists()


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP])
def test_link_noreplace_without_hard_links_renames_and_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    def no_links(*_a: object, **_kw: object) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(fsutil.os, "link", no_links)
    final = tmp_path / "a.jpg"
    final.write_bytes(b"old")
    tmp = _tmp_with(final, b"new")
    with pytest.raises(FileExistsError):
        fsutil.link_noreplace(tmp, final)
    assert final.read_bytes() == b"old"
    used = fsutil.publish(tmp, final)
    assert used == tmp_path / "a (1).jpg" and used.read_bytes() == b"new"
    assert not tmp.exists()


def test_link_noreplace_passes_exdev_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another mount (bind mounts share st_dev): the caller copies; no rename is tried."""

    def other_mount(*_a: object, **_kw: object) -> None:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(fsutil.os, "link", other_mount)
    tmp = _tmp_with(tmp_path / "a.jpg", b"x")
    with pytest.raises(OSError) as ei:
        fsutil.link_noreplace(tmp, tmp_path / "a.jpg")
    assert ei.value.errno == errno.EXDEV
    assert tmp.exists()


def test_a_link_whose_folder_fsync_fails_says_the_name_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from the fsync after the link: the file is already visible (a
    consumer may take it at once), so the error says so (NotDurable, same errno)
    and a caller never mistakes it for a link that did not happen."""
    real_fsync = os.fsync
    dirs_synced = []

    def failing_dir_fsync(fd: int) -> None:
        import stat

        if stat.S_ISDIR(os.fstat(fd).st_mode):
            dirs_synced.append(fd)
            raise OSError(errno.EIO, "injected")
        real_fsync(fd)

    tmp = _tmp_with(tmp_path / "a.jpg", b"x")
    monkeypatch.setattr(os, "fsync", failing_dir_fsync)
    with pytest.raises(fsutil.NotDurable) as ei:
        fsutil.link_noreplace(tmp, tmp_path / "a.jpg")
    monkeypatch.undo()
    assert ei.value.errno == errno.EIO and dirs_synced
    assert (tmp_path / "a.jpg").read_bytes() == b"x"


def test_a_link_that_fails_is_not_not_durable(tmp_path: Path) -> None:
    """A link that never happened is a plain OSError (nothing was published)."""
    tmp = _tmp_with(tmp_path / "a.jpg", b"x")
    with pytest.raises(OSError) as ei:
        fsutil.link_noreplace(tmp, tmp_path / "missing" / "a.jpg")
    assert not isinstance(ei.value, fsutil.NotDurable)
    assert ei.value.errno == errno.ENOENT


def test_rename_noreplace_without_renameat2_still_refuses_an_existing_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsutil, "libc_renameat2", False)  # an old libc or kernel
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"new")
    b.symlink_to(tmp_path / "nowhere")  # even a dangling symlink is a name taken
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(a, b)
    assert b.is_symlink() and a.exists()
