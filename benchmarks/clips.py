"""Benchmark inputs made on the fly (never committed): scaled real clips and face-count clips.

* ``scaled_clip``: the first ``frames`` frames of a real video from
  ../shared/eval/video scaled to a target size (480p ... 4K): how cost grows
  with resolution on real footage.
* ``faces_clip``: ``n`` real face crops from ../shared/eval drifting slowly
  over a real background at 1280x720, with each frame's face boxes: how
  cost grows with the number of faces, and masked recall per face-frame.

Both are written with libx264 at CRF 16 (visually lossless), so the
benchmark's own re-encoding noise is small next to a mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

RESOLUTIONS: dict[str, tuple[int, int]] = {
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "4K": (3840, 2160),
}


def _writer(
    path: Path, w: int, h: int, fps: int
) -> tuple[av.container.OutputContainer, av.VideoStream]:
    out = av.open(str(path), "w")
    st = out.add_stream("libx264", rate=Fraction(fps, 1))
    st.width, st.height, st.pix_fmt = w, h, "yuv420p"
    st.options = {"preset": "veryfast", "crf": "16"}
    return out, st


def scaled_clip(src: Path, dst: Path, size: tuple[int, int], frames: int, fps: int = 25) -> int:
    """Write ``dst``: the first ``frames`` frames of ``src`` resized to ``size``. Returns frames."""
    w, h = size
    out, st = _writer(dst, w, h, fps)
    n = 0
    try:
        with av.open(str(src)) as inp:
            for frame in inp.decode(video=0):
                img = frame.to_ndarray(format="bgr24")
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
                for p in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                    out.mux(p)
                n += 1
                if n >= frames:
                    break
        for p in st.encode():
            out.mux(p)
    finally:
        out.close()
    return n


@dataclass(frozen=True)
class FaceBox:
    frame: int
    box: tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class FacesClip:
    path: Path
    frames: int
    faces: tuple[FaceBox, ...]


def _crops(eval_dir: Path, n: int) -> list[np.ndarray]:
    """``n`` face crops (faces 60-160 px tall, with a margin) from the mask set."""
    import json

    root = eval_dir / "faces_wider_val"
    crops: list[np.ndarray] = []
    rows = [json.loads(x) for x in (root / "labels.jsonl").read_text().splitlines()]
    for r in rows:
        for b in r["boxes"]:
            if b["ignore"] or not 60 <= b["h"] <= 160:
                continue
            img = cv2.imread(str(root / r["image"]))
            if img is None:
                continue
            x, y, w, h = b["x"], b["y"], b["w"], b["h"]
            crop = img[y : y + h, x : x + w]
            if crop.shape[0] == h and crop.shape[1] == w:
                crops.append(cv2.resize(crop, (64, round(64 * h / w))))
            break
        if len(crops) >= max(n, 1):
            break
    return [crops[i % len(crops)] for i in range(n)] if crops else []


def faces_clip(
    dst: Path,
    eval_dir: Path,
    n: int,
    frames: int,
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
) -> FacesClip:
    """``n`` faces on a grid over a smooth background, drifting a few pixels per frame."""
    w, h = size
    crops = _crops(eval_dir, n)
    cols = max(1, math.ceil(math.sqrt(n * w / h))) if n else 1
    rows = max(1, math.ceil(n / cols)) if n else 1
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.dstack(
        [
            (90 + 60 * np.sin(xx / 97.0)),
            (110 + 50 * np.cos(yy / 83.0)),
            (120 + 40 * np.sin((xx + yy) / 151.0)),
        ]
    ).astype(np.uint8)
    out, st = _writer(dst, w, h, fps)
    faces: list[FaceBox] = []
    try:
        for t in range(frames):
            img = bg.copy()
            for i, crop in enumerate(crops):
                ch, cw = crop.shape[:2]
                cx = (i % cols + 0.5) * w / cols + 12 * math.sin(t / 9.0 + i)
                cy = (i // cols + 0.5) * h / rows + 8 * math.cos(t / 11.0 + i)
                x, y = int(cx - cw / 2), int(cy - ch / 2)
                x, y = min(max(0, x), w - cw), min(max(0, y), h - ch)
                img[y : y + ch, x : x + cw] = crop
                faces.append(FaceBox(t, (x, y, cw, ch)))
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    finally:
        out.close()
    return FacesClip(dst, frames, tuple(faces))


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def masked_recall(src: Path, out: Path, faces: tuple[FaceBox, ...], thr: int = 12) -> float | None:
    """Share of face-frames with >= 50 % of the box's pixels changed (None: frames differ)."""
    by_frame: dict[int, list[FaceBox]] = {}
    for f in faces:
        by_frame.setdefault(f.frame, []).append(f)
    hit = total = 0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        fa, fb = a.decode(video=0), b.decode(video=0)
        for t, (x, y) in enumerate(zip(fa, fb, strict=False)):
            before = x.to_ndarray(format="rgb24").astype(np.int16)
            after = y.to_ndarray(format="rgb24").astype(np.int16)
            if before.shape != after.shape:
                return None
            for f in by_frame.get(t, []):
                bx, by, bw, bh = f.box
                d = np.abs(before[by : by + bh, bx : bx + bw] - after[by : by + bh, bx : bx + bw])
                total += 1
                hit += float((d.max(axis=2) > thr).mean()) >= 0.5
    return hit / total if total else None
