"""Shared by the spool tests: a simulated crash, a fake pipeline step, a
listing of a folder's files, and a tmpfs mount for cross-filesystem moves."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class Crash(BaseException):
    """Stands for the process dying at this exact step."""


def fake_process(src: Path, dst: Path) -> None:
    """What the pipeline does: O_EXCL create, write, fsync."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"masked:" + src.read_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)


def all_files(root: Path) -> list[str]:
    return sorted(str(Path(r, f).relative_to(root)) for r, _ds, fs in os.walk(root) for f in fs)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    path.mkdir(exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); cross-filesystem moves untested")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
