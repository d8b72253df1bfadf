"""Two instances (each with its own work area) on one inbound folder: every
file is taken by exactly one of them and published exactly once.

The claim's rename is the lock between them; across filesystems the
rename to the claim name is, and the kept claim name is a dotfile the other
instance ignores.
"""

from __future__ import annotations

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
from tests.reliability.conftest import small_jpeg

FILES = 16


@pytest.mark.parametrize("layout", ["same_fs", "cross_fs"])
def test_two_instances_on_one_inbound_publish_each_file_once(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path, layout: str
) -> None:
    with small_filesystem(tmp_path / "work_fs", 16 * 1024) as work_fs:
        base = tmp_path if layout == "same_fs" else work_fs
        f1 = Folders.make(tmp_path / "svc", work=base / "work1", status=tmp_path / "s1.json")
        f2 = Folders.make(tmp_path / "svc", work=base / "work2", status=tmp_path / "s2.json")
        ds = []
        for i, f in enumerate((f1, f2)):
            cfg = write_config(tmp_path / f"redactd{i}.toml", f, models_dir, detectors=("fake",))
            ds.append(daemons(cfg, name=f"inst{i}", fake="default").start())
        for d in ds:
            d.wait_ready()
        for i in range(FILES):
            tmp = f1.inbound / f".drop-{i}"
            small_jpeg(tmp, seed=i)
            tmp.rename(f1.inbound / f"img{i:02d}.jpg")
        want = [f"img{i:02d}.jpg" for i in range(FILES)]
        wait_until(lambda: rel_names(f1.outbound) == want, 60, "every file delivered", ds[0])
        wait_until(
            lambda: sum(len(d.events("job.done")) for d in ds) == FILES, 10, "job.done", ds[0]
        )
        for d in ds:
            assert d.stop() == 0
        assert sum(len(d.events("job.done")) for d in ds) == FILES  # none twice
        assert rel_names(f1.inbound) == [] and rel_names(f1.quarantine) == []
        assert temporaries(f1.inbound, f1.outbound) == []
