"""kill -9 at every step of the job state machine, not at random moments.

Every move between states is a ``rename`` or ``link`` (manifest saves,
claims, placements, status snapshots), so ``strace`` injects SIGKILL at the
n-th such call of a real ``redactd run`` (fake detector), for n = 1, 2, ...
until a run gets through without meeting call n. After each kill a plain
restart must end with the good file delivered exactly once, the bad one
quarantined with its reason, and nothing left in inbound, in the work area
or as a temporary. The cross-filesystem variant puts the work area on a
tmpfs, so the claim goes through its claim name and copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.filesystems import small_filesystem
from tests.helpers.service import (
    Daemon,
    Folders,
    rel_names,
    temporaries,
    wait_until,
    write_config,
)
from tests.reliability.conftest import coloured_jpeg

_STEPS = "link,linkat,rename,renameat,renameat2"
MAX_POINTS = 60  # far more than a run makes (about 25): a loop would show here


class KilledAt(Daemon):
    """The daemon under strace, killed at the n-th state-changing call."""

    def command(self) -> list[str]:
        n = self.env.get("KILL_AT_CALL")
        if not n:
            return super().command()
        return [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            f"trace={_STEPS}",
            "-e",
            f"inject={_STEPS}:signal=SIGKILL:when={n}",
            *super().command(),
        ]

    def kill9(self) -> None:
        # The daemon is strace's child: killing strace alone would leave it running.
        if self.proc is not None and self.proc.poll() is None:
            for child in _children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        super().kill9()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def _complete(f: Folders) -> bool:
    return (
        rel_names(f.outbound) == ["a.png"]
        and rel_names(f.quarantine, reasons=True) == ["b.jpg", "b.jpg.reason.json"]
        and rel_names(f.inbound) == []
        and not [p for p in f.work.iterdir() if p.is_dir()]
    )


# cross_fs only: it has every step of same_fs plus the claim name and copy
# (same_fs crash points are covered step by step in tests/unit/service/spool/test_spool.py).
@pytest.mark.parametrize("layout", ["cross_fs"])
def test_kill9_at_each_step_then_restart_loses_nothing_and_publishes_once(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path, layout: str
) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    probe = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], check=False)
    if probe.returncode != 0:
        pytest.skip("ptrace is not allowed here")
    with small_filesystem(tmp_path / "work_fs", 8 * 1024) as work_fs:
        n = 0
        while True:
            n += 1
            assert n <= MAX_POINTS, "a run never finished: a retry loop?"
            root = tmp_path / f"run{n}"
            work = root / "work" if layout == "same_fs" else work_fs / f"work{n}"
            f = Folders.make(root, work=work)
            cfg = write_config(
                root / "redactd.toml",
                f,
                models_dir,
                detectors=("fake",),
                service={"settle_seconds": 0.1},
            )
            coloured_jpeg(f.inbound / "a.png", (10, 20, 30))
            (f.inbound / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg " * 8)
            d = daemons(cfg, name=f"run{n}", fake="default", env={"KILL_AT_CALL": str(n)})
            d.__class__ = KilledAt
            d.start()
            wait_until(lambda d=d, f=f: not d.alive() or _complete(f), 30, f"kill at call {n}", d)
            if d.alive():
                # Call n never came: every step has had its kill.
                d.kill9()
                assert _complete(f)
                break
            d.env["KILL_AT_CALL"] = ""
            d.start()
            wait_until(lambda f=f: _complete(f), 30, f"recovery after a kill at call {n}", d)
            assert d.stop() == 0, f"after a kill at call {n}"
            assert _complete(f), f"after a kill at call {n}"
            assert temporaries(f.inbound, f.outbound, f.quarantine) == [], n
            assert len(d.events("job.done")) <= 1, f"published twice after a kill at call {n}"
        assert n > 10, "the kills never reached the jobs"
