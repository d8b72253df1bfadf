"""Videos with known content for the video tests.

Two kinds:

* ``write_clip``: small clips without faces (moving pattern) in any container,
  codec, with or without audio, rotation, metadata and variable frame rate:
  for I/O checks (timestamps, audio bytes, rotation, metadata stripping).
* ``make_gt_video``: real face crops from ../shared/eval moving, scaling, fading
  and passing behind solid bars over a real background region that holds no
  labelled face, with the ground-truth face box of every frame. ``stability``
  then measures per-frame masked recall and the flicker rate by comparing the
  decoded input and output pixel by pixel.

Tests import PyAV directly (only the package is limited to one ``av`` module).
"""

from __future__ import annotations

# --------------------------------------------------------------------------- plain clips
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from redactd.core.types import Box
from redactd.evaluation import video_labels
from redactd.evaluation.video_labels import TrackBox
from tests.helpers import synthvideo


@dataclass(frozen=True)
class StreamSummary:
    """What a test compares between an input and an output video."""

    frame_times: tuple[float, ...]
    width: int
    height: int
    rotation: int
    audio_packets: tuple[bytes, ...]
    audio_codecs: tuple[str, ...]
    stream_types: tuple[str, ...]
    container_tags: dict[str, str]
    stream_tags: tuple[dict[str, str], ...]
    duration: float | None

    @property
    def frames(self) -> int:
        return len(self.frame_times)


def summarize(path: Path) -> StreamSummary:
    """Decode every video frame (times in seconds) and read every audio packet."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = []
        rot = 0
        w = h = 0
        for i, f in enumerate(c.decode(v)):
            times.append(float(f.pts * f.time_base))
            if i == 0:
                rot, w, h = f.rotation, f.width, f.height
        ctags = dict(c.metadata)
        stags = tuple(dict(s.metadata) for s in c.streams)
        types = tuple(s.type for s in c.streams)
        acodecs = tuple(s.codec_context.name for s in c.streams.audio)
        duration = c.duration / 1e6 if c.duration else None
    packets: list[bytes] = []
    with av.open(str(path)) as c:
        if c.streams.audio:
            packets = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    return StreamSummary(
        tuple(times), w, h, rot, tuple(packets), acodecs, types, ctags, stags, duration
    )


def _pattern(i: int, w: int, h: int) -> np.ndarray:
    """A textured moving picture (gradient + moving squares), BGR."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (xx * 255 // max(w - 1, 1) + i * 3) % 256
    img[..., 1] = (yy * 255 // max(h - 1, 1)) % 256
    img[..., 2] = ((xx // 16 + yy // 16) % 2) * 120 + 60
    s = max(8, min(w, h) // 6)
    x = (i * 5) % max(1, w - s)
    y = (i * 3) % max(1, h - s)
    img[y : y + s, x : x + s] = (255 - i % 256, 40, 200)
    return img


def write_clip(
    path: Path,
    *,
    container: str | None = None,
    codec: str = "libx264",
    size: tuple[int, int] = (320, 240),
    frames: int = 40,
    fps: int = 25,
    audio: str | None = "aac",
    audio_seconds: float | None = None,
    rotation: int | None = None,
    metadata: dict[str, str] | None = None,
    stream_metadata: dict[str, str] | None = None,
    vfr: bool = False,
    pix_fmt: str = "yuv420p",
    faststart: bool = False,
    subtitle: str | None = None,
    gop: int | None = None,
) -> list[float]:
    """Write a clip without faces; returns the frame times (s) written.

    ``vfr`` spaces frames irregularly (1, 2 or 3 ticks of 1/(2*fps)).
    ``subtitle``: a text subtitle stream (ASS; Matroska) holding this text.
    """
    w, h = size
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=opts) as oc:
        for k, v in (metadata or {}).items():
            oc.metadata[k] = v
        tb = Fraction(1, fps * 2) if vfr else Fraction(1, fps)
        vs = oc.add_stream(codec, rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = pix_fmt
        vs.codec_context.time_base = tb
        if codec == "libx264":
            vs.codec_context.options = {"crf": "18", "preset": "veryfast"}
        elif codec == "libx265":
            vs.codec_context.options = {
                "crf": "22",
                "preset": "ultrafast",
                "x265-params": "log-level=error",
            }
        if gop is not None:
            vs.codec_context.gop_size = gop
        for k, v in (stream_metadata or {}).items():
            vs.metadata[k] = v
        if rotation is not None:
            vs.set_display_rotation(rotation)
        s_st = None
        if subtitle is not None:
            s_st = oc.add_stream("ass")
            s_st.metadata["title"] = subtitle
        a_st = None
        if audio is not None:
            rate = {"pcm_alaw": 8000, "pcm_mulaw": 8000, "libopus": 48000}.get(audio, 44100)
            a_st = oc.add_stream(audio, rate=rate)
            a_st.layout = "mono"
        times = []
        pts = 0
        rng = random.Random(7)
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(_pattern(i, w, h), format="bgr24")
            vf = vf.reformat(format=pix_fmt)
            vf.pts = pts
            vf.time_base = tb
            times.append(float(pts * tb))
            for p in vs.encode(vf):
                oc.mux(p)
            if s_st is not None and subtitle is not None and i == 1:
                sp = av.Packet(subtitle.encode())
                sp.stream = s_st
                sp.pts = sp.dts = round(float(pts * tb) * 1000)
                sp.duration = 1000
                sp.time_base = Fraction(1, 1000)
                oc.mux(sp)
            pts += rng.choice((1, 2, 3)) if vfr else 1
        for p in vs.encode(None):
            oc.mux(p)
        if a_st is not None:
            rate = a_st.codec_context.sample_rate
            seconds = audio_seconds if audio_seconds is not None else frames / fps
            fmt = a_st.codec_context.format.name
            n = 1024
            for start in range(0, int(rate * seconds), n):
                t = np.arange(start, start + n) / rate
                s = (np.sin(2 * np.pi * 440 * t) * 0.3).astype(np.float32)[None, :]
                af = av.AudioFrame.from_ndarray(s, format="flt", layout="mono")
                af.sample_rate = rate
                af.pts = start
                af.time_base = Fraction(1, rate)
                if fmt != "flt":
                    res = av.AudioResampler(format=fmt, layout="mono", rate=rate)
                    converted = res.resample(af)
                else:
                    converted = [af]
                for cf in converted:
                    for p in a_st.encode(cf):
                        oc.mux(p)
            for p in a_st.encode(None):
                oc.mux(p)
    return times


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class Sprite:
    """A face crop with a soft alpha edge and the face box inside it (x, y, w, h)."""

    bgr: np.ndarray
    alpha: np.ndarray
    face: tuple[int, int, int, int]


@dataclass(frozen=True)
class GTFace:
    """One face in one frame. ``counted``: enough of it shows to require a mask."""

    frame: int
    track: int
    box: tuple[int, int, int, int]
    occluder: tuple[int, int, int, int] | None
    alpha: float
    counted: bool


@dataclass(frozen=True)
class GTVideo:
    path: Path
    width: int
    height: int
    fps: int
    frames: int
    faces: tuple[GTFace, ...]

    def tracks(self) -> dict[int, list[GTFace]]:
        out: dict[int, list[GTFace]] = {}
        for f in self.faces:
            out.setdefault(f.track, []).append(f)
        for v in out.values():
            v.sort(key=lambda f: f.frame)
        return out

    def write_labels(self, path: Path) -> None:
        with path.open("w") as fh:
            for f in self.faces:
                fh.write(json.dumps(f.__dict__, default=list) + "\n")


def _labels(set_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (set_dir / "labels.jsonl").read_text().splitlines()]


def _crowded(b: dict, others: list[dict]) -> bool:
    """Whether another labelled face (ignore boxes too) reaches into the sprite of
    ``b`` (the face and 45 % of its size around it): it would be pasted
    unlabelled, and masking that real face would count as over-masking."""
    mx, my = b["w"] * 0.45, b["h"] * 0.45
    x1, y1, x2, y2 = b["x"] - mx, b["y"] - my, b["x"] + b["w"] + mx, b["y"] + b["h"] + my
    return any(
        o["x"] < x2 and x1 < o["x"] + o["w"] and o["y"] < y2 and y1 < o["y"] + o["h"]
        for o in others
    )


def load_sprites(eval_dir: Path, n: int, seed: int = 1) -> list[Sprite]:
    """``n`` clear, frontal-ish faces (WIDER 'easy' and unmasked Kaggle faces)."""
    cands: list[tuple[Path, dict, list[dict]]] = []
    for name, ok in (
        ("faces_wider_val", lambda b: b.get("wider_level") == "easy" and b["h"] >= 70),
        ("faces_mask_kaggle", lambda b: b.get("source_label") == "without_mask" and b["h"] >= 60),
    ):
        d = eval_dir / name
        if not d.is_dir():
            continue
        for rec in _labels(d):
            boxes = rec["boxes"]
            for b in boxes:
                if ok(b) and not b["ignore"]:
                    cands.append((d / rec["image"], b, boxes))
    random.Random(seed).shuffle(cands)
    # Crowded faces are skipped after the shuffle, so that the clips keep the
    # faces they had before the rule.
    clear = [(p, b) for p, b, boxes in cands if not _crowded(b, [o for o in boxes if o is not b])]
    if len(clear) < n:
        raise FileNotFoundError("not enough labelled faces in the eval sets")
    sprites = []
    for img_path, b in clear[:n]:
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        assert img is not None, "unreadable eval image"
        x, y, w, h = b["x"], b["y"], b["w"], b["h"]
        mx, my = int(w * 0.45), int(h * 0.45)
        x1, y1 = max(0, x - mx), max(0, y - my)
        x2, y2 = min(img.shape[1], x + w + mx), min(img.shape[0], y + h + my)
        crop = img[y1:y2, x1:x2].copy()
        ch, cw = crop.shape[:2]
        # Opaque over the face and a little around it, fading to 0 at the edge.
        yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        fcx, fcy = x - x1 + w / 2, y - y1 + h / 2
        r = np.sqrt(((xx - fcx) / (w * 0.75)) ** 2 + ((yy - fcy) / (h * 0.75)) ** 2)
        alpha = np.clip((1.45 - r) / 0.45, 0.0, 1.0).astype(np.float32)
        sprites.append(Sprite(crop, alpha, (x - x1, y - y1, w, h)))
    return sprites


def load_background(eval_dir: Path, size: tuple[int, int], seed: int = 1) -> np.ndarray:
    """A region of a WIDER image that overlaps no labelled face (ignored ones
    included), scaled to ``size``."""
    w_out, h_out = size
    d = eval_dir / "faces_wider_val"
    recs = [r for r in _labels(d) if r["width"] >= 800]
    rng = random.Random(seed)
    rng.shuffle(recs)
    aspect = w_out / h_out
    for rec in recs:
        boxes = [(b["x"], b["y"], b["w"], b["h"]) for b in rec["boxes"]]
        W, H = rec["width"], rec["height"]
        for _ in range(60):
            rw = rng.randint(int(W * 0.35), int(W * 0.7))
            rh = int(rw / aspect)
            if rh >= H:
                continue
            rx, ry = rng.randint(0, W - rw), rng.randint(0, H - rh)
            if all(
                rx + rw < bx - bw * 0.5
                or bx + bw * 1.5 < rx
                or ry + rh < by - bh * 0.5
                or by + bh * 1.5 < ry
                for bx, by, bw, bh in boxes
            ):
                img = cv2.imread(str(d / rec["image"]), cv2.IMREAD_COLOR)
                assert img is not None, "unreadable eval image"
                region = img[ry : ry + rh, rx : rx + rw]
                return cv2.resize(region, (w_out, h_out), interpolation=cv2.INTER_AREA)
    raise FileNotFoundError("no face-free background region found")


@dataclass(frozen=True)
class _Script:
    """Where one face goes: linear motion and scale, alpha dips, bar passes."""

    sprite: int
    start: int
    end: int
    c0: tuple[float, float]
    c1: tuple[float, float]
    h0: float
    h1: float
    fades: tuple[tuple[int, int, float], ...] = ()  # (first, last, min alpha)
    fade_in: int = 0  # frames of fade-in from 0.45 at the start
    bars: tuple[tuple[int, int, str], ...] = ()  # (first, last, "v" | "h")
    extra: dict = field(default_factory=dict)


def _default_scripts(w: int, h: int, n: int) -> list[_Script]:
    """Four faces with the events that make single-frame detectors flicker."""
    s = [
        # Walks left to right; a vertical bar sweeps over it twice.
        _Script(0, 0, n - 1, (0.18 * w, 0.35 * h), (0.45 * w, 0.40 * h), 80, 70,
                bars=((18, 26, "v"), (58, 64, "v"))),
        # Recedes (shrinks) and fades twice to half contrast.
        _Script(1, 4, n - 1, (0.75 * w, 0.30 * h), (0.65 * w, 0.45 * h), 95, 50,
                fades=((20, 30, 0.5), (50, 58, 0.45))),
        # Fades in at its start, then moves fast diagonally.
        _Script(2, 10, n - 8, (0.30 * w, 0.75 * h), (0.85 * w, 0.72 * h), 60, 72,
                fade_in=8, bars=((40, 46, "h"),)),
        # Small and far, slowly approaching, one bar pass.
        _Script(3, 0, n - 1, (0.55 * w, 0.78 * h), (0.50 * w, 0.70 * h), 34, 52,
                bars=((30, 35, "v"),)),
    ]  # fmt: skip
    return s


def _occluder(
    face: tuple[int, int, int, int], t: int, first: int, last: int, kind: str
) -> tuple[int, int, int, int]:
    """A bar 70 % of the face wide/tall, sweeping across the face from ``first`` to ``last``."""
    x, y, w, h = face
    p = (t - first) / max(1, last - first)  # 0..1
    if kind == "v":
        bw = int(w * 0.7)
        bx = int(x - bw + p * (w + bw))
        return (bx, y - h, bw, 3 * h)
    bh = int(h * 0.7)
    by = int(y - bh + p * (h + bh))
    return (x - w, by, 3 * w, bh)


def _visible_share(face: tuple[int, int, int, int], occ: tuple[int, int, int, int] | None) -> float:
    if occ is None:
        return 1.0
    x, y, w, h = face
    ox, oy, ow, oh = occ
    ix = max(0, min(x + w, ox + ow) - max(x, ox))
    iy = max(0, min(y + h, oy + oh) - max(y, oy))
    return 1.0 - (ix * iy) / float(w * h)


def make_gt_video(
    path: Path,
    eval_dir: Path,
    *,
    size: tuple[int, int] = (640, 360),
    frames: int = 80,
    fps: int = 25,
    seed: int = 3,
    crf: int = 14,
    stored_rotation: int = 0,
) -> GTVideo:
    """Render the ground-truth video (H.264 MP4) and return its labels.

    A face-frame is ``counted`` when its alpha is >= 0.4 and at least 35 % of
    its box is not behind a bar: enough of the face shows to identify.
    ``stored_rotation`` (a multiple of 90): the pictures are stored turned by
    that much clockwise, with a display matrix that turns them back upright
    (like a phone held upright); labels are then in stored pixels.
    """
    w, h = size
    turns = (stored_rotation // 90) % 4
    sprites = load_sprites(eval_dir, 4, seed)
    bg = load_background(eval_dir, size, seed)
    scripts = _default_scripts(w, h, frames)
    faces: list[GTFace] = []
    sw_, sh_ = (h, w) if turns % 2 else (w, h)
    with av.open(str(path), "w") as oc:
        vs = oc.add_stream("libx264", rate=fps)
        vs.width, vs.height = sw_, sh_
        vs.pix_fmt = "yuv420p"
        vs.codec_context.options = {"crf": str(crf), "preset": "veryfast"}
        if turns:
            vs.set_display_rotation(90 * turns)
        for t in range(frames):
            img = bg.astype(np.float32)
            bars: list[tuple[tuple[int, int, int, int], int]] = []
            placed: list[tuple[int, tuple[int, int, int, int], float]] = []
            for ti, sc in enumerate(scripts):
                if not sc.start <= t <= sc.end:
                    continue
                p = (t - sc.start) / max(1, sc.end - sc.start)
                cx = sc.c0[0] + p * (sc.c1[0] - sc.c0[0])
                cy = sc.c0[1] + p * (sc.c1[1] - sc.c0[1])
                fh = sc.h0 + p * (sc.h1 - sc.h0)
                sp = sprites[sc.sprite]
                k = fh / sp.face[3]
                sw, sh = max(1, round(sp.bgr.shape[1] * k)), max(1, round(sp.bgr.shape[0] * k))
                spr = cv2.resize(sp.bgr, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
                al = cv2.resize(sp.alpha, (sw, sh), interpolation=cv2.INTER_LINEAR)
                fx, fy, fw, fhh = (v * k for v in sp.face)
                ox, oy = round(cx - fx - fw / 2), round(cy - fy - fhh / 2)
                a = 1.0
                if sc.fade_in and t - sc.start < sc.fade_in:
                    a = 0.45 + 0.55 * (t - sc.start) / sc.fade_in
                for f0, f1, amin in sc.fades:
                    if f0 <= t <= f1:
                        mid = (f0 + f1) / 2
                        a = min(a, amin + (1 - amin) * abs(t - mid) / max(1e-6, (f1 - f0) / 2))
                _blend(img, spr, al * a, ox, oy)
                box = (round(ox + fx), round(oy + fy), round(fw), round(fhh))
                placed.append((ti, box, a))
                for b0, b1, kind in sc.bars:
                    if b0 <= t <= b1:
                        bars.append((_occluder(box, t, b0, b1, kind), ti))
            for (bx, by, bw, bh), _ in bars:
                x1, y1 = max(0, bx), max(0, by)
                x2, y2 = min(w, bx + bw), min(h, by + bh)
                if x2 > x1 and y2 > y1:
                    img[y1:y2, x1:x2] = (60.0, 110.0, 170.0)
            for ti, box, a in placed:
                clipped = _clip_box(box, w, h)
                if clipped is None:
                    continue
                occ = next((o for o, owner in bars if owner == ti), None)
                share = _visible_share(clipped, occ)
                counted = a >= 0.4 and share >= 0.35
                if turns:
                    clipped = _turned(clipped, w, h, turns)
                    occ = None if occ is None else _turned(occ, w, h, turns)
                faces.append(GTFace(t, ti, clipped, occ, round(a, 3), counted))
            pic = np.clip(img, 0, 255).astype(np.uint8)
            if turns:
                pic = np.ascontiguousarray(np.rot90(pic, -turns))  # stored turned clockwise
            vf = av.VideoFrame.from_ndarray(pic, format="bgr24")
            vf.pts = t
            vf.time_base = Fraction(1, fps)
            for pkt in vs.encode(vf):
                oc.mux(pkt)
        for pkt in vs.encode(None):
            oc.mux(pkt)
    return GTVideo(path, sw_, sh_, fps, frames, tuple(faces))


def _turned(b: tuple[int, int, int, int], w: int, h: int, k: int) -> tuple[int, int, int, int]:
    """Box ``b`` of a ``w`` x ``h`` upright picture, in the picture turned by
    ``np.rot90(.., -k)`` (found by turning a mask the same way: independent of
    the code under test)."""
    m = np.zeros((h, w), bool)
    x, y, bw, bh = b
    m[max(0, y) : y + bh, max(0, x) : x + bw] = True
    m = np.rot90(m, -k)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    )


def _clip_box(b: tuple[int, int, int, int], w: int, h: int) -> tuple[int, int, int, int] | None:
    x, y, bw, bh = b
    x1, y1, x2, y2 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return (x1, y1, x2 - x1, y2 - y1)


def _blend(img: np.ndarray, spr: np.ndarray, al: np.ndarray, ox: int, oy: int) -> None:
    h, w = img.shape[:2]
    sh, sw = spr.shape[:2]
    x1, y1 = max(0, ox), max(0, oy)
    x2, y2 = min(w, ox + sw), min(h, oy + sh)
    if x2 <= x1 or y2 <= y1:
        return
    s = spr[y1 - oy : y2 - oy, x1 - ox : x2 - ox]
    a = al[y1 - oy : y2 - oy, x1 - ox : x2 - ox, None]
    img[y1:y2, x1:x2] = img[y1:y2, x1:x2] * (1 - a) + s * a


# --------------------------------------------------------------------------- metrics


def decode_bgr(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="bgr24")


def face_masked(
    before: np.ndarray, after: np.ndarray, face: GTFace, thr: int = 12, share: float = 0.5
) -> bool:
    """>= ``share`` of the face box's visible pixels changed by more than ``thr``."""
    x, y, w, h = face.box
    a = before[y : y + h, x : x + w].astype(np.int16)
    b = after[y : y + h, x : x + w].astype(np.int16)
    changed = np.abs(a - b).max(axis=2) > thr
    keep = np.ones(changed.shape, bool)
    if face.occluder is not None:
        ox, oy, ow, oh = face.occluder
        keep[max(0, oy - y) : max(0, oy + oh - y), max(0, ox - x) : max(0, ox + ow - x)] = False
    if not keep.any():
        return False
    return float(changed[keep].mean()) >= share


@dataclass(frozen=True)
class Stability:
    recall: float  # counted face-frames masked / counted face-frames
    flicker: float  # tracks with an unmasked counted frame between masked ones / tracks
    face_frames: int
    tracks: int
    per_track: dict[int, str]  # "1" masked, "0" not, "." not counted, per frame

    def line(self) -> str:
        return (
            f"recall {self.recall:.3f} ({self.face_frames} face-frames), "
            f"flicker {self.flicker:.3f} ({self.tracks} tracks)"
        )


def stability(gt: GTVideo, output: Path) -> Stability:
    """Per-frame masked recall and flicker rate of ``output`` against ``gt``."""
    by_frame: dict[int, list[GTFace]] = {}
    for f in gt.faces:
        by_frame.setdefault(f.frame, []).append(f)
    flags: dict[int, dict[int, bool | None]] = {}
    n_out = 0
    for t, (before, after) in enumerate(zip(decode_bgr(gt.path), decode_bgr(output), strict=False)):
        n_out += 1
        for face in by_frame.get(t, []):
            flags.setdefault(face.track, {})[t] = (
                face_masked(before, after, face) if face.counted else None
            )
    if n_out != gt.frames:
        raise AssertionError(f"output has {n_out} frames, ground truth {gt.frames}")
    counted = [v for tr in flags.values() for v in tr.values() if v is not None]
    flicker = 0
    per_track = {}
    for tid, fr in flags.items():
        seq = [fr[t] for t in sorted(fr)]
        per_track[tid] = "".join("." if v is None else ("1" if v else "0") for v in seq)
        marks = [t for t in sorted(fr) if fr[t]]
        if marks and any(fr[t] is False for t in range(marks[0], marks[-1] + 1) if t in fr):
            flicker += 1
    return Stability(
        recall=sum(counted) / max(1, len(counted)),
        flicker=flicker / max(1, len(flags)),
        face_frames=len(counted),
        tracks=len(flags),
        per_track=per_track,
    )


def boxes_for(gt: GTVideo, frames: Sequence[int]) -> list[GTFace]:
    return [f for f in gt.faces if f.frame in set(frames)]


@dataclass(frozen=True)
class VideoPixels:
    """Per-frame pixel measures of a masked clip, defined as ``redactd eval``'s for images.

    ``strict_recall``: counted face-frames strictly masked (70 % of the box's
    detail pixels changed by more than 10 in luma; ``redactd.evaluation.pixels``).
    ``overmask``: changed pixels (luma > 10, 3x3 opening) outside every face
    box grown by 30 % (uncounted faces included), over all frames;
    ``frame_mean`` / ``frame_max`` / ``frames_over_1pct`` per frame.
    """

    strict_recall: float
    face_frames: int
    overmask: float
    frame_mean: float
    frame_max: float
    frames_over_1pct: int
    frames: int

    def line(self) -> str:
        return (
            f"strict recall {self.strict_recall:.3f} ({self.face_frames} face-frames), "
            f"over-masking {self.overmask:.4f} (per frame mean {self.frame_mean:.4f}, "
            f"max {self.frame_max:.4f}, {self.frames_over_1pct}/{self.frames} frames > 1 %)"
        )


def video_pixels(gt: GTVideo, output: Path) -> VideoPixels:
    """Strict masked recall per face-frame and over-masking per frame of ``output``."""
    from redactd.core.types import Box
    from redactd.evaluation import pixels
    from redactd.evaluation.labels import LabelledBox, LabelledImage

    by_frame: dict[int, list[GTFace]] = {}
    for f in gt.faces:
        by_frame.setdefault(f.frame, []).append(f)
    results = []
    for t, (before, after) in enumerate(zip(decode_bgr(gt.path), decode_bgr(output), strict=False)):
        faces = by_frame.get(t, [])
        im = LabelledImage(
            path=gt.path,
            width=gt.width,
            height=gt.height,
            labels_complete=True,
            boxes=tuple(
                LabelledBox("face", Box.from_xywh(*f.box), ignore=not f.counted) for f in faces
            ),
        )
        results.append(
            pixels.compare_arrays(
                im, np.ascontiguousarray(before[..., ::-1]), np.ascontiguousarray(after[..., ::-1])
            )
        )
    if len(results) != gt.frames:
        raise AssertionError(f"output has {len(results)} frames, ground truth {gt.frames}")
    s = pixels.summarise(results, "face")
    per = [r.overmask or 0.0 for r in results]
    return VideoPixels(
        strict_recall=s.detail_recall or 0.0,
        face_frames=s.boxes,
        overmask=pixels.overmask(results) or 0.0,
        frame_mean=float(np.mean(per)),
        frame_max=float(np.max(per)),
        frames_over_1pct=sum(1 for v in per if v > 0.01),
        frames=len(results),
    )


def labelled_clip(folder: Path, eval_dir: Path, frames: int = 40) -> synthvideo.GTVideo:
    """A synthetic clip with real faces and its MOT ``gt.txt`` (counted faces flag 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f"{SECRET}.mp4"
    gt = synthvideo.make_gt_video(video, eval_dir, size=(480, 272), frames=frames, seed=3)
    boxes = [
        TrackBox(f.frame, f.track + 1, "face", Box.from_xywh(*f.box), ignore=not f.counted)
        for f in gt.faces
    ]
    (folder / f"{SECRET}.gt.txt").write_text(video_labels.format_mot(boxes))
    return gt


SECRET = "Quillomar-Vesstrand"  # in the video's file name: must never reach the report
