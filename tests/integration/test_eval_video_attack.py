"""`redactd eval --attack` on labelled videos: plates judged by their input reading.

MOT labels carry no plate text. A synthetic clip shows one rendered plate
("AB 123 CD", black on white, large enough to read) moving slowly, boxed in
a MOT ``gt.txt`` (class 2). The recogniser reads it in the input frames, so
it is judged; left unmasked (the "output" is the input) the attack reads it
in every sampled frame, and masked by the real pipeline it reads it in none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from redactd.core.config import load
from redactd.core.types import Box
from redactd.evaluation import video_labels, video_report, video_runner
from redactd.evaluation.ocr import TextRecognizer
from redactd.evaluation.video_labels import TrackBox
from redactd.models import manifest
from redactd.pipeline.process import Pipeline

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECRET = "Brannoquist-Delvey"  # in the clip's file name: must never reach the report
PLATE = "AB 123 CD"
SIZE = (640, 360)
FRAMES = 16
PLATE_WH = (220, 56)


def _plate_frame(x: int, y: int) -> np.ndarray:
    """A frame (BGR) with a noisy background, a dark bumper and the plate at (x, y)."""
    w, h = PLATE_WH
    rng = np.random.default_rng(x)
    noise = rng.normal(0, 8, (SIZE[1], SIZE[0], 1))
    f = (noise + np.array([80, 90, 100])).clip(0, 255).astype(np.uint8)
    cv2.rectangle(f, (x - 6, y - 6), (x + w + 6, y + h + 6), (40, 40, 40), -1)
    cv2.rectangle(f, (x, y), (x + w, y + h), (255, 255, 255), -1)
    cv2.rectangle(f, (x, y), (x + w, y + h), (0, 0, 0), 2)
    font = cv2.FONT_HERSHEY_SIMPLEX
    tw, th = cv2.getTextSize(PLATE, font, 1.0, 3)[0]
    scale = min((w - 16) / tw, (h - 14) / th)
    tw, th = cv2.getTextSize(PLATE, font, scale, 3)[0]
    org = (x + (w - tw) // 2, y + (h + th) // 2)
    cv2.putText(f, PLATE, org, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    return f


def _plate_clip(folder: Path) -> Path:
    """The clip and its MOT labels (one plate track, every frame counted)."""
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f"{SECRET}.mp4"
    boxes = []
    with av.open(str(video), "w") as oc:
        vs = oc.add_stream("libx264", rate=25)
        vs.width, vs.height = SIZE
        vs.pix_fmt = "yuv420p"
        vs.codec_context.options = {"crf": "18", "preset": "veryfast"}
        for t in range(FRAMES):
            x, y = 150 + 2 * t, 150
            boxes.append(TrackBox(t, 1, "plate", Box.from_xywh(x, y, *PLATE_WH)))
            frame = av.VideoFrame.from_ndarray(_plate_frame(x, y), format="bgr24")
            for pkt in vs.encode(frame):
                oc.mux(pkt)
        for pkt in vs.encode():
            oc.mux(pkt)
    (folder / f"{SECRET}.gt.txt").write_text(video_labels.format_mot(boxes))
    return video


@pytest.fixture(scope="module")
def ocr_models(models_dir: Path) -> Path:
    """The plate recogniser beside the default models (fetched if absent)."""
    spec = manifest.load().get("ppocr_rec")
    if spec.missing_or_bad(models_dir):
        r = subprocess.run(
            [sys.executable, "-m", "redactd.cli", "models", "fetch", "ppocr_rec",
             "--store", str(models_dir)],
            capture_output=True, text=True, timeout=900, cwd=REPO,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    return models_dir


def _config(tmp: Path, models_dir: Path) -> Path:
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
    )
    return cfg


class _Identity:
    """The real pipeline's detectors, but an "anonymizer" that copies its input."""

    def __init__(self, real: Pipeline) -> None:
        self.real = real
        self.cfg = real.cfg
        self.detectors = real.detectors

    def process(self, src: Path, dst: Path, profile: str) -> None:
        shutil.copyfile(src, dst)

    def detect_frame(self, *args: Any, **kwargs: Any) -> Any:
        return self.real.detect_frame(*args, **kwargs)


def test_an_unmasked_plate_is_judged_and_readable_and_a_masked_one_is_not(
    tmp_path: Path, ocr_models: Path
) -> None:
    _plate_clip(tmp_path / "set")
    (video,) = video_labels.load_sets(tmp_path / "set")[0].videos
    cfg = load(_config(tmp_path, ocr_models))
    pipeline = Pipeline.load(cfg, ["default"])
    try:
        rec = TextRecognizer.load(manifest.load(), pipeline.detectors.runtime, ocr_models)
        identity: Any = _Identity(pipeline)
        run = video_runner.run_video
        ident = run(identity, "default", video, tmp_path / "i.mp4", 0, True, rec)
        masked = run(pipeline, "default", video, tmp_path / "m.mp4", 0, True, rec)
    finally:
        pipeline.close()
    assert ident.attack_frames == video_runner.ATTACK_FRAMES == masked.attack_frames
    (a,) = ident.attack
    assert (a.method, a.cls) == ("profile", "plate")
    # judged in every sampled frame (read in the input), readable in every one
    assert a.plates_with_text == a.readable_original == video_runner.ATTACK_FRAMES
    assert a.readable_all == video_runner.ATTACK_FRAMES
    assert a.anonymized == 0 and a.readable == 0  # nothing masked: a recall miss, not a weak mask
    (m,) = masked.attack
    assert m.plates_with_text == m.readable_original == video_runner.ATTACK_FRAMES
    assert m.anonymized == video_runner.ATTACK_FRAMES
    assert m.readable == m.readable_deblurred == m.readable_all == 0
    # the report carries the counts, per video
    row = video_report.to_json(
        video_runner.VideoEvalReport("x", "t", "default", None, (
            video_runner.VideoSetScore(0, "d", (ident,)),))
    )["sets"][0]["attack"][0]  # fmt: skip
    assert (row["plates_with_text"], row["readable_all"]) == (8, 8)


def test_eval_cli_attacks_every_mask_method_on_a_plate_video_and_names_nothing(
    tmp_path: Path, ocr_models: Path
) -> None:
    _plate_clip(tmp_path / "sets" / f"cam-{SECRET}")
    out = tmp_path / "report"
    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "eval", str(tmp_path / "sets"),
         "--config", str(_config(tmp_path, ocr_models)), "--out", str(out), "--attack"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "video-report.json").read_text())
    (s,) = rep["sets"]
    rows = {a["method"]: a for a in s["attack"]}
    assert set(rows) == {"profile", "mosaic", "blur", "pixelate", "solid"}
    assert all(a["cls"] == "plate" for a in rows.values())
    prof = rows["profile"]
    assert prof["plates_with_text"] == prof["readable_original"] == 8
    assert prof["readable"] == prof["readable_deblurred"] == prof["readable_all"] == 0
    # the default masks plates solid: that row is the profile's own
    assert rows["solid"] == {**prof, "method": "solid"}
    for a in rows.values():
        assert a["plates_with_text"] == 8  # every method judged on the same readings
    assert s["per_video"][0]["attack"] == s["attack"]
    md = (out / "video-report.md").read_text()
    assert "plates judged" in md
    for p in out.iterdir():
        if p.is_file():
            data = p.read_bytes()
            assert SECRET.encode() not in data, p.name
            assert b"AB123CD" not in data.replace(b" ", b"") and PLATE.encode() not in data
    assert SECRET not in r.stdout + r.stderr and PLATE not in r.stdout + r.stderr


def test_video_attack_without_the_recogniser_stops_with_exit_78(
    tmp_path: Path, models_dir: Path
) -> None:
    store = tmp_path / "store"  # the default models, but no ppocr_rec
    store.mkdir()
    for p in models_dir.iterdir():
        if p.name != "ppocr_rec" and not p.name.startswith("."):
            (store / p.name).symlink_to(p.resolve())
    _plate_clip(tmp_path / "sets" / "cam")
    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "eval", str(tmp_path / "sets"),
         "--config", str(_config(tmp_path, store)), "--out", str(tmp_path / "r"), "--attack"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 78, r.stderr
    assert "model error" in r.stderr and "ppocr_rec" in r.stderr
    assert not (tmp_path / "r" / "video-report.json").exists()
