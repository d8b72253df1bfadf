"""Outbound on a tiny filesystem that fills up: pause, lose nothing, resume."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.filesystems import small_filesystem
from tests.helpers.media import Labelled
from tests.helpers.service import (
    Daemon,
    Folders,
    rel_names,
    sha256,
    status,
    temporaries,
    wait_until,
    write_config,
)
from tests.reliability.conftest import copy_in


def test_full_outbound_pauses_loses_nothing_and_resumes_when_space_returns(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    ov_cache: Path,
    face_images: list[tuple[Path, Labelled | None]],
) -> None:
    # Room for about half of the results (they are ~0.6x the inputs): it must fill up.
    size_kib = max(160, sum(p.stat().st_size for p, _ in face_images) * 3 // 10 // 1024)
    with small_filesystem(tmp_path / "small", size_kib) as small:
        f = Folders.make(tmp_path / "svc", outbound=small / "outbound")
        # min_free_bytes = 0: the daemon only learns of the full disk from
        # ENOSPC in the middle of writing a result (the hard case).
        cfg = write_config(tmp_path / "redactd.toml", f, models_dir, cache_dir=ov_cache)
        originals = {p.name: sha256(p) for p, _ in face_images}
        d = daemons(cfg).start()
        d.wait_ready()
        for p, _ in face_images:
            copy_in(p, f.inbound / p.name)

        wait_until(lambda: status(f).get("state") == "paused", 120, "the pause", d)
        assert d.events("service.paused")
        assert any("paused" in n for n in d.notifications if n.startswith("STATUS="))
        # Nothing lost while paused: every input is delivered or still waiting.
        wait_until(lambda: status(f).get("active") == 0, 30, "idle while paused", d)
        delivered = rel_names(f.outbound)
        assert delivered, "some files fit before the disk filled"
        assert temporaries(f.outbound) == []
        assert rel_names(f.quarantine) == []
        jobs = [p for p in f.work.iterdir() if p.is_dir()]
        assert len(delivered) + len(rel_names(f.inbound)) + len(jobs) == len(originals)

        # Free the space: an operator archives what was delivered, and keeps
        # doing so (the inputs need more room than the filesystem has).
        archive = tmp_path / "archive"
        archive.mkdir()
        deadline = time.monotonic() + 120
        while len(rel_names(archive)) < len(originals):
            for name in rel_names(f.outbound):
                if not Path(name).name.startswith(".redactd-tmp-"):
                    shutil.move(str(f.outbound / name), archive / name)
            assert d.alive(), d.tail()
            assert time.monotonic() < deadline, (
                f"not all delivered after space came back\n{d.tail()}"
            )
            time.sleep(0.2)
        assert d.events("service.resumed")
        assert d.stop() == 0
        assert sorted(rel_names(archive)) == sorted(originals)
        assert rel_names(f.outbound) == []
        assert rel_names(f.quarantine) == []
        assert temporaries(f.outbound, archive, f.inbound) == []
        for name in originals:
            assert sha256(archive / name) != originals[name]  # masked results, not copies
