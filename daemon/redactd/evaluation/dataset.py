"""Finding and reading labelled sets for ``redactd eval``: ``labels.jsonl`` or COCO JSON.

A *set* is a folder of images with one label file. ``DATASET_DIR`` given to
``redactd eval`` may be:

* a set folder holding ``labels.jsonl`` (the project's format, see
  ``docs/EVAL.md`` and ``redactd.evaluation.labels``);
* a set folder holding one COCO JSON file (``annotations.json``,
  ``instances*.json`` or ``annotations/*.json``), or that JSON file itself;
* a folder of such set folders (every direct sub-folder that is a set, in name
  order), e.g. ``../shared/eval``.

COCO mapping: a category whose name contains ``face`` is a face, one whose
name contains ``plate`` a licence plate; other categories are skipped (their
count is kept). ``iscrowd: 1`` or ``"ignore": true`` on an annotation makes
it an ignore box; ``bbox`` is ``[x, y, w, h]`` as in labels.jsonl. An image
may carry ``"labels_complete": false`` (default true). A plate string may be
given as ``"text"`` on the annotation or in its ``"attributes"``. Image paths
(``file_name``) are relative to the set folder or to its ``images/`` folder.

Errors name the label file's line or entry, never an image name (reports of
problems go to logs and terminals).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redactd.core.types import CLASSES, Box, ObjectClass
from redactd.evaluation.labels import (
    LABELS_FILE,
    LabelError,
    LabelledBox,
    LabelledImage,
    load_set,
)

SetFormat = Literal["jsonl", "coco"]

_COCO_NAMES = ("annotations.json", "labels.json", "coco.json")


class DatasetError(ValueError):
    """The dataset folder holds no readable labelled set (the reason is given)."""


@dataclass(frozen=True)
class LabelledSet:
    """One labelled image set ready for evaluation."""

    name: str  # the set folder's name (shown in reports, never in logs)
    root: Path
    format: SetFormat
    images: tuple[LabelledImage, ...]
    total_images: int  # before ``limit``
    skipped_categories: int = 0  # COCO annotations of categories that are neither face nor plate

    @property
    def classes(self) -> tuple[ObjectClass, ...]:
        """The classes this set labels (in ``CLASSES`` order); only these are scored."""
        present = {b.cls for im in self.images for b in im.boxes}
        return tuple(c for c in CLASSES if c in present)

    @property
    def labels_complete(self) -> bool:
        return all(im.labels_complete for im in self.images)


def evenly_spaced(n_total: int, limit: int | None) -> list[int]:
    """Indices of ``limit`` items spread evenly over ``n_total`` (all when no limit).

    Spread rather than the first N, so a limited run still sees the whole
    range of a set that is sorted by event or camera.
    """
    if limit is None or limit >= n_total:
        return list(range(n_total))
    if limit <= 0:
        return []
    return [math.floor(i * n_total / limit) for i in range(limit)]


def _is_coco(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            head = f.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    return '"annotations"' in head or '"images"' in head


def _coco_file(folder: Path) -> Path | None:
    for name in _COCO_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(folder.glob("instances*.json")) + sorted(folder.glob("annotations/*.json"))
    for c in candidates:
        if _is_coco(c):
            return c
    return None


def _set_source(folder: Path) -> tuple[SetFormat, Path] | None:
    if (folder / LABELS_FILE).is_file():
        return "jsonl", folder / LABELS_FILE
    coco = _coco_file(folder)
    if coco is not None:
        return "coco", coco
    return None


def _class_of(name: str) -> ObjectClass | None:
    low = name.lower()
    if "face" in low:
        return "face"
    if "plate" in low:
        return "plate"
    return None


def _coco_root(json_path: Path) -> Path:
    parent = json_path.parent
    return parent.parent if parent.name == "annotations" else parent


def _image_path(root: Path, file_name: str, where: str) -> Path:
    p = Path(file_name)
    if p.is_absolute() or ".." in p.parts or not file_name:
        raise LabelError(f"{where}: file_name must be a relative path inside the set")
    direct = root / p
    if direct.exists():
        return direct
    under = root / "images" / p
    return under if under.exists() else direct


def load_coco(json_path: Path) -> tuple[list[LabelledImage], int]:
    """Images of a COCO detection file and the number of annotations skipped."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelError(f"COCO file is not readable JSON ({type(e).__name__})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LabelError("COCO file: 'images' must be a list")
    cats_raw = data.get("categories", [])
    anns_raw = data.get("annotations", [])
    if not isinstance(cats_raw, list) or not isinstance(anns_raw, list):
        raise LabelError("COCO file: 'categories' and 'annotations' must be lists")
    cats = _coco_categories(cats_raw)
    root = _coco_root(json_path)
    boxes: dict[Any, list[LabelledBox]] = {}
    skipped = 0
    for i, a in enumerate(anns_raw):
        where = f"COCO annotation {i}"
        if not isinstance(a, dict):
            raise LabelError(f"{where}: must be an object")
        cls = cats.get(a.get("category_id"))
        if cls is None:
            skipped += 1
            continue
        boxes.setdefault(a.get("image_id"), []).append(_coco_box(a, cls, where))
    images = [
        _coco_image(im, root, boxes, f"COCO image {i}") for i, im in enumerate(data["images"])
    ]
    return images, skipped


def _coco_categories(cats_raw: list[Any]) -> dict[Any, ObjectClass | None]:
    """Category id -> our class by its name (``None``: a class we do not measure)."""
    cats: dict[Any, ObjectClass | None] = {}
    for i, c in enumerate(cats_raw):
        if not isinstance(c, dict) or "id" not in c:
            raise LabelError(f"COCO category {i}: needs an id")
        cats[c["id"]] = _class_of(str(c.get("name", "")))
    return cats


def _coco_box(a: dict[str, Any], cls: ObjectClass, where: str) -> LabelledBox:
    """One annotation of a class we measure (``iscrowd`` or ``ignore``: an ignore box)."""
    bbox = a.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise LabelError(f"{where}: bbox must be [x, y, w, h]")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError) as e:
        raise LabelError(f"{where}: bbox values must be numbers") from e
    if not (w > 0 and h > 0):
        raise LabelError(f"{where}: bbox width and height must be positive")
    ignore = bool(a.get("iscrowd", 0)) or a.get("ignore") is True
    extra: dict[str, Any] = {}
    attrs = a.get("attributes")
    text = a.get("text", attrs.get("text") if isinstance(attrs, dict) else None)
    if isinstance(text, str):
        extra["text"] = text
    return LabelledBox(cls=cls, box=Box.from_xywh(x, y, w, h), ignore=ignore, extra=extra)


def _coco_image(
    im: Any, root: Path, boxes: dict[Any, list[LabelledBox]], where: str
) -> LabelledImage:
    """One COCO image entry with its boxes (``boxes``: by image id)."""
    if not isinstance(im, dict):
        raise LabelError(f"{where}: must be an object")
    try:
        width, height = int(im["width"]), int(im["height"])
    except (KeyError, TypeError, ValueError) as e:
        raise LabelError(f"{where}: width and height must be integers") from e
    complete = im.get("labels_complete", True)
    if not isinstance(complete, bool):
        raise LabelError(f"{where}: labels_complete must be true or false")
    return LabelledImage(
        path=_image_path(root, str(im.get("file_name", "")), where),
        width=width,
        height=height,
        labels_complete=complete,
        boxes=tuple(boxes.get(im.get("id"), ())),
    )


def _load_one(name: str, fmt: SetFormat, source: Path, limit: int | None) -> LabelledSet:
    skipped = 0
    try:
        if fmt == "jsonl":
            root = source.parent
            images = load_set(root)
        else:
            root = _coco_root(source)
            images, skipped = load_coco(source)
    except LabelError as e:
        raise DatasetError(f"set {name!r}: {e}") from e
    except OSError as e:
        raise DatasetError(f"set {name!r}: label file cannot be read ({e.strerror})") from e
    picked = tuple(images[i] for i in evenly_spaced(len(images), limit))
    return LabelledSet(
        name=name,
        root=root,
        format=fmt,
        images=picked,
        total_images=len(images),
        skipped_categories=skipped,
    )


def discover(path: Path) -> list[tuple[str, SetFormat, Path]]:
    """``(name, format, label file)`` of every set at ``path`` (see the module doc)."""
    if path.is_file():
        if path.suffix == ".jsonl":
            return [(path.parent.name, "jsonl", path)]
        return [(_coco_root(path).name, "coco", path)]
    if not path.is_dir():
        raise DatasetError("the dataset path is neither a folder nor a label file")
    own = _set_source(path)
    if own is not None:
        return [(path.resolve().name, own[0], own[1])]
    found = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        src = _set_source(sub)
        if src is not None:
            found.append((sub.name, src[0], src[1]))
    if not found:
        raise DatasetError(
            f"no labelled set found: expected {LABELS_FILE} or a COCO JSON file in the folder "
            "or in its sub-folders"
        )
    return found


def load(path: Path, limit: int | None = None, only: Sequence[str] = ()) -> list[LabelledSet]:
    """Every labelled set at ``path``; ``limit`` keeps at most N images per set.

    ``only`` restricts to sets with these names. Raises ``DatasetError``.
    """
    sets = [
        _load_one(name, fmt, src, limit)
        for name, fmt, src in discover(path)
        if not only or name in only
    ]
    if not sets:
        raise DatasetError("none of the requested sets was found")
    return sets
