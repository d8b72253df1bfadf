"""Masking: make the pixels of found objects unrecognisable, in place.

Every region is masked from the ORIGINAL pixels of its padded box, never from
pixels another region has already changed, and the results are written
together at the end: where regions overlap, the coarser mask wins (a solid
fill over any other; among equals the later region), which is still a mask
(no original pixel survives anywhere in the union).

Methods (``MaskConfig.method``):

* ``mosaic`` (default): average the masked area down to a grid of cells,
  ``blocks`` cells along the DETECTED box's longer side (the padding around
  it gets cells of the same size), then blur the cell grid with a gaussian
  about one cell wide. What survives is a handful of smooth colour
  averages: no detail is left for a deblurring or deblocking filter to
  bring back (a plain gaussian is a linear filter a deconvolution can partly
  undo; averaging cells and re-quantising to 8 bits is not).
* ``blur``: gaussian blur whose ±3 sigma span is ``blur_strength`` times the
  box's longer side, so big faces are blurred as hard as small ones.
* ``pixelate``: the cell averages alone, with visible block edges.
* ``solid``: fill with ``color`` (B, G, R).

Geometry (``mask_area``): each side of the detected box grows by ``padding``
times the box's width (height) plus ``padding_px``, capped at ``max_padding``
times the box's width (height) and at ``max_padding_frame`` times the
frame's shorter side: small faces get a wide margin for their loose boxes,
a close-up portrait's face does not swallow the photo.

Shapes: ``box`` fills the padded box; ``rounded`` the padded box with its
corners rounded off by quarter-ellipses of the padding's size (so the
detected box itself is always covered whole, only the padding's corners are
spared); ``ellipse`` the ellipse inscribed in the padded box.

A box with a non-finite coordinate is a detector (or tracker) fault, not an
empty region: ``apply_masks`` raises ``PermanentInputError``
(``detector_failed``) so the job fails closed instead of delivering an
image with that face unmasked.

A region may instead carry a ``polygon`` (extra regions of per-file
instructions): exactly the pixels the polygon touches are masked (rounded
outwards), with no padding. A region's ``protect`` boxes (the people a
``keep`` instruction leaves visible) are left out of its PADDING only: the
pixels of the region's own box are always masked, whatever ``protect`` says,
so keeping one person can never uncover a detected neighbour.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from redactd.core.config import MaskConfig
from redactd.core.errors import PermanentInputError
from redactd.core.types import Box

#: Scale at which the mosaic's cell grid is blurred: each cell becomes this
#: many pixels before the gaussian, then the result is resized to the box.
#: Blurring at a small fixed scale costs the same for a 20 px and a 2000 px box.
_CELL_PX = 8

#: Smallest side (pixels) a padded box is grown to: masking a 1 px box must
#: still mix it with its neighbours, or the "mask" would be the pixel itself.
_MIN_SIDE = 4.0

#: Above this sigma (pixels) a gaussian blur runs on a downscaled copy.
_MAX_DIRECT_SIGMA = 6.0


@dataclass(frozen=True)
class MaskRegion:
    """One area to mask (``box`` in image pixels) and how.

    ``polygon``: vertices in the same pixels; when set, exactly the pixels
    the polygon touches are masked (``box`` is only used when it is empty:
    give the polygon's bounding box) and ``mask.padding`` / ``mask.shape``
    do not apply. ``protect``: boxes the padding must not write into; the
    pixels of ``box`` itself (rounded outwards) are masked regardless.
    """

    box: Box
    mask: MaskConfig
    polygon: tuple[tuple[float, float], ...] | None = None
    protect: tuple[Box, ...] = ()


@dataclass(frozen=True)
class _Patch:
    """A masked rectangle ready to be written: where, what, and which pixels."""

    x1: int
    y1: int
    pixels: np.ndarray  # h x w x C
    inside: np.ndarray | None  # h x w bool, None = the whole rectangle
    strength: float  # how coarse the mask is (pixels of equivalent blur; solid: inf)


def apply_masks(
    image: np.ndarray,
    regions: Sequence[MaskRegion],
    frame_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Mask every region of ``image`` (``HxWx3`` BGR or ``HxWx1``, uint8) in place.

    Returns ``image``. Boxes are padded (``mask_area``), then clipped to the
    image; a box wholly outside or empty is skipped. Boxes of any size (down
    to a single pixel) are masked: a padded box is at least 4 px on each side.
    ``frame_size`` (width, height): the whole frame ``image`` is a crop of,
    for the padding cap relative to the frame (default: ``image`` itself).

    Raises ``PermanentInputError`` (``detector_failed``) for a box with a
    non-finite coordinate: fail closed, never a silently unmasked face.
    """
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError("apply_masks expects an HxWx3 or HxWx1 uint8 array")
    h, w = image.shape[:2]
    fw, fh = frame_size if frame_size is not None else (w, h)
    for r in regions:
        if r.polygon is None and not all(
            math.isfinite(c) for c in (r.box.x1, r.box.y1, r.box.x2, r.box.y2)
        ):
            raise PermanentInputError("detector_failed", "non-finite box", stage="mask")
    patches = [p for r in regions if (p := _mask_patch(image, r, w, h, fw, fh)) is not None]
    # Where masks overlap the coarsest wins (written last; stable among
    # equals): a small false box inside a face must not put finer cells
    # over part of that face's mosaic.
    for p in sorted(patches, key=lambda p: p.strength):
        ph, pw = p.pixels.shape[:2]
        view = image[p.y1 : p.y1 + ph, p.x1 : p.x1 + pw]
        if p.inside is None:
            view[...] = p.pixels
        else:
            view[p.inside] = p.pixels[p.inside]
    return image


def padding_of(box: Box, cfg: MaskConfig, frame_w: int, frame_h: int) -> tuple[float, float]:
    """Growth (x, y) of each side of ``box``, in pixels (see the module doc)."""
    cap = cfg.max_padding_frame * min(frame_w, frame_h)
    px = min(cfg.padding * box.width + cfg.padding_px, cfg.max_padding * box.width, cap)
    py = min(cfg.padding * box.height + cfg.padding_px, cfg.max_padding * box.height, cap)
    return max(px, 0.0), max(py, 0.0)


def mask_area(box: Box, cfg: MaskConfig, frame_w: int, frame_h: int) -> Box:
    """The area a detection's mask covers in a ``frame_w`` x ``frame_h`` frame
    (not clipped to it): the padded box, at least 4 px on each side."""
    px, py = padding_of(box, cfg, frame_w, frame_h)
    return _at_least(Box(box.x1 - px, box.y1 - py, box.x2 + px, box.y2 + py), _MIN_SIDE)


def cell_size(box: Box, cfg: MaskConfig) -> float:
    """Side (pixels) of a mosaic or pixelate cell for a detected ``box``."""
    return _cell_size(max(box.width, box.height), cfg.blocks)


def _mask_patch(
    image: np.ndarray, region: MaskRegion, w: int, h: int, fw: int, fh: int
) -> _Patch | None:
    cfg = region.mask
    box = region.box
    if region.polygon is not None:
        return _polygon_patch(image, region.polygon, cfg, w, h)
    if box.width <= 0 or box.height <= 0:
        return None
    px, py = padding_of(box, cfg, fw, fh)
    padded = _at_least(Box(box.x1 - px, box.y1 - py, box.x2 + px, box.y2 + py), _MIN_SIDE)
    x1, y1, x2, y2 = padded.int_bounds(w, h)
    if x2 <= x1 or y2 <= y1:
        return None
    crop = image[y1:y2, x1:x2]
    # Cells follow the detected box (blur: the whole masked area).
    pixels = _masked_pixels(
        crop,
        cfg,
        max(padded.width, padded.height),
        cell_size(box, cfg),
    )
    if cfg.shift_levels > 0 and cfg.method in ("mosaic", "pixelate"):
        bx1, by1, bx2, by2 = box.int_bounds(w, h)
        inner = (slice(max(by1 - y1, 0), by2 - y1), slice(max(bx1 - x1, 0), bx2 - x1))
        pixels = _shifted(crop, pixels, inner, cfg.shift_levels)
    inside = None
    if cfg.shape == "ellipse":
        inside = _ellipse(padded, x1, y1, crop.shape[1], crop.shape[0])
    elif cfg.shape == "rounded":
        inside = _rounded(
            padded,
            padded.width - box.width,
            padded.height - box.height,
            x1,
            y1,
            crop.shape[1],
            crop.shape[0],
        )
    if region.protect:
        allowed = _outside_protected(box, region.protect, x1, y1, x2, y2)
        inside = allowed if inside is None else inside & allowed
    return _Patch(x1, y1, pixels, inside, _strength(cfg, max(padded.width, padded.height), box))


def _strength(cfg: MaskConfig, full: float, box: Box) -> float:
    """Equivalent blur (pixels) of a mask, to order overlapping masks: the
    mosaic is about a gaussian of 0.67 cell, a solid fill hides everything."""
    if cfg.method == "solid":
        return math.inf
    if cfg.method == "blur":
        return max(cfg.blur_strength * full / 6.0, 1.0)
    return 0.67 * cell_size(box, cfg)


def _outside_protected(
    box: Box, protect: Sequence[Box], x1: int, y1: int, x2: int, y2: int
) -> np.ndarray:
    """Pixels of the crop ``[x1, x2) x [y1, y2)`` the padding may write: every
    pixel outside the protected boxes, and every pixel of ``box`` itself."""
    allowed = np.ones((y2 - y1, x2 - x1), dtype=bool)
    for p in protect:
        px1, py1, px2, py2 = p.int_bounds(x2, y2)  # rounded outwards: protect more
        px1, py1 = max(px1, x1), max(py1, y1)
        if px2 > px1 and py2 > py1:
            allowed[py1 - y1 : py2 - y1, px1 - x1 : px2 - x1] = False
    # The box itself, rounded outwards, is never protected: written after the
    # protected areas so no protect box can take one of its pixels.
    bx1, by1, bx2, by2 = box.int_bounds(x2, y2)
    bx1, by1 = max(bx1, x1), max(by1, y1)
    if bx2 > bx1 and by2 > by1:
        allowed[by1 - y1 : by2 - y1, bx1 - x1 : bx2 - x1] = True
    return allowed


def _polygon_patch(
    image: np.ndarray, polygon: Sequence[tuple[float, float]], cfg: MaskConfig, w: int, h: int
) -> _Patch | None:
    pts = np.asarray(polygon, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 3 or not np.isfinite(pts).all():
        return None
    (bx1, by1), (bx2, by2) = pts.min(axis=0), pts.max(axis=0)
    # The mask is computed over at least _MIN_SIDE pixels, so a sliver of a
    # polygon still mixes with its neighbours; only the polygon's pixels are written.
    area = _at_least(Box(float(bx1), float(by1), float(bx2), float(by2)), _MIN_SIDE)
    x1, y1, x2, y2 = area.int_bounds(w, h)
    if x2 <= x1 or y2 <= y1:
        return None
    crop = image[y1:y2, x1:x2]
    inside = _polygon_pixels(pts, x1, y1, x2 - x1, y2 - y1)
    if not inside.any():
        return None
    full = max(area.width, area.height)
    pixels = _masked_pixels(crop, cfg, full, _cell_size(full, cfg.blocks))
    return _Patch(x1, y1, pixels, inside, _strength(cfg, full, area))


#: Rows rasterised at once (bounds the temporary rows x edges arrays).
_ROW_CHUNK = 256


def _polygon_pixels(pts: np.ndarray, x0: int, y0: int, cw: int, ch: int) -> np.ndarray:
    """Pixels of the ``cw`` x ``ch`` crop at ``(x0, y0)`` that the polygon
    touches: exactly those whose unit square meets the closed polygon, i.e.
    pixels whose centre lies inside (even-odd rule) plus pixels its outline
    passes through. No pixel the polygon does not reach is included.
    """
    p = np.asarray(pts, dtype=np.float64) - [x0, y0]
    ax, ay = p[:, 0][None, :], p[:, 1][None, :]
    q = np.roll(p, -1, axis=0)
    bx, by = q[:, 0][None, :], q[:, 1][None, :]
    ylo, yhi = np.minimum(ay, by), np.maximum(ay, by)
    flat = by == ay
    out = np.zeros((ch, cw), dtype=bool)
    for r0 in range(0, ch, _ROW_CHUNK):
        r1 = min(ch, r0 + _ROW_CHUNK)
        rows = np.arange(r0, r1, dtype=np.float64)[:, None]
        runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        with np.errstate(divide="ignore", invalid="ignore"):
            # Interior: crossings of the scanline through the pixel centres.
            yc = rows + 0.5
            xs = np.where((ay > yc) != (by > yc), ax + (yc - ay) * (bx - ax) / (by - ay), np.inf)
            xs.sort(axis=1)
            xb = xs[:, 1::2]
            xa = xs[:, 0::2][:, : xb.shape[1]]
            runs.append((np.ceil(xa - 0.5), np.floor(xb - 0.5) + 1.0, np.isfinite(xb)))
            # Outline: each edge's x extent inside the row's band (r, r + 1).
            touch = (ylo < rows + 1.0) & (yhi > rows)
            ya, yb = np.maximum(ylo, rows), np.minimum(yhi, rows + 1.0)
            xa2 = ax + (ya - ay) * (bx - ax) / (by - ay)
            xb2 = ax + (yb - ay) * (bx - ax) / (by - ay)
            xl = np.where(flat, np.minimum(ax, bx), np.minimum(xa2, xb2))
            xh = np.where(flat, np.maximum(ax, bx), np.maximum(xa2, xb2))
            runs.append((np.floor(xl), np.ceil(xh), touch))
        diff = np.zeros((r1 - r0, cw + 1), dtype=np.int32)
        for c1, c2, valid in runs:
            c1 = np.clip(np.nan_to_num(c1, nan=0.0, posinf=cw, neginf=0), 0, cw)
            c2 = np.clip(np.nan_to_num(c2, nan=0.0, posinf=cw, neginf=0), 0, cw)
            ok = valid & (c2 > c1)
            ri = np.broadcast_to(np.arange(r1 - r0)[:, None], ok.shape)[ok]
            np.add.at(diff, (ri, c1[ok].astype(np.intp)), 1)
            np.add.at(diff, (ri, c2[ok].astype(np.intp)), -1)
        out[r0:r1] = np.cumsum(diff, axis=1)[:, :cw] > 0
    return out


def _masked_pixels(crop: np.ndarray, cfg: MaskConfig, full: float, cell: float) -> np.ndarray:
    """The crop masked with ``cfg``'s method; ``full`` is the longer side of the
    whole masked area (blur size follows it, not the clipped crop), ``cell``
    the mosaic / pixelate cell side."""
    # Sizes of the whole padded box, even where the image clips it: a face
    # cut by the frame edge gets the same cell size as if it were whole.
    if cfg.method == "solid":
        color = np.asarray(cfg.color, dtype=np.float64)
        if crop.shape[2] == 1:  # grey: the colour's brightness (BT.601, B G R order)
            color = np.asarray([color @ np.asarray([0.114, 0.587, 0.299])])
        pixels = np.empty_like(crop)
        pixels[...] = np.clip(np.rint(color), 0, 255).astype(np.uint8)
    elif cfg.method == "blur":
        pixels = _blur(crop, sigma=cfg.blur_strength * full / 6.0)
    elif cfg.method == "pixelate":
        pixels = _pixelate(crop, cell=cell, smooth=False)
    else:
        pixels = _pixelate(crop, cell=cell, smooth=True)
    return pixels


#: Luma levels within which a pixel counts as kept by a mask (the strict rule
#: of ``redactd.evaluation.pixels``: changed means more than 10 levels).
_KEPT_LEVELS = 10


def _shifted(
    crop: np.ndarray, pixels: np.ndarray, inner: tuple[slice, slice], most: int
) -> np.ndarray:
    """The mosaic ``pixels`` made brighter or darker by one offset of at most
    ``most`` luma levels, the offset that leaves the fewest of the detected
    box's detail pixels (``inner``) within ``_KEPT_LEVELS`` of their
    original luma.

    A one-cell mosaic is the face's mean colour: the third of the face's
    edges and features whose luma lies near that mean come through unchanged
    in value. One offset for the whole region is a single number taken from
    the face's histogram: it adds no spatial information, so the mask stays
    as hard to undo as before, and the mosaic still reads as a plain patch.
    """
    if pixels.shape[2] == 1:
        y_in = crop[..., 0].astype(np.int16)
        y_out = pixels[..., 0].astype(np.int16)
    else:
        y_in = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.int16)
        y_out = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY).astype(np.int16)
    yi, yo = y_in[inner], y_out[inner]
    if yi.size == 0:
        return pixels
    # Detail pixels as the strict rule picks them: moved by a box blur of half
    # the box's size; a flat box is judged on all its pixels.
    kh, kw = max(1, yi.shape[0] // 2), max(1, yi.shape[1] // 2)
    soft = cv2.blur(yi.astype(np.float32), (kw, kh), borderType=cv2.BORDER_REFLECT)
    detail = np.abs(yi - soft) > _KEPT_LEVELS
    d = (yi - yo)[detail] if detail.mean() >= 0.1 else (yi - yo).ravel()
    span = most + _KEPT_LEVELS
    hist = np.bincount(np.clip(d, -span, span) + span, minlength=2 * span + 1)
    # kept[k]: pixels within _KEPT_LEVELS of offset k - most.
    csum = np.concatenate(([0], np.cumsum(hist)))
    offsets = np.arange(-most, most + 1)
    lo = offsets - _KEPT_LEVELS + span
    kept = csum[lo + 2 * _KEPT_LEVELS + 1] - csum[lo]
    # Fewest kept; among equals the smallest offset (closest to the mean).
    best = int(offsets[np.lexsort((np.abs(offsets), kept))[0]])
    if best == 0:
        return pixels
    return np.clip(pixels.astype(np.int16) + best, 0, 255).astype(np.uint8)


def _at_least(box: Box, side: float) -> Box:
    """Grow ``box`` about its centre so each side is at least ``side``."""
    cx, cy = box.center
    hw, hh = max(box.width, side) / 2.0, max(box.height, side) / 2.0
    return Box(cx - hw, cy - hh, cx + hw, cy + hh)


def _cell_size(full: float, blocks: int) -> float:
    # At least 2 px per cell, so a tiny box still loses its pixels to averaging.
    return max(2.0, full / blocks)


def _pixelate(crop: np.ndarray, cell: float, smooth: bool) -> np.ndarray:
    """Cell averages of ``crop``; ``smooth`` blurs the grid about one cell wide."""
    ch, cw = crop.shape[:2]
    nx = max(1, round(cw / cell))
    ny = max(1, round(ch / cell))
    cells = cv2.resize(crop, (nx, ny), interpolation=cv2.INTER_AREA)
    if not smooth:
        return _as_crop(cv2.resize(cells, (cw, ch), interpolation=cv2.INTER_NEAREST), crop)
    grid = cv2.resize(cells, (nx * _CELL_PX, ny * _CELL_PX), interpolation=cv2.INTER_NEAREST)
    grid = _gaussian(grid, _CELL_PX * 0.6)
    return _as_crop(cv2.resize(grid, (cw, ch), interpolation=cv2.INTER_LINEAR), crop)


def _blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with ``sigma`` in crop pixels, computed only from the crop."""
    ch, cw = crop.shape[:2]
    sigma = max(sigma, 1.0)
    if sigma <= _MAX_DIRECT_SIGMA:
        return _as_crop(_gaussian(crop, sigma), crop)
    # A large kernel on a downscaled copy: same result to the eye, a fraction
    # of the cost. The downscale itself averages, which only removes more.
    f = _MAX_DIRECT_SIGMA / sigma
    sw, sh = max(1, math.ceil(cw * f)), max(1, math.ceil(ch * f))
    small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
    small = _gaussian(small, _MAX_DIRECT_SIGMA)
    return _as_crop(cv2.resize(small, (cw, ch), interpolation=cv2.INTER_LINEAR), crop)


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a uint8 image, edges replicated.

    A separable filter with a cached kernel, not ``cv2.GaussianBlur``: for
    uint8 input OpenCV builds a bit-exact fixed-point kernel on every call,
    which made a 16x16 mosaic grid cost ~85 us (most of masking the ~50 low-score
    boxes of a typical image); this costs ~15 us. The result differs from
    ``GaussianBlur``'s by at most one grey level.
    """
    k = _gaussian_kernel(round(sigma, 2))
    return cv2.sepFilter2D(img, -1, k, k, borderType=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=256)
def _gaussian_kernel(sigma: float) -> np.ndarray:
    # OpenCV's own size rule for 8-bit images: +-3 sigma, odd.
    size = max(3, round(sigma * 6 + 1) | 1)
    return cv2.getGaussianKernel(size, sigma, cv2.CV_32F)


def _as_crop(a: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing channel axis of size 1; put it back."""
    return a.reshape(crop.shape)


def _ellipse(box: Box, x0: int, y0: int, cw: int, ch: int) -> np.ndarray:
    """Pixels of the crop whose centres lie in the ellipse inscribed in ``box``."""
    cx, cy = box.center
    ax, ay = max(box.width / 2.0, 0.5), max(box.height / 2.0, 0.5)
    xs = (np.arange(cw, dtype=np.float32) + x0 + 0.5 - cx) / ax
    ys = (np.arange(ch, dtype=np.float32) + y0 + 0.5 - cy) / ay
    inside = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
    return np.asarray(inside)


def _rounded(box: Box, rx: float, ry: float, x0: int, y0: int, cw: int, ch: int) -> np.ndarray:
    """Pixels of the crop whose centres lie in ``box`` with its corners rounded
    by quarter-ellipses whose radii are half of ``rx``, ``ry`` (the padding of
    both sides together: one side's padding), at most half the box: so the
    inner (detected) box stays wholly inside."""
    rx = min(max(rx / 2.0, 0.0), box.width / 2.0)
    ry = min(max(ry / 2.0, 0.0), box.height / 2.0)
    xs = np.arange(cw, dtype=np.float32) + x0 + 0.5
    ys = np.arange(ch, dtype=np.float32) + y0 + 0.5
    # Distance past the inner rectangle (box shrunk by the radii), per axis.
    dx = np.maximum(np.maximum(box.x1 + rx - xs, xs - (box.x2 - rx)), 0.0)
    dy = np.maximum(np.maximum(box.y1 + ry - ys, ys - (box.y2 - ry)), 0.0)
    inx = (xs >= box.x1) & (xs <= box.x2)
    iny = (ys >= box.y1) & (ys <= box.y2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ex = np.where(rx > 0, dx / max(rx, 1e-9), 0.0) ** 2
        ey = np.where(ry > 0, dy / max(ry, 1e-9), 0.0) ** 2
    inside = (ey[:, None] + ex[None, :] <= 1.0) & iny[:, None] & inx[None, :]
    return np.asarray(inside)
