"""Polling mode, two instances on one folder, and log privacy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers.media import Labelled
from tests.helpers.service import (
    Daemon,
    Folders,
    rel_names,
    temporaries,
    wait_until,
    write_config,
)
from tests.reliability.conftest import copy_in, small_jpeg

WRITER = """
import sys, time, pathlib
src, dst_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
data = src.read_bytes()
for i in range(3):
    with open(dst_dir / f"from-other-process-{i}.jpg", "wb") as f:  # written in place, no rename
        half = len(data) // 2
        f.write(data[:half]); f.flush(); time.sleep(0.2); f.write(data[half:])
"""


def test_poll_mode_serves_a_folder_written_by_another_process(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    ov_cache: Path,
    face_images: list[tuple[Path, Labelled | None]],
) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        cache_dir=ov_cache,
        mode="poll",
        service={"settle_seconds": 0.5},
    )
    d = daemons(cfg).start()
    d.wait_ready()
    assert [e["mode"] for e in d.events("watch.started")] == ["poll"]
    (f.inbound / "drop").mkdir()
    subprocess.run(
        [sys.executable, "-c", WRITER, str(face_images[0][0]), str(f.inbound / "drop")],
        check=True,
        timeout=30,
    )
    want = [f"drop/from-other-process-{i}.jpg" for i in range(3)]
    wait_until(lambda: rel_names(f.outbound) == want, 60, "polled deliveries", d)
    assert d.stop() == 0
    assert rel_names(f.quarantine) == []
    assert len(d.events("job.done")) == 3


def test_two_instances_on_one_inbound_process_each_file_exactly_once(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    """Plumbing (the claim is the lock): the fake detector keeps jobs short, so
    the two instances race for nearly every one of the 200 files."""
    shared = Folders.make(tmp_path / "shared")
    # Two servers: their own work areas and status, one inbound/outbound/quarantine.
    fa = Folders.make(tmp_path / "shared", work=tmp_path / "a-work", status=tmp_path / "a.json")
    fb = Folders.make(tmp_path / "shared", work=tmp_path / "b-work", status=tmp_path / "b.json")
    svc = {"workers": 2, "settle_seconds": 0.2}
    cfg_a = write_config(tmp_path / "a.toml", fa, models_dir, detectors=("fake",), service=svc)
    cfg_b = write_config(tmp_path / "b.toml", fb, models_dir, detectors=("fake",), service=svc)
    a = daemons(cfg_a, name="a", fake="default").start()
    b = daemons(cfg_b, name="b", fake="default").start()
    a.wait_ready()
    b.wait_ready()
    staging = tmp_path / "shared" / "staging"
    names = [f"cam{i % 4}/img_{i:03d}.jpg" for i in range(200)]
    for i, rel in enumerate(names):
        small_jpeg(staging / rel, seed=i)
    for rel in names:
        (shared.inbound / rel).parent.mkdir(exist_ok=True)
        (staging / rel).rename(shared.inbound / rel)
    wait_until(lambda: len(rel_names(shared.outbound)) >= len(names), 120, "all delivered", a)
    assert a.stop() == 0
    assert b.stop() == 0
    assert rel_names(shared.outbound) == sorted(names)  # no "name (1).jpg": nothing twice
    assert rel_names(shared.quarantine) == []
    done_a, done_b = len(a.events("job.done")), len(b.events("job.done"))
    print(f"two instances: a did {done_a}, b did {done_b} of {len(names)}")
    assert done_a + done_b == len(names)
    assert temporaries(shared.inbound, shared.outbound) == []


TOKEN = "Zelda-Quixote-8841"


def test_file_names_never_appear_in_logs(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    ov_cache: Path,
    face_images: list[tuple[Path, Labelled | None]],
) -> None:
    f = Folders.make(tmp_path / f"svc-{TOKEN}-root")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        cache_dir=ov_cache,
        service={"max_attempts": 2},
    )
    good = face_images[0][0]
    sub = f.inbound / f"patient-{TOKEN}"
    sub.mkdir()
    copy_in(good, sub / f"{TOKEN}-portrait.jpg")
    (sub / f"{TOKEN}-corrupt.jpg").write_bytes(good.read_bytes()[:3000])
    (sub / f"{TOKEN}-empty.jpg").write_bytes(b"")
    (sub / f"{TOKEN}-random.png").write_bytes(os.urandom(5000))
    os.symlink(f"/etc/{TOKEN}", sub / f"{TOKEN}-link.jpg")
    os.mkfifo(sub / f"{TOKEN}-fifo.jpg")
    d = daemons(cfg).start()
    d.wait_ready()
    wait_until(
        lambda: len(rel_names(f.outbound)) + len(rel_names(f.quarantine)) == 6,
        60,
        "all handled",
        d,
    )
    assert d.stop() == 0
    d.start()  # a second start: recovery and start-up logs too
    d.wait_ready()
    assert d.stop() == 0
    log = d.log_path.read_bytes()
    assert log.count(b'"event"') > 10
    for needle in (TOKEN, TOKEN.lower(), "portrait", "patient-", str(f.root)):
        assert needle.encode() not in log, f"{needle!r} leaked into the log"
    for reason in f.quarantine.rglob("*.reason.json"):
        assert TOKEN not in reason.read_text()
