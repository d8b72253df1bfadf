"""Reading a plate crop with the PP-OCR text recogniser (``ppocr_rec`` in the model manifest).

Not a detector: ``redactd eval --attack`` uses it to check that a masked
plate can no longer be read. Recipe (manifest ``decoder = "ppocr_rec"``): a
BGR crop of one text line resized to height 48 keeping its aspect ratio,
normalised to ``(x / 255 - 0.5) / 0.5``, right-padded with zeros to at least
320 pixels (rapidocr pads a batch to that width); the output ``[1, T, C]``
is decoded greedily (CTC: argmax per step, repeats merged, blank 0 dropped).
The character list is the ONNX metadata key ``character`` (one entry per
line), classes being ``[blank] + entries + [" "]``.

Comparison with the label (``readable``): both strings are upper-cased and
reduced to letters and digits (plates are written with dashes, dots and
spaces that sources transcribe inconsistently), and ``O``/``0`` and
``I``/``1`` are treated as the same character (plates and readers confuse
them, so an attacker would try both). A plate is *readable* when
the recognised string equals the label, or, for labels of 5 or more
characters, is within edit distance 1 of it: one wrong character still
narrows a plate down to a handful of vehicles.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from redactd.core.errors import ModelError
from redactd.models.manifest import Manifest
from redactd.stages.detect.runtime import Network, NetworkIO, Runtime, TensorSpec

MODEL = "ppocr_rec"
HEIGHT = 48
MIN_WIDTH = 320
#: Longest crop (width / height) fed to the model; plates are far below it.
MAX_RATIO = 25.0
#: Labels at least this long may be off by one character and still count as read.
FUZZY_MIN_LEN = 5


_CONFUSABLE = str.maketrans({"O": "0", "I": "1"})


def normalise(text: str) -> str:
    """Upper-case ASCII letters and digits only, ``O`` as ``0`` and ``I`` as ``1``.

    The form labels and readings are compared in.
    """
    kept = "".join(ch for ch in text.upper() if ch.isascii() and ch.isalnum())
    return kept.translate(_CONFUSABLE)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def readable(read: str, label: str) -> bool:
    """True when ``read`` gives the plate ``label`` away (see the module doc)."""
    r, t = normalise(read), normalise(label)
    if not t or not r:
        return False
    if r == t:
        return True
    return len(t) >= FUZZY_MIN_LEN and edit_distance(r, t) <= 1


class TextRecognizer:
    """PP-OCR line recogniser through the OpenVINO runtime; one caller at a time."""

    def __init__(self, network: Network, characters: list[str]) -> None:
        self.network = network
        self.characters = ["", *characters, " "]  # index 0 is the CTC blank

    @classmethod
    def load(cls, manifest: Manifest, runtime: Runtime, store: Path) -> TextRecognizer:
        """Verify and compile ``ppocr_rec``; ``ModelError`` when missing or not as expected."""
        spec = manifest.get(MODEL)
        spec.verify(store)
        io = NetworkIO(
            input=TensorSpec((str(spec.input.get("name", "x")),), 4),
            outputs=(TensorSpec((), 3),),
        )
        network = runtime.load(spec.main_path(store), io, name=spec.name, policy="dynamic")
        raw = network.metadata("framework", "character")
        if not raw:
            raise ModelError(f"model {spec.name!r}: no character dictionary in its metadata")
        return cls(network, raw.split("\n"))

    def read(self, crop: np.ndarray) -> str:
        """The text of one BGR line crop (empty for an empty crop)."""
        h, w = crop.shape[:2]
        if h < 2 or w < 2:
            return ""
        ratio = min(w / h, MAX_RATIO)
        rw = max(1, math.ceil(HEIGHT * ratio))
        resized = cv2.resize(crop, (rw, HEIGHT), interpolation=cv2.INTER_LINEAR)
        # Pad to a multiple of 32 (at least MIN_WIDTH) so few distinct shapes reach the model.
        width = max(MIN_WIDTH, math.ceil(rw / 32) * 32)
        blob = np.zeros((1, 3, HEIGHT, width), dtype=np.float32)
        x = resized.astype(np.float32).transpose(2, 0, 1) / 255.0
        blob[0, :, :, :rw] = (x - 0.5) / 0.5
        (probs,) = self.network.infer(blob)
        idx = probs[0].argmax(axis=1)
        out = []
        last = -1
        for i in idx.tolist():
            if i != last and i != 0 and i < len(self.characters):
                out.append(self.characters[i])
            last = i
        return "".join(out)

    def close(self) -> None:
        self.network.close()
