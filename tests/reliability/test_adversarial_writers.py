"""Writers that do not behave: pause and append after the file settled,
create an empty file and write it later, add a sidecar while the input
waits in the queue; and a claim cut short that meets a full work area.

A real ``redactd run`` with the scripted fake detector. A writer on a share
(SMB, NFS) holds a handle the local kernel does not see: modelled here by a
writer that keeps only an ``O_PATH`` descriptor (no open-for-write, so the
lease probe finds no writer) and reopens it through ``/proc/self/fd`` to
append to the same inode, wherever it was renamed meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import pytest

from redactd.service.spool import nofollow
from redactd.service.spool.job import Target
from redactd.service.spool.workarea import Spool
from tests.helpers.filesystems import small_filesystem
from tests.helpers.service import (
    Daemon,
    Folders,
    fixed_detection_schedule,
    rel_names,
    status,
    temporaries,
    wait_until,
    write_config,
)
from tests.helpers.sidecars import CORNER, corner_is_solid, noisy_png, sidecar
from tests.helpers.synthvideo import write_clip
from tests.reliability.conftest import coloured_jpeg

GREEN = (0, 255, 0)  # the fake detector is slow on it (REDACTD_FAKE_SLOW)


def remote_writer(path: Path, data: bytes) -> int:
    """Create ``path`` with ``data`` and close it, keeping an O_PATH handle."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        return os.open(path, os.O_PATH)
    finally:
        os.close(fd)


def append_through(handle: int, data: bytes) -> None:
    """Append to the handle's inode (renamed or unlinked since: still it)."""
    fd = os.open(f"/proc/self/fd/{handle}", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.close(handle)


def frames_of(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def ts_halves(tmp_path: Path) -> tuple[bytes, bytes, int]:
    """An MPEG-TS of 60 frames cut at the packet that starts frame 30 (each
    part is a valid stream: the first decodes to 30 frames)."""
    clip = tmp_path / "clip.ts"
    write_clip(clip, frames=60, audio=None, gop=10, size=(160, 120))
    with av.open(str(clip)) as c:
        pos = [p.pos for p in c.demux(c.streams.video[0]) if p.size][30]
    data = clip.read_bytes()
    return data[:pos], data[pos:], frames_of(clip)


@pytest.mark.parametrize("layout", ["same_fs", "cross_fs"])
def test_content_appended_after_the_claim_is_never_published_half_finished(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path, layout: str
) -> None:
    head, tail, total = ts_halves(tmp_path)
    assert total == 60
    with small_filesystem(tmp_path / "work_fs", 32 * 1024) as work_fs:
        work = tmp_path / "work" if layout == "same_fs" else work_fs / "work"
        f = Folders.make(tmp_path / "svc", work=work)
        cfg = write_config(
            tmp_path / "redactd.toml",
            f,
            models_dir,
            detectors=("fake",),
            mode="poll",
            service={"settle_seconds": 1.0},
        )
        # Detection on frames 0 and 29 only, 2 s each: the second starts after
        # the decoder met the end of the half file (the last frame of a
        # stream with B-frames comes out only at EOF); the writer resumes
        # during it, so the job cannot have ended (>= 4 s after the claim).
        fixed_detection_schedule(cfg, 29)  # about the writer, not the gate
        d = daemons(cfg, fake="default", env={"REDACTD_FAKE_EACH": "2"}).start()
        d.wait_ready()
        handle = remote_writer(f.inbound / "nvr.ts", head)
        wait_until(lambda: bool(d.events("job.claimed")), 30, "the claim of the half file", d)
        time.sleep(3.3)
        assert d.events("job.done") == [], "finished before the writer resumed"
        append_through(handle, tail)

        wait_until(lambda: len(rel_names(f.outbound)) == 1, 90, "a delivery", d)
        wait_until(lambda: bool(d.events("job.done")), 10, "job.done", d)
        [out] = rel_names(f.outbound)
        assert frames_of(f.outbound / out) == total, "a result of the half-written file"
        assert d.events("job.input_changed"), "the change went unnoticed"
        assert rel_names(f.inbound) == [] and rel_names(f.quarantine) == []
        assert d.stop() == 0
        assert temporaries(f.inbound, f.outbound) == []
        assert len(d.events("job.done")) == 1


def test_an_empty_file_written_later_waits_its_grace_and_is_delivered(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        detectors=("fake",),
        service={"settle_seconds": 0.5, "empty_file_grace_seconds": 4.0},
    )
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    noisy_png(tmp_path / "scan.png", 3)
    # A scanner creates the file, then sends the image after a pause.
    handle = remote_writer(f.inbound / "scan.png", b"")
    time.sleep(2.5)
    assert d.events("job.claimed") == [], "an empty file was judged before its grace"
    append_through(handle, (tmp_path / "scan.png").read_bytes())
    wait_until(lambda: rel_names(f.outbound) == ["scan.png"], 30, "delivery", d)
    assert rel_names(f.quarantine) == [] and rel_names(f.inbound) == []
    # A file that stays empty is still judged once the grace is over.
    (f.inbound / "zero.png").write_bytes(b"")
    wait_until(
        lambda: rel_names(f.quarantine, reasons=True) == ["zero.png", "zero.png.reason.json"],
        30,
        "empty_file",
        d,
    )
    assert json.loads((f.quarantine / "zero.png.reason.json").read_text())["reason"] == (
        "empty_file"
    )
    assert d.stop() == 0


def test_a_sidecar_that_arrives_while_its_input_is_queued_is_claimed_with_it(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        detectors=("fake",),
        watch={"sidecar_wait_seconds": 0.0},
    )
    d = daemons(cfg, fake="default", env={"REDACTD_FAKE_SLOW": "4"}).start()
    d.wait_ready()
    coloured_jpeg(f.inbound / "busy.png", GREEN)  # holds the only worker ~4 s
    wait_until(lambda: bool(d.events("job.claimed")), 30, "the first claim", d)
    media = f.inbound / "late.png"
    noisy_png(tmp_path / "late.png", 4)
    os.replace(tmp_path / "late.png", media)
    wait_until(
        lambda: (status(f).get("queued"), status(f).get("active")) == (1, 1),
        30,
        "the input queued behind the busy job",
        d,
    )
    sidecar(media, CORNER)  # too late for the watcher, in time for the claim
    wait_until(lambda: rel_names(f.outbound) == ["busy.png", "late.png"], 30, "delivery", d)
    wait_until(lambda: len(d.events("job.done")) == 2, 10, "job.done", d)
    assert corner_is_solid(f.outbound / "late.png"), "the sidecar's region is unmasked"
    assert rel_names(f.inbound) == [], "the sidecar was left behind"
    assert rel_names(f.quarantine) == []
    assert d.stop() == 0


class _Crash(BaseException):
    """kill -9 in the middle of a claim's copy (nothing after it runs)."""


def test_a_claim_cut_short_meeting_a_full_work_area_is_put_back_not_hidden(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with small_filesystem(tmp_path / "work_fs", 512) as work_fs:
        f = Folders.make(tmp_path / "svc", work=work_fs / "work")
        cfg = write_config(
            tmp_path / "redactd.toml",
            f,
            models_dir,
            detectors=("fake",),
            service={"status_file": tmp_path / "status.json"},
        )
        media = f.inbound / "a.png"
        noisy_png(media, 7, size=128)
        data = media.read_bytes()
        target = Target(f.inbound, f.outbound, f.quarantine, "default")
        sp = Spool(f.work)
        sp.lock()

        def die(src: Path, dst: Path, **kw: object) -> None:
            dst.write_bytes(b"partial")
            raise _Crash()

        monkeypatch.setattr(nofollow, "copy_nofollow", die)
        with pytest.raises(_Crash):
            sp.claim(("a.png",), target, True)
        monkeypatch.undo()
        sp.unlock()
        [hidden] = os.listdir(f.inbound)
        assert hidden.startswith(".redactd-claim-")
        # The work area fills up before the restart.
        filler = work_fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)

        d = daemons(cfg, fake="default").start()
        d.wait_ready()
        wait_until(lambda: rel_names(f.inbound) == ["a.png"], 20, "the original put back", d)
        assert (f.inbound / "a.png").read_bytes() == data
        time.sleep(2.0)
        retries = [e for e in d.events("job.retry") if e.get("stage") in ("spool", "preflight")]
        assert len(retries) <= 3, "a job without its file retried in a loop"
        filler.unlink()  # space returns: it is claimed again and delivered
        wait_until(lambda: rel_names(f.outbound) == ["a.png"], 30, "delivery", d)
        assert rel_names(f.inbound) == [] and rel_names(f.quarantine) == []
        out_img = cv2.imread(str(f.outbound / "a.png"))
        assert out_img is not None and out_img.shape[:2] == (128, 128)
        assert d.stop() == 0
        assert [p for p in f.work.iterdir() if p.is_dir()] == []


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def test_a_full_work_area_pauses_once_and_resumes_when_it_has_room(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    """ENOSPC from the work area (not outbound, which has room) must not
    pause and resume the outbound folder in a loop."""
    with small_filesystem(tmp_path / "work_fs", 512) as work_fs:
        f = Folders.make(tmp_path / "svc", work=work_fs / "work")
        cfg = write_config(
            tmp_path / "redactd.toml",
            f,
            models_dir,
            detectors=("fake",),
            service={"status_file": tmp_path / "status.json"},
        )
        d = daemons(cfg, fake="default", env={"REDACTD_FAKE_SLOW": "2"}).start()
        d.wait_ready()
        coloured_jpeg(f.inbound / "a.png", GREEN)  # 2 s in the detector
        wait_until(lambda: bool(d.events("job.claimed")), 30, "the claim", d)
        _fill(work_fs / "filler")  # the work area fills while the job runs
        wait_until(lambda: bool(d.events("service.paused")), 30, "the pause", d)
        assert d.events("service.paused")[0]["reason"] == "work_area_full"
        time.sleep(3.0)
        assert d.events("service.resumed") == [], "paused and resumed in a loop"
        assert len(d.events("service.paused")) == 1
        # (the finished result waits as a temporary: nothing published yet)
        assert [n for n in rel_names(f.outbound) if not n.startswith(".redactd-tmp-")] == []
        assert rel_names(f.quarantine) == []
        (work_fs / "filler").unlink()
        wait_until(lambda: rel_names(f.outbound) == ["a.png"], 30, "delivery", d)
        assert len(d.events("service.resumed")) == 1
        assert d.stop() == 0
        assert rel_names(f.inbound) == [] and temporaries(f.inbound, f.outbound) == []
