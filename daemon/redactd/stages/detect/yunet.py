"""YuNet face detector (OpenCV Zoo ``face_detection_yunet_2023mar.onnx``, MIT).

Recipe (model manifest ``face_detection_yunet``): BGR, raw 0..255 float32,
NCHW. The image is pasted at the top-left of a black canvas whose sides are
the next multiples of 32 (no resize: ``redactd.stages.detect.multiscale`` picks the
scale), so decoded coordinates are already image pixels. Twelve outputs, per
stride s in (8, 16, 32): ``cls_s``, ``obj_s`` ``[1, n, 1]``, ``bbox_s``
``[1, n, 4]``, ``kps_s`` ``[1, n, 10]`` with ``n = (H/s) * (W/s)`` anchors in
row-major order. Score = sqrt(cls * obj); box centre ``((c + dx) * s, (r + dy) * s)``,
size ``(exp(dw) * s, exp(dh) * s)``; NMS at 0.3.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from redactd.core.types import Box, Detection, ObjectClass
from redactd.models.manifest import ModelSpec
from redactd.stages.detect.nms import nms_indices
from redactd.stages.detect.runtime import Network, NetworkIO, Runtime, TensorSpec

STRIDES = (8, 16, 32)
DECODE_NMS_IOU = 0.3
_KINDS = ("cls", "obj", "bbox")


def network_io(spec: ModelSpec) -> NetworkIO:
    """One rank-4 input; cls/obj/bbox outputs (rank 3) for each stride, looked up by name."""
    input_name = str(spec.input.get("name", "input"))
    return NetworkIO(
        input=TensorSpec((input_name,), 4),
        outputs=tuple(TensorSpec((f"{k}_{s}",), 3) for k in _KINDS for s in STRIDES),
    )


def decode(
    outputs: list[np.ndarray], in_w: int, in_h: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` in input pixels and scores ``(n,)`` after NMS."""
    n = len(STRIDES)
    all_boxes, all_scores = [], []
    for k, s in enumerate(STRIDES):
        cls = np.clip(outputs[k].reshape(-1), 0.0, 1.0)
        obj = np.clip(outputs[n + k].reshape(-1), 0.0, 1.0)
        bbox = outputs[2 * n + k].reshape(-1, 4)
        score = np.sqrt(cls * obj)
        idx = np.nonzero(score >= threshold)[0]
        if idx.size == 0:
            continue
        cols = in_w // s
        r, c = np.divmod(idx, cols)
        b = bbox[idx].astype(np.float64)
        cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
        w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        all_boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        all_scores.append(score[idx].astype(np.float64))
    if not all_boxes:
        return np.zeros((0, 4), dtype=np.float64), np.zeros(0, dtype=np.float64)
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    keep = nms_indices(boxes, scores, DECODE_NMS_IOU)
    return boxes[keep], scores[keep]


class YuNet:
    """YuNet adapter; implements ``redactd.stages.detect.base.Detector``."""

    cls: ObjectClass = "face"

    def __init__(self, network: Network, name: str = "yunet") -> None:
        self.name = name
        self.network = network

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """Faces with score >= ``threshold`` in a BGR uint8 image, at its own resolution."""
        h, w = image.shape[:2]
        in_w, in_h = max(32, math.ceil(w / 32) * 32), max(32, math.ceil(h / 32) * 32)
        blob = np.zeros((1, 3, in_h, in_w), dtype=np.float32)
        blob[0, :, :h, :w] = image.transpose(2, 0, 1)
        boxes, scores = decode(self.network.infer(blob), in_w, in_h, threshold)
        return [
            Detection(
                cls="face",
                box=Box(float(b[0]), float(b[1]), float(b[2]), float(b[3])).clip(w, h),
                score=float(sc),
                detector=self.name,
            )
            for b, sc in zip(boxes, scores, strict=True)
        ]

    def close(self) -> None:
        self.network.close()


def create(spec: ModelSpec, runtime: Runtime, store: Path) -> YuNet:
    """Verify the installed files (sha256) and compile the model; ``ModelError`` otherwise."""
    spec.verify(store)
    network = runtime.load(
        spec.main_path(store), network_io(spec), name=spec.name, policy="dynamic"
    )
    return YuNet(network, name=spec.name)
