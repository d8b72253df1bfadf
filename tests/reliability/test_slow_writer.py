"""A file written slowly is taken only once it is complete."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import cv2

from tests.helpers.media import Labelled
from tests.helpers.service import Daemon, Folders, rel_names, wait_until, write_config


def test_slow_writer_is_processed_once_and_complete(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    ov_cache: Path,
    face_images: list[tuple[Path, Labelled | None]],
) -> None:
    f = Folders.make(tmp_path / "svc")
    # Pauses between chunks (1.2 s) are longer than settle_seconds (0.5 s):
    # only "still open for writing" keeps the daemon from taking it early.
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        cache_dir=ov_cache,
        service={"settle_seconds": 0.5},
    )
    d = daemons(cfg).start()
    d.wait_ready()
    src = face_images[0][0]
    data = src.read_bytes()
    chunks = [data[i : i + len(data) // 5 + 1] for i in range(0, len(data), len(data) // 5 + 1)]
    target = f.inbound / "scanner" / "slow.jpg"
    target.parent.mkdir()
    with open(target, "wb") as out:
        for i, chunk in enumerate(chunks):
            out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            if i < len(chunks) - 1:
                time.sleep(1.2)
                assert d.events("job.claimed") == [], "taken while still being written"
    closed_at = time.time()

    wait_until(lambda: rel_names(f.outbound) == ["scanner/slow.jpg"], 60, "delivery", d)
    assert rel_names(f.quarantine) == []
    claims = d.events("job.claimed")
    assert len(claims) == 1
    claimed_at = datetime.fromisoformat(claims[0]["timestamp"].replace("Z", "+00:00")).timestamp()
    assert claimed_at >= closed_at - 0.05
    assert claims[0]["size"] == len(data)
    out = cv2.imread(str(f.outbound / "scanner" / "slow.jpg"))
    orig = cv2.imread(str(src))
    assert out is not None and out.shape == orig.shape
    assert d.stop() == 0
    assert len(d.events("job.done")) == 1
