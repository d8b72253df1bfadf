"""Run `redactd run` as a real subprocess for reliability tests.

``Daemon`` starts the real CLI (or the fake-detector launcher), listens on
its own ``NOTIFY_SOCKET`` (an abstract socket, so no path-length limits),
appends stdout/stderr of every start to one log file per instance, and
always kills the process in ``close()``: no test may leak a process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable


def toml_str(p: object) -> str:
    return json.dumps(str(p))


@dataclass
class Folders:
    root: Path
    inbound: Path
    outbound: Path
    quarantine: Path
    work: Path
    status: Path

    @classmethod
    def make(cls, root: Path, **override: Path) -> Folders:
        f = cls(
            root=root,
            inbound=override.get("inbound", root / "inbound"),
            outbound=override.get("outbound", root / "outbound"),
            quarantine=override.get("quarantine", root / "quarantine"),
            work=override.get("work", root / "work"),
            status=override.get("status", root / "status.json"),
        )
        for p in (f.inbound, f.outbound, f.quarantine):
            p.mkdir(parents=True, exist_ok=True)
        return f


def fixed_detection_schedule(cfg: Path, every: int) -> None:
    """Detect on every ``every``-th frame exactly: the change gate is opened
    wide (any change counts as unchanged), for tests whose timing relies on a
    known detection schedule rather than on the gate (tests of the gate itself
    are in tests/integration/test_video_unjudged.py)."""
    cfg.write_text(
        cfg.read_text()
        + f"\n[profiles.default.video]\ndetect_every = {every}\nskip_min_fps = 1.0\n"
        + "skip_max_change = 255.0\n"
    )


def write_config(
    path: Path,
    folders: Folders,
    models_dir: Path,
    *,
    cache_dir: Path | None = None,
    detectors: tuple[str, ...] = ("centerface",),
    mode: str = "inotify",
    service: dict[str, Any] | None = None,
    watch: dict[str, Any] | None = None,
    extra_watches: Iterable[Folders] = (),
) -> Path:
    """A complete config for one or more watched folders (short timings)."""
    svc: dict[str, Any] = {
        "work_dir": folders.work,
        "workers": 1,
        "settle_seconds": 0.3,
        "empty_file_grace_seconds": 0.5,
        "rescan_seconds": 5.0,
        "max_attempts": 4,
        "retry_base_seconds": 0.1,
        "retry_max_seconds": 1.0,
        "stop_timeout_seconds": 10.0,
        "min_free_bytes": 0,
        "status_file": folders.status,
    }
    svc.update(service or {})
    lines = ["[service]"]
    for k, v in svc.items():
        lines.append(f"{k} = {_toml_value(v)}")
    lines += ["", "[models]", f"dir = {toml_str(models_dir)}", "", "[runtime]"]
    if cache_dir is not None:
        lines.append(f"cache_dir = {toml_str(cache_dir)}")
    lines += [
        "",
        "[profiles.default.face]",
        f"detectors = {json.dumps(list(detectors))}",
        "",
    ]
    if "fake" in detectors:
        # Plumbing runs: no real plate model either (the default profile has one).
        lines += ["[profiles.default.plate]", "enabled = false", ""]
    for f in (folders, *extra_watches):
        w: dict[str, Any] = {
            "inbound": f.inbound,
            "outbound": f.outbound,
            "quarantine": f.quarantine,
            "mode": mode,
            "poll_interval": 0.3,
        }
        w.update(watch or {})
        lines.append("[[watch]]")
        for k, v in w.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o640)
    return path


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return toml_str(v)


@dataclass
class Daemon:
    """One daemon instance; restartable; its logs accumulate in ``log_path``."""

    config: Path
    log_path: Path
    fake: str | None = None  # script for tests.helpers.fake_daemon; None = real CLI
    drop_dac: bool = False  # run as root without CAP_DAC_OVERRIDE (permissions apply)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _sock: socket.socket | None = None
    _addr: str = ""
    notifications: list[str] = field(default_factory=list)
    starts: int = 0

    def command(self) -> list[str]:
        if self.fake is not None:
            cmd = [PYTHON, "-m", "tests.helpers.fake_daemon", str(self.config)]
        else:
            cmd = [PYTHON, "-m", "redactd.cli", "run", "--config", str(self.config)]
        if self.drop_dac:
            cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
        return cmd

    def start(self) -> Daemon:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self._sock is None:
            self._addr = f"redactd-test-{secrets.token_hex(6)}"
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.bind("\0" + self._addr)
            self._sock.setblocking(False)
        self.drain()
        self.notifications.clear()
        env = dict(os.environ)
        env.update(self.env)
        env["NOTIFY_SOCKET"] = "@" + self._addr
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        if self.fake is not None:
            env["REDACTD_FAKE_SCRIPT"] = self.fake
        out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )
        finally:
            out.close()
        self.starts += 1
        return self

    def drain(self) -> None:
        if self._sock is None:
            return
        while True:
            try:
                self.notifications.append(self._sock.recv(65536).decode())
            except BlockingIOError:
                return

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.wait_notify("READY=1", timeout)

    def wait_notify(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            if any(needle in n for n in self.notifications):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} before {needle!r}:\n{self.tail()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} within {timeout}s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler dumps every thread
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"daemon ignored signal {sig} for {timeout}s:\n{self.tail(80)}"
            ) from None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.kill9()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- logs -------------------------------------------------------------

    def text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out


def wait_until(
    cond: Callable[[], bool], timeout: float, what: str, daemon: Daemon | None = None
) -> None:
    """Deadline poll (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon is not None:
            daemon.drain()  # keep its notify socket from filling up
        if cond():
            return
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is not None:
            if cond():
                return
            raise AssertionError(
                f"daemon exited ({daemon.proc.returncode}) waiting for {what}:\n{daemon.tail()}"
            )
        time.sleep(0.1)
    tail = f"\n{daemon.tail()}" if daemon is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")


# --------------------------------------------------------------------------- folder checks


def files(root: Path) -> list[Path]:
    """Every non-directory entry below ``root`` (symlinks and FIFOs included)."""
    out = []
    for r, dirs, fs in os.walk(root, followlinks=False):
        out += [Path(r, f) for f in fs]
        out += [Path(r, d) for d in dirs if Path(r, d).is_symlink()]
    return sorted(out)


def rel_names(root: Path, *, reasons: bool = False) -> list[str]:
    names = [str(p.relative_to(root)) for p in files(root)]
    if not reasons:
        names = [n for n in names if not n.endswith(".reason.json")]
    return sorted(names)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temporaries(*roots: Path) -> list[Path]:
    return [
        p
        for r in roots
        for p in files(r)
        if p.name.startswith((".redactd-tmp-", ".redactd-claim-"))
    ]


def reason_of(quarantined: Path) -> dict[str, Any]:
    return json.loads(quarantined.with_name(quarantined.name + ".reason.json").read_text())


def status(folders: Folders) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads(folders.status.read_text())
    return {}
