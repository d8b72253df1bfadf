"""The work area on real filesystems: claim, deliver, quarantine, recover.

Crashes are simulated by raising a ``BaseException`` at a precise step and
then building a fresh ``Spool`` (a new process) that recovers; the kill -9
test in ``tests/reliability`` does the same with real process deaths.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from redactd.core import fsutil
from redactd.core.errors import REASONS, PermanentInputError, TransientError
from redactd.service.spool import nofollow
from redactd.service.spool.errors import InputChanged, NotMovable, SpoolBusy
from redactd.service.spool.job import MANIFEST, Job, Target
from redactd.service.spool.names import numbered, reason_name, truncate_name
from redactd.service.spool.workarea import Spool
from tests.helpers.spool import Crash, all_files, fake_process, tmpfs


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("inbound", "outbound", "quarantine", "work")}
    for p in d.values():
        p.mkdir()
    return d


def target(d: dict[str, Path]) -> Target:
    return Target(d["inbound"], d["outbound"], d["quarantine"], "default", 0o640)


def put(d: dict[str, Path], *rel: str, data: bytes = b"original") -> Path:
    p = d["inbound"].joinpath(*rel)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_claim_moves_the_file_into_a_private_job_folder(dirs: dict[str, Path]) -> None:
    src = put(dirs, "sub", "a.jpg")
    sp = Spool(dirs["work"])
    job = sp.claim(("sub", "a.jpg"), target(dirs), regular=True)
    assert job is not None
    assert not src.exists()
    assert job.src.read_bytes() == b"original"
    assert stat.S_IMODE(dirs["work"].stat().st_mode) == 0o700
    assert stat.S_IMODE(job.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((job.dir / MANIFEST).stat().st_mode) == 0o600
    manifest = json.loads((job.dir / MANIFEST).read_text())
    assert manifest["rel"] == ["sub", "a.jpg"]


def test_claim_of_a_vanished_file_returns_none_and_leaves_no_job(dirs: dict[str, Path]) -> None:
    sp = Spool(dirs["work"])
    assert sp.claim(("gone.jpg",), target(dirs), True) is None
    assert os.listdir(dirs["work"]) == []


def test_two_spools_racing_for_one_file_claim_it_once(tmp_path: Path) -> None:
    d = {k: tmp_path / k for k in ("inbound", "outbound", "quarantine", "w1", "w2")}
    for p in d.values():
        p.mkdir()
    t = Target(d["inbound"], d["outbound"], d["quarantine"], "default")
    for round_ in range(30):
        src = d["inbound"] / f"f{round_}.jpg"
        src.write_bytes(b"x")
        results: list[object] = []
        barrier = threading.Barrier(2)

        def grab(
            work: Path,
            src: Path = src,
            barrier: threading.Barrier = barrier,
            results: list[object] = results,
        ) -> None:
            sp = Spool(work)
            barrier.wait()
            results.append(sp.claim((src.name,), t, True))

        ths = [threading.Thread(target=grab, args=(d[w],)) for w in ("w1", "w2")]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        assert sum(r is not None for r in results) == 1
    jobs = [p for w in ("w1", "w2") for p in d[w].iterdir() if p.is_dir()]
    assert len(jobs) == 30


def test_deliver_publishes_under_the_same_relative_name_then_drops_the_original(
    dirs: dict[str, Path],
) -> None:
    sp = Spool(dirs["work"])
    put(dirs, "a", "b", "c.jpg")
    job = sp.claim(("a", "b", "c.jpg"), target(dirs), True)
    assert job is not None
    tmp = sp.begin_attempt(job)
    assert tmp.parent == dirs["outbound"] / "a" / "b"
    assert tmp.name.startswith(fsutil.TMP_PREFIX) and tmp.suffix == ".jpg"
    fake_process(job.src, tmp)
    final = sp.deliver(job)
    assert final == dirs["outbound"] / "a" / "b" / "c.jpg"
    assert final.read_bytes() == b"masked:original"
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    assert all_files(dirs["outbound"]) == ["a/b/c.jpg"]
    assert os.listdir(dirs["work"]) == []


def test_deliver_never_overwrites_an_existing_result(dirs: dict[str, Path]) -> None:
    sp = Spool(dirs["work"])
    (dirs["outbound"] / "x.jpg").write_bytes(b"earlier")
    (dirs["outbound"] / "x (1).jpg").write_bytes(b"earlier too")
    put(dirs, "x.jpg")
    job = sp.claim(("x.jpg",), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))
    final = sp.deliver(job)
    assert final.name == "x (2).jpg"
    assert (dirs["outbound"] / "x.jpg").read_bytes() == b"earlier"


def test_long_names_are_shortened_within_name_max(dirs: dict[str, Path]) -> None:
    name = "é" * 125 + ".jpg"  # 254 bytes: the numbered variant would not fit
    assert len(os.fsencode(name)) == 254
    sp = Spool(dirs["work"])
    (dirs["outbound"] / name).write_bytes(b"earlier")
    put(dirs, name)
    job = sp.claim((name,), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))
    final = sp.deliver(job)
    assert final.name.endswith(" (1).jpg")
    assert len(os.fsencode(final.name)) <= 255
    final.name.encode("utf-8")  # cut on a character boundary
    assert len(os.fsencode(reason_name(name))) <= 255
    assert reason_name("short.jpg") == "short.jpg.reason.json"
    assert reason_name(name) != reason_name(name[:-5] + "x.jpg")


def test_name_helpers() -> None:
    assert numbered("a.jpg", 0) == "a.jpg"
    assert numbered("a.jpg", 3) == "a (3).jpg"
    assert numbered("archive.tar.gz", 1) == "archive.tar (1).gz"
    assert numbered("noext", 2) == "noext (2)"
    assert truncate_name("aé", 2) == "a"


def test_non_utf8_names_survive_claim_manifest_and_delivery(dirs: dict[str, Path]) -> None:
    raw = b"caf\xe9-\xff.jpg"  # Latin-1 bytes: not UTF-8
    name = os.fsdecode(raw)
    (dirs["inbound"] / name).write_bytes(b"data")
    sp = Spool(dirs["work"])
    job = sp.claim((name,), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))
    # a fresh process reads the manifest back
    again = Spool(dirs["work"]).recover()
    assert len(again) == 1 and again[0].rel == (name,)
    job2 = again[0]  # the cut-short attempt is run again
    fake_process(job2.src, sp.begin_attempt(job2))
    out = sp.deliver(job2)
    assert os.fsencode(out.name) == raw
    assert os.listdir(os.fsencode(dirs["outbound"])) == [raw]


def test_quarantine_keeps_the_subfolder_and_writes_a_reason_without_names(
    dirs: dict[str, Path],
) -> None:
    sp = Spool(dirs["work"])
    rel = ("cam1", "secret-name.jpg")
    put(dirs, *rel)
    job = sp.claim(rel, target(dirs), True)
    assert job is not None
    sp.begin_attempt(job)
    sp.start_quarantine(job, "corrupt", "decode", "bad huffman table in /in/cam1/secret-name.jpg")
    q = sp.quarantine(job)
    assert q == dirs["quarantine"] / "cam1" / "secret-name.jpg"
    assert q.read_bytes() == b"original"
    reason_file = dirs["quarantine"] / "cam1" / "secret-name.jpg.reason.json"
    body = json.loads(reason_file.read_text())
    assert body["reason"] == "corrupt" and body["stage"] == "decode"
    assert body["attempts"] == 1 and body["redactd_version"] and body["time"]
    assert body["description"] == REASONS["corrupt"]
    assert "secret" not in reason_file.read_text()
    assert all_files(dirs["outbound"]) == []  # the attempt's temporary is gone
    assert os.listdir(dirs["work"]) == []


def test_a_world_readable_original_is_quarantined_with_the_service_mode(
    dirs: dict[str, Path],
) -> None:
    """A producer's 0644 original must not stay readable by everyone in
    quarantine: the spool places its own copy with the quarantine mode."""
    sp = Spool(dirs["work"], quarantine_mode=0o640)
    put(dirs, "open.jpg")
    (dirs["inbound"] / "open.jpg").chmod(0o644)
    job = sp.claim(("open.jpg",), target(dirs), True)
    assert job is not None
    sp.start_quarantine(job, "corrupt", "decode", "")
    q = sp.quarantine(job)
    assert stat.S_IMODE(os.lstat(q).st_mode) == 0o640
    assert q.read_bytes() == b"original"
    assert os.listdir(dirs["work"]) == []


def test_an_original_already_in_the_service_mode_is_linked_not_copied(
    dirs: dict[str, Path],
) -> None:
    sp = Spool(dirs["work"], quarantine_mode=0o640)
    put(dirs, "ready.jpg")
    (dirs["inbound"] / "ready.jpg").chmod(0o640)
    ino = os.lstat(dirs["inbound"] / "ready.jpg").st_ino
    job = sp.claim(("ready.jpg",), target(dirs), True)
    assert job is not None
    sp.start_quarantine(job, "corrupt", "decode", "")
    q = sp.quarantine(job)
    assert os.lstat(q).st_ino == ino and stat.S_IMODE(os.lstat(q).st_mode) == 0o640


def test_a_symlink_is_quarantined_as_the_link_itself(dirs: dict[str, Path], tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    link = dirs["inbound"] / "evil.jpg"
    os.symlink(outside, link)
    sp = Spool(dirs["work"])
    job = sp.claim(("evil.jpg",), target(dirs), regular=False)
    assert job is not None
    with pytest.raises(PermanentInputError) as ei:
        sp.preflight(job, 10**9)
    assert ei.value.reason == "not_regular_file"
    sp.start_quarantine(job, ei.value.reason, "preflight")
    q = sp.quarantine(job)
    assert q.is_symlink() and os.readlink(q) == str(outside)
    assert outside.read_bytes() == b"not yours" and outside.stat().st_nlink == 1


def test_preflight_refuses_fifo_without_blocking_and_empty_files(dirs: dict[str, Path]) -> None:
    sp = Spool(dirs["work"])
    fifo = dirs["inbound"] / "pipe.jpg"
    os.mkfifo(fifo)
    job = sp.claim(("pipe.jpg",), target(dirs), regular=False)
    assert job is not None
    with pytest.raises(PermanentInputError, match="not_regular_file"):
        sp.preflight(job, 10**9)
    put(dirs, "e.jpg", data=b"")
    empty = sp.claim(("e.jpg",), target(dirs), True)
    assert empty is not None
    with pytest.raises(PermanentInputError, match="empty_file"):
        sp.preflight(empty, 10**9)
    put(dirs, "b.jpg", data=b"12345")
    big = sp.claim(("b.jpg",), target(dirs), True)
    assert big is not None
    with pytest.raises(PermanentInputError, match="too_large"):
        sp.preflight(big, 4)


def test_preflight_reports_unreadable_as_transient(dirs: dict[str, Path]) -> None:
    if os.geteuid() == 0:
        # chmod 000 does not stop root; the reliability corpus covers this by
        # running the daemon without CAP_DAC_OVERRIDE.
        pytest.skip("root reads mode-000 files")
    sp = Spool(dirs["work"])
    put(dirs, "u.jpg")
    job = sp.claim(("u.jpg",), target(dirs), True)
    assert job is not None
    job.src.chmod(0)
    with pytest.raises(TransientError, match="unreadable"):
        sp.preflight(job, 10**9)


def test_outbound_subfolder_that_is_a_symlink_is_a_bad_name(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, dirs["outbound"] / "cam")
    sp = Spool(dirs["work"])
    put(dirs, "cam", "x.jpg")
    job = sp.claim(("cam", "x.jpg"), target(dirs), True)
    assert job is not None
    with pytest.raises(PermanentInputError, match="bad_name"):
        sp.begin_attempt(job)
    assert list(elsewhere.iterdir()) == []


# --------------------------------------------------------------------------- crashes


def test_crash_during_processing_leaves_no_partial_output(dirs: dict[str, Path]) -> None:
    sp = Spool(dirs["work"])
    put(dirs, "a.jpg")
    job = sp.claim(("a.jpg",), target(dirs), True)
    assert job is not None
    tmp = sp.begin_attempt(job)
    tmp.write_bytes(b"half")  # the process dies here
    jobs = Spool(dirs["work"]).recover()
    assert len(jobs) == 1 and jobs[0].state == "claimed" and jobs[0].attempts == 1
    assert all_files(dirs["outbound"]) == []
    assert jobs[0].src.read_bytes() == b"original"


def test_crash_between_link_and_unlink_delivers_exactly_once(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(dirs["work"])
    put(dirs, "a.jpg")
    job = sp.claim(("a.jpg",), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))

    def link_then_die(src: Path, dst: Path) -> None:
        os.link(src, dst)
        raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", link_then_die)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    jobs = Spool(dirs["work"]).recover()
    assert [j.state for j in jobs] == ["delivering"]
    sp.deliver(jobs[0])
    assert all_files(dirs["outbound"]) == ["a.jpg"]
    assert os.listdir(dirs["work"]) == []


def test_crash_before_the_link_delivers_once_after_recovery(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(dirs["work"])
    put(dirs, "a.jpg")
    job = sp.claim(("a.jpg",), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))

    def die(src: Path, dst: Path) -> None:
        raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", die)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    jobs = Spool(dirs["work"]).recover()
    sp.deliver(jobs[0])
    assert all_files(dirs["outbound"]) == ["a.jpg"]


def test_crash_after_delivery_before_cleanup_does_not_deliver_twice(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(dirs["work"])
    put(dirs, "a.jpg")
    job = sp.claim(("a.jpg",), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))

    def die(job: object) -> None:
        raise Crash()

    monkeypatch.setattr(sp.claimer, "release", die)
    with pytest.raises(Crash):
        sp.deliver(job)
    jobs = Spool(dirs["work"]).recover()
    assert len(jobs) == 1
    Spool(dirs["work"]).deliver(jobs[0])
    assert all_files(dirs["outbound"]) == ["a.jpg"]
    assert os.listdir(dirs["work"]) == []


def test_crash_before_the_claim_rename_leaves_the_input_in_inbound(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = put(dirs, "a.jpg")
    sp = Spool(dirs["work"])
    real_rename = os.rename

    def die(a: object, b: object, **kw: object) -> None:
        if a == "a.jpg":
            raise Crash()
        real_rename(a, b, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", die)
    with pytest.raises(Crash):
        sp.claim(("a.jpg",), target(dirs), True)
    monkeypatch.undo()
    assert Spool(dirs["work"]).recover() == []
    assert src.exists()
    assert os.listdir(dirs["work"]) == []


def test_crash_during_quarantine_quarantines_exactly_once(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(dirs["work"])
    put(dirs, "a.jpg")
    job = sp.claim(("a.jpg",), target(dirs), True)
    assert job is not None
    sp.begin_attempt(job)
    sp.start_quarantine(job, "corrupt", "decode")

    def die(*a: object) -> None:
        raise Crash()

    monkeypatch.setattr(sp.quarantiner, "write_reason", die)  # original placed, reason not yet
    with pytest.raises(Crash):
        sp.quarantine(job)
    jobs = Spool(dirs["work"]).recover()
    assert [j.state for j in jobs] == ["quarantining"]
    Spool(dirs["work"]).quarantine(jobs[0])
    assert all_files(dirs["quarantine"]) == ["a.jpg", "a.jpg.reason.json"]
    assert os.listdir(dirs["work"]) == []


def test_lock_keeps_a_second_process_out(dirs: dict[str, Path]) -> None:
    a = Spool(dirs["work"])
    a.lock()
    try:
        with pytest.raises(SpoolBusy):
            Spool(dirs["work"]).lock()
    finally:
        a.unlock()
    b = Spool(dirs["work"])
    b.lock()
    b.unlock()


def test_sweep_removes_old_strays_and_spares_young_ones(dirs: dict[str, Path]) -> None:
    old = dirs["outbound"] / "sub" / (fsutil.TMP_PREFIX + "old.jpg")
    old.parent.mkdir()
    old.write_bytes(b"x")
    past = time.time() - 3600
    os.utime(old, (past, past))
    young = dirs["outbound"] / (fsutil.TMP_PREFIX + "young.jpg")
    young.write_bytes(b"x")
    keep = dirs["outbound"] / "result.jpg"
    keep.write_bytes(b"x")
    assert Spool(dirs["work"]).sweep_strays([dirs["outbound"]]) == 1
    assert not old.exists() and young.exists() and keep.exists()


# --------------------------------------------------------------------------- other filesystems


def test_claim_and_quarantine_across_filesystems_copy_durably(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        d = {
            "inbound": mnt / "inbound",
            "outbound": tmp_path / "outbound",
            "quarantine": mnt / "quarantine",
            "work": tmp_path / "work",
        }
        for p in d.values():
            p.mkdir()
        put(d, "a.jpg")
        sp = Spool(d["work"])
        job = sp.claim(("a.jpg",), target(d), True)
        assert job is not None
        # Only the hidden claim name stays until the job ends (a writer on a
        # share may still append to it); it does not carry the job id.
        [claim] = os.listdir(d["inbound"])
        assert claim.startswith(".redactd-claim-") and job.id not in claim
        assert job.src.read_bytes() == b"original"
        sp.begin_attempt(job)
        sp.start_quarantine(job, "corrupt", "decode")
        q = sp.quarantine(job)
        assert q.read_bytes() == b"original"
        assert all_files(d["quarantine"]) == ["a.jpg", "a.jpg.reason.json"]
        assert os.listdir(d["work"]) == []
        assert os.listdir(d["inbound"]) == []
        # a special file cannot be copied: it is left in place
        os.mkfifo(d["inbound"] / "p")
        with pytest.raises(NotMovable):
            sp.claim(("p",), target(d), False)
        assert (d["inbound"] / "p").exists()


def test_cross_filesystem_claim_interrupted_mid_copy_is_finished_by_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        d = {
            "inbound": mnt / "inbound",
            "outbound": tmp_path / "o",
            "quarantine": tmp_path / "q",
            "work": tmp_path / "w",
        }
        for p in d.values():
            p.mkdir()
        put(d, "a.jpg")

        def die(a: Path, b: Path, **kw: object) -> None:
            b.write_bytes(b"par")
            raise Crash()

        monkeypatch.setattr(nofollow, "copy_nofollow", die)
        with pytest.raises(Crash):
            Spool(d["work"]).claim(("a.jpg",), target(d), True)
        monkeypatch.undo()
        assert [p.startswith(".redactd-claim-") for p in os.listdir(d["inbound"])] == [True]
        jobs = Spool(d["work"]).recover()
        assert len(jobs) == 1 and jobs[0].src.read_bytes() == b"original"
        # the hidden claim name stays until the job ends
        assert [p.startswith(".redactd-claim-") for p in os.listdir(d["inbound"])] == [True]
        Spool(d["work"]).claimer.release(jobs[0])
        assert os.listdir(d["inbound"]) == []


def test_cross_filesystem_claim_that_fails_puts_the_input_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        d = {
            "inbound": mnt / "inbound",
            "outbound": tmp_path / "o",
            "quarantine": tmp_path / "q",
            "work": tmp_path / "w",
        }
        for p in d.values():
            p.mkdir()
        src = put(d, "a.jpg")

        def full(a: Path, b: Path, **kw: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(nofollow, "copy_nofollow", full)
        with pytest.raises(OSError):
            Spool(d["work"]).claim(("a.jpg",), target(d), True)
        assert os.listdir(d["inbound"]) == ["a.jpg"]
        assert src.read_bytes() == b"original"
        assert os.listdir(d["work"]) == []


def test_a_subfolder_swapped_for_a_symlink_cannot_pull_files_from_outside(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"not in inbound")
    # The watcher saw inbound/cam/x.jpg; then cam became a symlink out of inbound.
    os.symlink(outside, dirs["inbound"] / "cam")
    sp = Spool(dirs["work"])
    with pytest.raises(OSError):
        sp.claim(("cam", "x.jpg"), target(dirs), True)
    assert (outside / "x.jpg").read_bytes() == b"not in inbound"
    assert os.listdir(dirs["work"]) == []


# --------------------------------------------------------------------------- settle snapshot


def _snapshot(p: Path) -> tuple[int, int, int, int]:
    st = os.lstat(p)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("change", ["append", "truncate", "replace", "touch"])
def test_claim_refuses_a_file_that_changed_since_it_settled(
    dirs: dict[str, Path], change: str
) -> None:
    src = put(dirs, "a.jpg")
    snap = _snapshot(src)
    if change == "append":
        with open(src, "ab") as f:
            f.write(b"more")
    elif change == "truncate":
        os.truncate(src, 3)
    elif change == "replace":
        tmp = dirs["inbound"] / ".new"
        tmp.write_bytes(b"original")
        os.replace(tmp, src)
    else:
        os.utime(src, ns=(snap[3] + 10**9, snap[3] + 10**9))
    sp = Spool(dirs["work"])
    with pytest.raises(InputChanged):
        sp.claim(("a.jpg",), target(dirs), True, expect=snap)
    assert os.listdir(dirs["inbound"]) == ["a.jpg"]
    assert [p for p in dirs["work"].iterdir() if p.is_dir()] == []
    job = sp.claim(("a.jpg",), target(dirs), True, expect=_snapshot(src))
    assert job is not None and not sp.input_changed(job)


def test_input_changed_sees_appends_through_an_open_handle_after_the_claim(
    dirs: dict[str, Path],
) -> None:
    src = put(dirs, "a.jpg")
    handle = os.open(src, os.O_PATH)
    sp = Spool(dirs["work"])
    job = sp.claim(("a.jpg",), target(dirs), True, expect=_snapshot(src))
    assert job is not None and not sp.input_changed(job)
    fd = os.open(f"/proc/self/fd/{handle}", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"+rest")
    os.close(fd)
    os.close(handle)
    assert sp.input_changed(job)  # renews the snapshot ...
    assert not sp.input_changed(job)  # ... so quiet afterwards means settled
    assert job.src.read_bytes() == b"original+rest"
    # the snapshot is in the manifest: a restart compares with it too
    [again] = Spool(dirs["work"]).recover()
    assert again.snap == job.snap


def test_cross_filesystem_claim_keeps_a_random_claim_name_and_puts_back_on_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        d = {
            "inbound": mnt / "inbound",
            "outbound": tmp_path / "o",
            "quarantine": tmp_path / "q",
            "work": tmp_path / "w",
        }
        for p in d.values():
            p.mkdir()
        src = put(d, "a.jpg")
        real_copy = nofollow.copy_nofollow

        def copy_then_writer_appends(a: Path, b: Path, **kw: object) -> None:
            real_copy(a, b, **kw)  # type: ignore[arg-type]
            [claim] = [n for n in os.listdir(d["inbound"]) if n.startswith(".redactd-claim-")]
            with open(d["inbound"] / claim, "ab") as f:
                f.write(b"+late")

        monkeypatch.setattr(nofollow, "copy_nofollow", copy_then_writer_appends)
        sp = Spool(d["work"])
        with pytest.raises(InputChanged):
            sp.claim(("a.jpg",), target(d), True, expect=_snapshot(src))
        monkeypatch.undo()
        assert os.listdir(d["inbound"]) == ["a.jpg"]
        assert src.read_bytes() == b"original+late"
        assert [p for p in d["work"].iterdir() if p.is_dir()] == []
        job = sp.claim(("a.jpg",), target(d), True, expect=_snapshot(src))
        assert job is not None and job.claim is not None and job.id not in job.claim
        # appended after the copy: seen on the kept claim name, copied again
        with open(d["inbound"] / job.claim, "ab") as f:
            f.write(b"!")
        assert sp.input_changed(job)
        sp.recopy(job)
        assert job.state == "claiming" and not job.src.exists()
        assert sp.resume_claim(job)
        assert job.src.read_bytes() == b"original+late!"


def test_unfinished_cross_filesystem_claim_on_a_full_work_area_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        d = {
            "inbound": mnt / "inbound",
            "outbound": tmp_path / "o",
            "quarantine": tmp_path / "q",
            "work": tmp_path / "w",
        }
        for p in d.values():
            p.mkdir()
        put(d, "a.jpg")

        def die(a: Path, b: Path, **kw: object) -> None:
            raise Crash()

        monkeypatch.setattr(nofollow, "copy_nofollow", die)
        with pytest.raises(Crash):
            Spool(d["work"]).claim(("a.jpg",), target(d), True)
        put(d, "a.jpg", data=b"a newer file of the same name")

        def full(a: Path, b: Path, **kw: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(nofollow, "copy_nofollow", full)
        assert Spool(d["work"]).recover() == []
        assert sorted(os.listdir(d["inbound"])) == ["a (1).jpg", "a.jpg"]
        assert (d["inbound"] / "a (1).jpg").read_bytes() == b"original"
        assert os.listdir(d["work"]) == []


def test_crash_then_remount_with_new_inode_numbers_still_delivers_exactly_once(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CIFS ``noserverino`` gives files new inode numbers after a remount:
    recovery must still recognise its placed output (size + mtime)."""
    sp = Spool(dirs["work"])
    put(dirs, "a.jpg")
    job = sp.claim(("a.jpg",), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))

    def link_then_die(src: Path, dst: Path) -> None:
        os.link(src, dst)
        raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", link_then_die)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    manifest = job.dir / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["places"]["out"]["ino"] += 1_000_003  # what the remount did
    manifest.write_text(json.dumps(doc))
    [again] = Spool(dirs["work"]).recover()
    sp.deliver(again)
    assert all_files(dirs["outbound"]) == ["a.jpg"]
    assert os.listdir(dirs["work"]) == []


def test_a_claim_name_that_could_not_be_dropped_is_dropped_at_the_next_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never an unmasked dotfile left in inbound for good."""
    with tmpfs(tmp_path / "mnt") as mnt:
        d = {
            "inbound": mnt / "inbound",
            "outbound": tmp_path / "o",
            "quarantine": tmp_path / "q",
            "work": tmp_path / "w",
        }
        for p in d.values():
            p.mkdir()
        src = put(d, "a.jpg")
        sp = Spool(d["work"])
        job = sp.claim(("a.jpg",), target(d), True, expect=_snapshot(src))
        assert job is not None and job.claim is not None
        fake_process(job.src, sp.begin_attempt(job))

        def unsafe(*_a: object) -> int:
            raise PermissionError(13, "inbound is not readable right now")

        monkeypatch.setattr(nofollow, "open_dir_nofollow", unsafe)
        with pytest.raises(PermissionError):  # raised: the supervisor retries it
            sp.deliver(job)
        monkeypatch.undo()
        assert all_files(d["outbound"]) == ["a.jpg"]
        assert [n.startswith(".redactd-claim-") for n in os.listdir(d["inbound"])] == [True]
        [again] = Spool(d["work"]).recover()
        assert again.state == "delivering"
        Spool(d["work"]).deliver(again)
        assert os.listdir(d["inbound"]) == [] and os.listdir(d["work"]) == []
        assert all_files(d["outbound"]) == ["a.jpg"]


def _ready_to_deliver(dirs: dict[str, Path]) -> tuple[Spool, Job]:
    """A claimed ``a.jpg`` whose processed temporary is written."""
    sp = Spool(dirs["work"])
    put(dirs, "a.jpg")
    job = sp.claim(("a.jpg",), target(dirs), True)
    assert job is not None
    fake_process(job.src, sp.begin_attempt(job))
    return sp, job


def _taken_by_consumer(outbound: Path, into: Path) -> list[str]:
    """What a consumer of outbound does: move every finished file away."""
    into.mkdir(exist_ok=True)
    moved = []
    for p in sorted(outbound.rglob("*")):
        if p.is_file() and not p.name.startswith(fsutil.TMP_PREFIX):
            p.rename(into / f"{len(list(into.iterdir()))}-{p.name}")
            moved.append(p.name)
    return moved


def test_a_result_taken_by_a_consumer_while_its_folder_fsync_failed_is_not_published_twice(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link succeeds, the fsync of outbound after it fails (EIO) and the
    job backs off; meanwhile a consumer takes the file. The retry must not
    link the result a second time: the consumer gets it exactly once, and
    the original goes only after a fresh fsync of the folder succeeded."""
    sp, job = _ready_to_deliver(dirs)
    real = fsutil.fsync_dir
    failed: list[Path] = []

    def fsync_fails_once_after_the_link(path: Path) -> None:
        if path == dirs["outbound"] and (dirs["outbound"] / "a.jpg").exists() and not failed:
            failed.append(path)
            raise OSError(errno.EIO, "injected")
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", fsync_fails_once_after_the_link)
    with pytest.raises(OSError) as e:
        sp.deliver(job)
    assert e.value.errno == errno.EIO
    assert job.src.exists(), "the original went while its result was not durable"
    assert _taken_by_consumer(dirs["outbound"], tmp_path / "taken") == ["a.jpg"]
    final = sp.deliver(job)  # the supervisor's retry
    assert final == dirs["outbound"] / "a.jpg"
    assert all_files(dirs["outbound"]) == [], "published a second time"
    assert [p.read_bytes() for p in (tmp_path / "taken").iterdir()] == [b"masked:original"]
    assert os.listdir(dirs["work"]) == []


def test_a_result_taken_before_the_failed_fsync_returns_is_not_published_twice(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a polling consumer wins: it takes the file between the link
    and the failing fsync's return, so when the spool looks, the name is
    already empty. It must still know the result was published (the link's
    NotDurable says so), and the retry must not link it again. (Seen as two
    copies in the daemon's EIO test before fsutil.NotDurable.)"""
    sp, job = _ready_to_deliver(dirs)
    real = fsutil.fsync_dir
    taken = tmp_path / "taken"

    def consumer_wins_then_eio(path: Path) -> None:
        if path == dirs["outbound"] and (dirs["outbound"] / "a.jpg").exists():
            assert _taken_by_consumer(dirs["outbound"], taken) == ["a.jpg"]
            raise OSError(errno.EIO, "injected")
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", consumer_wins_then_eio)
    with pytest.raises(OSError) as e:
        sp.deliver(job)
    monkeypatch.undo()
    assert e.value.errno == errno.EIO
    assert job.src.exists(), "the original went while its result was not durable"
    sp.deliver(job)  # the supervisor's retry
    assert all_files(dirs["outbound"]) == [], "published a second time"
    assert [p.read_bytes() for p in taken.iterdir()] == [b"masked:original"]
    assert os.listdir(dirs["work"]) == []


@pytest.mark.parametrize("failing", [1, 2], ids=["after_link", "after_unlink"])
def test_a_taken_result_survives_the_supervisors_retry_path_and_is_not_published_twice(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    """What the daemon does after EIO from the n-th fsync of outbound during
    delivery: the transient outcome discards the attempt's leftovers, then the
    retry advances the job. A consumer took the file before either: the
    discard must keep the job delivering (not run it again), and the retry
    must not link it again. (Seen as two copies in the daemon's EIO test.)"""
    sp, job = _ready_to_deliver(dirs)
    real = fsutil.fsync_dir
    taken = tmp_path / "taken"
    calls: list[Path] = []

    def consumer_wins_then_eio(path: Path) -> None:
        if path == dirs["outbound"]:
            calls.append(path)
            if len(calls) == failing:
                _taken_by_consumer(dirs["outbound"], taken)
                raise OSError(errno.EIO, "injected")
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", consumer_wins_then_eio)
    with pytest.raises(OSError):
        sp.deliver(job)
    monkeypatch.undo()
    assert [p.name for p in taken.iterdir()] == ["0-a.jpg"]
    sp.discard_output(job)  # the supervisor's transient outcome
    assert sp.published(job), "a result a consumer holds counted as not published"
    assert job.src.exists(), "the original went while its result was not durable"
    sp.deliver(job)  # the retry: the job is still delivering
    assert all_files(dirs["outbound"]) == [], "published a second time"
    assert [p.read_bytes() for p in taken.iterdir()] == [b"masked:original"]
    assert os.listdir(dirs["work"]) == []


def test_a_result_taken_by_a_consumer_while_the_daemon_was_down_is_not_published_again(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the link and its durable fsync, before the
    original is removed; the consumer takes the result before the restart.
    Recovery must finish the clean-up, not run the job and publish again."""
    sp, job = _ready_to_deliver(dirs)
    src = job.src
    real_unlink = Path.unlink

    def die_at_the_originals_removal(self: Path, missing_ok: bool = False) -> None:
        if self == src:
            raise Crash()
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", die_at_the_originals_removal)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    assert _taken_by_consumer(dirs["outbound"], tmp_path / "taken") == ["a.jpg"]
    [again] = Spool(dirs["work"]).recover()
    assert again.state == "delivering"
    Spool(dirs["work"]).deliver(again)
    assert all_files(dirs["outbound"]) == [], "published a second time"
    assert len(list((tmp_path / "taken").iterdir())) == 1
    assert os.listdir(dirs["work"]) == []


def test_a_name_lost_before_its_fsync_succeeded_is_not_taken_for_published_after_a_restart(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a link whose folder fsync succeeded is recorded as published: a
    link whose fsync failed, then a crash that lost the name (a power loss),
    gets the job run and published again, never the original dropped."""
    sp, job = _ready_to_deliver(dirs)
    real = fsutil.fsync_dir

    def fsync_fails_after_the_link(path: Path) -> None:
        if path == dirs["outbound"] and (dirs["outbound"] / "a.jpg").exists():
            raise OSError(errno.EIO, "injected")
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", fsync_fails_after_the_link)
    with pytest.raises(OSError):
        sp.deliver(job)
    with contextlib.suppress(OSError):
        sp.save(job)  # any later save of the job (attempt counts) must not record it
    monkeypatch.undo()
    (dirs["outbound"] / "a.jpg").unlink()  # the power loss took the name back
    [again] = Spool(dirs["work"]).recover()
    assert again.src.read_bytes() == b"original"
    if again.state == "delivering":
        Spool(dirs["work"]).deliver(again)
    else:
        fake_process(again.src, sp.begin_attempt(again))
        sp.deliver(again)
    assert all_files(dirs["outbound"]) == ["a.jpg"]


# --------------------------------------------------------------------------- old job.json

# Written by the version before the spool became a package (a crash after the
# output's link, its record linked first); paths and inode fields are filled in.
OLD_DELIVERING = (
    '{"v":1,"id":"bb49f3e6efb2e85f","state":"delivering","attempts":1,"size":8,'
    '"claimed_at":1796234342.316779,"target":{"inbound":"@IN@","outbound":"@OUT@",'
    '"quarantine":"@Q@","profile":"default","file_mode":416},"rel":["a.jpg"],"claim":null,'
    '"out_tmp":"@OUT@/.redactd-tmp-39983d2e3c30.jpg","out_name":null,"q_tmp":null,'
    '"r_tmp":null,"sidecar":"a.jpg.redact.json","sidecar_claim":null,"qs_tmp":null,'
    '"rec_tmp":"@OUT@/.redactd-tmp-48e6ac0310f2.json","input_sha256":null,'
    '"snap":{"ino":2206269,"size":8,"mtime_ns":1796234342316579574,'
    '"ctime_ns":1796234342319042184},"places":{"out":{"staged":'
    '"@OUT@/.redactd-tmp-39983d2e3c30.jpg","dev":@DEV@,"ino":@OUT_INO@,"size":6,'
    '"mtime_ns":@OUT_MTIME@,"cand":"@OUT@/a.jpg"},"record":{"staged":'
    '"@OUT@/.redactd-tmp-48e6ac0310f2.json","dev":@DEV@,"ino":@REC_INO@,"size":7,'
    '"mtime_ns":@REC_MTIME@,"cand":"@OUT@/a.jpg.redactd.json"}},"reason":null,'
    '"timed_out":false}'
)

# Same version, quarantining (the pair placed, the reason file not yet); the reason
# placement is of an older version still (inode only, no size or mtime).
OLD_QUARANTINING = (
    '{"v":1,"id":"60749bd621274f95","state":"quarantining","attempts":1,"size":6,'
    '"claimed_at":1796234342.4005668,"target":{"inbound":"@IN@","outbound":"@OUT@",'
    '"quarantine":"@Q@","profile":"default","file_mode":416},"rel":["b.jpg"],"claim":null,'
    '"out_tmp":null,"out_name":null,"q_tmp":"@Q@/.redactd-tmp-1.jpg",'
    '"r_tmp":"@Q@/.redactd-tmp-2.json","sidecar":"b.jpg.redact.json",'
    '"sidecar_claim":".redactd-claim-0123456789abcdef.sidecar",'
    '"qs_tmp":"@Q@/.redactd-tmp-3.jpg","rec_tmp":null,"input_sha256":null,'
    '"snap":{"ino":2206274,"size":6,"mtime_ns":1796234342400445959,'
    '"ctime_ns":1796234342415042187},"places":{"orig":{"staged":"@JOB@/src",'
    '"dev":@DEV@,"ino":@SRC_INO@,"size":6,"mtime_ns":@SRC_MTIME@,'
    '"cand":"@Q@/b.jpg","linked":true},"qside":{"staged":"@JOB@/sidecar.json",'
    '"dev":@DEV@,"ino":@SIDE_INO@,"size":2,"mtime_ns":@SIDE_MTIME@,'
    '"cand":"@Q@/b.jpg.redact.json"},"reason":{"staged":"@Q@/.redactd-tmp-2.json",'
    '"dev":@DEV@,"ino":@R_INO@,"cand":null}},"reason":{"reason":"corrupt","description":'
    '"the content could not be decoded completely","stage":"decode","detail":"",'
    '"last_error":""},"timed_out":false}'
)


def _fill(text: str, values: dict[str, object]) -> str:
    for token, value in values.items():
        text = text.replace(token, str(value))
    return text


def test_a_manifest_of_the_previous_version_is_written_back_byte_for_byte(
    tmp_path: Path,
) -> None:
    values: dict[str, object] = {"@IN@": "/i", "@OUT@": "/o", "@Q@": "/q", "@JOB@": "/w/j"}
    for i, token in enumerate(("@DEV@", "@OUT_INO@", "@REC_INO@", "@SRC_INO@", "@SIDE_INO@")):
        values[token] = 65024 + i
    for i, token in enumerate(("@OUT_MTIME@", "@REC_MTIME@", "@SRC_MTIME@", "@SIDE_MTIME@")):
        values[token] = 1796234342360419041 + i
    values["@R_INO@"] = 2206277
    for text in (_fill(OLD_QUARANTINING, values), _fill(OLD_DELIVERING, values)):
        assert "@" not in text
        job = Job.from_json(json.loads(text), tmp_path)
        again = json.dumps(job.to_json(), ensure_ascii=True, separators=(",", ":"))
        assert again == text
        job.dir = tmp_path
        Spool(tmp_path / "work").save(job)
        assert (tmp_path / MANIFEST).read_text() == text


def test_a_delivery_of_the_previous_version_is_recovered_and_finished_once(
    dirs: dict[str, Path],
) -> None:
    out = dirs["outbound"]
    staged = out / ".redactd-tmp-39983d2e3c30.jpg"
    staged.write_bytes(b"masked")
    rec = out / ".redactd-tmp-48e6ac0310f2.json"
    rec.write_bytes(b'{"r":1}')
    os.link(rec, out / "a.jpg.redactd.json")  # published before the crash
    os.link(staged, out / "a.jpg")
    job_dir = dirs["work"] / "bb49f3e6efb2e85f"
    job_dir.mkdir(mode=0o700)
    (job_dir / "src").write_bytes(b"original")
    (job_dir / "sidecar.json").write_bytes(b"{}")
    values: dict[str, object] = {
        "@IN@": dirs["inbound"],
        "@OUT@": out,
        "@Q@": dirs["quarantine"],
        "@DEV@": staged.stat().st_dev,
        "@OUT_INO@": staged.stat().st_ino,
        "@OUT_MTIME@": staged.stat().st_mtime_ns,
        "@REC_INO@": rec.stat().st_ino,
        "@REC_MTIME@": rec.stat().st_mtime_ns,
    }
    (job_dir / MANIFEST).write_text(_fill(OLD_DELIVERING, values))
    [job] = Spool(dirs["work"]).recover()
    assert job.state == "delivering" and job.sidecar == "a.jpg.redact.json"
    assert set(job.places) == {"out", "record"} and job.out_tmp == str(staged)
    sp = Spool(dirs["work"])
    assert sp.published(job)
    assert sp.deliver(job) == out / "a.jpg"
    assert all_files(out) == ["a.jpg", "a.jpg.redactd.json"]
    assert (out / "a.jpg").read_bytes() == b"masked"
    assert os.listdir(dirs["work"]) == []


def test_a_quarantine_of_the_previous_version_is_recovered_and_finished_once(
    dirs: dict[str, Path],
) -> None:
    q = dirs["quarantine"]
    job_dir = dirs["work"] / "60749bd621274f95"
    job_dir.mkdir(mode=0o700)
    src = job_dir / "src"
    src.write_bytes(b"orig-b")
    side = job_dir / "sidecar.json"
    side.write_bytes(b"{}")
    os.link(side, q / "b.jpg.redact.json")  # placed before the crash, sidecar first
    os.link(src, q / "b.jpg")
    reason = q / ".redactd-tmp-2.json"
    reason.write_bytes(b'{"reason": "corrupt"}\n')
    values: dict[str, object] = {
        "@IN@": dirs["inbound"],
        "@OUT@": dirs["outbound"],
        "@Q@": q,
        "@JOB@": job_dir,
        "@DEV@": src.stat().st_dev,
        "@SRC_INO@": src.stat().st_ino,
        "@SRC_MTIME@": src.stat().st_mtime_ns,
        "@SIDE_INO@": side.stat().st_ino,
        "@SIDE_MTIME@": side.stat().st_mtime_ns,
        "@R_INO@": reason.stat().st_ino,
    }
    (job_dir / MANIFEST).write_text(_fill(OLD_QUARANTINING, values))
    [job] = Spool(dirs["work"]).recover()
    assert job.state == "quarantining" and set(job.places) == {"orig", "qside", "reason"}
    assert job.reason is not None and job.reason["reason"] == "corrupt"
    assert Spool(dirs["work"]).quarantine(job) == q / "b.jpg"
    assert all_files(q) == ["b.jpg", "b.jpg.reason.json", "b.jpg.redact.json"]
    assert (q / "b.jpg").read_bytes() == b"orig-b" and (
        q / "b.jpg.redact.json"
    ).read_bytes() == b"{}"
    assert (q / "b.jpg.reason.json").read_bytes() == b'{"reason": "corrupt"}\n'
    assert os.listdir(dirs["work"]) == []
