"""Open Model Zoo face detectors (OpenVINO IR, Apache-2.0).

Recipe (model manifest, ``decoder = "omz_ssd"``): BGR, raw 0..255 float32
(normalisation is baked into the IR), the image stretched to the network's
fixed input size (NCHW, or NHWC for some IRs: read from the input shape).
NMS is inside the network. Two output forms exist:

* SSD ``DetectionOutput`` ``[1, 1, N, 7]`` (face-detection-retail-0004/0005,
  -adas-0001, -0200, -0202, -0204): rows ``(image_id, label, conf, x1, y1, x2,
  y2)`` with coordinates normalised to [0, 1]; the list ends at the first row
  whose image_id is negative.
* FCOS ``boxes [N, 5]`` + ``labels [N]`` (face-detection-0205): ``(x1, y1,
  x2, y2, conf)`` in network-input pixels.

The manifest's ``decoder`` picks the form (``omz_ssd`` or ``omz_boxes``).
Face models have one class whose label id differs between models (0 or 1):
the manifest's ``output.class_label`` names it; without it every label is
accepted. A multi-class model (the vehicle and plate barrier model) passes
the label ids it wants.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from redactd.core.errors import ModelError
from redactd.core.types import Box, Detection, ObjectClass
from redactd.models.manifest import ModelSpec
from redactd.stages.detect.runtime import Network, NetworkIO, Runtime, TensorSpec

SSD_IO = NetworkIO(input=TensorSpec((), 4), outputs=(TensorSpec((), 4),))
FCOS_IO = NetworkIO(
    input=TensorSpec((), 4),
    outputs=(TensorSpec(("boxes",), 2), TensorSpec(("labels",), 1)),
)


def decode_ssd(out: np.ndarray, threshold: float, labels: frozenset[int] | None) -> np.ndarray:
    """``(n, 5)`` rows ``x1, y1, x2, y2, conf`` with normalised coordinates."""
    rows = out.reshape(-1, 7).astype(np.float64)
    end = np.nonzero(rows[:, 0] < 0)[0]
    if end.size:
        rows = rows[: int(end[0])]
    ok = rows[:, 2] >= threshold
    if labels is not None:
        ok &= np.isin(rows[:, 1].astype(np.int64), list(labels))
    return rows[ok][:, [3, 4, 5, 6, 2]]


def decode_fcos(
    boxes: np.ndarray, labels_out: np.ndarray, threshold: float, labels: frozenset[int] | None,
    in_w: int, in_h: int,
) -> np.ndarray:
    """``(n, 5)`` rows ``x1, y1, x2, y2, conf`` with normalised coordinates."""
    b = boxes.reshape(-1, 5).astype(np.float64)
    ok = b[:, 4] >= threshold
    if labels is not None:
        ok &= np.isin(labels_out.reshape(-1).astype(np.int64), list(labels))
    b = b[ok]
    scale = np.array([in_w, in_h, in_w, in_h, 1.0])
    return b / scale


class OmzDetector:
    """Adapter for OMZ SSD/FCOS detectors; implements ``redactd.stages.detect.base.Detector``."""

    def __init__(
        self,
        network: Network,
        *,
        fcos: bool,
        name: str,
        cls: ObjectClass = "face",
        labels: Iterable[int] | None = None,
    ) -> None:
        shape = network.input_shape
        if shape is None or len(shape) != 4 or shape[0] != 1:
            raise ModelError(f"model {name!r}: expected a static [1, ...] image input")
        if shape[1] == 3:
            self.nhwc, self.in_h, self.in_w = False, shape[2], shape[3]
        elif shape[3] == 3:
            self.nhwc, self.in_h, self.in_w = True, shape[1], shape[2]
        else:
            raise ModelError(f"model {name!r}: input has no 3-channel axis")
        self.network = network
        self.fcos = fcos
        self.name = name
        self.cls = cls
        self.labels = frozenset(labels) if labels is not None else None

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """Objects with score >= ``threshold`` in a BGR uint8 image."""
        h, w = image.shape[:2]
        resized = cv2.resize(image, (self.in_w, self.in_h), interpolation=cv2.INTER_LINEAR)
        blob = resized.astype(np.float32)
        blob = blob[None] if self.nhwc else blob.transpose(2, 0, 1)[None]
        outs = self.network.infer(np.ascontiguousarray(blob))
        if self.fcos:
            rows = decode_fcos(outs[0], outs[1], threshold, self.labels, self.in_w, self.in_h)
        else:
            rows = decode_ssd(outs[0], threshold, self.labels)
        dets = []
        for x1, y1, x2, y2, conf in rows:
            box = Box(x1 * w, y1 * h, x2 * w, y2 * h).clip(w, h)
            if box.area > 0:
                dets.append(Detection(self.cls, box, float(conf), self.name))
        return dets

    def close(self) -> None:
        self.network.close()


def create(
    spec: ModelSpec,
    runtime: Runtime,
    store: Path,
    *,
    cls: ObjectClass = "face",
    labels: Iterable[int] | None = None,
) -> OmzDetector:
    """Verify the files (sha256) and compile; the output form follows ``spec.decoder``."""
    if spec.decoder not in ("omz_ssd", "omz_boxes"):
        raise ModelError(f"model {spec.name!r} has decoder {spec.decoder!r}, not an OMZ one")
    spec.verify(store)
    fcos = spec.decoder == "omz_boxes"
    network = runtime.load(
        spec.main_path(store), FCOS_IO if fcos else SSD_IO, name=spec.name, policy="fixed"
    )
    if labels is None:
        label = spec.output.get("class_label")
        if isinstance(label, int) and not isinstance(label, bool):
            labels = (label,)
    return OmzDetector(network, fcos=fcos, name=spec.name, cls=cls, labels=labels)
