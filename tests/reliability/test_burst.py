"""1,000 small images dropped at once are all processed (throughput printed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.service import Daemon, Folders, files, rel_names, wait_until, write_config
from tests.reliability.conftest import small_jpeg

N = 1000


def _rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_burst_of_1000_small_images(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        detectors=("fake",),
        service={"workers": 2, "settle_seconds": 0.2},
    )
    staging = tmp_path / "svc" / "staging"  # same filesystem: renames are atomic drops
    names = [f"batch{i % 10}/img_{i:04d}.jpg" for i in range(N)]
    for i, rel in enumerate(names):
        small_jpeg(staging / rel, seed=i)
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    t0 = time.monotonic()
    for rel in names:
        (f.inbound / rel).parent.mkdir(exist_ok=True)
        (staging / rel).rename(f.inbound / rel)
    wait_until(lambda: len(files(f.outbound)) >= N, 240, f"{N} deliveries", d)
    elapsed = time.monotonic() - t0
    assert d.proc is not None
    rss = _rss_peak_kib(d.proc.pid)
    assert d.stop() == 0
    assert rel_names(f.outbound) == sorted(names)
    assert rel_names(f.quarantine) == []
    assert len(d.events("job.done")) == N
    print(
        f"burst: {N} images in {elapsed:.1f} s = {N / elapsed:.1f} img/s "
        f"(2 workers, fake detector, 64x64 JPEG); daemon peak RSS {rss / 1024:.0f} MiB"
    )
