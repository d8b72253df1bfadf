"""Reading labelled image sets: ``<set>/labels.jsonl`` plus ``<set>/images/...``.

One JSON object per line and image::

    {"image": "images/a.jpg", "width": 1024, "height": 744, "labels_complete": true,
     "boxes": [{"cls": "face", "x": 127, "y": 201, "w": 18, "h": 20, "ignore": false}, ...]}

``x, y`` is the top-left corner, ``w, h`` the size, in pixels of the stored
image. ``ignore`` boxes are "don't care" regions: neither a hit nor a miss.
``labels_complete`` is false when only some objects are labelled (then an
unmatched detection is no evidence of a false positive). Extra keys are kept
in ``LabelledBox.extra`` and otherwise ignored.

A box of class ``"text"`` is a *negative*: a region (burned-in timestamp,
caption, poster, sign) that must stay unmasked. It is no object to find:
it goes into ``LabelledImage.negatives`` (its optional ``kind`` string into
``negative_kinds``), is not scored by the box metrics, and masking it counts
as over-masking (see ``redactd.evaluation.pixels``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redactd.core.types import CLASSES, Box, ObjectClass

LABELS_FILE = "labels.jsonl"


class LabelError(ValueError):
    """A line of ``labels.jsonl`` does not follow the format (line number given)."""


@dataclass(frozen=True)
class LabelledBox:
    """One ground-truth object."""

    cls: ObjectClass
    box: Box
    ignore: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelledImage:
    """One image of a set and its ground truth."""

    path: Path  # absolute: set folder / "image"
    width: int
    height: int
    labels_complete: bool
    boxes: tuple[LabelledBox, ...]
    negatives: tuple[Box, ...] = ()
    negative_kinds: tuple[str, ...] = ()

    def of_class(self, cls: ObjectClass, *, ignore: bool | None = None) -> list[LabelledBox]:
        """Boxes of ``cls``; ``ignore=False`` keeps only counted boxes, ``True`` only ignored."""
        return [b for b in self.boxes if b.cls == cls and (ignore is None or b.ignore == ignore)]


NEGATIVE_CLASS = "text"


def _box(raw: Any, where: str) -> LabelledBox | tuple[Box, str]:
    if not isinstance(raw, dict):
        raise LabelError(f"{where}: a box must be an object")
    cls = raw.get("cls")
    if cls not in CLASSES and cls != NEGATIVE_CLASS:
        raise LabelError(f"{where}: cls must be one of {', '.join(CLASSES)}, {NEGATIVE_CLASS}")
    try:
        x, y, w, h = (float(raw[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError) as e:
        raise LabelError(f"{where}: x, y, w, h must be numbers") from e
    if w <= 0 or h <= 0:
        raise LabelError(f"{where}: w and h must be positive")
    if cls == NEGATIVE_CLASS:
        kind = raw.get("kind", "")
        return Box.from_xywh(x, y, w, h), kind if isinstance(kind, str) else ""
    ignore = raw.get("ignore", False)
    if not isinstance(ignore, bool):
        raise LabelError(f"{where}: ignore must be true or false")
    extra = {k: v for k, v in raw.items() if k not in ("cls", "x", "y", "w", "h", "ignore")}
    return LabelledBox(cls=cls, box=Box.from_xywh(x, y, w, h), ignore=ignore, extra=extra)


def parse_line(line: str, root: Path, lineno: int = 0) -> LabelledImage:
    """One ``labels.jsonl`` line; ``root`` is the folder that holds the file."""
    where = f"line {lineno}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as e:
        raise LabelError(f"{where}: not valid JSON") from e
    if not isinstance(raw, dict):
        raise LabelError(f"{where}: must be a JSON object")
    image = raw.get("image")
    if not isinstance(image, str) or not image:
        raise LabelError(f"{where}: image must be a relative path inside the set")
    if Path(image).is_absolute() or ".." in Path(image).parts:
        raise LabelError(f"{where}: image must be a relative path inside the set")
    try:
        width, height = int(raw["width"]), int(raw["height"])
    except (KeyError, TypeError, ValueError) as e:
        raise LabelError(f"{where}: width and height must be integers") from e
    boxes = raw.get("boxes", [])
    if not isinstance(boxes, list):
        raise LabelError(f"{where}: boxes must be a list")
    complete = raw.get("labels_complete", True)
    if not isinstance(complete, bool):
        raise LabelError(f"{where}: labels_complete must be true or false")
    parsed = [_box(b, f"{where} box {i}") for i, b in enumerate(boxes)]
    negatives = [p for p in parsed if isinstance(p, tuple)]
    return LabelledImage(
        path=root / image,
        width=width,
        height=height,
        labels_complete=complete,
        boxes=tuple(p for p in parsed if isinstance(p, LabelledBox)),
        negatives=tuple(b for b, _ in negatives),
        negative_kinds=tuple(k for _, k in negatives),
    )


def iter_set(folder: Path) -> Iterator[LabelledImage]:
    """The images of a labelled set, in file order."""
    with (folder / LABELS_FILE).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield parse_line(line, folder, n)


def load_set(folder: Path) -> list[LabelledImage]:
    """All images of a labelled set (``folder/labels.jsonl``)."""
    return list(iter_set(folder))
