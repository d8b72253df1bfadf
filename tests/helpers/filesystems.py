"""Real small filesystems for tests that fill them up (loop-mounted images)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(mnt: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib``, else a loop-mounted ext4 image; skip if neither."""
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    image: Path | None = None
    if r.returncode != 0:
        image = mnt.with_suffix(".img")
        ok = (
            subprocess.run(["truncate", "-s", f"{size_kib}k", str(image)], check=False).returncode
            == 0
            and subprocess.run(
                ["mkfs.ext4", "-q", str(image)], capture_output=True, check=False
            ).returncode
            == 0
            and subprocess.run(
                ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, check=False
            ).returncode
            == 0
        )
        if not ok:
            pytest.skip("cannot mount a small tmpfs or loop filesystem here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
