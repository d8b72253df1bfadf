"""systemd's notify protocol: READY, WATCHDOG, STATUS, STOPPING.

Without ``NOTIFY_SOCKET`` (not started by systemd with ``Type=notify``) every
call is a no-op. Messages go through libsystemd's ``sd_notify`` (the
``systemd-python`` dependency); where libsystemd is absent (a container
without it) the bindings fail to import and the protocol is spoken here: a
single datagram on an AF_UNIX socket, whose address may be abstract (a
leading ``@`` stands for a NUL byte). Which one is chosen at start and logged
once (``service.notify_backend``).

The watchdog interval is half of ``WATCHDOG_USEC`` (as sd_watchdog_enabled
advises; the bindings do not expose it), and only when ``WATCHDOG_PID`` is
unset or names this process; the ping itself is ``WATCHDOG=1`` through
``sd_notify``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from redactd.core import log


def _bindings() -> Callable[[str], object] | None:
    try:
        from systemd import daemon as sd_daemon
    except ImportError:  # not installed, or libsystemd.so is missing
        return None
    fn: Callable[[str], object] = sd_daemon.notify
    return fn


def booted() -> bool:
    """Whether this system runs systemd (``sd_booted``; the same test without it)."""
    try:
        from systemd import daemon as sd_daemon
    except ImportError:
        return Path("/run/systemd/system").is_dir()
    return bool(sd_daemon.booted())


class Notifier:
    """Sends state lines to systemd; silent when not under systemd.

    ``env`` defaults to ``os.environ`` (read once, here, at start: stages
    never read the environment).
    """

    def __init__(self, env: Mapping[str, str] | None = None, use_bindings: bool = True) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET", "")
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2.0
        # sd_notify reads NOTIFY_SOCKET from the process environment: usable
        # only when that is the address this notifier was given.
        same = self.address == os.environ.get("NOTIFY_SOCKET", "")
        self._send_fn = _bindings() if (use_bindings and self.address and same) else None
        self.backend = "" if not self.address else ("libsystemd" if self._send_fn else "socket")
        if self.address:
            log.get("redactd.notify").info("service.notify_backend", backend=self.backend)
        self._sock: socket.socket | None = None
        self._failed = False
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one message. False when not sent."""
        if not self.address:
            return False
        msg = "\n".join(lines)
        try:
            if self._send_fn is not None:
                # sd_notify: > 0 sent, 0 no socket, < 0 raises OSError (below).
                return bool(self._send_fn(msg))
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            addr = self.address
            if addr.startswith("@"):
                addr = "\0" + addr[1:]
            # Never block the main loop on a slow reader: a STATUS that does not
            # fit is dropped (the next one replaces it), as sd_notify does.
            self._sock.sendto(msg.encode("utf-8"), socket.MSG_DONTWAIT, addr)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            if not self._failed:  # say it once, not every watchdog tick
                self._failed = True
                log.get("redactd.notify").warning(
                    "service.notify_failed", errno=e.errno or 0, error=type(e).__name__
                )
            return False

    def ready(self, status: str = "") -> bool:
        lines = ["READY=1"]
        if status:
            lines.append(f"STATUS={status}")
            self._last_status = status
        return self.send(*lines)

    def status(self, text: str) -> bool:
        """Send STATUS= only when it changed."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        lines = ["STOPPING=1"]
        if status:
            lines.append(f"STATUS={status}")
        return self.send(*lines)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
