"""A minimal Debian with a real systemd, booted in systemd-nspawn, for install tests.

The root filesystem is made once by debootstrap and cached under
``REDACTD_NSPAWN_CACHE`` (default /var/cache/redactd-test); every boot runs on
an ephemeral copy (``--ephemeral``), so tests never change the cache.
Commands run inside the container through ``nsenter`` into the namespaces of
its PID 1 (this host has no systemd-machined to talk to).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("REDACTD_NSPAWN_CACHE", "/var/cache/redactd-test"))
SUITE = "bookworm"
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv"
ROOT = CACHE / f"root-{SUITE}-v1"


def unavailable_reason() -> str | None:
    """Why a systemd container cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn)"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container)"
    if not ROOT.is_dir() and shutil.which("debootstrap") is None:
        return "debootstrap is not installed and no cached root filesystem exists"
    return None


def ensure_rootfs() -> Path:
    """Create the cached minimal Debian root filesystem if it is not there yet."""
    if (ROOT / ".complete").is_file():
        return ROOT
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    mirror = os.environ.get("REDACTD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(tmp), mirror],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=1200,
    )
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(ROOT, ignore_errors=True)
    tmp.rename(ROOT)
    return ROOT


@dataclass
class Container:
    proc: subprocess.Popen[bytes]
    leader: int

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"in container: {' '.join(cmd)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
            )
        return r

    def pipe_in(self, data: bytes, *cmd: str) -> None:
        """Run ``cmd`` in the container with ``data`` on its standard input."""
        subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", *cmd],
            input=data,
            check=True,
            timeout=300,
        )

    def write_file(self, path: str, data: bytes) -> None:
        self.pipe_in(data, "sh", "-c", f"cat > '{path}'")

    def read_file(self, path: str) -> bytes:
        return subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", "cat", path],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout

    def run_as(
        self, user: str, *cmd: str, check: bool = True, umask: str = "027"
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the container as ``user`` (with its groups) under ``umask``."""
        script = f"umask {umask}; exec \"$@\""
        return self.run("runuser", "-u", user, "--", "sh", "-c", script, "sh", *cmd, check=check)

    def write_as(self, user: str, path: str, data: bytes, umask: str = "027") -> None:
        """Write ``path`` as ``user``: a producer dropping a file, with its umask."""
        self.pipe_in(
            data, "runuser", "-u", user, "--", "sh", "-c", f"umask {umask}; cat > '{path}'"
        )

    def in_service(
        self, unit: str, *cmd: str, as_root: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the mount namespace of ``unit``'s main process, with
        its user and group: what the running service itself sees and may do.
        ``as_root``: as root instead, to see what the mounts alone allow."""
        pid = self.show(unit, "MainPID")["MainPID"]
        ids: list[str] = []
        if not as_root:
            for line in self.run("cat", f"/proc/{pid}/status").stdout.splitlines():
                key, _sep, value = line.partition(":")
                if key in ("Uid", "Gid"):
                    ids += ["-S" if key == "Uid" else "-G", value.split()[1]]  # effective id
        return self.run("nsenter", "-t", pid, "-m", *ids, "--", *cmd, check=False)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *[f"-p{p}" for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _leader_of(nspawn_pid: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        for child in Path("/proc").iterdir():
            if not child.name.isdigit():
                continue
            try:
                stat = (child / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            if ppid == nspawn_pid and comm == "systemd":
                return int(child.name)
        time.sleep(0.2)
    raise TimeoutError("the container's systemd did not start")


@contextlib.contextmanager
def booted(binds_ro: dict[Path, str], name: str = "redactd-test") -> Iterator[Container]:
    """Boot the cached root filesystem (ephemeral copy) and yield a handle."""
    root = ensure_rootfs()
    cmd = [
        "systemd-nspawn",
        "--quiet",
        "-D",
        str(root),
        "--ephemeral",
        "-b",
        "--private-network",
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        "--console=pipe",
    ]
    for host, inside in binds_ro.items():
        cmd.append(f"--bind-ro={host}:{inside}")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        leader = _leader_of(proc.pid, time.monotonic() + 60)
        c = Container(proc, leader)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            state = c.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError("the container did not finish booting")
        yield c
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(
                ["nsenter", "-t", str(_leader_safe(proc)), "-a", "--", "systemctl", "poweroff"],
                timeout=20,
                capture_output=True,
            )
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _leader_safe(proc: subprocess.Popen[bytes]) -> int:
    try:
        return _leader_of(proc.pid, time.monotonic() + 1)
    except TimeoutError:
        return proc.pid
