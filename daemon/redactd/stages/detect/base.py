"""The one small interface every detector implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from redactd.core.types import Detection, ObjectClass


@runtime_checkable
class Detector(Protocol):
    """Finds objects of one class in one upright BGR uint8 image.

    Implementations MUST:
    - accept any ``HxWx3`` uint8 BGR array (C-contiguous or not);
    - return boxes in that image's pixel coordinates, clipped to it;
    - return every detection with ``score >= threshold``;
    - raise (never return an empty list) when inference fails, so the caller
      can fail closed;
    - be safe to call from several threads at once (``Detectors.find`` runs
      the passes of one image concurrently when the runtime has streams to
      spare); the adapters keep no per-call state and ``Network`` is thread-safe.
    """

    name: str
    cls: ObjectClass

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]: ...
