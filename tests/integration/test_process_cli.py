"""`redactd process` end to end: real CenterFace on real images, as a real process.

Checks the promises of the image path: labelled faces end up masked (pixels
inside the boxes changed), pixels far from faces are left alone, outputs carry
no EXIF/GPS, and neither logs nor error messages name the input files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.helpers.media import changed_fraction, far_mask, png_header_only, read_labels

SECRET = "Zqxjv-Hemlworth"  # a distinctive marker that must never appear in logs


def _config(tmp: Path, models_dir: Path) -> Path:
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
        # faces only: these tests measure face masks, and plate masks of signs
        # and captions would count as changes far from every face
        "[profiles.default.plate]\nenabled = false\n"
    )
    return cfg


def _process(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def _pick(eval_dir: Path, n: int) -> list:
    items = [
        it
        for it in read_labels(eval_dir / "faces_wider_val")
        if it.faces and all(h >= 24 for _x, _y, _w, h in it.faces) and len(it.faces) <= 8
    ]
    return items[:n]


def test_process_masks_labelled_faces_strips_exif_and_logs_no_names(
    tmp_path: Path, eval_dir: Path, models_dir: Path
) -> None:
    items = _pick(eval_dir, 8)
    assert len(items) >= 5
    inbound = tmp_path / "in"
    inbound.mkdir()
    originals: dict[str, np.ndarray] = {}
    for i, it in enumerate(items):
        name = f"{SECRET}-{i:03d}.jpg"
        img = Image.open(it.path).convert("RGB")
        exif = Image.Exif()
        exif[0x010F] = f"{SECRET}-camera"  # Make
        exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}  # GPS
        img.save(inbound / name, quality=95, exif=exif, comment=f"{SECRET} comment".encode())
        originals[name] = np.asarray(Image.open(inbound / name).convert("RGB"))
    out = tmp_path / "out"
    r = _process(_config(tmp_path, models_dir), str(inbound), "-o", str(out))
    assert r.returncode == 0, r.stderr

    masked = total = 0
    for i, it in enumerate(items):
        name = f"{SECRET}-{i:03d}.jpg"
        res = Image.open(out / name)
        assert res.format == "JPEG"
        assert not res.getexif(), "EXIF left in the output"
        assert "comment" not in res.info and "exif" not in res.info
        after = np.asarray(res.convert("RGB"))
        before = originals[name]
        assert after.shape == before.shape
        for box in it.faces:
            total += 1
            masked += changed_fraction(before, after, box) >= 0.5
        far = far_mask(before.shape[:2], list(it.faces) + list(it.ignored))
        diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=2)
        # Far from every labelled face, only re-encoding noise (and the odd
        # false positive) may change pixels.
        assert float((diff[far] > 24).mean()) < 0.05
    assert masked / total >= 0.95, f"only {masked}/{total} labelled faces masked"

    logs = r.stdout + r.stderr
    assert SECRET not in logs
    assert str(tmp_path) not in logs
    assert '"event": "job.done"' in r.stdout


def test_bad_inputs_get_specific_reasons_and_the_run_goes_on(
    tmp_path: Path, eval_dir: Path, models_dir: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = _pick(eval_dir, 1)[0]
    (src / "good.jpg").write_bytes(good.path.read_bytes())
    (src / "zero.jpg").write_bytes(b"")
    (src / "truncated.jpg").write_bytes(good.path.read_bytes()[: good.path.stat().st_size // 2])
    (src / "random.jpg").write_bytes(os.urandom(5000))
    (src / "text.png").write_text("just some text, not an image\n" * 20)
    (src / "bomb.png").write_bytes(png_header_only(100000, 100000))
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(good.path.read_bytes())
    (src / "link.jpg").symlink_to(outside)
    (src / "folder.jpg").mkdir()
    out = tmp_path / "out"
    cfg = _config(tmp_path, models_dir)
    files = [
        "zero.jpg",
        "truncated.jpg",
        "random.jpg",
        "text.png",
        "bomb.png",
        "link.jpg",
        "folder.jpg",
        "good.jpg",
    ]
    r = _process(cfg, *[str(src / f) for f in files], "-o", str(out), "--show-names")
    assert r.returncode == 65
    assert "Traceback" not in r.stderr
    expected = {
        "zero.jpg": "empty_file",
        "truncated.jpg": ("truncated", "corrupt"),
        "random.jpg": "unsupported_type",
        "text.png": "unsupported_type",
        "bomb.png": "too_many_pixels",
        "link.jpg": "not_regular_file",
        "folder.jpg": "not_regular_file",
    }
    lines = r.stderr.splitlines()
    for name, reason in expected.items():
        line = next((ln for ln in lines if f"{name})" in ln), "")
        reasons = reason if isinstance(reason, tuple) else (reason,)
        assert any(f": {rc}:" in line for rc in reasons), (name, line)
    assert (out / "good.jpg").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["good.jpg"]
    assert "processed 1 file(s), 7 failed" in r.stderr


def test_existing_output_is_never_overwritten(
    tmp_path: Path, eval_dir: Path, models_dir: Path
) -> None:
    good = _pick(eval_dir, 1)[0]
    src = tmp_path / "a.jpg"
    src.write_bytes(good.path.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"keep me")
    r = _process(_config(tmp_path, models_dir), str(src), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "a.jpg").read_bytes() == b"keep me"
    assert Image.open(out / "a (1).jpg").format == "JPEG"
    assert not [p for p in out.iterdir() if p.name.startswith(".redactd-tmp-")]


def test_detect_json_lists_faces(tmp_path: Path, eval_dir: Path, models_dir: Path) -> None:
    import json

    good = _pick(eval_dir, 1)[0]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "redactd.cli",
            "detect",
            "--config",
            str(_config(tmp_path, models_dir)),
            str(good.path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    dets = json.loads(r.stdout)
    assert len(dets) >= len(good.faces)
    assert all(d["cls"] == "face" and len(d["box"]) == 4 and 0 <= d["score"] <= 1 for d in dets)


@pytest.mark.parametrize("profile", ["default", "fast"])
def test_parallel_jobs_give_the_same_outputs_as_one_at_a_time(
    tmp_path: Path, eval_dir: Path, models_dir: Path, profile: str
) -> None:
    # --jobs 3 runs three files at once through one pipeline (shared, thread-safe
    # detectors): every file must come out, masked exactly as when run alone.
    # With the one-pass `fast` profile the jobs share THROUGHPUT streams
    # ("auto" hint; on 2 cores a third job waits for a free infer request),
    # alone they run LATENCY: neither may change a mask.
    items = _pick(eval_dir, 6)
    inbound = tmp_path / "in"
    inbound.mkdir()
    for i, it in enumerate(items):
        Image.open(it.path).convert("RGB").save(inbound / f"{i:03d}.png")
    cfg = _config(tmp_path, models_dir)
    r1 = _process(cfg, str(inbound), "-o", str(tmp_path / "one"), "--profile", profile)
    r2 = _process(
        cfg, str(inbound), "-o", str(tmp_path / "two"), "--jobs", "3", "--profile", profile
    )
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    assert r2.stdout.count('"event": "job.done"') == len(items)
    for i in range(len(items)):
        a = np.asarray(Image.open(tmp_path / "one" / f"{i:03d}.png"))
        b = np.asarray(Image.open(tmp_path / "two" / f"{i:03d}.png"))
        assert np.array_equal(a, b), f"file {i} differs between --jobs 1 and --jobs 3"


def test_auto_hint_gives_parallel_one_pass_jobs_throughput_streams(
    tmp_path: Path, models_dir: Path
) -> None:
    # runtime.performance_hint "auto": --jobs 2 over two files with the
    # one-pass `fast` profile runs a stream per job (THROUGHPUT); over one
    # file, or with the multi-pass default profile, it stays LATENCY.
    inbound = tmp_path / "in"
    inbound.mkdir()
    for i in range(2):
        Image.new("RGB", (96, 64), (40 * i, 90, 120)).save(inbound / f"{i}.png")
    cfg = _config(tmp_path, models_dir)

    def hints(*inputs: str, profile: str = "fast") -> set[str]:
        out = ["-o", str(tmp_path / "out"), "--jobs", "2", "--profile", profile]
        r = _process(cfg, *inputs, *out)
        assert r.returncode == 0, r.stderr
        loaded = [ln for ln in r.stdout.splitlines() if '"event": "detector.loaded"' in ln]
        assert loaded
        return {json.loads(ln)["hint"] for ln in loaded}

    assert hints(str(inbound)) == {"THROUGHPUT"}
    assert hints(str(inbound / "0.png")) == {"LATENCY"}
    assert hints(str(inbound), profile="default") == {"LATENCY"}
