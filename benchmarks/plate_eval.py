"""Plate detectors on the labelled plate sets: the table of docs/PLATES.md.

For every detector configuration (one registered plate detector, or an
ensemble ``a+b`` that the registry unions and merges by NMS) and every plate
set, this runs the real detection stage (``redactd.stages.detect.registry``:
multi-scale passes, NMS, the class threshold) and reports:

* ``IoU``: box recall at IoU >= 0.5 (harsh for text boxes against plate boxes);
* ``cov50`` / ``cov90``: share of labelled plates whose box is covered to
  >= 50 % / >= 90 % by the *padded* mask boxes (profile ``plate.mask.padding``);
  ``cov90`` is what anonymisation needs and is the headline number;
* ``small``: cov90 on far-away views of the same photos: shrunk so the plate
  is 24-39 px wide, centred in a frame of the original size filled by mirroring
  (the shared sets have no plate under 40 px; ``--small``);
* ``over px`` / ``over %``: masked pixels outside the labelled box per image
  (mean), absolute and as a share of the image. Only one plate per image is
  labelled (``labels_complete = false``), so this is an upper bound that also
  counts real, unlabelled plates, and no precision is computed;
* ``dets``: detections per image; ``ms``: detection time per image;
* with ``--faces N``: the share of face-set photos' area that plate detection
  masks (signs, captions, watermarks), mean / max.

Usage (from the repository, models fetched; LPD-YuNet and the OMZ model via
``redactd models fetch --from ../shared/models ...``)::

    python benchmarks/plate_eval.py --models models \
        --detectors ppocr_plate,ppocr_text,lpd_yunet,ppocr_plate+lpd_yunet --small --faces 90

``--limit N`` evaluates N images per set (evenly spaced) while iterating.
``--tiling key=value,...`` overrides the plate class's ``TilingConfig``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from redactd.core import config as config_mod  # noqa: E402
from redactd.core.types import Box, Detection  # noqa: E402
from redactd.evaluation import dataset  # noqa: E402
from redactd.evaluation.labels import LabelledBox, LabelledImage  # noqa: E402
from redactd.evaluation.matching import match_image  # noqa: E402
from redactd.stages.detect import registry  # noqa: E402

PLATE_SETS = ("plates_openalpr_us", "plates_openalpr_eu", "plates_openalpr_br")
FACE_SETS = ("faces_wider_val", "faces_mask_kaggle")
SMALL_WIDTHS = (24, 40)  # shrunk plates are SMALL_WIDTHS[0] .. SMALL_WIDTHS[1]-1 px wide


@dataclass(frozen=True)
class Row:
    """One detector configuration on one set."""

    detectors: str
    threshold: float
    set_name: str
    images: int
    iou: float
    cov50: float
    cov90: float
    small_cov90: float | None
    over_px: float
    over_share: float
    dets: float
    ms: float


def make_config(
    detectors: Sequence[str],
    threshold: float,
    models: Path,
    cache: Path,
    tiling: dict[str, float | bool],
) -> config_mod.Config:
    """A config whose profile ``bench`` detects plates only, with these detectors."""
    plate: dict[str, object] = {
        "enabled": True,
        "detectors": list(detectors),
        "threshold": threshold,
    }
    if tiling:
        plate["tiling"] = dict(tiling)
    data = {
        "runtime": {"cache_dir": str(cache)},
        "models": {"dir": str(models.resolve())},
        "profiles": {"bench": {"face": {"enabled": False}, "plate": plate}},
    }
    return config_mod.parse(data, REPO)


def masked_outside(
    dets: Sequence[Detection], gts: Sequence[Box], w: int, h: int, pad: float
) -> int:
    """Pixels of the padded detection boxes outside every labelled box."""
    m = np.zeros((h, w), dtype=bool)
    for d in dets:
        x1, y1, x2, y2 = d.box.pad(pad).int_bounds(w, h)
        m[y1:y2, x1:x2] = True
    for g in gts:
        x1, y1, x2, y2 = g.int_bounds(w, h)
        m[y1:y2, x1:x2] = False
    return int(m.sum())


def masked_share(dets: Sequence[Detection], w: int, h: int, pad: float) -> float:
    m = np.zeros((h, w), dtype=bool)
    for d in dets:
        x1, y1, x2, y2 = d.box.pad(pad).int_bounds(w, h)
        m[y1:y2, x1:x2] = True
    return float(m.mean())


def shrink(im: LabelledImage, bgr: np.ndarray, index: int) -> tuple[LabelledImage, np.ndarray]:
    """A far-away view: the photo shrunk so its plate is 24..39 px wide, centred in a frame
    of the original size filled by mirroring it (so the multi-scale plan treats it as the
    same frame). Only the centre copy's plate is labelled.
    """
    plate = im.of_class("plate", ignore=False)[0].box
    lo, hi = SMALL_WIDTHS
    target = lo + (index * 7) % (hi - lo)
    f = min(1.0, target / plate.width)
    h, w = bgr.shape[:2]
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    ox, oy = (w - sw) // 2, (h - sh) // 2
    small = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_AREA)
    # mirror the shrunk photo out to the frame size: a flat border would change what
    # the networks see (PP-OCR's squeeze-excite blocks pool over the whole input)
    canvas = np.pad(small, ((oy, h - sh - oy), (ox, w - sw - ox), (0, 0)), mode="symmetric")
    sx, sy = sw / w, sh / h
    boxes = tuple(
        LabelledBox(b.cls, b.box.scaled(sx, sy).shifted(ox, oy), b.ignore, b.extra)
        for b in im.boxes
    )
    return LabelledImage(im.path, w, h, im.labels_complete, boxes), canvas


def evaluate(
    dets_cfg: Sequence[str],
    threshold: float,
    sets: Sequence[dataset.LabelledSet],
    args: argparse.Namespace,
    tiling: dict[str, float | bool],
) -> tuple[list[Row], tuple[float, float, int] | None]:
    cfg = make_config(dets_cfg, threshold, args.models, args.cache, tiling)
    profile = cfg.profile("bench")
    pad = profile.plate.mask.padding
    loaded = registry.load(cfg, ["bench"])
    rows = []
    try:
        for s in sets:
            iou_hits, c50, c90, small90, over, share, ndet, ms = [], [], [], [], [], [], [], []
            for i, im in enumerate(s.images):
                bgr = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise SystemExit("an image of the set cannot be read")
                t0 = time.perf_counter()
                dets = loaded.find(bgr, profile)
                ms.append((time.perf_counter() - t0) * 1000)
                r = match_image(im, dets, "plate", iou=0.5, padding=pad)
                for g in r.gts:
                    iou_hits.append(g.iou_hit)
                    c50.append(g.coverage >= 0.5)
                    c90.append(g.coverage >= 0.9)
                h, w = bgr.shape[:2]
                gts = [b.box for b in im.of_class("plate")]
                px = masked_outside(dets, gts, w, h, pad)
                over.append(px)
                share.append(px / (w * h))
                ndet.append(len(dets))
                if args.small:
                    sim, sbgr = shrink(im, bgr, i)
                    sdets = loaded.find(sbgr, profile)
                    sr = match_image(sim, sdets, "plate", iou=0.5, padding=pad)
                    small90.extend(g.coverage >= 0.9 for g in sr.gts)
            rows.append(
                Row(
                    detectors="+".join(dets_cfg),
                    threshold=threshold,
                    set_name=s.name,
                    images=len(s.images),
                    iou=float(np.mean(iou_hits)),
                    cov50=float(np.mean(c50)),
                    cov90=float(np.mean(c90)),
                    small_cov90=float(np.mean(small90)) if small90 else None,
                    over_px=float(np.mean(over)),
                    over_share=float(np.mean(share)),
                    dets=float(np.mean(ndet)),
                    ms=float(np.median(ms)),
                )
            )
        faces = None
        if args.faces:
            shares = []
            for fs in dataset.load(args.eval, limit=args.faces // 2, only=FACE_SETS):
                for im in fs.images:
                    bgr = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
                    if bgr is None:
                        raise SystemExit("an image of the set cannot be read")
                    h, w = bgr.shape[:2]
                    shares.append(masked_share(loaded.find(bgr, profile), w, h, pad))
            faces = (float(np.mean(shares)), float(np.max(shares)), len(shares))
    finally:
        loaded.close()
    return rows, faces


def speed(
    args: argparse.Namespace, tiling: dict[str, float | bool], detectors: Sequence[str]
) -> None:
    """What plate detection adds per 1280x720 frame: faces only vs plates only vs both.

    The three profiles run alternately on the same frames, after a warm-up
    that lets the runtime compile its static sizes, so a busy machine slows
    all three alike and the ratio stays meaningful.
    """
    plate: dict[str, object] = {"enabled": True, "detectors": list(detectors)}
    if tiling:
        plate["tiling"] = dict(tiling)
    data = {
        "runtime": {"cache_dir": str(args.cache)},
        "models": {"dir": str(args.models.resolve())},
        "profiles": {
            "faces": {"plate": {"enabled": False}},
            "plates": {"face": {"enabled": False}, "plate": plate},
            "both": {"plate": plate},
        },
    }
    cfg = config_mod.parse(data, REPO)
    frames = [
        im
        for s in dataset.load(args.eval, only=("plates_openalpr_us",))
        for im in s.images
        if (im.width, im.height) == (1280, 720)
    ][: args.speed]
    images = [cv2.imread(str(im.path), cv2.IMREAD_COLOR) for im in frames]
    loaded = registry.load(cfg, ["faces", "plates", "both"])
    names = ("faces", "plates", "both")
    times: dict[str, list[float]] = {n: [] for n in names}
    try:
        for n in names:  # warm-up: static compilations of the repeated sizes
            for _ in range(5):
                loaded.find(images[0], cfg.profile(n))
        for img in images:
            for n in names:
                t0 = time.perf_counter()
                loaded.find(img, cfg.profile(n))
                times[n].append((time.perf_counter() - t0) * 1000)
    finally:
        loaded.close()
    print()
    where = f"{len(images)} US frames, median ms; plate tiling: {tiling or 'default'}"
    print(f"per 1280x720 frame ({where})")
    print("| faces only | plates only | faces + plates | added by plates |")
    print("|---|---|---|---|")
    med = {n: float(np.median(times[n])) for n in names}
    print(
        f"| {med['faces']:.0f} | {med['plates']:.0f} | {med['both']:.0f} "
        f"| {med['both'] - med['faces']:.0f} (x{med['both'] / med['faces']:.2f}) |"
    )


def parse_tiling(text: str) -> dict[str, float | bool]:
    """``key=value,...`` -> TilingConfig overrides (true/false, integers, decimals)."""
    out: dict[str, float | bool] = {}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        v = v.strip().lower()
        out[k.strip()] = v == "true" if v in ("true", "false") else float(v) if "." in v else int(v)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval", type=Path, default=REPO.parent / "shared" / "eval")
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "redactd-plate-bench"
    )
    ap.add_argument(
        "--detectors",
        default="ppocr_plate",
        help="comma-separated configurations; 'a+b' is an ensemble; 'name@0.6' sets the threshold",
    )
    ap.add_argument("--threshold", type=float, default=0.5, help="default class threshold")
    ap.add_argument("--sets", default=",".join(PLATE_SETS))
    ap.add_argument("--limit", type=int, default=None, help="images per set (evenly spaced)")
    ap.add_argument("--small", action="store_true", help="also shrink plates to 24-39 px")
    ap.add_argument("--faces", type=int, default=0, help="face-set photos for the text check")
    ap.add_argument("--tiling", default="", help="plate TilingConfig overrides: key=value,...")
    ap.add_argument("--speed", type=int, default=0, help="time N 1280x720 frames, then stop")
    args = ap.parse_args(argv)

    tiling = parse_tiling(args.tiling)
    if args.speed:
        speed(args, tiling, args.detectors.split(",")[0].partition("@")[0].split("+"))
        return 0
    sets = dataset.load(args.eval, limit=args.limit, only=tuple(args.sets.split(",")))
    print(f"tiling overrides: {tiling or 'none (profile default)'}; limit: {args.limit or 'all'}")
    print()
    print(
        "| detectors | thr | set | images | IoU>=0.5 | cov>=50% | cov>=90% | small cov>=90% "
        "| over px | over % | dets/img | ms/img |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    face_lines = []
    for spec in args.detectors.split(","):
        name, _, thr = spec.partition("@")
        threshold = float(thr) if thr else args.threshold
        rows, faces = evaluate(name.split("+"), threshold, sets, args, tiling)
        for r in rows:
            small = "-" if r.small_cov90 is None else f"{r.small_cov90:.3f}"
            set_name = r.set_name.removeprefix("plates_openalpr_")
            print(
                f"| {r.detectors} | {r.threshold:g} | {set_name} "
                f"| {r.images} | {r.iou:.3f} | {r.cov50:.3f} | {r.cov90:.3f} | {small} "
                f"| {r.over_px:.0f} | {100 * r.over_share:.1f} | {r.dets:.1f} | {r.ms:.0f} |"
            )
            sys.stdout.flush()
        if faces is not None:
            mean, top, n = faces
            face_lines.append(
                f"| {name} | {threshold:g} | {n} | {100 * mean:.1f} | {100 * top:.1f} |"
            )
    if face_lines:
        print()
        print("| detectors | thr | face photos | masked area % (mean) | max % |")
        print("|---|---|---|---|---|")
        print("\n".join(face_lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
