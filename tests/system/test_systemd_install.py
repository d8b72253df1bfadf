"""The unattended install under a real systemd (issue "Unattended server install").

A minimal Debian boots with systemd in systemd-nspawn (private network, no
connection to anything); the offline bundle is installed with
``deploy/install.sh --offline``; then the unit is driven as an operator would:
files are dropped by a producer user, read by a consumer user, quarantined for
an admin user, and the service is killed mid-job. Everything runs under the
INSTALLED unit, whose sandbox is what these tests are about (each
``ReadWritePaths=`` entry is a bind mount of its own; ``link()`` and
``rename()`` between two of them fail with EXDEV).
Skips with the reason when this machine cannot run a container. About 6 min
on 2 cores (the Debian root filesystem is cached; making it takes ~1 min).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, SHARED
from tests.helpers import nspawn
from tests.helpers.media import changed_fraction, read_labels
from tests.helpers.synthvideo import write_clip

pytestmark = pytest.mark.slow

SECRET = "Kvarnholm-Ostergaard"
UNIT = "redactd.service"
SRV = "/srv/redactd"
WORK = f"{SRV}/.work"
# Users of the three audiences (deploy/README.md, "Who may read what").
PRODUCER, CONSUMER, ADMIN, MONITOR = "nvr-export", "press-office", "dpo", "node-exp"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    reason = nspawn.unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bundle") / "redactd-bundle"
    subprocess.run(
        [str(REPO / "deploy" / "make-bundle.sh"), str(out), sys.executable],
        check=True,
        timeout=1800,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def box(bundle: Path) -> Iterator[nspawn.Container]:
    try:
        nspawn.ensure_rootfs()
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"cannot make the Debian root filesystem here: {e}")
    with nspawn.booted({bundle: "/mnt/bundle"}) as c:
        r = c.run(
            "/mnt/bundle/deploy/install.sh", "--offline", "/mnt/bundle", check=False, timeout=1500
        )
        assert r.returncode == 0, r.stdout + r.stderr
        for user, group in (
            (PRODUCER, "redactd-in"),
            (CONSUMER, "redactd-out"),
            (ADMIN, "redactd-admin"),
            (MONITOR, "redactd-metrics"),
        ):
            c.run("useradd", "--system", "--no-create-home", "-G", group, user)
        yield c


def _wait(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _active(box: nspawn.Container) -> bool:
    return box.show("redactd.service", "ActiveState")["ActiveState"] == "active"


def _exists(box: nspawn.Container, path: str) -> bool:
    return box.run("test", "-e", path, check=False).returncode == 0


def _ls(box: nspawn.Container, folder: str) -> list[str]:
    return sorted(box.run("ls", "-A", folder).stdout.split())


def _jobs(box: nspawn.Container) -> list[str]:
    """Job folders in the installed work area (claimed, not finished)."""
    return [n for n in _ls(box, WORK) if not n.startswith(".")]


def _stat(box: nspawn.Container, path: str) -> tuple[str, str, str]:
    """(octal mode, owner, group) of ``path`` in the container."""
    mode, owner, group = box.run("stat", "-c", "%a %U %G", path).stdout.split()
    return mode, owner, group


def _can_read(box: nspawn.Container, user: str, path: str) -> bool:
    r = box.run_as(user, "sh", "-c", 'cat "$1" > /dev/null', "sh", path, check=False)
    return r.returncode == 0


def _journal(box: nspawn.Container) -> str:
    return box.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout


def _drop(box: nspawn.Container, name: str, data: bytes) -> None:
    """A producer drops a file as scanners do: written under a dot name, then renamed."""
    box.write_as(PRODUCER, f"{SRV}/inbound/.{name}.part", data)
    box.run_as(PRODUCER, "mv", f"{SRV}/inbound/.{name}.part", f"{SRV}/inbound/{name}")


def _face_image() -> tuple[bytes, list[tuple[int, int, int, int]]]:
    if SHARED is not None:
        for it in read_labels(SHARED / "eval" / "faces_wider_val"):
            if it.faces and len(it.faces) <= 4 and all(h >= 40 for *_xy, _w, h in it.faces):
                return it.path.read_bytes(), list(it.faces)
    pytest.skip("needs ../shared for a real face image")


def test_unit_is_running_after_ready_with_status(box: nspawn.Container) -> None:
    _wait(
        lambda: box.show("redactd.service", "ActiveState")["ActiveState"] == "active", 120, "active"
    )
    props = box.show("redactd.service", "Type", "SubState", "StatusText", "NRestarts", "User")
    assert props["Type"] == "notify"
    assert props["SubState"] == "running"
    # Type=notify: "active" is reached only after READY=1; STATUS shows the queue.
    assert "queued" in props["StatusText"]


def test_dropped_file_comes_out_masked_for_consumers_only(box: nspawn.Container) -> None:
    data, faces = _face_image()
    # umask 027: the original is 0640, group redactd-in (set-group-ID inbound);
    # the service reads it through its supplementary group.
    _drop(box, f"{SECRET}.jpg", data)
    out = f"{SRV}/outbound/{SECRET}.jpg"
    _wait(lambda: _exists(box, out), 180, "the masked output")
    before = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    after = np.asarray(Image.open(io.BytesIO(box.read_file(out))).convert("RGB"))
    assert all(changed_fraction(before, after, f) >= 0.5 for f in faces)
    assert not _exists(box, f"{SRV}/inbound/{SECRET}.jpg")
    # The result is the consumers': 0640, group redactd-out, readable by a
    # member of that group and by nobody else who is not root.
    assert _stat(box, out) == ("640", "redactd", "redactd-out")
    assert _can_read(box, CONSUMER, out)
    assert not _can_read(box, PRODUCER, out)
    assert not _can_read(box, ADMIN, out)
    journal = _journal(box)
    assert "job.done" in journal
    assert SECRET not in journal
    # Claimed and delivered on one mount: nothing is left in the work area.
    _wait(lambda: _jobs(box) == [], 30, "an empty work area")


def test_bad_files_are_quarantined_with_their_reason(box: nspawn.Container) -> None:
    """A truncated JPEG and a text file named .jpg reach quarantine, each with
    its reason file. Under the unit shipped before, the work area
    (/var/lib/redactd/work) and quarantine (/srv/redactd) were two bind mounts:
    the original could not be linked into quarantine (EXDEV) and stayed in the
    work area; this test then timed out waiting for the quarantined files."""
    data, _faces = _face_image()
    cut, text = f"{SECRET}-cut.jpg", f"{SECRET}-text.jpg"
    _drop(box, cut, data[: len(data) // 2])
    _drop(box, text, b"Minutes of the meeting with Kvarnholm, not a photo\n" * 20)
    q = f"{SRV}/quarantine"
    want = [cut, cut + ".reason.json", text, text + ".reason.json"]
    _wait(lambda: _ls(box, q) == sorted(want), 120, "both files and reasons in quarantine")
    reasons = {
        name: json.loads(box.run_as(ADMIN, "cat", f"{q}/{name}.reason.json").stdout)["reason"]
        for name in (cut, text)
    }
    assert reasons[cut] in ("truncated", "corrupt"), reasons
    assert reasons[text] == "unsupported_type", reasons
    assert _ls(box, f"{SRV}/inbound") == []
    assert _ls(box, f"{SRV}/outbound").count(cut) == 0
    _wait(lambda: _jobs(box) == [], 30, "an empty work area")
    # The reason files are the admins': service's mode, group redactd-admin.
    assert _stat(box, f"{q}/{cut}.reason.json") == ("640", "redactd", "redactd-admin")
    # Quarantine holds unmasked originals: consumers and producers cannot list
    # or read it; consumers cannot look into inbound either.
    for user in (CONSUMER, PRODUCER):
        assert box.run_as(user, "ls", q, check=False).returncode != 0
        assert not _can_read(box, user, f"{q}/{cut}.reason.json")
        assert not _can_read(box, user, f"{q}/{cut}")
    assert box.run_as(CONSUMER, "ls", f"{SRV}/inbound", check=False).returncode != 0
    assert box.run_as(CONSUMER, "touch", f"{SRV}/inbound/x.jpg", check=False).returncode != 0
    assert box.run_as(CONSUMER, "touch", f"{SRV}/outbound/x.jpg", check=False).returncode != 0
    assert box.run_as(CONSUMER, "ls", WORK, check=False).returncode != 0
    assert box.run_as(ADMIN, "ls", WORK, check=False).returncode != 0
    journal = _journal(box)
    assert "job.quarantined" in journal
    assert SECRET not in journal and "Kvarnholm" not in journal


def test_records_reach_the_journal_with_structured_fields_and_no_names(
    box: nspawn.Container,
) -> None:
    """Under the unit, records go to journald natively (systemd-python): an
    operator selects by event and reason; no field carries the input's name."""
    name = f"{SECRET}-journal.jpg"
    _drop(box, name, b"Minutes of the meeting with Kvarnholm, not a photo\n" * 20)
    _wait(lambda: _exists(box, f"{SRV}/quarantine/{name}.reason.json"), 120, "the quarantined file")
    sel = box.run(
        "journalctl", "-u", UNIT, "--no-pager", "-o", "json",
        "REDACTD_EVENT=job.quarantined", "REDACTD_REASON=unsupported_type",
    ).stdout
    records = [json.loads(ln) for ln in sel.splitlines()]
    assert records, "journalctl found no job.quarantined record by its fields"
    rec = records[-1]
    assert rec["SYSLOG_IDENTIFIER"] == "redactd" and rec["PRIORITY"] == "4"
    assert rec["REDACTD_STAGE"] and rec["REDACTD_JOB"]
    assert json.loads(rec["MESSAGE"])["event"] == "job.quarantined"
    assert not any(k.startswith("CODE_") for k in rec)
    everything = box.run("journalctl", "-u", UNIT, "--no-pager", "-o", "json").stdout
    backends = [
        json.loads(ln) for ln in everything.splitlines() if '"REDACTD_EVENT":"log.backend"' in ln
    ]
    assert backends and backends[-1]["REDACTD_BACKEND"] == "journald"
    assert '"REDACTD_BACKEND":"libsystemd"' in everything  # service.notify_backend
    assert SECRET not in everything and "Kvarnholm" not in everything
    version = box.run("/opt/redactd/venv/bin/redactd", "--version").stdout
    assert "systemd-python 235" in version and "openvino " in version


def test_quarantined_original_is_the_admins_with_the_service_mode(box: nspawn.Container) -> None:
    q = f"{SRV}/quarantine"
    name = f"{SECRET}-mode.jpg"
    # umask 022: the producer's original is world-readable 0644.
    box.write_as(PRODUCER, f"{SRV}/inbound/.{name}.part", b"no image here\n", umask="022")
    box.run_as(PRODUCER, "mv", f"{SRV}/inbound/.{name}.part", f"{SRV}/inbound/{name}")
    _wait(lambda: _exists(box, f"{q}/{name}.reason.json"), 120, "the quarantined file")
    _wait(lambda: _jobs(box) == [], 30, "an empty work area")
    assert _stat(box, f"{q}/{name}") == ("640", "redactd", "redactd-admin")
    assert box.run_as(ADMIN, "cat", f"{q}/{name}").stdout == "no image here\n"


def _video_clip(tmp: Path) -> bytes:
    """A 720p clip of 4 s (~25 s of work): long enough to be killed in the middle."""
    clip = tmp / "clip.mp4"
    write_clip(clip, size=(1280, 720), frames=100, audio=None)
    return clip.read_bytes()


def test_killed_mid_job_the_claimed_file_is_delivered_after_restart(
    box: nspawn.Container, tmp_path: Path
) -> None:
    _wait(lambda: _active(box), 120, "active")
    before = box.show(UNIT, "MainPID", "NRestarts")
    name = f"{SECRET}-clip.mp4"
    _drop(box, name, _video_clip(tmp_path))
    t0 = time.monotonic()
    _wait(lambda: not _exists(box, f"{SRV}/inbound/{name}") and _jobs(box), 60, "the claim")
    time.sleep(2)  # well into the job: decoding, detecting
    # Threads now (TasksCurrent= needs the pids controller, which a container may lack).
    pid = box.show(UNIT, "MainPID")["MainPID"]
    tasks = len(box.run("ls", f"/proc/{pid}/task").stdout.split())
    box.run("systemctl", "kill", "--kill-whom=main", "-s", "KILL", UNIT)
    _wait(lambda: box.show(UNIT, "MainPID")["MainPID"] != before["MainPID"], 60, "the kill")
    # Killed in the middle: the job is still claimed, nothing was published.
    assert _jobs(box), "the job finished before the kill; make the clip longer"
    assert not [n for n in _ls(box, f"{SRV}/outbound") if n.startswith(f"{SECRET}-clip")]
    # Restart=on-failure brings it back; recovery takes up the claimed job.
    _wait(lambda: box.show(UNIT, "NRestarts")["NRestarts"] != before["NRestarts"], 60, "restart")
    _wait(
        lambda: [n for n in _ls(box, f"{SRV}/outbound") if n.startswith(f"{SECRET}-clip")],
        300,
        "the recovered job's output",
    )
    print(f"video job claimed, killed, recovered and delivered in {time.monotonic() - t0:.0f} s")
    _wait(lambda: _jobs(box) == [], 30, "an empty work area")
    assert not _exists(box, f"{SRV}/inbound/{name}")
    journal = _journal(box)
    assert "job.recovered" in journal
    assert SECRET not in journal
    # TasksMax= has room: threads of Python, OpenVINO and FFmpeg during a video job.
    limit = int(box.show(UNIT, "TasksMax")["TasksMax"])
    print(f"threads of the service during a video job: {tasks} (TasksMax={limit})")
    assert 0 < tasks * 3 <= limit, (tasks, limit)


def test_service_cannot_write_its_models_or_a_compiled_cache(box: nspawn.Container) -> None:
    """Code that took over the process through a hostile file must not be
    able to leave a detector behind that finds nothing."""
    _wait(lambda: _active(box), 120, "active")
    store = "/opt/redactd/models"
    model = box.run("sh", "-c", f"ls -d {store}/*/ | head -1").stdout.strip().rstrip("/")
    assert model, "no model installed"
    onnx = box.run("sh", "-c", f"ls {model}/* | head -1").stdout.strip()
    # Owned by root: the service user cannot write it even outside the unit.
    assert _stat(box, store)[1:] == ("root", "root")
    assert _stat(box, onnx)[1] == "root"
    # In the unit's own mount namespace: its user may not write there, and the
    # mount is read-only even for root (were the ownership ever wrong).
    for target in (f"{model}/evil", onnx):
        r = box.in_service(UNIT, "sh", "-c", f"echo x >> '{target}'")
        assert r.returncode != 0, (target, r.stderr)
        r = box.in_service(UNIT, "sh", "-c", f"echo x >> '{target}'", as_root=True)
        assert r.returncode != 0 and "Read-only file system" in r.stderr, (target, r.stderr)
    assert box.in_service(UNIT, "sh", "-c", f"cat '{onnx}' > /dev/null").returncode == 0
    # Older configs kept models and the compiled cache in the state directory:
    # read-only there too. The packaged config keeps the cache off.
    box.run("mkdir", "-p", "/var/lib/redactd/models", "/var/lib/redactd/cache/openvino")
    box.run("chown", "redactd:redactd", "/var/lib/redactd/models", "/var/lib/redactd/cache")
    box.run("chown", "redactd:redactd", "/var/lib/redactd/cache/openvino")
    box.run("systemctl", "restart", UNIT, timeout=180)
    _wait(lambda: _active(box), 120, "active")
    for folder in ("/var/lib/redactd/models", "/var/lib/redactd/cache/openvino"):
        r = box.in_service(UNIT, "touch", f"{folder}/evil")
        assert "Read-only file system" in r.stderr, (folder, r.stderr)
    assert box.in_service(UNIT, "touch", "/var/lib/redactd/writable").returncode == 0
    config = box.read_file("/etc/redactd/redactd.toml").decode()
    assert 'cache_dir = ""' in config


def test_work_area_and_folders_are_one_mount_for_the_service(box: nspawn.Container) -> None:
    """What the service itself can do under the unit: link a file from its
    work area into quarantine and outbound (one bind mount, /srv/redactd);
    across two ReadWritePaths= mounts the same link fails with EXDEV, which is
    what broke every quarantine of the unit shipped before."""
    _wait(lambda: _active(box), 120, "active")
    svc = box.in_service
    assert svc(UNIT, "sh", "-c", f"echo probe > {WORK}/.probe").returncode == 0
    try:
        for folder in ("quarantine", "outbound"):
            r = svc(UNIT, "ln", f"{WORK}/.probe", f"{SRV}/{folder}/.probe")
            assert r.returncode == 0, r.stderr
            svc(UNIT, "rm", "-f", f"{SRV}/{folder}/.probe")
        assert svc(UNIT, "sh", "-c", "echo probe > /var/lib/redactd/.probe").returncode == 0
        r = svc(UNIT, "ln", "/var/lib/redactd/.probe", f"{SRV}/quarantine/.probe")
        assert r.returncode != 0 and "cross-device" in r.stderr, r.stderr
    finally:
        svc(UNIT, "rm", "-f", f"{WORK}/.probe", "/var/lib/redactd/.probe")


def test_work_area_on_another_mount_still_delivers_and_quarantines(
    box: nspawn.Container,
) -> None:
    good = box.read_file("/etc/redactd/redactd.toml")
    data, _faces = _face_image()
    try:
        box.run("install", "-d", "-o", "redactd", "-g", "redactd", "-m", "0700",
                "/var/lib/redactd/work")
        box.write_file(
            "/etc/redactd/redactd.toml",
            good.replace(f'work_dir = "{WORK}"'.encode(), b'work_dir = "/var/lib/redactd/work"'),
        )
        box.run("systemctl", "restart", UNIT, timeout=180)
        _wait(lambda: _active(box), 120, "active")
        _drop(box, f"{SECRET}-x.jpg", data)
        _drop(box, f"{SECRET}-x-cut.jpg", data[: len(data) // 3])
        # (about 10 s each once it works: the waits are not tight)
        _wait(lambda: _exists(box, f"{SRV}/outbound/{SECRET}-x.jpg"), 40, "the output")
        _wait(
            lambda: _exists(box, f"{SRV}/quarantine/{SECRET}-x-cut.jpg.reason.json"),
            30,
            "the quarantined file",
        )
    finally:
        box.write_file("/etc/redactd/redactd.toml", good)
        box.run("systemctl", "restart", UNIT, check=False, timeout=180)
        _wait(lambda: _active(box), 120, "active")
        # whatever the old code left: claims in inbound, jobs in the old work area
        box.run("sh", "-c", f"rm -rf /var/lib/redactd/work {SRV}/inbound/.redactd-claim-*")


def test_resource_limits_are_set_and_a_drop_in_overrides_them(box: nspawn.Container) -> None:
    props = box.show(UNIT, "MemoryHigh", "MemoryMax", "TasksMax")
    assert props == {
        "MemoryHigh": str(6 << 30),
        "MemoryMax": str(8 << 30),
        "TasksMax": "256",
    }
    d = "/etc/systemd/system/redactd.service.d"
    box.run("mkdir", "-p", d)
    box.write_file(f"{d}/memory.conf", b"[Service]\nMemoryHigh=10G\nMemoryMax=12G\n")
    try:
        box.run("systemctl", "daemon-reload")
        props = box.show(UNIT, "MemoryHigh", "MemoryMax")
        assert props == {"MemoryHigh": str(10 << 30), "MemoryMax": str(12 << 30)}
    finally:
        box.run("rm", "-rf", d)
        box.run("systemctl", "daemon-reload")


def test_metrics_file_is_readable_by_the_metrics_group_only(box: nspawn.Container) -> None:
    path = "/var/lib/redactd-metrics/redactd.prom"
    _wait(lambda: _exists(box, path), 60, "the metrics file")
    text = box.run_as(MONITOR, "cat", path).stdout
    assert "redactd_" in text
    assert _stat(box, path)[2] == "redactd-metrics"
    assert box.run_as(CONSUMER, "cat", path, check=False).returncode != 0
    # The rest of the state stays private (StateDirectoryMode=0700).
    assert box.run_as(MONITOR, "ls", "/var/lib/redactd", check=False).returncode != 0


def test_security_exposure_is_ok(box: nspawn.Container) -> None:
    r = box.run("systemd-analyze", "security", "redactd.service", "--no-pager", check=False)
    m = re.search(r"Overall exposure level for redactd.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout[-2000:]
    assert float(m.group(1)) <= 2.0, r.stdout[-3000:]


def test_units_verify_without_warnings(box: nspawn.Container) -> None:
    for unit in ("/etc/systemd/system/redactd.service", "/etc/systemd/system/redactd@.service"):
        r = box.run("systemd-analyze", "verify", unit, check=False)
        # verify exits 0 on unknown keys: any output at all is a warning here.
        noise = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        assert r.returncode == 0 and not noise, noise


def test_hung_main_loop_is_killed_by_the_watchdog_and_restarted(box: nspawn.Container) -> None:
    box.run("mkdir", "-p", "/run/systemd/system/redactd.service.d")
    box.write_file(
        "/run/systemd/system/redactd.service.d/test-watchdog.conf", b"[Service]\nWatchdogSec=6\n"
    )
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "restart", "redactd.service", timeout=180)
    _wait(
        lambda: box.show("redactd.service", "ActiveState")["ActiveState"] == "active", 120, "active"
    )
    before = box.show("redactd.service", "MainPID", "NRestarts")
    # Freeze the main process: the loop stops pinging, as a hung pipeline would.
    box.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", "redactd.service")
    _wait(
        lambda: box.show("redactd.service", "NRestarts")["NRestarts"] != before["NRestarts"],
        90,
        "a watchdog restart",
    )
    _wait(
        lambda: box.show("redactd.service", "ActiveState")["ActiveState"] == "active",
        120,
        "active again",
    )
    after = box.show("redactd.service", "MainPID")
    assert after["MainPID"] != before["MainPID"]
    box.run("rm", "/run/systemd/system/redactd.service.d/test-watchdog.conf")
    box.run("systemctl", "daemon-reload")


def test_broken_config_stops_with_78_and_no_restart_loop(box: nspawn.Container) -> None:
    good = box.read_file("/etc/redactd/redactd.toml")
    try:
        box.write_file("/etc/redactd/redactd.toml", good + b"\n[service]\nworkers = 0\n")
        box.run("systemctl", "restart", "redactd.service", check=False, timeout=120)
        _wait(
            lambda: (
                box.show("redactd.service", "ActiveState")["ActiveState"] in ("failed", "inactive")
            ),
            60,
            "the unit to stop",
        )
        n0 = box.show("redactd.service", "NRestarts")["NRestarts"]
        time.sleep(12)  # longer than RestartSec: a restart loop would show here
        props = box.show("redactd.service", "ActiveState", "ExecMainStatus", "NRestarts")
        assert props["ExecMainStatus"] == "78"
        assert props["ActiveState"] == "failed"
        assert props["NRestarts"] == n0
    finally:
        box.write_file("/etc/redactd/redactd.toml", good)
        box.run("systemctl", "reset-failed", "redactd.service", check=False)
        box.run("systemctl", "restart", "redactd.service", check=False, timeout=180)


def test_memory_deny_write_execute_breaks_openvino_so_it_stays_off(box: nspawn.Container) -> None:
    """The measurement behind leaving MemoryDenyWriteExecute= unset in the unit.

    OpenVINO's CPU plugin JIT-compiles its kernels into writable+executable
    memory; under MDWE the model fails to compile (and redactd refuses to
    start, exit 78) while the same command without MDWE works. If a future
    OpenVINO stops needing W+X memory this test fails: then turn MDWE on.
    """
    data, _faces = _face_image()
    box.write_file("/var/lib/redactd/probe.jpg", data)
    box.run("chown", "redactd:redactd", "/var/lib/redactd/probe.jpg")
    results = {}
    for mdwe in ("no", "yes"):
        r = box.run(
            "systemd-run", "--wait", "--pipe", "--quiet",
            "-p", f"MemoryDenyWriteExecute={mdwe}", "-p", "User=redactd",
            "-p", "Environment=HOME=/var/lib/redactd",
            "/opt/redactd/venv/bin/redactd", "detect", "--config", "/etc/redactd/redactd.toml",
            "/var/lib/redactd/probe.jpg", "--json",
            check=False, timeout=300,
        )
        results[mdwe] = r
    assert results["no"].returncode == 0, results["no"].stderr[-2000:]
    assert results["yes"].returncode == 78
    assert "cannot be compiled" in results["yes"].stderr


def test_instance_gets_its_own_folders_config_and_metrics(box: nspawn.Container) -> None:
    """install.sh --instance hr: /etc/redactd/hr.toml names /srv/redactd/hr/...,
    its folders exist with the audiences' groups, and redactd@hr serves them."""
    r = box.run(
        "/mnt/bundle/deploy/install.sh", "--offline", "/mnt/bundle", "--instance", "hr",
        "--no-start", check=False, timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    hr = f"{SRV}/hr"
    assert _stat(box, f"{hr}/inbound") == ("2770", "redactd", "redactd-in")
    assert _stat(box, f"{hr}/quarantine") == ("2750", "redactd", "redactd-admin")
    assert _stat(box, f"{hr}/.work") == ("700", "redactd", "redactd")
    box.run("systemctl", "start", "redactd@hr.service", timeout=180)
    try:
        data, _faces = _face_image()
        box.write_as(PRODUCER, f"{hr}/inbound/.{SECRET}.jpg.part", data)
        box.run_as(PRODUCER, "mv", f"{hr}/inbound/.{SECRET}.jpg.part", f"{hr}/inbound/{SECRET}.jpg")
        _wait(lambda: _exists(box, f"{hr}/outbound/{SECRET}.jpg"), 120, "the instance's output")
        assert _stat(box, f"{hr}/outbound/{SECRET}.jpg") == ("640", "redactd", "redactd-out")
        _wait(lambda: _exists(box, "/var/lib/redactd-metrics/hr.prom"), 60, "its metrics")
    finally:
        box.run("systemctl", "stop", "redactd@hr.service", check=False, timeout=120)


def test_upgrade_with_a_bad_model_leaves_the_running_version(
    box: nspawn.Container, bundle: Path, tmp_path: Path
) -> None:
    """A bundle whose model fails verification (checksums list regenerated, so
    only the model's own sha256 can catch it) must not touch the install."""
    import shutil

    bad = tmp_path / "bad-bundle"
    shutil.copytree(bundle, bad)
    onnx = next((bad / "models").rglob("*.onnx"))
    blob = bytearray(onnx.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    onnx.write_bytes(bytes(blob))
    # The SBOM is rewritten to match as well (it is checked before anything else).
    sbom = json.loads((bad / "sbom.cdx.json").read_text())
    for model in sbom["components"]:
        for f in model.get("components", []):
            if f["properties"][0]["value"] == onnx.relative_to(bad).as_posix():
                f["hashes"] = [{"alg": "SHA-256", "content": hashlib.sha256(blob).hexdigest()}]
    (bad / "sbom.cdx.json").write_text(json.dumps(sbom))
    subprocess.run(
        "find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS",
        shell=True, cwd=bad, check=True,
    )
    _wait(lambda: _active(box), 120, "active")
    before = box.show("redactd.service", "MainPID")
    release = box.run("readlink", "/opt/redactd/venv").stdout.strip()
    box.run("mkdir", "-p", "/var/tmp/bad-bundle")
    tar = subprocess.run(["tar", "-C", str(bad), "-cf", "-", "."], capture_output=True, check=True)
    box.pipe_in(tar.stdout, "tar", "-C", "/var/tmp/bad-bundle", "-xf", "-")
    r = box.run(
        "/var/tmp/bad-bundle/deploy/install.sh", "--offline", "/var/tmp/bad-bundle", check=False
    )
    assert r.returncode != 0
    assert "installed version is unchanged" in r.stderr
    assert box.run("readlink", "/opt/redactd/venv").stdout.strip() == release
    assert box.show("redactd.service", "MainPID") == before
    assert box.run("/opt/redactd/venv/bin/redactd", "models", "verify",
                   "--config", "/etc/redactd/redactd.toml", check=False).returncode == 0


def test_uninstall_refuses_with_unfinished_jobs_then_keeps_data_and_config(
    box: nspawn.Container,
) -> None:
    """Last in this module: it removes the install."""
    job = f"{WORK}/0123456789abcdef"
    box.run("install", "-d", "-o", "redactd", "-m", "0700", job)
    box.run("touch", f"{job}/job.json")
    r = box.run("/mnt/bundle/deploy/uninstall.sh", check=False)
    assert r.returncode == 1 and "unfinished jobs" in r.stderr, r.stdout + r.stderr
    assert _exists(box, "/opt/redactd/venv")
    box.run("rm", "-rf", job)
    box.run("/mnt/bundle/deploy/uninstall.sh")
    for gone in ("/opt/redactd", "/etc/systemd/system/redactd.service", "/var/lib/redactd-metrics"):
        assert not _exists(box, gone), gone
    for kept in ("/etc/redactd/redactd.toml", f"{SRV}/outbound/{SECRET}.jpg", f"{SRV}/quarantine"):
        assert _exists(box, kept), kept
