"""Open Model Zoo ``vehicle-license-plate-detection-barrier-0106`` as a plate detector.

Apache-2.0 (Intel), trained for barrier cameras on Chinese plates; manifest
entries ``vehicle-license-plate-detection-barrier-0106`` (FP32, NHWC input)
and ``...-int8`` (FP16-INT8, NCHW). The network is an SSD with an in-graph
NMS whose ``DetectionOutput`` rows carry label 1 (vehicle) or 2 (plate); the
shared OMZ adapter (``redactd.stages.detect.omz_ssd``) decodes it, and this module
only asks it for the plate label (the manifest's ``output.class_label``).

Measured on the shared plate sets it transfers poorly (docs/PLATES.md); it is
offered for barrier-camera views and as an ensemble member.
"""

from __future__ import annotations

from pathlib import Path

from redactd.models.manifest import ModelSpec
from redactd.stages.detect import omz_ssd
from redactd.stages.detect.runtime import Runtime

#: The plate label of the barrier model when the manifest does not name one.
PLATE_LABEL = 2


def plate_label(spec: ModelSpec) -> int:
    """The label id of plates in this model's output (manifest ``output.class_label``)."""
    value = spec.output.get("class_label", PLATE_LABEL)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else PLATE_LABEL


def create(spec: ModelSpec, runtime: Runtime, store: Path) -> omz_ssd.OmzDetector:
    """Verify (sha256) and compile; detections are plates only (label ``plate_label``)."""
    return omz_ssd.create(spec, runtime, store, cls="plate", labels=(plate_label(spec),))
