"""Watch helpers: filesystem type, ignore globs, safe relative names, the watcher."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from redactd.core.config import DEFAULT_IGNORE, WatchConfig
from redactd.service import watch as watch_mod
from redactd.service.mounts import fs_type, parse_mountinfo, resolve_mode
from redactd.service.names import is_ignored, relative_parts
from redactd.service.stability import writer_active
from redactd.service.watch import FolderWatcher

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "40 22 0:50 / /srv/share rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2\n"
    "41 22 0:51 / /mnt/my\\040photos rw - cifs //nas/photos rw\n"
    "42 22 0:52 / /mnt/ssh rw,nosuid - fuse.sshfs user@host: rw\n"
    "43 40 8:2 / /srv/share/local rw - xfs /dev/sdb1 rw\n"
)


def test_mountinfo_parsing_unescapes_spaces() -> None:
    mounts = dict(parse_mountinfo(MOUNTINFO))
    assert mounts["/mnt/my photos"] == "cifs"
    assert mounts["/srv/share"] == "nfs4"


def test_fs_type_takes_the_longest_mount_point() -> None:
    assert fs_type(Path("/srv/share/inbound"), MOUNTINFO) == "nfs4"
    assert fs_type(Path("/srv/share/local/inbound"), MOUNTINFO) == "xfs"
    assert fs_type(Path("/srv/shared"), MOUNTINFO) == "ext4"  # not inside /srv/share
    assert fs_type(Path("/mnt/ssh/x"), MOUNTINFO) == "fuse.sshfs"


def test_auto_mode_polls_network_filesystems_only(tmp_path: Path) -> None:
    def w(inbound: str, mode: str = "auto") -> WatchConfig:
        return WatchConfig(Path(inbound), tmp_path / "o", tmp_path / "q", mode=mode)  # type: ignore[arg-type]

    assert resolve_mode(w("/srv/share/in"), MOUNTINFO) == "poll"
    assert resolve_mode(w("/mnt/my photos/in"), MOUNTINFO) == "poll"
    assert resolve_mode(w("/mnt/ssh/in"), MOUNTINFO) == "poll"
    assert resolve_mode(w("/srv/share/local/in"), MOUNTINFO) == "inotify"
    assert resolve_mode(w("/home/in"), MOUNTINFO) == "inotify"
    assert resolve_mode(w("/srv/share/in", "inotify"), MOUNTINFO) == "inotify"
    assert resolve_mode(w("/home/in", "poll"), MOUNTINFO) == "poll"


def test_default_ignores_cover_partial_names_and_os_junk() -> None:
    for name in (".DS_Store", "x.part", "x.tmp", "~$doc.docx", "Thumbs.db", "x.crdownload"):
        assert is_ignored((name,), DEFAULT_IGNORE), name
    assert is_ignored(("@eaDir", "photo.jpg"), DEFAULT_IGNORE)
    assert is_ignored((".redactd-tmp-abc.jpg",), ())
    assert is_ignored((".redactd-claim-abc",), ())
    assert not is_ignored(("sub", "photo.jpg"), DEFAULT_IGNORE)
    assert is_ignored(("raw", "x.jpg"), ("raw",))


def test_relative_parts_refuse_anything_outside_or_odd() -> None:
    root = Path("/in")
    assert relative_parts(root, Path("/in/a/b.jpg"), True) == ("a", "b.jpg")
    assert relative_parts(root, Path("/in/a/b.jpg"), False) is None
    assert relative_parts(root, Path("/in"), True) is None
    assert relative_parts(root, Path("/other/b.jpg"), True) is None
    assert relative_parts(root, Path("/in/../etc/passwd"), True) is None
    assert relative_parts(root, Path("/inbox/x.jpg"), True) is None


def _wait_ready(w: FolderWatcher, timeout: float = 10.0) -> list[tuple[str, ...]]:
    deadline = time.monotonic() + timeout
    got: list[tuple[str, ...]] = []
    while time.monotonic() < deadline:
        got += [c.rel for c in w.tick(time.monotonic())]
        if got:
            # give stragglers of the same batch one more settle period
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                got += [c.rel for c in w.tick(time.monotonic())]
                time.sleep(0.05)
            return got
        time.sleep(0.05)
    return got


def test_watcher_hands_out_complete_files_once_and_skips_junk(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    (inbound / "sub").mkdir(parents=True)
    (inbound / "old.jpg").write_bytes(b"x" * 10)  # present before start
    cfg = WatchConfig(inbound, tmp_path / "o", tmp_path / "q", mode="inotify")
    w = FolderWatcher(0, cfg, settle_seconds=0.2, rescan_seconds=3600)
    w.start()
    try:
        (inbound / "sub" / "new.jpg").write_bytes(b"y" * 10)
        (inbound / "skip.part").write_bytes(b"z")
        (inbound / ".hidden.jpg").write_bytes(b"z")
        os.symlink("/etc/hostname", inbound / "link.jpg")
        got = _wait_ready(w)
        assert sorted(got) == [("link.jpg",), ("old.jpg",), ("sub", "new.jpg")]
        # In flight: not handed out again even after more ticks and a rescan.
        w.force_rescan()
        time.sleep(0.3)
        assert w.tick(time.monotonic()) == []
        assert w.inflight() == 3
    finally:
        w.stop()


def test_poll_mode_sees_files_and_does_not_follow_directory_links(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"s")
    os.symlink(outside, inbound / "dirlink")
    cfg = WatchConfig(inbound, tmp_path / "o", tmp_path / "q", mode="poll", poll_interval=0.1)
    w = FolderWatcher(0, cfg, settle_seconds=0.2, rescan_seconds=3600)
    w.start()
    try:
        assert w.mode == "poll"
        (inbound / "a.jpg").write_bytes(b"a")
        got = _wait_ready(w)
        # the directory symlink itself is an entry to refuse; nothing behind it
        assert sorted(got) == [("a.jpg",), ("dirlink",)]
    finally:
        w.stop()


def test_writer_probe_sees_a_file_held_open_for_writing(tmp_path: Path) -> None:
    p = tmp_path / "f.jpg"
    with open(p, "wb") as w:
        w.write(b"partial")
        w.flush()
        assert writer_active(p) is True
    assert writer_active(p) is False
    with open(p, "rb"):
        assert writer_active(p) is False  # readers do not count
    os.mkfifo(tmp_path / "fifo")
    assert writer_active(tmp_path / "fifo") is None  # never probed beyond fstat


def test_watcher_waits_for_a_writer_whose_open_it_never_saw(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    cfg = WatchConfig(inbound, tmp_path / "o", tmp_path / "q", mode="poll", poll_interval=0.1)
    w = FolderWatcher(0, cfg, settle_seconds=0.2, rescan_seconds=3600)
    w.start()
    try:
        with open(inbound / "held.jpg", "wb") as out:
            out.write(b"begin")
            out.flush()
            deadline = time.monotonic() + 1.5  # many settle periods, no writes
            while time.monotonic() < deadline:
                assert w.tick(time.monotonic()) == []
                time.sleep(0.05)
        assert _wait_ready(w) == [("held.jpg",)]
    finally:
        w.stop()


def test_a_vanished_inbound_is_watched_again_when_it_returns(tmp_path: Path) -> None:
    inbound = tmp_path / "share"  # an unmounted share: not there at start
    cfg = WatchConfig(inbound, tmp_path / "o", tmp_path / "q", mode="inotify")
    w = FolderWatcher(0, cfg, settle_seconds=0.1, rescan_seconds=3600)
    w.start()  # must not raise
    try:
        assert w.tick(time.monotonic()) == []
        inbound.mkdir()
        (inbound / "a.jpg").write_bytes(b"a")
        w.force_rescan()
        assert _wait_ready(w) == [("a.jpg",)]
        (inbound / "b.jpg").write_bytes(b"b")  # seen through the revived observer
        assert _wait_ready(w) == [("b.jpg",)]
    finally:
        w.stop()


def test_a_rescan_of_a_large_folder_is_spread_over_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main loop (and its watchdog pings) never waits for a whole share."""
    inbound = tmp_path / "in"
    (inbound / "sub").mkdir(parents=True)
    for i in range(25):
        (inbound / f"f{i:02d}.jpg").write_bytes(b"x")
        (inbound / "sub" / f"g{i:02d}.jpg").write_bytes(b"x")
    monkeypatch.setattr(watch_mod, "SCAN_ENTRIES_PER_TICK", 10)
    cfg = WatchConfig(inbound, tmp_path / "o", tmp_path / "q", mode="poll")
    w = FolderWatcher(0, cfg, settle_seconds=3600, rescan_seconds=3600)  # scans only
    now = time.monotonic()
    seen = []
    for _ in range(8):
        w.tick(now)
        seen.append(w.pending())
    assert seen[0] <= 10 and seen == sorted(seen), seen  # at most 10 entries a tick
    assert seen[-1] == 50  # every file once the rescan has gone round
    w.stop()
