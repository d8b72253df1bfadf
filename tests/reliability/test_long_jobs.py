"""A long job that keeps making progress is not a hung job.

``service.job_timeout_seconds`` is measured from a job's last progress
report, so a legitimate video longer than the timeout (``max_video_seconds``
is 6 h, the timeout 1 h by default) does not restart the service; a job with
no progress still does (tests/reliability/test_service.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers.service import (
    Daemon,
    Folders,
    fixed_detection_schedule,
    rel_names,
    wait_until,
    write_config,
)
from tests.helpers.synthvideo import write_clip


def test_a_video_longer_than_the_job_timeout_that_progresses_is_delivered(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        detectors=("fake",),
        service={"job_timeout_seconds": 2.0},
    )
    fixed_detection_schedule(cfg, 2)  # about the progress, not the gate
    # 15 detections of 0.3 s: the job runs ~4.5 s, reporting a frame every <= 0.3 s
    # once the tracker's look-ahead (6 frames, ~1.2 s) is full.
    d = daemons(cfg, fake="default", env={"REDACTD_FAKE_EACH": "0.3"}).start()
    d.wait_ready()
    clip = tmp_path / "long.mp4"
    write_clip(clip, frames=30, audio=None, size=(160, 120))
    clip.rename(f.inbound / "long.mp4")
    wait_until(lambda: rel_names(f.outbound) == ["long.mp4"], 60, "delivery", d)
    assert d.events("job.timeout") == []
    assert d.alive(), "the service restarted for a job that was making progress"
    assert rel_names(f.quarantine) == []
    assert d.stop() == 0
