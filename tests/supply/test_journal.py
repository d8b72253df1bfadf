"""Logs to journald natively under systemd; JSON lines where libsystemd is absent.

The native path is exercised with the real libsystemd: in a private mount
namespace a datagram socket is bound at journald's address
(/run/systemd/journal/socket) and the records ``sd_journal_sendv`` writes
there are decoded. The full path under a real systemd is checked by
tests/system/test_systemd_install.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from redactd.service import notify
from tests.conftest import REPO

CHILD_PRELUDE = """
import json, os, sys
sys.path.insert(0, {daemon!r})
st = os.fstat(sys.stdout.fileno())
os.environ["JOURNAL_STREAM"] = f"{{st.st_dev}}:{{st.st_ino}}"
"""


def _decode(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: KEY=value lines, or KEY, 64-bit length, data."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", datagram[nl + 1 : nl + 9])
            fields[line.decode()] = datagram[nl + 9 : nl + 9 + n].decode()
            i = nl + 9 + n + 1
    return fields


def _run(code: str, tmp_path: Path, unshare: bool = False) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD_PRELUDE.format(daemon=str(REPO / "daemon")) + textwrap.dedent(code))
    cmd = [sys.executable, str(script)]
    if unshare:
        cmd = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && exec "$@"',
            "sh",
            *cmd,
        ]
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_records_reach_journald_with_structured_fields(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private /run")
    r = _run(
        """
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind("/run/systemd/journal/socket")
        s.settimeout(5)
        from redactd.core import log
        log.configure()
        log.get().info("job.quarantined", reason="unsupported_type", job="ab12", bytes=123)
        got = [s.recv(65536).hex() for _ in range(2)]
        print(json.dumps(got), file=sys.stderr)
        """,
        tmp_path,
        unshare=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # nothing went to the stream: it all went to the journal
    backend, record = (_decode(bytes.fromhex(h)) for h in json.loads(r.stderr.splitlines()[-1]))
    assert backend["REDACTD_EVENT"] == "log.backend" and backend["REDACTD_BACKEND"] == "journald"
    assert record["REDACTD_EVENT"] == "job.quarantined"
    assert record["REDACTD_REASON"] == "unsupported_type"
    assert record["REDACTD_JOB"] == "ab12" and record["REDACTD_BYTES"] == "123"
    assert record["PRIORITY"] == "6" and record["SYSLOG_IDENTIFIER"] == "redactd"
    assert json.loads(record["MESSAGE"])["event"] == "job.quarantined"
    # No source path of redactd's code either (the bindings' send() adds one).
    assert not any(k.startswith("CODE_") for k in record)


def test_without_libsystemd_json_lines_go_to_stdout_and_the_choice_is_logged_once(
    tmp_path: Path,
) -> None:
    r = _run(
        """
        sys.modules["systemd"] = None  # as where libsystemd.so is missing: ImportError
        from redactd.core import log
        log.configure()
        log.configure()  # a reload re-configures: still said once
        log.get().info("job.quarantined", reason="unsupported_type")
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [(ln["event"], ln.get("reason")) for ln in lines] == [
        ("log.backend", "no_libsystemd"),
        ("job.quarantined", "unsupported_type"),
    ]
    assert lines[0]["backend"] == "stream"


def test_outside_systemd_nothing_is_said_and_lines_go_to_the_stream(tmp_path: Path) -> None:
    r = _run(
        """
        del os.environ["JOURNAL_STREAM"]
        from redactd.core import log
        log.configure()
        log.get().info("job.done", job="ab12")
        """,
        tmp_path,
    )
    assert [json.loads(ln)["event"] for ln in r.stdout.splitlines()] == ["job.done"]


def test_notify_goes_through_libsystemd_when_the_socket_is_the_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = str(tmp_path / "notify.sock")
    s.bind(addr)
    s.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    n = notify.Notifier()
    assert n.backend == "libsystemd"
    assert n.ready("running")
    assert s.recv(4096) == b"READY=1\nSTATUS=running"
    assert n.watchdog()
    assert s.recv(4096) == b"WATCHDOG=1"
    s.close()


def test_notify_falls_back_to_its_own_socket_code_without_the_bindings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = str(tmp_path / "notify.sock")
    s.bind(addr)
    s.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    n = notify.Notifier()
    assert n.backend == "socket"
    assert n.ready("running")
    assert s.recv(4096) == b"READY=1\nSTATUS=running"
    assert notify.booted() == Path("/run/systemd/system").is_dir()
    s.close()
