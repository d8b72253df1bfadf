"""Labelled videos: per-frame boxes with track ids, as annotation tools export them.

A *video set* is a folder of videos, each with its labels beside it:

* ``NAME.EXT`` + ``NAME.gt.txt``: **MOT Challenge** ground truth (CVAT,
  Label Studio and most trackers export it), one box per line::

      frame, track id, left, top, width, height, flag, class, visibility

  ``frame`` counts from 1. ``flag`` 0 marks a box not to count (MOT's
  "considered" flag: an *ignore* box here); 1 (or a missing column) counts.
  ``class`` is redactd's: 1 (or missing) a face, 2 a plate; any other class is
  skipped (counted in ``skipped``). ``visibility`` is read and kept unused.
* ``NAME.EXT`` + ``NAME.coco.json``: **COCO-style video JSON** (COCO with
  ``video_id``/``frame_id`` per image, as CVAT's "COCO" export of a video and
  the TAO/YouTube-VIS family write it): ``images[].frame_id`` (from 0) and
  ``annotations[].track_id`` (or ``instance_id``), categories by name as for
  images (``face``/``plate`` in the name), ``iscrowd`` or ``ignore`` an
  ignore box.
* ``NAME.EXT`` + ``NAME.cvat.xml``: **CVAT for video 1.1** XML (CVAT's own
  video export): ``<track id label>`` with one ``<box frame xtl ytl xbr
  ybr outside ...>`` per frame (CVAT writes interpolated frames too);
  ``outside="1"`` boxes are not there; labels by name (``face``/``plate``
  in the name); an ``<attribute name="ignore">true</attribute>`` makes an
  ignore box.

Boxes are in the stored pixels of the video (as the annotation tool showed
the decoded frames). Nothing here logs or reports a file name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from redactd.core.fsutil import sha256_file
from redactd.core.types import Box, ObjectClass

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
MOT_SUFFIX = ".gt.txt"
COCO_SUFFIX = ".coco.json"
CVAT_SUFFIX = ".cvat.xml"
#: redactd's MOT class ids.
MOT_CLASSES: dict[int, ObjectClass] = {1: "face", 2: "plate"}


class VideoLabelError(ValueError):
    """A video label file cannot be read (the reason names the line or key, never the file)."""


@dataclass(frozen=True)
class TrackBox:
    """One labelled box of one track in one frame (``frame`` from 0)."""

    frame: int
    track: int
    cls: ObjectClass
    box: Box
    ignore: bool = False


@dataclass(frozen=True)
class LabelledVideo:
    """One video and its track boxes; ``digest`` is the video file's sha256."""

    path: Path
    labels: Path
    format: str  # "mot", "coco-video" or "cvat-video"
    boxes: tuple[TrackBox, ...]
    digest: str
    skipped: int = 0

    def frames(self) -> dict[int, list[TrackBox]]:
        out: dict[int, list[TrackBox]] = {}
        for b in self.boxes:
            out.setdefault(b.frame, []).append(b)
        return out

    def classes(self) -> list[ObjectClass]:
        return sorted({b.cls for b in self.boxes if not b.ignore})


@dataclass(frozen=True)
class VideoSet:
    """A folder of labelled videos."""

    name: str  # the folder's name (the report uses "set N" unless names are asked for)
    root: Path
    videos: tuple[LabelledVideo, ...]


def _num(text: str, what: str, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise VideoLabelError(f"MOT line {line}: {what} is not a number") from None


def parse_mot(text: str) -> tuple[list[TrackBox], int]:
    """Boxes of a MOT ``gt.txt`` text, and how many lines of other classes were skipped."""
    boxes: list[TrackBox] = []
    skipped = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cols = [c.strip() for c in line.replace(" ", ",").split(",") if c.strip()]
        if len(cols) < 6:
            raise VideoLabelError(f"MOT line {n}: needs at least 6 columns, has {len(cols)}")
        frame = int(_num(cols[0], "frame", n))
        track = int(_num(cols[1], "track id", n))
        x, y, w, h = (_num(c, "box", n) for c in cols[2:6])
        if frame < 1:
            raise VideoLabelError(f"MOT line {n}: frames count from 1")
        if w <= 0 or h <= 0:
            raise VideoLabelError(f"MOT line {n}: width and height must be > 0")
        flag = _num(cols[6], "flag", n) if len(cols) > 6 else 1.0
        cls_id = int(_num(cols[7], "class", n)) if len(cols) > 7 else 1
        cls = MOT_CLASSES.get(cls_id)
        if cls is None:
            skipped += 1
            continue
        boxes.append(TrackBox(frame - 1, track, cls, Box.from_xywh(x, y, w, h), flag == 0))
    return boxes, skipped


def _fmt(v: float) -> str:
    # integers as integers; fractions exactly as Python prints them (round trip)
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def format_mot(boxes: Iterable[TrackBox]) -> str:
    """MOT ``gt.txt`` text of ``boxes`` (the inverse of ``parse_mot``)."""
    ids = {c: i for i, c in MOT_CLASSES.items()}
    lines = []
    for b in sorted(boxes, key=lambda b: (b.frame, b.track)):
        x, y, w, h = (_fmt(v) for v in (b.box.x1, b.box.y1, b.box.width, b.box.height))
        lines.append(
            f"{b.frame + 1},{b.track},{x},{y},{w},{h},{0 if b.ignore else 1},{ids[b.cls]},1"
        )
    return "\n".join(lines) + ("\n" if lines else "")


def parse_coco_video(data: object) -> tuple[list[TrackBox], int]:
    """Boxes of a COCO-style video JSON document (one video), and skipped annotations."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise VideoLabelError("COCO video: 'images' must be a list")
    cats: dict[object, ObjectClass] = {}
    for c in data.get("categories", []):
        name = str(c.get("name", "")).lower() if isinstance(c, dict) else ""
        if "face" in name:
            cats[c.get("id")] = "face"
        elif "plate" in name:
            cats[c.get("id")] = "plate"
    frame_of: dict[object, int] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im:
            raise VideoLabelError(f"COCO video: images[{i}] needs an 'id'")
        f = im.get("frame_id", im.get("frame_index"))
        if not isinstance(f, int) or f < 0:
            raise VideoLabelError(f"COCO video: images[{i}].frame_id must be an integer >= 0")
        frame_of[im["id"]] = f
    boxes: list[TrackBox] = []
    skipped = 0
    for i, a in enumerate(data.get("annotations", [])):
        if not isinstance(a, dict):
            raise VideoLabelError(f"COCO video: annotations[{i}] must be an object")
        cls = cats.get(a.get("category_id"))
        if cls is None:
            skipped += 1
            continue
        if a.get("image_id") not in frame_of:
            raise VideoLabelError(f"COCO video: annotations[{i}].image_id names no image")
        bbox = a.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) for v in bbox)
            or bbox[2] <= 0
            or bbox[3] <= 0
        ):
            raise VideoLabelError(
                f"COCO video: annotations[{i}].bbox must be [x, y, w, h], w, h > 0"
            )
        track = a.get("track_id", a.get("instance_id"))
        if not isinstance(track, int):
            raise VideoLabelError(f"COCO video: annotations[{i}] needs an integer track_id")
        ignore = bool(a.get("iscrowd", 0)) or a.get("ignore") is True
        boxes.append(TrackBox(frame_of[a["image_id"]], track, cls, Box.from_xywh(*bbox), ignore))
    return boxes, skipped


def _label_class(name: str) -> ObjectClass | None:
    n = name.lower()
    return "face" if "face" in n else "plate" if "plate" in n else None


def parse_cvat_video(text: str) -> tuple[list[TrackBox], int]:
    """Boxes of a CVAT-for-video XML text, and how many boxes of other labels were skipped."""
    import xml.etree.ElementTree as ET  # expat refuses entity expansion bombs

    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise VideoLabelError(f"CVAT XML: not well-formed (line {e.position[0]})") from None
    boxes: list[TrackBox] = []
    skipped = 0
    for i, track in enumerate(root.iter("track")):
        cls = _label_class(track.get("label", ""))
        try:
            tid = int(track.get("id", str(i)))
        except ValueError:
            raise VideoLabelError(f"CVAT XML: track {i + 1} has a non-integer id") from None
        for box in track.iter("box"):
            if cls is None:
                skipped += 1
                continue
            if box.get("outside", "0") == "1":
                continue
            try:
                frame = int(box.get("frame", ""))
                x1, y1, x2, y2 = (float(box.get(k, "")) for k in ("xtl", "ytl", "xbr", "ybr"))
            except ValueError:
                raise VideoLabelError(f"CVAT XML: track {i + 1}: a box lacks numbers") from None
            if frame < 0 or x2 <= x1 or y2 <= y1:
                raise VideoLabelError(f"CVAT XML: track {i + 1}: frame < 0 or an empty box")
            ignore = any(
                a.get("name", "").lower() == "ignore" and (a.text or "").strip().lower() == "true"
                for a in box.iter("attribute")
            )
            boxes.append(TrackBox(frame, tid, cls, Box(x1, y1, x2, y2), ignore))
    return boxes, skipped


def _video_for(labels: Path, suffix: str) -> Path | None:
    stem = labels.name[: -len(suffix)]
    for ext in VIDEO_SUFFIXES:
        for cand in (ext, ext.upper()):
            p = labels.with_name(stem + cand)
            if p.is_file():
                return p
    return None


def label_files(folder: Path) -> list[Path]:
    """The MOT and COCO-video label files directly inside ``folder``, by name."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.name.endswith((MOT_SUFFIX, COCO_SUFFIX, CVAT_SUFFIX)) and p.is_file()
    )


def is_video_set(path: Path) -> bool:
    """Whether ``path`` is a folder holding labelled videos (or a folder of such folders)."""
    if not path.is_dir():
        return False
    if label_files(path):
        return True
    return any(d.is_dir() and label_files(d) for d in path.iterdir())


def load_video(labels: Path) -> LabelledVideo:
    """One labelled video from its label file (``VideoLabelError`` if unreadable)."""
    suffix = next(s for s in (MOT_SUFFIX, COCO_SUFFIX, CVAT_SUFFIX) if labels.name.endswith(s))
    video = _video_for(labels, suffix)
    if video is None:
        raise VideoLabelError("a label file has no video beside it (same name, a video suffix)")
    try:
        text = labels.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise VideoLabelError(f"label file unreadable ({type(e).__name__})") from e
    if suffix == MOT_SUFFIX:
        boxes, skipped = parse_mot(text)
        fmt = "mot"
    elif suffix == CVAT_SUFFIX:
        boxes, skipped = parse_cvat_video(text)
        fmt = "cvat-video"
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise VideoLabelError(f"COCO video: not JSON (line {e.lineno})") from None
        boxes, skipped = parse_coco_video(data)
        fmt = "coco-video"
    return LabelledVideo(video, labels, fmt, tuple(boxes), sha256_file(video), skipped)


def load_sets(path: Path, limit: int | None = None) -> list[VideoSet]:
    """Every video set at ``path`` (the folder itself, or its sub-folders); ``limit``
    keeps at most N videos per set."""
    folders = [path] if label_files(path) else sorted(d for d in path.iterdir() if d.is_dir())
    sets = []
    for d in folders:
        files = label_files(d)
        if not files:
            continue
        videos = [load_video(f) for f in files]
        if limit is not None:
            videos = videos[:limit]
        sets.append(VideoSet(d.name, d, tuple(videos)))
    if not sets:
        raise VideoLabelError("no labelled video found")
    return sets


def data_digest(sets: Sequence[VideoSet]) -> str:
    """sha256 over every label file's and video's sha256, in set and file order (no names)."""
    h = hashlib.sha256()
    for s in sets:
        for v in s.videos:
            h.update(f"{sha256_file(v.labels)} {v.digest}\n".encode())
    return h.hexdigest()
