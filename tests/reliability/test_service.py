"""The service around the jobs: systemd notify, signals, reload, hangs, bugs,
and refusing to start (exit 78)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.service import (
    Daemon,
    Folders,
    rel_names,
    temporaries,
    wait_until,
    write_config,
)
from tests.reliability.conftest import coloured_jpeg, small_jpeg

RED = (0, 0, 255)  # fake detector raises MemoryError (escapes the pipeline)
BLUE = (255, 0, 0)  # fake detector hangs (REDACTD_FAKE_SLEEP)
GREEN = (0, 255, 0)  # fake detector is slow (REDACTD_FAKE_SLOW)


def fake_config(tmp_path: Path, models_dir: Path, **service: object) -> tuple[Folders, Path]:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml", f, models_dir, detectors=("fake",), service=dict(service)
    )
    return f, cfg


def test_notify_ready_status_watchdog_and_stopping(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    metrics = tmp_path / "redactd.prom"
    f, cfg = fake_config(tmp_path, models_dir, metrics_file=str(metrics))
    d = daemons(cfg, fake="default", env={"WATCHDOG_USEC": "1000000"}).start()
    d.wait_ready()
    small_jpeg(f.inbound / "a.jpg", 1)
    wait_until(lambda: rel_names(f.outbound) == ["a.jpg"], 30, "delivery", d)
    d.wait_notify("WATCHDOG=1", 5)
    wait_until(
        lambda: (d.drain(), any("1 done" in n for n in d.notifications))[1], 10, "STATUS", d
    )
    ready = next(n for n in d.notifications if "READY=1" in n)
    assert "STATUS=" in ready and "queued" in ready
    assert d.stop() == 0
    d.drain()
    assert any(n.startswith("STOPPING=1") for n in d.notifications)
    st = json.loads(f.status.read_text())
    assert st["state"] == "stopped" and st["done"] == 1
    assert 'redactd_jobs_total{outcome="done"} 1' in metrics.read_text().splitlines()


def test_workers_share_one_pipeline(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    # Two workers, one set of loaded detectors (not one per worker). The
    # daemon's workers take turns on LATENCY networks ("auto" never gives
    # the unattended service THROUGHPUT streams).
    f, cfg = fake_config(tmp_path, models_dir, workers=2)
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    for i in range(4):
        small_jpeg(f.inbound / f"{i}.jpg", i)
    wait_until(lambda: len(rel_names(f.outbound)) == 4, 60, "delivery", d)
    assert d.stop() == 0
    loaded = d.events("detector.loaded")
    assert len(loaded) == 1, loaded
    assert loaded[0]["hint"] == "LATENCY"
    assert d.events("service.ready")[0]["workers"] == 2
    assert len(d.events("job.done")) == 4


def test_sigterm_lets_the_job_in_hand_finish_and_exits_0(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, cfg = fake_config(tmp_path, models_dir, stop_timeout_seconds=20.0)
    d = daemons(cfg, fake="default", env={"REDACTD_FAKE_SLOW": "2"}).start()
    d.wait_ready()
    coloured_jpeg(f.inbound / "slow.png", GREEN)
    wait_until(lambda: bool(d.events("job.claimed")), 30, "the claim", d)
    assert d.stop(signal.SIGTERM) == 0
    assert rel_names(f.outbound) == ["slow.png"]  # finished, not abandoned
    assert [p for p in f.work.iterdir() if p.is_dir()] == []


def test_sigint_past_stop_timeout_requeues_the_job_for_the_next_start(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, cfg = fake_config(tmp_path, models_dir, stop_timeout_seconds=1.0)
    d = daemons(cfg, fake="default", env={"REDACTD_FAKE_SLEEP": "3600"}).start()
    d.wait_ready()
    coloured_jpeg(f.inbound / "hang.png", BLUE)
    wait_until(lambda: bool(d.events("job.claimed")), 30, "the claim", d)
    t0 = time.monotonic()
    assert d.stop(signal.SIGINT, timeout=30) == 0
    assert time.monotonic() - t0 < 20
    assert d.events("service.stop_timeout")
    assert rel_names(f.outbound) == [] and rel_names(f.inbound) == []
    assert len([p for p in f.work.iterdir() if p.is_dir()]) == 1  # safely kept
    d.env["REDACTD_FAKE_SLEEP"] = "0"
    d.start()
    wait_until(lambda: rel_names(f.outbound) == ["hang.png"], 60, "delivery after restart", d)
    assert d.events("job.recovered")
    assert d.stop() == 0


def test_hung_job_times_out_stops_watchdog_and_is_quarantined_after_restart(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, cfg = fake_config(tmp_path, models_dir, job_timeout_seconds=2.0, stop_timeout_seconds=1.0)
    d = daemons(cfg, fake="default", env={"REDACTD_FAKE_SLEEP": "3600"}).start()
    d.wait_ready()
    coloured_jpeg(f.inbound / "hang.png", BLUE)
    assert d.wait_exit(60) == 75  # EX_TEMPFAIL: the service manager restarts it
    assert d.events("job.timeout")
    d.start()  # what systemd's Restart=on-failure does
    d.wait_ready()
    small_jpeg(f.inbound / "next.jpg", 2)
    wait_until(lambda: rel_names(f.outbound) == ["next.jpg"], 60, "the next file", d)
    assert rel_names(f.quarantine) == ["hang.png"]
    reason = json.loads((f.quarantine / "hang.png.reason.json").read_text())
    assert reason["reason"] == "job_timeout"
    assert d.stop() == 0


def test_a_bug_escaping_the_pipeline_quarantines_one_file_and_the_daemon_lives(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, cfg = fake_config(tmp_path, models_dir)
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    coloured_jpeg(f.inbound / "bug.png", RED)
    wait_until(lambda: rel_names(f.quarantine) == ["bug.png"], 30, "quarantine", d)
    small_jpeg(f.inbound / "good.jpg", 3)
    wait_until(lambda: rel_names(f.outbound) == ["good.jpg"], 30, "the next file", d)
    reason = json.loads((f.quarantine / "bug.png.reason.json").read_text())
    assert reason["reason"] == "internal_error"
    [ev] = d.events("job.internal_error")
    assert ev["error"] == "MemoryError"
    assert d.stop() == 0
    assert temporaries(f.outbound, f.quarantine) == []


def test_sighup_reload_adds_a_watched_folder(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, cfg = fake_config(tmp_path, models_dir)
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    g = Folders.make(tmp_path / "second")
    write_config(cfg, f, models_dir, detectors=("fake",), extra_watches=[g])
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bool(d.events("config.reloaded")), 30, "the reload", d)
    small_jpeg(g.inbound / "x.jpg", 4)
    wait_until(lambda: rel_names(g.outbound) == ["x.jpg"], 30, "delivery in the new folder", d)
    # A change that needs new models is refused, and the old config keeps running.
    text = cfg.read_text().replace('detectors = ["fake"]', 'detectors = ["centerface"]')
    cfg.write_text(text)
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bool(d.events("config.reload_needs_restart")), 30, "the refusal", d)
    small_jpeg(f.inbound / "y.jpg", 5)
    wait_until(lambda: rel_names(f.outbound) == ["y.jpg"], 30, "still serving", d)
    assert d.stop() == 0


@pytest.mark.parametrize(
    "problem", ["world_writable", "overlap", "no_inbound", "missing_models", "bad_key"]
)
def test_refuses_to_start_with_exit_78(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path, problem: str
) -> None:
    f = Folders.make(tmp_path / "svc")
    models = models_dir
    if problem == "missing_models":
        models = tmp_path / "empty-models"
        models.mkdir()
    cfg = write_config(tmp_path / "redactd.toml", f, models)
    if problem == "world_writable":
        cfg.chmod(0o666)
    elif problem == "overlap":
        write_config(cfg, Folders.make(tmp_path / "svc", outbound=f.inbound / "out"), models)
    elif problem == "no_inbound":
        f.inbound.rmdir()
    elif problem == "bad_key":
        cfg.write_text(cfg.read_text().replace("[service]", "[service]\nwrokers = 2"))
    d = daemons(cfg).start()
    assert d.wait_exit(60) == 78
    assert d.notifications == [] or not any("READY=1" in n for n in d.notifications)
    errors = [e for e in d.events() if e.get("level") == "error"]
    assert errors, d.tail()
    assert str(tmp_path) not in d.text()
