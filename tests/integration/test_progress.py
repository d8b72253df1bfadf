"""Video progress: a bar on an interactive terminal, frame counts in STATUS=."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.helpers.service import Daemon, Folders, files, wait_until, write_config
from tests.helpers.synthvideo import write_clip

SECRET = "Oddvarsdottir-Clip"


def test_process_shows_a_frame_progress_bar_on_a_terminal(tmp_path: Path, models_dir: Path) -> None:
    clip = tmp_path / f"{SECRET}.mp4"
    write_clip(clip, frames=30, audio=None)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[models]\ndir = "{models_dir}"\n[runtime]\ncache_dir = ""\n'
        "[profiles.default.plate]\nenabled = false\n"
    )
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg),
             str(clip), "-o", str(tmp_path / "out")],
            stdout=subprocess.PIPE, stderr=slave, timeout=600, cwd=REPO,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(master)
    tty_text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, tty_text
    assert "30/30 frames" in tty_text
    assert SECRET not in tty_text
    assert (tmp_path / "out" / f"{SECRET}.mp4").is_file()


def test_process_without_a_terminal_prints_no_bar(tmp_path: Path, models_dir: Path) -> None:
    clip = tmp_path / "c.mp4"
    write_clip(clip, frames=10, audio=None)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{models_dir}"\n[profiles.default.plate]\nenabled = false\n')
    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg), str(clip),
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert "frames" not in r.stderr


def test_daemon_status_shows_video_frames(tmp_path: Path, models_dir: Path) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(tmp_path / "redactd.toml", f, models_dir, detectors=("fake",))
    staging = tmp_path / "svc" / "staging"
    staging.mkdir()
    write_clip(staging / f"{SECRET}.mp4", frames=150, audio=None)
    d = Daemon(
        config=cfg, log_path=tmp_path / "d.log", fake="default", env={"REDACTD_FAKE_EACH": "0.03"}
    )
    try:
        d.start()
        d.wait_ready()
        (staging / f"{SECRET}.mp4").rename(f.inbound / f"{SECRET}.mp4")
        d.wait_notify("/150 frames", 120)
        wait_until(lambda: len(files(f.outbound)) == 1, 300, "the video", d)
        assert d.stop() == 0
        assert all(SECRET not in n for n in d.notifications)
        assert SECRET not in d.text()
    finally:
        d.close()


