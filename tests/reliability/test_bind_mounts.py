"""The shipped unit's mounts: ``ReadWritePaths=`` bind-mounts each path on
itself, so the work area and the watched folders share ``st_dev`` yet are
different mounts (link and rename between them fail with EXDEV).

A real ``redactd run`` (fake detector) runs inside ``unshare -m`` with the
two trees bind-mounted on themselves, as systemd does for
``ReadWritePaths=/var/lib/redactd /srv/redactd``: the inbound, outbound and
quarantine folders under one tree, the work area under the other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.service import (
    Daemon,
    Folders,
    rel_names,
    sha256,
    temporaries,
    wait_until,
    write_config,
)
from tests.reliability.conftest import coloured_jpeg

GREEN = (0, 255, 0)  # the fake detector is slow on it (REDACTD_FAKE_SLOW)
_SCRIPT = 'for d in "$BIND_A" "$BIND_B"; do mount --bind "$d" "$d" || exit 97; done; exec "$@"'


class BoundDaemon(Daemon):
    """The daemon in its own mount namespace with two self-bind-mounts."""

    def command(self) -> list[str]:
        wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c", _SCRIPT, "sh"]
        return [*wrap, *super().command()]


@pytest.fixture
def unit_layout(tmp_path: Path) -> Iterator[tuple[Folders, Path, Path]]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {tmp_path} {tmp_path}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("cannot make mount namespaces here (needs root)")
    srv = tmp_path / "srv" / "redactd"
    lib = tmp_path / "var" / "lib" / "redactd"
    lib.mkdir(parents=True)
    f = Folders.make(
        srv,
        inbound=srv / "inbound",
        outbound=srv / "outbound",
        quarantine=srv / "quarantine",
        work=lib / "work",
        status=lib / "status.json",
    )
    yield f, srv, lib


def _bound(daemons: Callable[..., Daemon], cfg: Path, srv: Path, lib: Path) -> Daemon:
    d = daemons(cfg, fake="default", env={"BIND_A": str(srv), "BIND_B": str(lib)})
    d.__class__ = BoundDaemon
    return d


def test_bind_mounted_unit_layout_quarantines_delivers_and_recovers(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    unit_layout: tuple[Folders, Path, Path],
) -> None:
    f, srv, lib = unit_layout
    assert f.inbound.stat().st_dev == f.work.parent.stat().st_dev  # one filesystem
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        detectors=("fake",),
        service={"max_attempts": 3},
    )
    d = _bound(daemons, cfg, srv, lib)
    d.env["REDACTD_FAKE_SLOW"] = "30"
    d.start()
    d.wait_ready()
    (f.inbound / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all" * 10)
    good = f.inbound / "cam" / "good.png"
    coloured_jpeg(good, (10, 20, 30))
    wait_until(
        lambda: (
            rel_names(f.quarantine, reasons=True) == ["bad.jpg", "bad.jpg.reason.json"]
            and rel_names(f.outbound) == ["cam/good.png"]
        ),
        30,
        "quarantine and delivery",
        d,
    )
    reason = json.loads((f.quarantine / "bad.jpg.reason.json").read_text())
    assert reason["reason"] in ("corrupt", "unsupported_type", "truncated")
    assert d.events("job.stuck") == []
    assert [e for e in d.events("job.retry") if e.get("reason") == "exdev"] == []
    assert rel_names(f.inbound) == []

    # kill -9 mid-job (the claim copied across the mounts), then a restart
    slow = f.inbound / "slow.png"
    coloured_jpeg(slow, GREEN)
    digest = sha256(slow)
    wait_until(lambda: len(d.events("job.claimed")) == 3, 30, "the third claim", d)
    d.kill9()
    assert rel_names(f.outbound) == ["cam/good.png"]
    d.env["REDACTD_FAKE_SLOW"] = "0"
    d.start()
    wait_until(
        lambda: rel_names(f.outbound) == ["cam/good.png", "slow.png"],
        30,
        "delivery after restart",
        d,
    )
    assert d.stop() == 0
    assert rel_names(f.quarantine) == ["bad.jpg"]
    assert rel_names(f.inbound) == [] and temporaries(f.inbound, f.outbound, f.quarantine) == []
    assert [p for p in f.work.iterdir() if p.is_dir()] == []
    assert sha256(f.quarantine / "bad.jpg") != digest
    assert len(d.events("job.done")) == 2
