"""A labelled synthetic video set from a labelled image set, for when no video labels exist.

    python -m redactd.evaluation.synthvideo FACES_SET_DIR OUT_DIR [--videos 2] [--frames 80]
                                            [--size 640x360] [--fps 25] [--seed 0]

Real face crops (the counted faces of at least ``MIN_FACE`` px of the set
whose crop carries no other labelled face: it would be pasted unlabelled)
move, grow or shrink, fade to half contrast and pass behind solid bars over
a region of one of the set's photos that overlaps no labelled box. Every
face-frame is labelled with its track in MOT ``gt.txt`` form
(``redactd.evaluation.video_labels``): counted (flag 1) while at least
``COUNTED_ALPHA`` of its contrast and ``COUNTED_VISIBLE`` of its box show,
an ignore box (flag 0) otherwise. Clips are ``clip-NNN.mp4`` (H.264): no
name of the source set is carried over. The clips measure redactd on these
faces and motions, not on the operator's cameras.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from redactd.core.types import Box
from redactd.evaluation import dataset, video_labels
from redactd.evaluation.video_labels import TrackBox

MIN_FACE = 40
COUNTED_ALPHA = 0.4
COUNTED_VISIBLE = 0.35
TRACKS = 3
#: Margin of photo around the face box a sprite carries, relative to the box.
MARGIN = 0.45


@dataclass(frozen=True)
class _Sprite:
    bgr: np.ndarray
    alpha: np.ndarray
    face: tuple[int, int, int, int]  # x, y, w, h inside the crop


@dataclass(frozen=True)
class _Script:
    sprite: int
    c0: tuple[float, float]
    c1: tuple[float, float]
    h0: float
    h1: float
    fade: tuple[int, int] | None  # frames of a dip to half contrast
    bar: tuple[int, int] | None  # frames of a vertical bar sweeping over the face


def _sprites(sets: Sequence[dataset.LabelledSet], n: int, rng: random.Random) -> list[_Sprite]:
    cands = [
        (im.path, b.box)
        for s in sets
        for im in s.images
        for b in im.boxes
        if b.cls == "face"
        and not b.ignore
        and b.box.height >= MIN_FACE
        and not _crowded(b.box, [o.box for o in im.boxes if o is not b])
    ]
    if len(cands) < n:
        raise ValueError(f"the set needs at least {n} labelled faces of {MIN_FACE} px or more")
    rng.shuffle(cands)
    out: list[_Sprite] = []
    for path, box in cands:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        x, y, w, h = (round(v) for v in (box.x1, box.y1, box.width, box.height))
        mx, my = int(w * MARGIN), int(h * MARGIN)
        x1, y1 = max(0, x - mx), max(0, y - my)
        x2, y2 = min(img.shape[1], x + w + mx), min(img.shape[0], y + h + my)
        crop = img[y1:y2, x1:x2].copy()
        ch, cw = crop.shape[:2]
        yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
        fcx, fcy = x - x1 + w / 2, y - y1 + h / 2
        r = np.sqrt(((xx - fcx) / (w * 0.75)) ** 2 + ((yy - fcy) / (h * 0.75)) ** 2)
        alpha = np.clip((1.45 - r) / 0.45, 0.0, 1.0).astype(np.float32)
        out.append(_Sprite(crop, alpha, (x - x1, y - y1, w, h)))
        if len(out) == n:
            return out
    raise ValueError("too few readable images with faces in the set")


def _crop_box(box: Box) -> Box:
    """The part of the photo a sprite of ``box`` carries (the face and ``MARGIN`` around it)."""
    mx, my = box.width * MARGIN, box.height * MARGIN
    return Box(box.x1 - mx, box.y1 - my, box.x2 + mx, box.y2 + my)


def _crowded(box: Box, others: Sequence[Box]) -> bool:
    """Whether another labelled face of the photo reaches into the sprite of ``box``:
    it would be pasted unlabelled (a real face that the masks are then blamed
    for covering), so such faces are not used."""
    c = _crop_box(box)
    return any(o.x1 < c.x2 and c.x1 < o.x2 and o.y1 < c.y2 and c.y1 < o.y2 for o in others)


def _background(
    sets: Sequence[dataset.LabelledSet], size: tuple[int, int], rng: random.Random
) -> np.ndarray:
    w_out, h_out = size
    ims = [im for s in sets for im in s.images if im.width >= w_out // 2]
    rng.shuffle(ims)
    for im in ims:
        W, H = im.width, im.height
        for _ in range(40):
            rw = rng.randint(int(W * 0.35), int(W * 0.8))
            rh = int(rw * h_out / w_out)
            if rh >= H or rw >= W:
                continue
            rx, ry = rng.randint(0, W - rw), rng.randint(0, H - rh)
            region = Box(rx, ry, rx + rw, ry + rh)
            if any(_overlaps(region, b.box) for b in im.boxes):
                continue
            img = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
            if img is None or img.shape[:2] != (H, W):
                break
            crop = img[ry : ry + rh, rx : rx + rw]
            return cv2.resize(crop, (w_out, h_out), interpolation=cv2.INTER_AREA)
    raise ValueError("no region of the set's photos is free of labelled boxes")


def _overlaps(a: Box, b: Box) -> bool:
    # half a box of slack around every labelled object
    return not (
        a.x2 < b.x1 - 0.5 * b.width
        or b.x2 + 0.5 * b.width < a.x1
        or a.y2 < b.y1 - 0.5 * b.height
        or b.y2 + 0.5 * b.height < a.y1
    )


def _scripts(w: int, h: int, n: int, rng: random.Random) -> list[_Script]:
    out = []
    for i in range(TRACKS):
        y = (0.3 + 0.4 * i / max(1, TRACKS - 1)) * h
        left = rng.random() < 0.5
        x0, x1 = (0.15 * w, 0.85 * w) if left else (0.85 * w, 0.15 * w)
        h0 = rng.uniform(0.12, 0.25) * h
        h1 = h0 * rng.uniform(0.6, 1.5)
        third = n // 3
        fade = (third, third + max(2, n // 8)) if i % 2 == 0 else None
        bar = (2 * third, 2 * third + max(2, n // 10)) if i % 2 == 1 else None
        out.append(_Script(i, (x0, y), (x1, y + rng.uniform(-0.1, 0.1) * h), h0, h1, fade, bar))
    return out


def _blend(img: np.ndarray, spr: np.ndarray, al: np.ndarray, ox: int, oy: int) -> None:
    h, w = img.shape[:2]
    sh, sw = spr.shape[:2]
    x1, y1, x2, y2 = max(0, ox), max(0, oy), min(w, ox + sw), min(h, oy + sh)
    if x2 <= x1 or y2 <= y1:
        return
    a = al[y1 - oy : y2 - oy, x1 - ox : x2 - ox, None]
    img[y1:y2, x1:x2] = img[y1:y2, x1:x2] * (1 - a) + spr[y1 - oy : y2 - oy, x1 - ox : x2 - ox] * a


def render(
    sprites: Sequence[_Sprite],
    bg: np.ndarray,
    scripts: Sequence[_Script],
    frames: int,
    labels: list[TrackBox],
) -> Iterator[np.ndarray]:
    """The clip's BGR frames; appends every face-frame's label to ``labels``."""
    h, w = bg.shape[:2]
    for t in range(frames):
        img = bg.astype(np.float32)
        p = t / max(1, frames - 1)
        bars: list[tuple[int, int, int, int, int]] = []
        placed: list[tuple[int, tuple[int, int, int, int], float]] = []
        for ti, sc in enumerate(scripts):
            sp = sprites[sc.sprite]
            cx = sc.c0[0] + p * (sc.c1[0] - sc.c0[0])
            cy = sc.c0[1] + p * (sc.c1[1] - sc.c0[1])
            k = (sc.h0 + p * (sc.h1 - sc.h0)) / sp.face[3]
            sw, sh = max(1, round(sp.bgr.shape[1] * k)), max(1, round(sp.bgr.shape[0] * k))
            spr = cv2.resize(sp.bgr, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
            al = cv2.resize(sp.alpha, (sw, sh), interpolation=cv2.INTER_LINEAR)
            fx, fy, fw, fh = (v * k for v in sp.face)
            ox, oy = round(cx - fx - fw / 2), round(cy - fy - fh / 2)
            a = 1.0
            if sc.fade and sc.fade[0] <= t <= sc.fade[1]:
                mid, half = sum(sc.fade) / 2, max(1e-6, (sc.fade[1] - sc.fade[0]) / 2)
                a = 0.3 + 0.7 * abs(t - mid) / half
            _blend(img, spr, al * a, ox, oy)
            box = (round(ox + fx), round(oy + fy), round(fw), round(fh))
            placed.append((ti, box, a))
            if sc.bar and sc.bar[0] <= t <= sc.bar[1]:
                q = (t - sc.bar[0]) / max(1, sc.bar[1] - sc.bar[0])
                bw = int(box[2] * 0.8)
                bars.append(
                    (int(box[0] - bw + q * (box[2] + bw)), box[1] - box[3], bw, 3 * box[3], ti)
                )
        for bx, by, bw, bh, _ in bars:
            img[max(0, by) : max(0, by + bh), max(0, bx) : max(0, bx + bw)] = (60.0, 110.0, 170.0)
        for ti, (x, y, bw, bh), a in placed:
            x1, y1, x2, y2 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
            if x2 - x1 < 4 or y2 - y1 < 4:
                continue
            hidden = 0
            for ox, oy, ow, oh, owner in bars:
                if owner == ti:
                    ix = max(0, min(x2, ox + ow) - max(x1, ox))
                    iy = max(0, min(y2, oy + oh) - max(y1, oy))
                    hidden = ix * iy
            visible = 1.0 - hidden / float((x2 - x1) * (y2 - y1))
            counted = a >= COUNTED_ALPHA and visible >= COUNTED_VISIBLE
            labels.append(TrackBox(t, ti + 1, "face", Box(x1, y1, x2, y2), ignore=not counted))
        yield np.clip(img, 0, 255).astype(np.uint8)


def make_set(
    faces_set: Path,
    out: Path,
    *,
    videos: int = 2,
    frames: int = 80,
    size: tuple[int, int] = (640, 360),
    fps: int = 25,
    seed: int = 0,
) -> list[Path]:
    """Write ``videos`` labelled clips (``clip-NNN.mp4`` + ``.gt.txt``) into ``out``."""
    from redactd.stages.media import video as video_io  # PyAV, imported only where used

    sets = dataset.load(faces_set)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(videos):
        rng = random.Random(seed * 1000 + i)
        sprites = _sprites(sets, TRACKS, rng)
        bg = _background(sets, size, rng)
        labels: list[TrackBox] = []
        path = out / f"clip-{i + 1:03d}.mp4"
        scripts = _scripts(size[0], size[1], frames, rng)
        video_io.encode_bgr_frames(path, render(sprites, bg, scripts, frames, labels), fps)
        (out / f"clip-{i + 1:03d}{video_labels.MOT_SUFFIX}").write_text(
            video_labels.format_mot(labels)
        )
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m redactd.evaluation.synthvideo", description=__doc__)
    p.add_argument("faces_set", type=Path, help="a labelled image set with faces")
    p.add_argument("out", type=Path, help="the new video set folder")
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        w, h = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        sys.stderr.write("error: --size is WIDTHxHEIGHT, e.g. 640x360\n")
        return 64
    if min(w, h, a.videos, a.frames, a.fps) < 1 or w % 2 or h % 2:
        sys.stderr.write("error: sizes (even), --videos, --frames and --fps must be positive\n")
        return 64
    try:
        paths = make_set(
            a.faces_set, a.out, videos=a.videos, frames=a.frames, size=(w, h), fps=a.fps,
            seed=a.seed,
        )  # fmt: skip
    except (dataset.DatasetError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 65
    sys.stderr.write(f"{len(paths)} labelled clips written (MOT gt.txt beside each)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
