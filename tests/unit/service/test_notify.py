"""The systemd notify protocol over a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from redactd.service.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = str(tmp_path / "notify.sock")
    s.bind(addr)
    s.settimeout(2.0)
    yield s, addr
    s.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.watchdog_interval is None


def test_ready_status_watchdog_and_stopping_reach_the_socket(
    listener: tuple[socket.socket, str],
) -> None:
    s, addr = listener
    n = Notifier(env={"NOTIFY_SOCKET": addr}, use_bindings=False)
    assert n.ready("running: 0 queued")
    assert s.recv(4096) == b"READY=1\nSTATUS=running: 0 queued"
    assert n.status("running: 0 queued") is False  # unchanged: not re-sent
    assert n.status("running: 3 queued")
    assert s.recv(4096) == b"STATUS=running: 3 queued"
    assert n.watchdog()
    assert s.recv(4096) == b"WATCHDOG=1"
    assert n.stopping()
    assert s.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_socket_addresses_are_supported() -> None:
    name = f"redactd-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2.0)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name}, use_bindings=False)
        assert n.ready()
        assert s.recv(4096) == b"READY=1"
        n.close()
    finally:
        s.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "20000000"}
    assert Notifier(env=env).watchdog_interval == 10.0
    mine = dict(env, WATCHDOG_PID=str(os.getpid()))
    assert Notifier(env=mine).watchdog_interval == 10.0
    other = dict(env, WATCHDOG_PID=str(os.getpid() + 1))
    assert Notifier(env=other).watchdog_interval is None


def test_a_vanished_socket_does_not_raise() -> None:
    n = Notifier(env={"NOTIFY_SOCKET": "/nonexistent/notify.sock"}, use_bindings=False)
    assert n.ready() is False
    assert n.watchdog() is False
