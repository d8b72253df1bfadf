"""With ``strip_metadata = false`` only plain EXIF tags survive, never a blob.

A real JPEG carries, besides camera make, model and date, a private IFD0
tag and a MakerNote each holding a whole JPEG (vendors do this for
previews), and a GPS position. Through the real Pipeline (a detector that
finds nothing: this is about the file, not the pixels) the output keeps
the plain tags and nothing else: one JPEG start marker in the file, no GPS.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from redactd.core.config import default_config
from redactd.pipeline.process import Pipeline

PRIVATE = 0xC7A1  # an unregistered private tag
GPS = ExifTags.IFD.GPSInfo
EXIF = ExifTags.IFD.Exif


class _Nobody:
    def find(self, image: np.ndarray, profile: object, floor: float | None = None) -> list:
        return []

    def describe(self) -> list:
        return []

    def close(self) -> None:
        pass


def _jpeg_bytes(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _photo(path: Path) -> bytes:
    hidden = _jpeg_bytes(2, (48, 32))  # "a face" hidden in the metadata
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    exif[PRIVATE] = hidden
    sub = exif.get_ifd(EXIF)
    sub[0x9003] = "2024:05:06 07:08:09"
    sub[0x927C] = hidden  # MakerNote
    gps = exif.get_ifd(GPS)
    gps[1], gps[2] = "N", (48.0, 8.0, 30.0)
    with Image.open(io.BytesIO(_jpeg_bytes(1, (320, 240)))) as im:
        im.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return hidden


def test_only_plain_exif_tags_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    hidden = _photo(src)
    data = src.read_bytes()
    assert data.count(b"\xff\xd8\xff") == 3  # the photo, the private tag, the maker note
    with Image.open(src) as im:
        ex = im.getexif()
        assert ex.get(PRIVATE) == hidden and ex.get_ifd(GPS)

    cfg = default_config(tmp_path)
    prof = cfg.profiles["default"]
    keep_meta = dataclasses.replace(
        prof, output=dataclasses.replace(prof.output, strip_metadata=False)
    )
    cfg = dataclasses.replace(cfg, profiles={**cfg.profiles, "default": keep_meta})
    dst = tmp_path / "out.jpg"
    Pipeline(cfg, _Nobody()).process(src, dst, "default")  # type: ignore[arg-type]

    out = dst.read_bytes()
    assert out.count(b"\xff\xd8\xff") == 1, "a JPEG rode along in the metadata"
    assert hidden not in out
    with Image.open(dst) as im:
        ex = im.getexif()
        assert ex.get(0x010F) == "Canon" and ex.get(0x0110) == "EOS 5D"
        assert ex.get_ifd(EXIF).get(0x9003) == "2024:05:06 07:08:09"
        assert PRIVATE not in ex
        assert 0x927C not in ex.get_ifd(EXIF)
        assert GPS not in ex and not ex.get_ifd(GPS)
