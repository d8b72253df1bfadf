"""Launch `redactd run` with a scripted fake face detector registered.

For plumbing tests only (bursts, hangs, bugs): real-model tests start the
real CLI. ``python -m tests.helpers.fake_daemon CONFIG``; the profile's face
detectors must be ``["fake"]``.

The fake detector is steered by the image itself, so one run can mix cases.
It looks at the top-left pixel (BGR):

* pure red ``(0, 0, 255)``  -> raises ``MemoryError``: escapes the pipeline's
  fail-closed wrapper, so it exercises the service's per-job catch-all;
* pure blue ``(255, 0, 0)`` -> sleeps ``REDACTD_FAKE_SLEEP`` seconds (default
  3600: a hung detector);
* pure green ``(0, 255, 0)`` -> sleeps ``REDACTD_FAKE_SLOW`` seconds (default
  2) and then answers normally;
* anything else -> one face box over the centre half of the image.

Every call first sleeps ``REDACTD_FAKE_EACH`` seconds (default 0), so that a
video takes long enough to watch its progress.

``REDACTD_FAKE_SCRIPT`` is reserved for later scripts ("default" today).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from redactd.core.types import Box, Detection, ObjectClass
from redactd.service import daemon
from redactd.stages.detect import registry


class FakeDetector:
    """Deterministic stand-in for a model; see the module docstring."""

    name = "fake"
    cls: ObjectClass = "face"

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        time.sleep(float(os.environ.get("REDACTD_FAKE_EACH", "0")))
        h, w = image.shape[:2]
        b, g, r = (int(v) for v in image[0, 0, :3])
        if (b, g, r) == (0, 0, 255):
            raise MemoryError("scripted: a bug that escapes the pipeline")
        if (b, g, r) == (255, 0, 0):
            time.sleep(float(os.environ.get("REDACTD_FAKE_SLEEP", "3600")))
        if (b, g, r) == (0, 255, 0):
            time.sleep(float(os.environ.get("REDACTD_FAKE_SLOW", "2")))
        return [Detection("face", Box(w * 0.25, h * 0.25, w * 0.75, h * 0.75), 0.99, self.name)]

    def close(self) -> None:
        pass


def _factory(*_args: Any) -> FakeDetector:
    return FakeDetector()


def register() -> None:
    registry.register(
        registry.DetectorInfo(name="fake", cls="face", model="centerface", factory=_factory)
    )


def main() -> int:
    register()
    return daemon.main(sys.argv[1:])


if __name__ == "__main__":
    assert Path(sys.argv[0]).name  # run as a module: python -m tests.helpers.fake_daemon
    sys.exit(main())
