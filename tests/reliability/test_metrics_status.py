"""Metrics textfile and `redactd status`: counts, reasons, no personal data."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers.service import Daemon, Folders, files, wait_until, write_config
from tests.reliability.conftest import small_jpeg

SECRET = "Brynjolfsdottir-Xq"


def test_metrics_file_and_status_report_counts_without_names(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f = Folders.make(tmp_path / "svc")
    metrics = tmp_path / "metrics" / "redactd.prom"
    metrics.parent.mkdir()
    cfg = write_config(
        tmp_path / "redactd.toml", f, models_dir, detectors=("fake",),
        service={"metrics_file": metrics},
    )
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    for i in range(3):
        small_jpeg(f.inbound / f"{SECRET}-{i}.jpg", seed=i)
    (f.inbound / f"{SECRET}-bad.jpg").write_bytes(b"")
    wait_until(lambda: len(files(f.outbound)) == 3 and len(files(f.quarantine)) >= 1, 60, "jobs", d)

    def metric(text: str, name: str) -> float:
        m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else -1.0

    def settled() -> bool:
        t = metrics.read_text() if metrics.exists() else ""
        return metric(t, 'redactd_jobs_total{outcome="done"}') == 3 and (
            metric(t, 'redactd_jobs_total{outcome="quarantined"}') == 1
        )
    wait_until(settled, 30, "metrics with 3 done, 1 quarantined", d)
    text = metrics.read_text()
    assert metric(text, 'redactd_jobs_total{outcome="quarantined"}') == 1
    assert metric(text, 'redactd_quarantined_total{reason="empty_file"}') == 1
    assert metric(text, 'redactd_stage_seconds_count{stage="total"}') == 3
    assert metric(text, "redactd_last_success_timestamp_seconds") > 0
    assert metric(text, "redactd_queue_depth") == 0
    assert metric(text, "redactd_paused") == 0
    assert "# TYPE redactd_stage_seconds histogram" in text

    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "status", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "3 done, 1 quarantined" in r.stdout
    assert "empty_file=1" in r.stdout
    assert d.stop() == 0
    for blob in (text, r.stdout, r.stderr, d.text(), f.status.read_text()):
        assert SECRET not in blob
        assert str(tmp_path) not in blob


def test_status_without_a_daemon_says_so(tmp_path: Path, models_dir: Path) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(tmp_path / "redactd.toml", f, models_dir, detectors=("fake",))
    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "status", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 3
    assert "no status yet" in r.stderr
