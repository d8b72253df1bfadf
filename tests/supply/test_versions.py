"""`redactd --version` tells what is running: packages, FFmpeg and model digests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from redactd.models import manifest
from tests.conftest import REPO


def _version(tmp_path: Path, store: Path) -> list[str]:
    cfg = tmp_path / "redactd.toml"
    cfg.write_text(f'[models]\ndir = "{store}"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "--config", str(cfg), "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    )
    return r.stdout.splitlines()


def test_version_names_runtimes_and_verified_model_digests(
    tmp_path: Path, models_dir: Path
) -> None:
    lines = _version(tmp_path, models_dir)
    assert lines[0].startswith("redactd 0.")
    assert f"openvino {metadata.version('openvino')}" in lines
    assert f"pyav {metadata.version('av')}" in lines
    assert f"opencv {metadata.version('opencv-python-headless')}" in lines
    ffmpeg = next(ln for ln in lines if ln.startswith("ffmpeg "))
    assert "libavcodec " in ffmpeg
    spec = manifest.load().get("centerface")
    assert f"  centerface {spec.identity} verified" in lines
    for rel, digest in spec.files.items():
        assert f"    {rel} sha256:{digest}" in lines


def test_version_flags_a_model_that_does_not_match_the_manifest(
    tmp_path: Path, models_dir: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(models_dir / "centerface", store / "centerface")
    f = next(p for p in (store / "centerface").rglob("*") if p.is_file())
    with f.open("ab") as fh:
        fh.write(b"\0")
    lines = _version(tmp_path, store)
    spec = manifest.load().get("centerface")
    assert f"  centerface {spec.identity} mismatch" in lines
    assert not any(ln.startswith("  ppocr_det") for ln in lines)


def test_status_shows_what_is_installed(tmp_path: Path, models_dir: Path) -> None:
    import json
    import time

    snap = tmp_path / "status.json"
    snap.write_text(json.dumps({"text": "running: 0 queued", "time": time.time(), "metrics": {}}))
    cfg = tmp_path / "redactd.toml"
    cfg.write_text(f'[service]\nstatus_file = "{snap}"\n[models]\ndir = "{models_dir}"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "status", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = lines.index("installed:")
    assert f"  openvino {metadata.version('openvino')}" in lines[i:]
    spec = manifest.load().get("centerface")
    assert f"    centerface {spec.identity} verified" in lines[i:]
