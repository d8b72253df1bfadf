"""Still images: header probe, full decode, faithful re-encode without metadata.

Contract of this module:

* Everything is read through one descriptor opened by ``sniff.open_regular``
  (regular file, no symlink), the type comes from content, and Pillow is only
  allowed the one decoder the content sniffed as.
* ``probe`` reads headers only. File size, pixels per page, page count and
  the pixels of all pages together are checked there, before any pixel
  buffer is allocated, so a PNG declaring 100000x100000 pixels costs a few
  hundred bytes of reading, and a 1 MB TIFF of 40 4000x4000 pages (or a long
  animated WebP) is refused before it takes gigabytes.
* ``decode`` loads every page completely (``LOAD_TRUNCATED_IMAGES`` must stay
  False: a truncated file is an error, never grey padding the detector would
  happily find no face in), applies the EXIF/TIFF orientation so arrays are
  upright, and returns BGR ``uint8`` arrays.
* ``encode`` builds fresh Pillow images from the masked arrays, so nothing of
  the input's metadata can ride along by accident; it writes only what it is
  told to (ICC profile when ``keep_icc``, resolution, and a sanitised EXIF
  only when ``strip_metadata`` is off).

Format notes (what "same format out" means here):

* JPEG: re-encoded at ``jpeg_quality`` with the input's chroma subsampling
  and progressive flag. Extra MPO pictures (depth maps, second views) and
  EXIF thumbnails are dropped, never copied: they hold unmasked pixels.
* PNG: lossless; 16-bit samples become 8-bit (Pillow already reduces 16-bit
  colour; 16-bit grey is scaled by 1/256 here); palette images become RGB(A);
  only the first frame of an animated PNG is kept. Ancillary chunks
  (text, time, eXIf, gamma) are not written.
* TIFF: every page, lossless with the first page's compression where that
  codec can hold the written mode (group3/4 only for bilevel pages).
* WebP: lossless inputs stay lossless, lossy ones use ``webp_quality``;
  animated WebP keeps all frames, durations and loop count.
* BMP: lossless; a 32-bit BMP with alpha is written as 32-bit, which many
  readers show without alpha.
* Bilevel ("1") pages stay bilevel (the masked area is dithered); grey stays
  grey; CMYK and YCbCr become RGB (the ICC profile is then dropped, since it
  describes the old colour space).
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, UnidentifiedImageError

from redactd.core import fsutil
from redactd.core.config import LimitsConfig, OutputConfig
from redactd.core.errors import PermanentInputError, RedactdError, TransientError
from redactd.stages.media.sniff import open_regular, sniff_file

#: Our format name -> Pillow's decoder id (Pillow may try no other decoder).
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP"}

#: Formats whose further frames are real pages we decode, mask and write.
#: (JPEG's extra MPO pictures and APNG frames are dropped instead.)
_MULTI_PAGE = frozenset({"tiff", "webp"})

_ORIENTATION_TAG = 0x0112

#: With ``strip_metadata = false`` only these plain tags are written (an
#: allow-list: vendors and tools put whole JPEGs into private tags). IFD0:
#: description, camera make and model, software, date, artist, copyright,
#: resolution.
_EXIF_KEEP = frozenset(
    {0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298, 0x011A, 0x011B, 0x0128}
)
#: Exif sub-IFD: exposure, aperture, ISO, dates and time offsets, focal length,
#: flash, metering, white balance, colour space, lens make and model.
_EXIF_KEEP_SUB = frozenset(
    {
        0x829A, 0x829D, 0x8822, 0x8827, 0x8830, 0x8832, 0x9000, 0x9003, 0x9004,
        0x9010, 0x9011, 0x9012, 0x9201, 0x9202, 0x9203, 0x9204, 0x9205, 0x9206,
        0x9207, 0x9208, 0x9209, 0x920A, 0x9290, 0x9291, 0x9292, 0xA000, 0xA001,
        0xA401, 0xA402, 0xA403, 0xA404, 0xA405, 0xA406, 0xA407, 0xA408, 0xA409,
        0xA40A, 0xA40C, 0xA432, 0xA433, 0xA434,
    }
)  # fmt: skip
_EXIF_VERSION_TAGS = frozenset({0x9000, 0xA000})  # ExifVersion, FlashpixVersion
_EXIF_MAX_TEXT = 256

_TIFF_LOSSLESS = frozenset(
    {"raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits", "tiff_raw_16"}
)


@dataclass(frozen=True)
class Page:
    """One upright page (or animation frame) of an image.

    ``bgr`` is ``HxWx3`` uint8, C-contiguous, after EXIF orientation.
    ``alpha`` is ``HxW`` uint8 or ``None``; it is written back unchanged.
    ``mode`` is the Pillow mode the page is written back in, without alpha
    (``"RGB"``, ``"L"`` or ``"1"``). ``duration_ms`` is an animation frame's
    display time.
    """

    bgr: np.ndarray
    alpha: np.ndarray | None
    mode: str = "RGB"
    duration_ms: int | None = None

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])


@dataclass(frozen=True)
class DecodedImage:
    """A decoded still image and what is needed to write it back faithfully.

    ``exif`` is a new EXIF block of allow-listed plain tags only (no
    orientation, GPS, thumbnail, maker note or private tag), written only
    when ``OutputConfig.strip_metadata`` is off.
    ``bits_reduced`` tells that 16-bit samples were reduced to 8 bits.
    """

    format: str
    pages: tuple[Page, ...]
    icc_profile: bytes | None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    jpeg_subsampling: int | None = None
    jpeg_progressive: bool = False
    webp_lossless: bool = False
    loop: int | None = None
    tiff_compression: str | None = None
    bits_reduced: bool = False


# --------------------------------------------------------------------------- probe


def probe(path: Path, limits: LimitsConfig) -> tuple[int, int, int]:
    """``(width, height, pages)`` of an image from its headers alone.

    Width and height are the first page's, upright (swapped for EXIF
    orientations 5-8). Raises ``PermanentInputError``: ``too_large`` (file
    bytes over ``limits.max_file_bytes``), ``too_many_pixels`` (any page over
    ``limits.max_pixels``), ``too_many_pages`` (over ``limits.max_pages``),
    ``too_many_total_pixels`` (all pages together over
    ``limits.max_total_pixels``),
    ``unsupported_type`` (not an image), ``corrupt``/``truncated`` (headers
    unreadable), plus the reasons of ``sniff.open_regular``. No pixel data is
    decoded.
    """
    with open_regular(path) as f, _input_errors():
        fmt = _sniff_image(f, limits)
        with _open_pillow(f, fmt) as im:
            n = _check_pages(im, fmt, limits)
            im.seek(0)
            w, h = im.size
            if _orientation(im, fmt) >= 5:
                w, h = h, w
            return w, h, n


def _sniff_image(f: BinaryIO, limits: LimitsConfig) -> str:
    size = os.fstat(f.fileno()).st_size
    if size > limits.max_file_bytes:
        raise PermanentInputError("too_large", f"{size} bytes", stage="decode")
    mt = sniff_file(f)
    if mt.kind != "image":
        raise PermanentInputError("unsupported_type", "not an image", stage="decode")
    return mt.format


@contextlib.contextmanager
def _open_pillow(f: BinaryIO, fmt: str) -> Iterator[Image.Image]:
    # Pillow's own bomb check warns above MAX_IMAGE_PIXELS and fails at twice
    # that; ours (per page, from the config) runs right after open. The
    # warning is noise next to our check; the error is mapped to our reason.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        f.seek(0)
        im = Image.open(f, formats=[_PIL_FORMAT[fmt]])
    try:
        yield im
    finally:
        im.close()


def _page_count(im: Image.Image, fmt: str) -> int:
    if fmt not in _MULTI_PAGE:
        return 1
    return int(getattr(im, "n_frames", 1))


def _check_pages(im: Image.Image, fmt: str, limits: LimitsConfig) -> int:
    """Check page count, every page's pixel count and their sum from headers;
    return the count.

    Every page is held decoded at once (and a masked copy of it), so the
    sum is what bounds memory: 40 compressed 4000x4000 pages are a 1 MB file
    and 640 million pixels (``too_many_total_pixels`` over
    ``limits.max_total_pixels``).
    """
    if fmt == "tiff":
        # Walk the IFD chain ourselves so a file with a million pages stops
        # at max_pages + 1 instead of being counted to the end.
        n = 0
        total = 0
        while True:
            try:
                im.seek(n)
            except EOFError:
                break
            n += 1
            if n > limits.max_pages:
                raise PermanentInputError("too_many_pages", f"over {limits.max_pages}", "decode")
            _check_pixels(im.size, limits)
            total += im.size[0] * im.size[1]
            _check_total(total, limits)
        im.seek(0)
        return n
    n = _page_count(im, fmt)
    if n > limits.max_pages:
        raise PermanentInputError("too_many_pages", f"{n} pages", stage="decode")
    _check_pixels(im.size, limits)  # animated WebP frames share the canvas size
    _check_total(n * im.size[0] * im.size[1], limits)
    return n


def _check_total(total: int, limits: LimitsConfig) -> None:
    if total > limits.max_total_pixels:
        raise PermanentInputError(
            "too_many_total_pixels",
            f"over {limits.max_total_pixels} pixels in all pages (limits.max_total_pixels)",
            stage="decode",
        )


def _check_pixels(size: tuple[int, int], limits: LimitsConfig) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise PermanentInputError("corrupt", "zero image size", stage="decode")
    if w * h > limits.max_pixels:
        raise PermanentInputError("too_many_pixels", f"{w * h} pixels", stage="decode")


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """Map every decoder failure to a reason code; messages carry no path."""
    try:
        yield
    except RedactdError:
        raise
    except Image.DecompressionBombError as e:
        raise PermanentInputError("too_many_pixels", stage="decode") from e
    except PermissionError as e:
        raise PermanentInputError("unreadable", "permission denied", stage="decode") from e
    except MemoryError as e:
        raise TransientError("out_of_memory", "decoding") from e
    except EOFError as e:
        raise PermanentInputError("truncated", stage="decode") from e
    except UnidentifiedImageError as e:
        raise PermanentInputError("corrupt", "header not recognised", stage="decode") from e
    except OSError as e:
        if e.errno is not None and e.errno not in (errno.EINVAL,):
            # A real I/O error from the filesystem, not the decoder's verdict.
            raise TransientError("read_failed", errno.errorcode.get(e.errno, "I/O")) from e
        if "truncated" in str(e) or "end of file" in str(e).lower():
            raise PermanentInputError("truncated", stage="decode") from e
        raise PermanentInputError("corrupt", type(e).__name__, stage="decode") from e
    except Exception as e:  # any other decoder failure: the content is bad
        raise PermanentInputError("corrupt", type(e).__name__, stage="decode") from e


# --------------------------------------------------------------------------- decode


def decode(path: Path, limits: LimitsConfig) -> DecodedImage:
    """Decode every page of the image at ``path`` into upright BGR arrays.

    Runs the ``probe`` checks first (no pixels are decoded for an input over
    a limit). Every page is loaded completely; a truncated or corrupt file
    raises ``PermanentInputError`` (``truncated``/``corrupt``), never returns
    partial pixels. Errors carry no path, file name or metadata value.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone flipped Pillow's global: decoding now could hand grey
        # padding to the detector. Refuse rather than mask half an image.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must be False")
    with open_regular(path) as f, _input_errors():
        fmt = _sniff_image(f, limits)
        webp_lossless = _webp_lossless(f) if fmt == "webp" else False
        with _open_pillow(f, fmt) as im:
            n = _check_pages(im, fmt, limits)
            pages: list[Page] = []
            bits_reduced = False
            icc: bytes | None = None
            dpi: tuple[float, float] | None = None
            for i in range(n):
                im.seek(i)
                im.load()
                orientation = _orientation(im, fmt)
                page, reduced = _to_page(im, orientation)
                bits_reduced |= reduced
                if i == 0:
                    icc = _icc_for(im.info.get("icc_profile"), page.mode)
                    dpi = _dpi(im.info.get("dpi"))
                    if dpi is not None and orientation >= 5:  # turned a quarter
                        dpi = (dpi[1], dpi[0])
                pages.append(page)
            im.seek(0)
            return DecodedImage(
                format=fmt,
                pages=tuple(pages),
                icc_profile=icc if all(p.mode == pages[0].mode for p in pages) else None,
                exif=_kept_exif(im) if fmt in ("jpeg", "png", "webp") else None,
                dpi=dpi,
                jpeg_subsampling=_jpeg_subsampling(im) if fmt == "jpeg" else None,
                jpeg_progressive=bool(im.info.get("progressive")) if fmt == "jpeg" else False,
                webp_lossless=webp_lossless,
                loop=int(im.info.get("loop", 0)) if fmt == "webp" and n > 1 else None,
                tiff_compression=str(im.info.get("compression", "raw")) if fmt == "tiff" else None,
                bits_reduced=bits_reduced,
            )


def _orientation(im: Image.Image, fmt: str) -> int:
    """The EXIF (or, for TIFF, the current page's) orientation, 1..8."""
    try:
        # TIFF keeps one orientation tag per page (IFD); getexif() is page 0's.
        tags = im.tag_v2 if fmt == "tiff" else im.getexif()  # type: ignore[attr-defined]
        o = int(tags.get(_ORIENTATION_TAG, 1))
    except (TypeError, ValueError, SyntaxError, OSError, KeyError, struct.error):
        # An unreadable EXIF block is metadata we drop anyway; the pixels
        # are still decodable, so treat the orientation as unknown (upright).
        return 1
    return o if 1 <= o <= 8 else 1


def _orient(a: np.ndarray, o: int) -> np.ndarray:
    """Apply EXIF orientation ``o`` to an ``HxW[xC]`` array (same as ImageOps.exif_transpose)."""
    if o == 2:
        a = a[:, ::-1]
    elif o == 3:
        a = a[::-1, ::-1]
    elif o == 4:
        a = a[::-1, :]
    elif o == 5:
        a = a.swapaxes(0, 1)
    elif o == 6:
        a = np.rot90(a, k=-1)
    elif o == 7:
        a = a.swapaxes(0, 1)[::-1, ::-1]
    elif o == 8:
        a = np.rot90(a, k=1)
    return np.ascontiguousarray(a)


def _to_page(im: Image.Image, orientation: int) -> tuple[Page, bool]:
    """Convert the current frame to a ``Page``; also tell whether bits were reduced."""
    mode = im.mode
    reduced = False
    alpha: np.ndarray | None = None
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode in ("RGBa", "La"):
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
        mode = im.mode
    if mode == "1":
        grey = np.asarray(im.convert("L"))
        out_mode = "1"
    elif mode == "L":
        grey = np.asarray(im)
        out_mode = "L"
    elif mode == "LA":
        la = np.asarray(im)
        grey, alpha = la[..., 0], la[..., 1]
        out_mode = "L"
    elif mode.startswith("I;16") or mode == "I":
        wide = np.asarray(im).astype(np.int64)
        grey = (np.clip(wide, 0, 65535) >> 8).astype(np.uint8)
        out_mode, reduced = "L", True
    elif mode in ("RGB", "RGBX", "RGBA", "CMYK", "YCbCr"):
        if mode == "RGBA":
            rgba = np.asarray(im)
            rgb, alpha = rgba[..., :3], rgba[..., 3]
        else:
            rgb = np.asarray(im.convert("RGB"))
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        return _page(bgr, alpha, "RGB", orientation, im), reduced
    else:
        raise PermanentInputError("unsupported_type", f"pixel mode {mode}", stage="decode")
    bgr = cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2BGR)
    return _page(bgr, alpha, out_mode, orientation, im), reduced


def _page(
    bgr: np.ndarray, alpha: np.ndarray | None, mode: str, orientation: int, im: Image.Image
) -> Page:
    duration = im.info.get("duration")
    return Page(
        bgr=_orient(bgr, orientation),
        alpha=None if alpha is None else _orient(alpha, orientation),
        mode=mode,
        duration_ms=int(duration) if isinstance(duration, (int, float)) else None,
    )


def _icc_for(icc: object, mode: str) -> bytes | None:
    """The ICC profile if it describes the colour space we write, else ``None``."""
    if not isinstance(icc, bytes) or len(icc) < 128:
        return None
    space = icc[16:20]
    if (mode == "RGB" and space == b"RGB ") or (mode in ("L", "1") and space == b"GRAY"):
        return icc
    return None


def _dpi(value: object) -> tuple[float, float] | None:
    if not isinstance(value, tuple) or len(value) != 2:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    if all(math.isfinite(v) and 0 < v < 1e6 for v in (x, y)):
        return (x, y)
    return None


def _jpeg_subsampling(im: Image.Image) -> int | None:
    try:
        s = int(JpegImagePlugin.get_sampling(im))
    except Exception:  # an odd sampling table: let the encoder pick its default
        return None
    return s if s in (0, 1, 2) else None


def _plain(value: Any, tag: int) -> bool:
    """A value that is plain data: short text, numbers, a few of them, or the
    4-byte version tags; never a blob that could hold a picture."""
    if isinstance(value, str):
        return len(value) <= _EXIF_MAX_TEXT
    if isinstance(value, bytes):
        return tag in _EXIF_VERSION_TAGS and len(value) <= 4
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if isinstance(value, tuple):
        return len(value) <= 8 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
    # Pillow's IFDRational is a numbers.Rational, not an int or a float.
    return type(value).__name__ == "IFDRational"


def _kept_exif(im: Image.Image) -> bytes | None:
    """A new EXIF block holding only the allow-listed plain tags (``_EXIF_KEEP``,
    ``_EXIF_KEEP_SUB``) with plain values: no orientation, no GPS, no maker
    note, no thumbnail (IFD1), no private tag (which may hold a whole JPEG)."""
    try:
        src = im.getexif()
        if not src:
            return None
        out = Image.Exif()
        for tag, value in src.items():
            if tag in _EXIF_KEEP and _plain(value, tag):
                out[tag] = value
        sub_src = src.get_ifd(ExifTags.IFD.Exif)
        kept = {t: v for t, v in sub_src.items() if t in _EXIF_KEEP_SUB and _plain(v, t)}
        if kept:
            out.get_ifd(ExifTags.IFD.Exif).update(kept)
        if not out and not kept:
            return None
        return out.tobytes()
    except Exception:  # unreadable EXIF: nothing is kept
        return None


def _webp_lossless(f: BinaryIO) -> bool:
    """True when the WebP's first image chunk is VP8L (lossless)."""
    f.seek(12)
    for _ in range(100000):
        hdr = f.read(8)
        if len(hdr) < 8:
            return False
        fourcc, size = hdr[:4], int.from_bytes(hdr[4:], "little")
        if fourcc == b"VP8L":
            return True
        if fourcc in (b"VP8 ", b"ALPH"):
            return False
        if fourcc == b"ANMF":
            payload = f.read(min(size, 24))
            return payload[16:20] == b"VP8L"
        f.seek(size + (size & 1), io.SEEK_CUR)
    return False


# --------------------------------------------------------------------------- encode


def encode(image: DecodedImage, pages: Sequence[np.ndarray], dst: Path, out: OutputConfig) -> int:
    """Write ``pages`` (masked BGR arrays) as ``image.format`` to the new file ``dst``.

    ``pages`` MUST match ``image.pages`` in number and shape (else
    ``ValueError``). ``dst`` is created exclusively (``O_EXCL``, no symlink
    followed): an existing ``dst`` raises ``FileExistsError`` and is left
    untouched. The file is fsynced before returning its size in bytes; it is
    created with mode 0600 (the caller publishes it with its final mode).

    Metadata: nothing of the input is written except the ICC profile (when
    ``out.keep_icc``), the resolution, and a sanitised EXIF block (only when
    ``out.strip_metadata`` is False). Output is upright, with no orientation
    tag.

    On failure no file is left at ``dst``. Raises
    ``PermanentInputError("encode_failed")`` when the encoder fails,
    ``TransientError("disk_full")`` on ENOSPC/EDQUOT and
    ``TransientError("output_unavailable")`` / ``("write_failed")`` on other
    errors of the destination.
    """
    if len(pages) != len(image.pages):
        raise ValueError(f"{len(pages)} arrays for {len(image.pages)} pages")
    for arr, page in zip(pages, image.pages, strict=True):
        if arr.shape != page.bgr.shape or arr.dtype != np.uint8:
            raise ValueError("a masked page differs in shape or dtype from the decoded page")
    try:
        data = _encode_bytes(image, pages, out)
        _self_check(data, image)
    except RedactdError:
        raise
    except MemoryError as e:
        raise TransientError("out_of_memory", "encoding") from e
    except Exception as e:
        raise PermanentInputError("encode_failed", type(e).__name__, stage="encode") from e
    return _write_exclusive(dst, data)


def _pil_page(page: Page, bgr: np.ndarray) -> Image.Image:
    if page.mode in ("L", "1"):
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if page.alpha is not None:
            return Image.fromarray(np.dstack([grey, page.alpha]), "LA")
        im = Image.fromarray(grey, "L")
        # Error-diffusion dithering keeps untouched black/white pixels exact
        # and turns the mask's greys into a noise pattern.
        return im.convert("1") if page.mode == "1" else im
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if page.alpha is not None:
        return Image.fromarray(np.dstack([rgb, page.alpha]), "RGBA")
    return Image.fromarray(rgb, "RGB")


def _encode_bytes(image: DecodedImage, pages: Sequence[np.ndarray], out: OutputConfig) -> bytes:
    ims = [_pil_page(p, a) for p, a in zip(image.pages, pages, strict=True)]
    kw: dict[str, Any] = {}
    if out.keep_icc and image.icc_profile:
        kw["icc_profile"] = image.icc_profile
    if image.dpi is not None:
        kw["dpi"] = image.dpi
    if not out.strip_metadata and image.exif:
        kw["exif"] = image.exif
    fmt = image.format
    if fmt == "jpeg":
        kw["quality"] = out.jpeg_quality
        kw["progressive"] = image.jpeg_progressive
        if image.jpeg_subsampling is not None and ims[0].mode != "L":
            kw["subsampling"] = image.jpeg_subsampling
    elif fmt == "webp":
        if image.webp_lossless:
            kw["lossless"] = True
        else:
            kw["quality"] = out.webp_quality
        if len(ims) > 1:
            kw["save_all"] = True
            kw["append_images"] = ims[1:]
            kw["duration"] = [p.duration_ms or 100 for p in image.pages]
            kw["loop"] = image.loop or 0
    elif fmt == "tiff":
        kw["compression"] = _tiff_compression(image.tiff_compression, ims)
        if kw["compression"] == "jpeg":
            kw["quality"] = out.jpeg_quality
        if len(ims) > 1:
            kw["save_all"] = True
            kw["append_images"] = ims[1:]
    elif fmt == "bmp":
        kw.pop("icc_profile", None)  # Pillow's BMP writer has no ICC support
        kw.pop("exif", None)
    buf = io.BytesIO()
    ims[0].save(buf, format=_PIL_FORMAT[fmt], **kw)
    return buf.getvalue()


def _tiff_compression(compression: str | None, ims: Sequence[Image.Image]) -> str:
    c = compression or "raw"
    if c in ("group3", "group4") and all(im.mode == "1" for im in ims):
        return c
    if c == "jpeg" and all(im.mode in ("RGB", "L") for im in ims):
        return c
    if c in _TIFF_LOSSLESS and c != "tiff_raw_16":
        return c
    # A codec we cannot (or should not) write for these pages: stay lossless.
    return "tiff_adobe_deflate"


def _self_check(data: bytes, image: DecodedImage) -> None:
    """Re-read the written headers: same format, size and page count, or fail."""
    with Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[image.format]]) as im:
        n = _page_count(im, image.format)
        first = image.pages[0]
        if im.size != (first.width, first.height) or n != len(image.pages):
            raise ValueError("encoded image does not match the pages given")


def _write_exclusive(dst: Path, data: bytes) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(dst, flags, 0o600)
    except FileExistsError:
        raise
    except OSError as e:
        raise _output_error(e) from e
    try:
        fsutil.write_all(fd, data)
        os.fsync(fd)
    except BaseException as e:
        os.close(fd)
        with contextlib.suppress(OSError):
            dst.unlink()
        if isinstance(e, OSError):
            raise _output_error(e) from e
        raise
    os.close(fd)
    return len(data)


def _output_error(e: OSError) -> RedactdError:
    code = errno.errorcode.get(e.errno or 0, "I/O error")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransientError("disk_full", code)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EBUSY, errno.EROFS, errno.ETXTBSY):
        return TransientError("output_unavailable", code)
    return TransientError("write_failed", code)
