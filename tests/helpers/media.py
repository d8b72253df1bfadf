"""Small builders for test inputs: crafted headers, labelled eval images."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width x height`` with a tiny IDAT (a bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class Labelled:
    path: Path
    width: int
    height: int
    faces: tuple[tuple[int, int, int, int], ...]  # x, y, w, h of non-ignore boxes
    ignored: tuple[tuple[int, int, int, int], ...]


def read_labels(set_dir: Path) -> list[Labelled]:
    out = []
    for line in (set_dir / "labels.jsonl").read_text().splitlines():
        d = json.loads(line)
        faces = tuple(
            (b["x"], b["y"], b["w"], b["h"]) for b in d["boxes"] if not b.get("ignore", False)
        )
        ign = tuple((b["x"], b["y"], b["w"], b["h"]) for b in d["boxes"] if b.get("ignore", False))
        out.append(Labelled(set_dir / d["image"], d["width"], d["height"], faces, ign))
    return out


def changed_fraction(
    before: np.ndarray, after: np.ndarray, box: tuple[int, int, int, int], thr: int = 12
) -> float:
    """Share of the box's pixels whose value changed by more than ``thr`` on any channel."""
    x, y, w, h = box
    a = before[y : y + h, x : x + w].astype(np.int16)
    b = after[y : y + h, x : x + w].astype(np.int16)
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b).max(axis=2)
    return float((diff > thr).mean())


def far_mask(
    shape: tuple[int, int], boxes: list[tuple[int, int, int, int]], margin: float = 1.0
) -> np.ndarray:
    """True where a pixel is farther than ``margin`` box sizes from every box."""
    h, w = shape
    m = np.ones((h, w), dtype=bool)
    for x, y, bw, bh in boxes:
        dx, dy = int(bw * margin) + 4, int(bh * margin) + 4
        m[max(0, y - dy) : min(h, y + bh + dy), max(0, x - dx) : min(w, x + bw + dx)] = False
    return m
