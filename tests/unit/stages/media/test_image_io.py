"""Image decode/encode: limits before decoding, upright pixels, no metadata out.

Every input is a real file these tests write with Pillow or by hand (crafted
headers); outputs are read back with Pillow and by walking their raw
segments/chunks, so "no metadata" is checked on the bytes, not on what one
reader happens to expose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, PngImagePlugin, TiffImagePlugin

from redactd.core.config import LimitsConfig, MaskConfig, OutputConfig
from redactd.core.errors import PermanentInputError, TransientError
from redactd.core.types import Box
from redactd.stages.mask import MaskRegion, apply_masks
from redactd.stages.media.image import DecodedImage, decode, encode, probe

LIMITS = LimitsConfig()
OUT = OutputConfig()
SECRET = b"SECRET"  # every metadata value below contains it

SRGB_ICC: bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --------------------------------------------------------------------------- builders


def scene(h: int = 96, w: int = 128, seed: int = 0, noise: int = 20) -> np.ndarray:
    """An RGB picture with smooth regions, edges and texture (JPEG-realistic)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], axis=-1)
    img = img.astype(np.int16) + rng.integers(-noise, noise + 1, (h, w, 3))
    img[h // 4 : h // 2, w // 4 : w // 2] = (250, 30, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(path: Path, arr: np.ndarray, fmt: str, **kw: object) -> Path:
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) declares ``width x height``, with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def exif_with_thumbnail(artist: bytes, thumbnail: bytes, orientation: int = 1) -> bytes:
    """A raw EXIF block: IFD0 (Artist, Orientation) and IFD1 holding a JPEG thumbnail."""
    artist += b"\x00"
    ifd0_at = 8
    ifd0_len = 2 + 2 * 12 + 4
    ifd1_at = ifd0_at + ifd0_len
    ifd1_len = 2 + 2 * 12 + 4
    artist_at = ifd1_at + ifd1_len
    thumb_at = artist_at + len(artist)
    ifd0 = struct.pack("<H", 2)
    ifd0 += struct.pack("<HHII", 0x0112, 3, 1, orientation)  # SHORT, left-justified
    ifd0 += struct.pack("<HHII", 0x013B, 2, len(artist), artist_at)
    ifd0 += struct.pack("<I", ifd1_at)
    ifd1 = struct.pack("<H", 2)
    ifd1 += struct.pack("<HHII", 0x0201, 4, 1, thumb_at)
    ifd1 += struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
    ifd1 += struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", ifd0_at) + ifd0 + ifd1 + artist + thumbnail
    return b"Exif\x00\x00" + tiff


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment up to the start of scan."""
    assert data[:2] == b"\xff\xd8"
    pos, out = 2, []
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        out.append((marker, data[pos + 4 : pos + 2 + length]))
        if marker == 0xDA:  # SOS: entropy-coded data follows
            break
        pos += 2 + length
    return out


def insert_jpeg_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    seg = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + seg + data[2:]


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def webp_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    pos, kinds = 12, []
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        kinds.append(kind)
        pos += 8 + size + (size & 1)
    return kinds


def roundtrip(src: Path, tmp: Path, out: OutputConfig = OUT) -> tuple[DecodedImage, Path]:
    img = decode(src, LIMITS)
    dst = tmp / f"out-{src.name}"
    written = encode(img, [p.bgr for p in img.pages], dst, out)
    assert written == dst.stat().st_size
    return img, dst


def reason(exc: pytest.ExceptionInfo[PermanentInputError]) -> str:
    return exc.value.reason


# --------------------------------------------------------------------------- probe and limits


def test_probe_reads_size_and_page_count(tmp_path: Path) -> None:
    p = save(tmp_path / "a.jpg", scene(40, 60), "JPEG")
    assert probe(p, LIMITS) == (60, 40, 1)
    pages = [Image.fromarray(scene(30 + i, 50, seed=i)) for i in range(3)]
    t = tmp_path / "multi.tif"
    pages[0].save(t, format="TIFF", save_all=True, append_images=pages[1:])
    assert probe(t, LIMITS) == (50, 30, 3)


def test_probe_reports_the_upright_size(tmp_path: Path) -> None:
    ex = Image.Exif()
    ex[ExifTags.Base.Orientation] = 6
    p = save(tmp_path / "rot.jpg", scene(40, 60), "JPEG", exif=ex)
    assert probe(p, LIMITS) == (40, 60, 1)


def test_file_over_the_byte_limit_is_too_large(tmp_path: Path) -> None:
    p = save(tmp_path / "a.png", scene(), "PNG")
    small = dataclasses.replace(LIMITS, max_file_bytes=100)
    for fn in (probe, decode):
        with pytest.raises(PermanentInputError) as ei:
            fn(p, small)
        assert reason(ei) == "too_large"


@pytest.mark.parametrize("side", [100_000, 20_000])
def test_png_declaring_huge_size_is_refused_before_decoding(tmp_path: Path, side: int) -> None:
    p = tmp_path / "bomb.png"
    p.write_bytes(png_bomb(side, side))
    assert p.stat().st_size < 2000
    # Decoding 100000 x 100000 RGB would need 30 GB; the refusal comes from
    # the header, so this returns at once without that allocation.
    for fn in (probe, decode):
        with pytest.raises(PermanentInputError) as ei:
            fn(p, LIMITS)
        assert reason(ei) == "too_many_pixels"


def test_a_later_tiff_page_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    pages = [Image.fromarray(scene(10, 10)), Image.fromarray(scene(60, 60))]
    p = tmp_path / "m.tif"
    pages[0].save(p, format="TIFF", save_all=True, append_images=pages[1:])
    limits = dataclasses.replace(LIMITS, max_pixels=1000)
    with pytest.raises(PermanentInputError) as ei:
        decode(p, limits)
    assert reason(ei) == "too_many_pixels"


def test_too_many_pages(tmp_path: Path) -> None:
    pages = [Image.fromarray(scene(10, 10, seed=i)) for i in range(3)]
    p = tmp_path / "m.tif"
    pages[0].save(p, format="TIFF", save_all=True, append_images=pages[1:])
    limits = dataclasses.replace(LIMITS, max_pages=2)
    for fn in (probe, decode):
        with pytest.raises(PermanentInputError) as ei:
            fn(p, limits)
        assert reason(ei) == "too_many_pages"


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", "jpg"), ("PNG", "png"), ("TIFF", "tif")])
def test_truncated_file_is_an_error_not_grey_padding(tmp_path: Path, fmt: str, suffix: str) -> None:
    full = save(tmp_path / f"full.{suffix}", scene(200, 300), fmt).read_bytes()
    p = tmp_path / f"cut.{suffix}"
    p.write_bytes(full[: len(full) * 6 // 10])
    with pytest.raises(PermanentInputError) as ei:
        decode(p, LIMITS)
    assert reason(ei) in ("truncated", "corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_jpeg_magic_followed_by_garbage_is_corrupt(tmp_path: Path) -> None:
    p = tmp_path / "x.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(5).bytes(4000))
    with pytest.raises(PermanentInputError) as ei:
        decode(p, LIMITS)
    assert reason(ei) in ("corrupt", "truncated")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("zero.jpg", b"", "empty_file"),
        ("random.jpg", np.random.default_rng(4).bytes(3000), "unsupported_type"),
        ("text.png", b"just some words\n" * 50, "unsupported_type"),
        (
            "video.jpg",
            b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64),
            "unsupported_type",
        ),
    ],
)
def test_bad_inputs_get_their_reason(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    for fn in (probe, decode):
        with pytest.raises(PermanentInputError) as ei:
            fn(p, LIMITS)
        assert reason(ei) == expected


def test_symlink_and_directory_are_refused(tmp_path: Path) -> None:
    real = save(tmp_path / "real.jpg", scene(), "JPEG")
    link = tmp_path / "link.jpg"
    link.symlink_to(real)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    for p in (link, folder):
        with pytest.raises(PermanentInputError) as ei:
            decode(p, LIMITS)
        assert reason(ei) == "not_regular_file"


def test_errors_carry_no_file_name(tmp_path: Path) -> None:
    name = "Jane-Doe-passport-4711"
    full = save(tmp_path / f"{name}.jpg", scene(200, 300), "JPEG").read_bytes()
    p = tmp_path / f"{name}-cut.jpg"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(PermanentInputError) as ei:
        decode(p, LIMITS)
    chain: list[BaseException] = []
    e: BaseException | None = ei.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for err in chain:
        assert name not in str(err) and str(tmp_path) not in str(err)


# --------------------------------------------------------------------------- orientation


def _png_with_orientation(path: Path, arr: np.ndarray, orientation: int) -> Path:
    ex = Image.Exif()
    ex[ExifTags.Base.Orientation] = orientation
    return save(path, arr, "PNG", exif=ex.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    stored = scene(30, 50, seed=orientation)
    p = _png_with_orientation(tmp_path / "o.png", stored, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    page = decode(p, LIMITS).pages[0]
    assert np.array_equal(page.bgr, bgr(expected))


def test_orientation_6_jpeg_comes_out_upright_without_the_tag(tmp_path: Path) -> None:
    upright = scene(80, 120, noise=0)
    # Orientation 6 = "rotate 90 degrees clockwise to display": store the
    # upright picture turned counter-clockwise.
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    ex = Image.Exif()
    ex[ExifTags.Base.Orientation] = 6
    p = save(tmp_path / "phone.jpg", stored, "JPEG", quality=95, exif=ex)
    img, dst = roundtrip(p, tmp_path)
    assert img.pages[0].bgr.shape == (80, 120, 3)
    assert np.abs(img.pages[0].bgr.astype(int) - bgr(upright)).mean() < 4
    with Image.open(dst) as out:
        assert out.size == (120, 80)
        assert ExifTags.Base.Orientation not in out.getexif()
        diff = np.abs(np.asarray(out.convert("RGB")).astype(int) - upright).mean()
    assert diff < 5


def test_tiff_pages_keep_their_own_orientation(tmp_path: Path) -> None:
    a, b = scene(20, 40, seed=1), scene(20, 40, seed=2)
    p = tmp_path / "o.tif"
    first = Image.fromarray(a)
    second = Image.fromarray(b)
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[274] = 6
    first.save(p, format="TIFF", save_all=True, append_images=[second], tiffinfo=info)
    with Image.open(p) as check:
        check.seek(1)
        second_orientation = check.tag_v2.get(274, 1)
    pages = decode(p, LIMITS).pages
    assert pages[0].bgr.shape == (40, 20, 3)  # turned
    expected_second = (40, 20, 3) if second_orientation == 6 else (20, 40, 3)
    assert pages[1].bgr.shape == expected_second


# --------------------------------------------------------------------------- metadata


def _jpeg_full_of_metadata(path: Path) -> Path:
    ex = Image.Exif()
    ex[ExifTags.Base.Artist] = "SECRET-ARTIST"
    ex[ExifTags.Base.ImageDescription] = "SECRET-DESCRIPTION"
    ex[ExifTags.IFD.GPSInfo] = {1: "N", 2: (52.0, 31.0, 12.0), 27: b"SECRET-GPS-METHOD"}
    buf = io.BytesIO()
    Image.fromarray(scene()).save(
        buf,
        format="JPEG",
        quality=95,
        exif=ex,
        xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>SECRET-XMP</x:xmpmeta>",
        comment=b"SECRET-COMMENT",
        icc_profile=SRGB_ICC,
    )
    iptc = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x10\x1c\x02\x50\x00\x0bSECRET-IPTC"
    path.write_bytes(insert_jpeg_segment(buf.getvalue(), 0xED, iptc))
    return path


def test_jpeg_output_has_no_exif_gps_xmp_iptc_or_comment_but_keeps_icc(tmp_path: Path) -> None:
    src = _jpeg_full_of_metadata(tmp_path / "meta.jpg")
    raw = src.read_bytes()
    assert raw.count(SECRET) >= 5  # the input really carries all of it
    _, dst = roundtrip(src, tmp_path)
    data = dst.read_bytes()
    assert SECRET not in data
    markers = {m for m, _ in jpeg_segments(data)}
    assert 0xE1 not in markers  # APP1: EXIF and XMP
    assert 0xED not in markers  # APP13: IPTC
    assert 0xFE not in markers  # COM
    assert markers <= {0xE0, 0xE2, 0xDB, 0xC0, 0xC1, 0xC2, 0xC4, 0xDD, 0xDA}
    with Image.open(dst) as out:
        assert not out.getexif()
        assert out.info.get("icc_profile") == SRGB_ICC
        assert "xmp" not in out.info and "comment" not in out.info


def test_icc_is_dropped_when_not_kept(tmp_path: Path) -> None:
    src = _jpeg_full_of_metadata(tmp_path / "meta.jpg")
    _, dst = roundtrip(src, tmp_path, dataclasses.replace(OUT, keep_icc=False))
    assert all(m != 0xE2 for m, _ in jpeg_segments(dst.read_bytes()))


def test_kept_exif_loses_orientation_and_thumbnail(tmp_path: Path) -> None:
    thumb = io.BytesIO()
    Image.fromarray(scene(16, 16, seed=9)).save(thumb, format="JPEG", comment=b"THUMB-MARK")
    exif = exif_with_thumbnail(b"Kept Artist", thumb.getvalue(), orientation=3)
    src = save(tmp_path / "k.jpg", scene(), "JPEG", exif=exif)
    assert b"THUMB-MARK" in src.read_bytes()
    _, dst = roundtrip(src, tmp_path, dataclasses.replace(OUT, strip_metadata=False))
    data = dst.read_bytes()
    assert b"THUMB-MARK" not in data
    with Image.open(dst) as out:
        ex = out.getexif()
        assert ex.get(ExifTags.Base.Artist) == "Kept Artist"
        assert ExifTags.Base.Orientation not in ex


def test_png_output_has_only_structural_chunks(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "SECRET-AUTHOR")
    info.add_text("Comment", "SECRET-ZTXT " * 40, zip=True)
    info.add_itxt("XML:com.adobe.xmp", "SECRET-XMP", lang="en")
    ex = Image.Exif()
    ex[ExifTags.Base.Artist] = "SECRET-ARTIST"
    src = save(tmp_path / "m.png", scene(), "PNG", pnginfo=info, exif=ex, icc_profile=SRGB_ICC)
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"} <= set(png_chunks(src.read_bytes()))
    _, dst = roundtrip(src, tmp_path)
    data = dst.read_bytes()
    assert SECRET not in data
    assert set(png_chunks(data)) <= {b"IHDR", b"iCCP", b"pHYs", b"IDAT", b"IEND"}
    assert b"iCCP" in png_chunks(data)
    with Image.open(dst) as out:
        assert np.array_equal(np.asarray(out.convert("RGB")), scene())


def test_multipage_tiff_keeps_pages_and_only_structural_tags(tmp_path: Path) -> None:
    arrays = [scene(40, 60, seed=i) for i in range(3)]
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[315] = "SECRET-ARTIST"
    info[270] = "SECRET-DESCRIPTION"
    info[305] = "SECRET-SOFTWARE"
    info[700] = b"<x:xmpmeta>SECRET-XMP</x:xmpmeta>"
    p = tmp_path / "doc.tif"
    ims = [Image.fromarray(a) for a in arrays]
    ims[0].save(
        p, format="TIFF", save_all=True, append_images=ims[1:], tiffinfo=info,
        compression="tiff_lzw", icc_profile=SRGB_ICC,
    )  # fmt: skip
    assert p.read_bytes().count(SECRET) >= 4
    img, dst = roundtrip(p, tmp_path)
    assert len(img.pages) == 3
    assert SECRET not in dst.read_bytes()
    structural = {256, 257, 258, 259, 262, 273, 277, 278, 279, 282, 283, 284, 296, 317, 338, 34675}
    with Image.open(dst) as out:
        assert getattr(out, "n_frames", 1) == 3
        for i, a in enumerate(arrays):
            out.seek(i)
            assert set(out.tag_v2.keys()) <= structural
            assert out.info.get("compression") == "tiff_lzw"
            assert np.array_equal(np.asarray(out.convert("RGB")), a)


def test_webp_lossless_stays_lossless_with_alpha_and_without_metadata(tmp_path: Path) -> None:
    rgba = np.dstack([scene(), np.tile(np.arange(128, dtype=np.uint8), (96, 1))])
    ex = Image.Exif()
    ex[ExifTags.Base.Artist] = "SECRET-ARTIST"
    src = save(tmp_path / "a.webp", rgba, "WEBP", lossless=True, exif=ex, xmp=b"SECRET-XMP")
    assert {b"EXIF", b"XMP "} <= set(webp_chunks(src.read_bytes()))
    with Image.open(src) as im:
        # Lossless WebP may drop colour under fully transparent pixels; compare
        # with what the input holds.
        held = np.asarray(im.convert("RGBA"))
    assert np.array_equal(held[..., 3], rgba[..., 3])
    img, dst = roundtrip(src, tmp_path)
    assert img.webp_lossless and img.pages[0].alpha is not None
    data = dst.read_bytes()
    assert SECRET not in data
    kinds = set(webp_chunks(data))
    assert b"EXIF" not in kinds and b"XMP " not in kinds
    with Image.open(dst) as out:
        assert out.mode == "RGBA"
        assert np.array_equal(np.asarray(out), held)


def test_webp_lossy_stays_lossy(tmp_path: Path) -> None:
    src = save(tmp_path / "a.webp", scene(noise=0), "WEBP", quality=80)
    img, dst = roundtrip(src, tmp_path)
    assert not img.webp_lossless
    assert b"VP8 " in webp_chunks(dst.read_bytes()) or b"VP8X" in webp_chunks(dst.read_bytes())
    with Image.open(dst) as out:
        diff = np.abs(np.asarray(out.convert("RGB")).astype(int) - scene(noise=0)).mean()
    assert diff < 8


def test_animated_webp_keeps_every_frame_and_timing(tmp_path: Path) -> None:
    frames = [Image.fromarray(scene(32, 48, seed=i)) for i in range(3)]
    p = tmp_path / "anim.webp"
    frames[0].save(
        p, format="WEBP", save_all=True, append_images=frames[1:], duration=[100, 200, 300],
        loop=2, lossless=True,
    )  # fmt: skip
    img, dst = roundtrip(p, tmp_path)
    assert len(img.pages) == 3
    with Image.open(dst) as out:
        assert out.n_frames == 3
        durations = []
        for i in range(3):
            out.seek(i)
            out.load()  # Pillow fills a WebP frame's duration when it decodes it
            durations.append(out.info.get("duration"))
        assert durations == [100, 200, 300]


def test_bmp_round_trip_is_exact(tmp_path: Path) -> None:
    src = save(tmp_path / "a.bmp", scene(), "BMP")
    img, dst = roundtrip(src, tmp_path)
    assert img.format == "bmp"
    with Image.open(dst) as out:
        assert out.format == "BMP"
        assert np.array_equal(np.asarray(out.convert("RGB")), scene())


def test_png_alpha_grey_palette_and_16_bit(tmp_path: Path) -> None:
    rgba = np.dstack([scene(), np.full((96, 128), 77, np.uint8)])
    _, dst = roundtrip(save(tmp_path / "rgba.png", rgba, "PNG"), tmp_path)
    with Image.open(dst) as out:
        assert out.mode == "RGBA" and np.array_equal(np.asarray(out), rgba)

    grey = scene()[..., 1]
    img, dst = roundtrip(save(tmp_path / "grey.png", grey, "PNG"), tmp_path)
    assert img.pages[0].mode == "L"
    with Image.open(dst) as out:
        assert out.mode == "L" and np.array_equal(np.asarray(out), grey)

    pal = Image.fromarray(scene()).quantize(16)
    pal.save(tmp_path / "pal.png")
    expected = np.asarray(pal.convert("RGB"))
    _, dst = roundtrip(tmp_path / "pal.png", tmp_path)
    with Image.open(dst) as out:
        assert np.array_equal(np.asarray(out.convert("RGB")), expected)

    wide = (np.arange(96 * 128, dtype=np.uint16).reshape(96, 128) * 5).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "deep.png")  # uint16 -> mode I;16
    img = decode(tmp_path / "deep.png", LIMITS)
    assert img.bits_reduced
    assert np.array_equal(img.pages[0].bgr[..., 0], (wide >> 8).astype(np.uint8))


def test_cmyk_jpeg_becomes_rgb_without_its_cmyk_profile(tmp_path: Path) -> None:
    rgb = scene(noise=0)
    p = tmp_path / "print.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p, quality=95)
    img, dst = roundtrip(p, tmp_path)
    assert img.pages[0].mode == "RGB" and img.icc_profile is None
    with Image.open(p) as src, Image.open(dst) as out:
        assert out.mode == "RGB"
        expected = np.asarray(src.convert("RGB")).astype(int)
        assert np.abs(np.asarray(out).astype(int) - expected).mean() < 4


def test_bilevel_tiff_stays_bilevel_group4(tmp_path: Path) -> None:
    bits = (scene()[..., 0] > 128).astype(np.uint8) * 255
    Image.fromarray(bits, "L").convert("1").save(tmp_path / "fax.tif", compression="group4")
    img, dst = roundtrip(tmp_path / "fax.tif", tmp_path)
    assert img.pages[0].mode == "1"
    with Image.open(dst) as out:
        assert out.mode == "1" and out.info.get("compression") == "group4"
        assert np.array_equal(np.asarray(out.convert("L")), bits)


# --------------------------------------------------------------------------- masked output


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", "png"), ("JPEG", "jpg")])
def test_masked_pixels_change_and_far_pixels_do_not(tmp_path: Path, fmt: str, suffix: str) -> None:
    rgb = scene(240, 320)
    src = save(tmp_path / f"in.{suffix}", rgb, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    img = decode(src, LIMITS)
    original = img.pages[0].bgr
    canvas = original.copy()
    box = Box(60, 50, 120, 130)
    apply_masks(canvas, [MaskRegion(box, MaskConfig())])
    masked_dst, plain_dst = tmp_path / f"masked.{suffix}", tmp_path / f"plain.{suffix}"
    encode(img, [canvas], masked_dst, OUT)
    encode(img, [original], plain_dst, OUT)

    def read(p: Path) -> np.ndarray:
        with Image.open(p) as im:
            return bgr(np.asarray(im.convert("RGB"))).astype(int)

    masked, plain = read(masked_dst), read(plain_dst)
    inside = np.abs(masked[50:130, 60:120] - original[50:130, 60:120].astype(int)).mean()
    assert inside > 20
    # Far from the padded box (x 30..150) and beyond JPEG's 16 px blocks: the
    # pixels are exactly those of the same file encoded without a mask, and
    # within re-encoding noise of the input.
    assert np.array_equal(masked[:, 176:], plain[:, 176:])
    far = np.abs(masked[:, 176:] - original[:, 176:].astype(int)).mean()
    assert far == 0 if fmt == "PNG" else far < 5


# --------------------------------------------------------------------------- writing safely


def test_encode_never_overwrites(tmp_path: Path) -> None:
    img = decode(save(tmp_path / "a.png", scene(), "PNG"), LIMITS)
    dst = tmp_path / "taken.png"
    dst.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        encode(img, [p.bgr for p in img.pages], dst, OUT)
    assert dst.read_bytes() == b"precious"
    target = tmp_path / "target.png"
    target.write_bytes(b"also precious")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        encode(img, [p.bgr for p in img.pages], link, OUT)
    assert target.read_bytes() == b"also precious"


def test_encode_writes_a_private_complete_file(tmp_path: Path) -> None:
    img = decode(save(tmp_path / "a.jpg", scene(), "JPEG"), LIMITS)
    dst = tmp_path / "new.jpg"
    n = encode(img, [p.bgr for p in img.pages], dst, OUT)
    assert n == dst.stat().st_size > 0
    assert dst.stat().st_mode & 0o777 == 0o600
    with Image.open(dst) as out:
        out.load()


def test_encode_rejects_pages_that_do_not_match(tmp_path: Path) -> None:
    img = decode(save(tmp_path / "a.png", scene(), "PNG"), LIMITS)
    dst = tmp_path / "x.png"
    with pytest.raises(ValueError):
        encode(img, [np.zeros((10, 10, 3), np.uint8)], dst, OUT)
    with pytest.raises(ValueError):
        encode(img, [], dst, OUT)
    assert not dst.exists()


@contextlib.contextmanager
def _tmpfs(mnt: Path, options: str) -> Iterator[Path]:
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_transient_and_leaves_no_partial_file(tmp_path: Path) -> None:
    rgb = np.random.default_rng(7).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    img = decode(save(tmp_path / "noise.png", rgb, "PNG"), LIMITS)  # ~480 kB as PNG
    with _tmpfs(tmp_path / "small", "size=64k,mode=0755") as mnt:
        dst = mnt / "out.png"
        with pytest.raises(TransientError) as ei:
            encode(img, [p.bgr for p in img.pages], dst, OUT)
        assert ei.value.reason == "disk_full"
        assert not dst.exists()
        assert os.listdir(mnt) == []


def test_read_only_destination_is_transient(tmp_path: Path) -> None:
    img = decode(save(tmp_path / "a.png", scene(), "PNG"), LIMITS)
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as mnt:
        with pytest.raises(TransientError) as ei:
            encode(img, [p.bgr for p in img.pages], mnt / "out.png", OUT)
        assert ei.value.reason == "output_unavailable"
