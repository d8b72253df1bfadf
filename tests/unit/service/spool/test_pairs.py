"""Inputs with sidecars, and outputs with job records, on real filesystems.

Watcher: a pair (``NAME.EXT`` + ``NAME.EXT.redact.json``) is tracked as one
entry; the tests drive its clock by hand (``tick(now)``) and feed events the
way an observer would, so waits are exact without sleeping. Spool: claims,
quarantine and delivery of pairs, with crashes at precise steps (a raised
``BaseException``, then a fresh ``Spool`` recovering, as in test_spool.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from watchdog.events import FileClosedEvent, FileCreatedEvent, FileModifiedEvent

from redactd.core import fsutil
from redactd.core.config import WatchConfig
from redactd.service.spool import nofollow
from redactd.service.spool.job import MANIFEST, SIDECAR, Job, JobState, Target
from redactd.service.spool.workarea import Spool
from redactd.service.watch import Candidate, FolderWatcher
from tests.helpers.spool import Crash, all_files, fake_process, tmpfs

SIDE = ".redact.json"
REC = ".redactd.json"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("inbound", "outbound", "quarantine", "work")}
    for p in d.values():
        p.mkdir()
    return d


def target(d: dict[str, Path]) -> Target:
    return Target(d["inbound"], d["outbound"], d["quarantine"], "default", 0o640)


def put(d: dict[str, Path], name: str, data: bytes = b"original") -> Path:
    p = d["inbound"] / name
    p.write_bytes(data)
    return p


# --------------------------------------------------------------------------- watcher


def watcher(inbound: Path, wait: float | None = 5.0, orphan: float = 100.0) -> FolderWatcher:
    cfg = WatchConfig(
        inbound,
        inbound.parent / "o",
        inbound.parent / "q",
        mode="poll",
        sidecar_wait_seconds=wait,
        sidecar_orphan_seconds=orphan,
    )
    return FolderWatcher(0, cfg, settle_seconds=1.0, rescan_seconds=3600.0)


def event(w: FolderWatcher, path: Path) -> None:
    """What an observer reports for a created or changed file."""
    w.hints.on_any_event(FileCreatedEvent(str(path)))


def ticks(w: FolderWatcher, *times: float) -> list[Candidate]:
    got: list[Candidate] = []
    for t in times:
        got += w.tick(t)
    return got


def test_a_settled_input_waits_for_its_sidecar_then_goes_alone(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    (inbound / "a.jpg").write_bytes(b"a")
    w = watcher(inbound, wait=5.0)
    # seen at 0, settled at 1.0, then waits until 6.0 for a sidecar
    assert ticks(w, 0.0, 1.0, 3.0, 5.99) == []
    [c] = w.tick(6.0)
    assert c.rel == ("a.jpg",) and c.sidecar is None and not c.orphan


def test_zero_wait_hands_out_a_settled_input_at_once(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    (inbound / "a.jpg").write_bytes(b"a")
    w = watcher(inbound, wait=0.0)
    assert w.tick(0.0) == []
    [c] = w.tick(1.0)
    assert c.sidecar is None


def test_unset_wait_is_the_settle_time(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    (inbound / "a.jpg").write_bytes(b"a")
    w = watcher(inbound, wait=None)
    assert w.waits.sidecar_wait == 1.0
    assert ticks(w, 0.0, 1.0, 1.99) == []
    assert [c.rel for c in w.tick(2.0)] == [("a.jpg",)]


def test_a_sidecar_arriving_within_the_wait_joins_its_input(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    (inbound / "a.jpg").write_bytes(b"a")
    w = watcher(inbound, wait=5.0)
    assert ticks(w, 0.0, 1.0) == []  # settled, waiting for a sidecar
    side = inbound / ("a.jpg" + SIDE)
    side.write_text("{}")
    event(w, side)  # a sidecar's event is its input's: the pair must settle again
    # looked at one settle time after the event, seen changed, quiet one later
    assert ticks(w, 3.0, 4.0, 4.99) == []
    [c] = w.tick(5.0)
    assert c.path == inbound / "a.jpg" and c.sidecar == "a.jpg" + SIDE
    assert w.inflight() == 1
    w.release(c.key)
    assert w.inflight() == 0


def test_a_sidecar_first_waits_for_its_input_and_is_never_media(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    side = inbound / ("clip.mp4" + SIDE)
    side.write_text("{}")
    w = watcher(inbound, wait=5.0, orphan=100.0)
    assert ticks(w, 0.0, 1.0, 10.0) == []
    media = inbound / "clip.mp4"
    media.write_bytes(b"v")
    event(w, media)  # reported at 10.5: looked at 11.5, seen changed, quiet from 12.5
    assert ticks(w, 10.5, 11.5, 12.49) == []
    [c] = w.tick(12.5)  # both present and quiet: no further wait
    assert c.rel == ("clip.mp4",) and c.sidecar == "clip.mp4" + SIDE


def test_a_sidecar_alone_is_handed_out_as_an_orphan_after_the_orphan_time(
    tmp_path: Path,
) -> None:
    inbound = tmp_path / "in"
    (inbound / "sub").mkdir(parents=True)
    side = inbound / "sub" / ("gone.jpg" + SIDE)
    side.write_text("{}")
    w = watcher(inbound, orphan=100.0)
    # settled alone at 1.0: an orphan from 101.0
    assert ticks(w, 0.0, 1.0, 50.0, 100.99) == []
    [c] = w.tick(101.0)
    assert c.orphan and c.sidecar is None
    assert c.rel == ("sub", "gone.jpg" + SIDE) and c.path == side
    assert c.key == str(inbound / "sub" / "gone.jpg")  # released as the pair
    w.release(c.key)


def test_writes_to_the_sidecar_restart_the_pairs_quiet_period(tmp_path: Path) -> None:
    inbound = tmp_path / "in"
    inbound.mkdir()
    (inbound / "a.png").write_bytes(b"a")
    side = inbound / ("a.png" + SIDE)
    side.write_text("{")
    w = watcher(inbound)
    assert w.tick(0.0) == []
    side.write_text('{"mask": []}')  # written on
    w.hints.on_any_event(FileModifiedEvent(str(side)))
    w.hints.on_any_event(FileClosedEvent(str(side)))
    # the write at 0.5 defers the look to 1.5, which sees the change: quiet at 2.5
    assert ticks(w, 0.5, 1.0, 1.5, 2.49) == []
    [c] = w.tick(2.5)
    assert c.sidecar == "a.png" + SIDE


def test_the_real_observers_pair_a_sidecar_that_comes_late(tmp_path: Path) -> None:
    for mode in ("inotify", "poll"):
        inbound = tmp_path / mode
        inbound.mkdir()
        cfg = WatchConfig(
            inbound,
            tmp_path / "o",
            tmp_path / "q",
            mode=mode,  # type: ignore[arg-type]
            poll_interval=0.1,
            sidecar_wait_seconds=30.0,
        )
        w = FolderWatcher(0, cfg, settle_seconds=0.2, rescan_seconds=3600.0)
        w.start()
        try:
            (inbound / "late.jpg").write_bytes(b"x")
            key = str(inbound / "late.jpg")
            deadline = time.monotonic() + 20
            got: list[Candidate] = []
            while not w.waits.waiting_for_sidecar(key) and time.monotonic() < deadline:
                got += w.tick(time.monotonic())
                time.sleep(0.05)
            assert got == [] and w.waits.waiting_for_sidecar(key), "the input settled and waits"
            (inbound / ("late.jpg" + SIDE)).write_text("{}")  # after the input settled
            while not got and time.monotonic() < deadline:
                got += w.tick(time.monotonic())
                time.sleep(0.05)
            assert [(c.rel, c.sidecar) for c in got] == [(("late.jpg",), "late.jpg" + SIDE)]
        finally:
            w.stop()


# --------------------------------------------------------------------------- claim


def test_claim_takes_the_sidecar_with_its_input(dirs: dict[str, Path]) -> None:
    put(dirs, "a.jpg")
    put(dirs, "a.jpg" + SIDE, b'{"mask": []}')
    sp = Spool(dirs["work"])
    job = sp.claim(("a.jpg",), target(dirs), True, "a.jpg" + SIDE)
    assert job is not None and job.sidecar == "a.jpg" + SIDE
    assert os.listdir(dirs["inbound"]) == []
    assert job.sidecar_src.read_bytes() == b'{"mask": []}'
    manifest = json.loads((job.dir / MANIFEST).read_text())
    assert manifest["sidecar"] == "a.jpg" + SIDE and manifest["state"] == "claimed"


def test_a_sidecar_that_vanished_before_the_claim_leaves_the_job_without_one(
    dirs: dict[str, Path],
) -> None:
    put(dirs, "a.jpg")
    job = Spool(dirs["work"]).claim(("a.jpg",), target(dirs), True, "a.jpg" + SIDE)
    assert job is not None and job.sidecar is None


def test_crash_between_the_input_and_sidecar_renames_is_finished_by_recovery(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    put(dirs, "a.jpg")
    put(dirs, "a.jpg" + SIDE, b"{}")
    real_rename = os.rename

    def die(a: object, b: object, **kw: object) -> None:
        if a == "a.jpg" + SIDE:
            raise Crash()
        real_rename(a, b, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", die)
    with pytest.raises(Crash):
        Spool(dirs["work"]).claim(("a.jpg",), target(dirs), True, "a.jpg" + SIDE)
    monkeypatch.undo()
    assert os.listdir(dirs["inbound"]) == ["a.jpg" + SIDE]
    [job] = Spool(dirs["work"]).recover()
    assert job.state == "claimed" and job.sidecar == "a.jpg" + SIDE
    assert job.sidecar_src.read_bytes() == b"{}" and job.src.read_bytes() == b"original"
    assert os.listdir(dirs["inbound"]) == []


def test_a_sidecar_that_is_not_a_regular_file_stays_and_the_job_keeps_naming_it(
    dirs: dict[str, Path],
) -> None:
    put(dirs, "a.jpg")
    os.symlink("/etc/hostname", dirs["inbound"] / ("a.jpg" + SIDE))
    job = Spool(dirs["work"]).claim(("a.jpg",), target(dirs), True, "a.jpg" + SIDE)
    assert job is not None and job.sidecar == "a.jpg" + SIDE
    assert not job.sidecar_src.exists()  # the supervisor fails it as invalid_sidecar
    assert os.listdir(dirs["inbound"]) == ["a.jpg" + SIDE]


def test_cross_filesystem_pair_claim_survives_a_crash_mid_copy(
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
        put(d, "a.jpg" + SIDE, b'{"keep": []}')
        real_copy = nofollow.copy_nofollow

        def die_on_sidecar(a: Path, b: Path, **kw: object) -> None:
            if b.name.startswith(SIDECAR):
                b.write_bytes(b"{")
                raise Crash()
            real_copy(a, b, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(nofollow, "copy_nofollow", die_on_sidecar)
        with pytest.raises(Crash):
            Spool(d["work"]).claim(("a.jpg",), target(d), True, "a.jpg" + SIDE)
        monkeypatch.undo()
        # Only the two hidden claim names (kept until the job ends).
        left = os.listdir(d["inbound"])
        assert len(left) == 2 and all(n.startswith(".redactd-claim-") for n in left)
        [job] = Spool(d["work"]).recover()
        assert job.sidecar_src.read_bytes() == b'{"keep": []}'
        assert job.src.read_bytes() == b"original"
        assert sorted(os.listdir(d["inbound"])) == sorted(left)
        Spool(d["work"]).claimer.release(job)
        assert os.listdir(d["inbound"]) == []
        # the one read of the input that the copy was also gave its sha256
        import hashlib

        assert job.input_sha256 == hashlib.sha256(b"original").hexdigest()


# --------------------------------------------------------------------------- quarantine


def claimed_pair(d: dict[str, Path], name: str = "a.jpg") -> tuple[Spool, Job]:
    put(d, name)
    put(d, name + SIDE, b'{"mask": 1}')
    sp = Spool(d["work"])
    job = sp.claim((name,), target(d), True, name + SIDE)
    assert job is not None
    return sp, job


def test_quarantine_puts_input_and_sidecar_side_by_side_numbered_together(
    dirs: dict[str, Path],
) -> None:
    # only the sidecar's name is taken: both must move to the next number
    (dirs["quarantine"] / ("a.jpg" + SIDE)).write_bytes(b"earlier")
    sp, job = claimed_pair(dirs)
    sp.start_quarantine(job, "invalid_sidecar", "sidecar", "mask: expected a list of regions")
    final = sp.quarantine(job)
    assert final.name == "a (1).jpg"
    assert all_files(dirs["quarantine"]) == [
        "a (1).jpg",
        "a (1).jpg.reason.json",
        "a (1).jpg" + SIDE,
        "a.jpg" + SIDE,
    ]
    assert (dirs["quarantine"] / ("a (1).jpg" + SIDE)).read_bytes() == b'{"mask": 1}'
    reason = json.loads((dirs["quarantine"] / "a (1).jpg.reason.json").read_text())
    assert reason["reason"] == "invalid_sidecar" and reason["detail"].startswith("mask:")
    assert "a.jpg" not in json.dumps(reason) and "a (1)" not in json.dumps(reason)
    assert os.listdir(dirs["work"]) == []


def test_crash_between_sidecar_and_input_quarantine_places_each_once(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, job = claimed_pair(dirs)
    sp.start_quarantine(job, "instructions_disabled", "sidecar")
    real_link = fsutil.link_noreplace

    def sidecar_then_die(src: Path, dst: Path) -> None:
        real_link(src, dst)
        if dst.name.endswith(SIDE):
            raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", sidecar_then_die)
    with pytest.raises(Crash):
        sp.quarantine(job)
    monkeypatch.undo()
    # (the original's staged link is a temporary, removed by recovery)
    published = [
        n for n in all_files(dirs["quarantine"]) if n not in temporaries(dirs["quarantine"])
    ]
    assert published == ["a.jpg" + SIDE]
    [again] = Spool(dirs["work"]).recover()
    Spool(dirs["work"]).quarantine(again)
    assert all_files(dirs["quarantine"]) == ["a.jpg", "a.jpg.reason.json", "a.jpg" + SIDE]
    assert os.listdir(dirs["work"]) == []


def test_cross_filesystem_quarantine_copies_both_files(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        d = {
            "inbound": tmp_path / "inbound",
            "outbound": tmp_path / "o",
            "quarantine": mnt / "q",
            "work": tmp_path / "w",
        }
        for p in d.values():
            p.mkdir()
        sp, job = claimed_pair(d)
        sp.start_quarantine(job, "invalid_sidecar", "sidecar")
        sp.quarantine(job)
        assert all_files(d["quarantine"]) == ["a.jpg", "a.jpg.reason.json", "a.jpg" + SIDE]
        assert (d["quarantine"] / ("a.jpg" + SIDE)).read_bytes() == b'{"mask": 1}'
        assert temporaries(d["quarantine"]) == []


# --------------------------------------------------------------------------- records


def temporaries(root: Path) -> list[str]:
    return [n for n in all_files(root) if Path(n).name.startswith(fsutil.TMP_PREFIX)]


def processed_with_record(d: dict[str, Path], name: str = "a.jpg") -> tuple[Spool, Job]:
    sp, job = claimed_pair(d, name)
    fake_process(job.src, sp.begin_attempt(job))
    sp.stage_record(job, b'{"record": true}\n')
    return sp, job


def test_delivery_publishes_the_record_first_beside_the_output_and_drops_the_sidecar(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (dirs["outbound"] / ("a.jpg" + REC)).write_bytes(b"someone else's")  # record name taken
    sp, job = processed_with_record(dirs)
    order: list[str] = []
    real_link = fsutil.link_noreplace

    def spy(src: Path, dst: Path) -> None:
        order.append(dst.name)
        real_link(src, dst)

    monkeypatch.setattr(fsutil, "link_noreplace", spy)
    final = sp.deliver(job)
    assert order == ["a (1).jpg" + REC, "a (1).jpg"]
    assert final.name == "a (1).jpg"
    assert (dirs["outbound"] / ("a (1).jpg" + REC)).read_bytes() == b'{"record": true}\n'
    assert oct((dirs["outbound"] / ("a (1).jpg" + REC)).stat().st_mode & 0o777) == "0o640"
    assert all_files(dirs["outbound"]) == ["a (1).jpg", "a (1).jpg" + REC, "a.jpg" + REC]
    assert os.listdir(dirs["work"]) == [] and os.listdir(dirs["inbound"]) == []


def test_crash_between_record_and_output_publishes_each_exactly_once(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, job = processed_with_record(dirs)
    real_link = fsutil.link_noreplace

    def record_then_die(src: Path, dst: Path) -> None:
        real_link(src, dst)
        if dst.name.endswith(REC):
            raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", record_then_die)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    assert [n for n in all_files(dirs["outbound"]) if not n.startswith(".")] == ["a.jpg" + REC]
    [again] = Spool(dirs["work"]).recover()
    assert again.state == "delivering"
    Spool(dirs["work"]).deliver(again)
    assert all_files(dirs["outbound"]) == ["a.jpg", "a.jpg" + REC]
    assert (dirs["outbound"] / "a.jpg").read_bytes() == b"masked:original"
    assert os.listdir(dirs["work"]) == []


def test_a_record_published_beside_a_name_taken_since_moves_with_its_output(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, job = processed_with_record(dirs)
    real_link = fsutil.link_noreplace

    def record_then_die(src: Path, dst: Path) -> None:
        real_link(src, dst)
        if dst.name.endswith(REC):
            raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", record_then_die)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    (dirs["outbound"] / "a.jpg").write_bytes(b"another writer")  # while we were down
    [again] = Spool(dirs["work"]).recover()
    final = Spool(dirs["work"]).deliver(again)
    assert final.name == "a (1).jpg"
    assert all_files(dirs["outbound"]) == ["a (1).jpg", "a (1).jpg" + REC, "a.jpg"]
    assert (dirs["outbound"] / "a.jpg").read_bytes() == b"another writer"


def test_a_failed_attempt_discards_its_record_and_a_crash_before_delivery_too(
    dirs: dict[str, Path],
) -> None:
    sp, job = processed_with_record(dirs)
    sp.discard_output(job)
    assert all_files(dirs["outbound"]) == []
    fake_process(job.src, sp.begin_attempt(job))
    sp.stage_record(job, b"{}")
    [again] = Spool(dirs["work"]).recover()  # the process died before delivery
    assert again.state == "claimed" and again.rec_tmp is None
    assert all_files(dirs["outbound"]) == []


def test_the_sweep_spares_the_staged_files_of_recovered_jobs(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, job = processed_with_record(dirs)

    def die(src: Path, dst: Path) -> None:
        raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", die)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    for p in dirs["outbound"].iterdir():  # a long outage: the temporaries are old
        os.utime(p, (1_000_000_000, 1_000_000_000))
    fresh = Spool(dirs["work"])
    [again] = fresh.recover()
    assert fresh.sweep_strays([dirs["outbound"]]) == 0
    fresh.deliver(again)
    assert all_files(dirs["outbound"]) == ["a.jpg", "a.jpg" + REC]


def test_a_lost_record_makes_recovery_run_the_job_again(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, job = processed_with_record(dirs)

    def die(src: Path, dst: Path) -> None:
        raise Crash()

    monkeypatch.setattr(fsutil, "link_noreplace", die)
    with pytest.raises(Crash):
        sp.deliver(job)
    monkeypatch.undo()
    assert job.rec_tmp is not None
    Path(job.rec_tmp).unlink()  # someone removed the staged record
    [again] = Spool(dirs["work"]).recover()
    assert again.state == "claimed" and all_files(dirs["outbound"]) == []


def test_discarding_an_unpublished_delivery_runs_the_job_again(dirs: dict[str, Path]) -> None:
    sp, job = processed_with_record(dirs)
    job.state = JobState.DELIVERING  # a delivery that failed transiently
    sp.discard_output(job)
    assert job.state == "claimed" and job.out_tmp is None and job.rec_tmp is None
    assert all_files(dirs["outbound"]) == []
