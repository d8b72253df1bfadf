"""LPD-YuNet licence-plate detector (OpenCV Zoo ``license_plate_detection_lpd_yunet_2023mar.onnx``).

Apache-2.0 (Dong Xu / watrix.ai), trained on Chinese plates; manifest entry
``license_plate_detection_yunet``. Not on a package registry: it comes from
an upstream URL or a ``--from`` mirror, so it is an opt-in or ensemble
member, never the sole default.

Recipe (manifest ``decoder = "lpd_yunet"``): BGR, raw 0..255 float32, NCHW,
the image stretched to the input size (the file is 320x240, reshapeable; we
run at the image's own size rounded up to multiples of 32, and
``redactd.stages.detect.multiscale`` picks that size). Outputs per prior: ``loc``
``[N, 14]``, ``conf`` ``[N, 2]`` (softmax), ``iou`` ``[N, 1]``.

Priors: strides 8, 16, 32, 64 on feature maps of ``H/8 x W/8`` ... (each
halving rounds down, starting from ``((H+1)//2)//2``), with prior sizes
``[10, 16, 24]``, ``[32, 48]``, ``[64, 96]``, ``[128, 192, 256]`` pixels,
row-major over cells, sizes innermost. Score = ``sqrt(conf[:, 1] *
clip(iou, 0, 1))``. Four corners: ``prior_centre + loc[:, k:k+2] * 0.1 *
prior_size`` for ``k`` in (4, 6, 10, 12). The plate is a quadrilateral; its
bounding rectangle is the detection (a mask must cover the whole outline).
NMS at 0.3 on those rectangles.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from redactd.core.types import Box, Detection, ObjectClass
from redactd.models.manifest import ModelSpec
from redactd.stages.detect.nms import nms_indices
from redactd.stages.detect.runtime import InferenceError, Network, NetworkIO, Runtime, TensorSpec

MIN_SIZES: tuple[tuple[int, ...], ...] = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))
STEPS = (8, 16, 32, 64)
VARIANCE = 0.1
DECODE_NMS_IOU = 0.3
CORNERS = (4, 6, 10, 12)


def network_io(spec: ModelSpec) -> NetworkIO:
    """One rank-4 input; ``loc``, ``conf``, ``iou`` (rank 2) looked up by name."""
    input_name = str(spec.input.get("name", "input"))
    return NetworkIO(
        input=TensorSpec((input_name,), 4),
        outputs=tuple(TensorSpec((n,), 2) for n in ("loc", "conf", "iou")),
    )


def input_size(width: int, height: int) -> tuple[int, int]:
    """Network input ``(W, H)``: each side rounded up to a multiple of 32."""
    return (max(32, math.ceil(width / 32) * 32), max(32, math.ceil(height / 32) * 32))


@lru_cache(maxsize=16)
def priors(in_w: int, in_h: int) -> np.ndarray:
    """``(N, 4)`` priors ``(cx, cy, w, h)`` in input pixels, in the network's output order."""
    fh, fw = ((in_h + 1) // 2) // 2, ((in_w + 1) // 2) // 2
    rows = []
    for sizes, step in zip(MIN_SIZES, STEPS, strict=True):
        fh, fw = fh // 2, fw // 2
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = ((xs.reshape(-1) + 0.5) * step).astype(np.float64)
        cy = ((ys.reshape(-1) + 0.5) * step).astype(np.float64)
        for_cell = []
        for m in sizes:
            for_cell.append(np.stack([cx, cy, np.full_like(cx, m), np.full_like(cy, m)], axis=1))
        # sizes innermost: cell0/size0, cell0/size1, ..., cell1/size0, ...
        rows.append(np.stack(for_cell, axis=1).reshape(-1, 4))
    return np.concatenate(rows)


def decode(
    loc: np.ndarray, conf: np.ndarray, iou: np.ndarray, in_w: int, in_h: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bounding rectangles ``(n, 4)`` of the plate quadrilaterals (input pixels) and scores."""
    pri = priors(in_w, in_h)
    loc = loc.reshape(-1, 14).astype(np.float64)
    if loc.shape[0] != pri.shape[0]:
        raise InferenceError(
            f"lpd_yunet: {loc.shape[0]} outputs for {pri.shape[0]} priors (recipe mismatch)"
        )
    score = np.sqrt(
        np.clip(conf.reshape(-1, 2)[:, 1].astype(np.float64), 0.0, 1.0)
        * np.clip(iou.reshape(-1).astype(np.float64), 0.0, 1.0)
    )
    idx = np.nonzero(score >= threshold)[0]
    if idx.size == 0:
        return np.zeros((0, 4), dtype=np.float64), np.zeros(0, dtype=np.float64)
    p, lc = pri[idx], loc[idx]
    xs = np.stack([p[:, 0] + lc[:, k] * VARIANCE * p[:, 2] for k in CORNERS], axis=1)
    ys = np.stack([p[:, 1] + lc[:, k + 1] * VARIANCE * p[:, 3] for k in CORNERS], axis=1)
    boxes = np.stack([xs.min(axis=1), ys.min(axis=1), xs.max(axis=1), ys.max(axis=1)], axis=1)
    keep = nms_indices(boxes, score[idx], DECODE_NMS_IOU)
    return boxes[keep], score[idx][keep]


class LpdYunet:
    """LPD-YuNet adapter; implements ``redactd.stages.detect.base.Detector``."""

    cls: ObjectClass = "plate"

    def __init__(self, network: Network, name: str = "lpd_yunet") -> None:
        self.name = name
        self.network = network

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """Plates with score >= ``threshold`` in a BGR uint8 image, at its own resolution."""
        h, w = image.shape[:2]
        in_w, in_h = input_size(w, h)
        blob = cv2.dnn.blobFromImage(image, 1.0, (in_w, in_h), swapRB=False, crop=False)
        loc, conf, iou = self.network.infer(blob)
        boxes, scores = decode(loc, conf, iou, in_w, in_h, threshold)
        sx, sy = w / in_w, h / in_h
        out = []
        for b, s in zip(boxes, scores, strict=True):
            box = Box(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy).clip(w, h)
            if box.area > 0:
                out.append(Detection("plate", box, float(s), self.name))
        return out

    def close(self) -> None:
        self.network.close()


def create(spec: ModelSpec, runtime: Runtime, store: Path) -> LpdYunet:
    """Verify the installed file (sha256) and compile the model; ``ModelError`` otherwise."""
    spec.verify(store)
    network = runtime.load(
        spec.main_path(store), network_io(spec), name=spec.name, policy="dynamic"
    )
    return LpdYunet(network, name="lpd_yunet")
