"""Masking: make the pixels of found objects unrecognisable, in place.

Every region is masked from the ORIGINAL pixels of its padded box, never from
pixels another region has already changed, and the results are written
together at the end: where regions overlap, the later region's mask wins,
which is still a mask (no original pixel survives anywhere in the union).

Methods (``MaskConfig.method``):

* ``mosaic`` (default): average the box down to a grid of cells,
  ``blocks`` cells along its longer side, then blur the cell grid with a
  gaussian about one cell wide. What survives is a handful of smooth colour
  averages: no detail is left for a deblurring or deblocking filter to
  bring back (a plain gaussian is a linear filter a deconvolution can partly
  undo; averaging cells and re-quantising to 8 bits is not).
* ``blur``: gaussian blur whose ±3 sigma span is ``blur_strength`` times the
  box's longer side, so big faces are blurred as hard as small ones.
* ``pixelate``: the cell averages alone, with visible block edges.
* ``solid``: fill with ``color`` (B, G, R).

Shapes: ``box`` fills the padded box; ``ellipse`` the ellipse inscribed in
it. Padding grows each side by ``padding`` times the box's own size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from redactd.config import MaskConfig
from redactd.types import Box

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
    """One area to mask (``box`` in upright image pixels) and how."""

    box: Box
    mask: MaskConfig


@dataclass(frozen=True)
class _Patch:
    """A masked rectangle ready to be written: where, what, and which pixels."""

    x1: int
    y1: int
    pixels: np.ndarray  # h x w x C
    inside: np.ndarray | None  # h x w bool, None = the whole rectangle


def apply_masks(image: np.ndarray, regions: Sequence[MaskRegion]) -> np.ndarray:
    """Mask every region of ``image`` (``HxWx3`` BGR or ``HxWx1``, uint8) in place.

    Returns ``image``. Boxes are padded, then clipped to the image; a box
    wholly outside, empty or with non-finite coordinates is skipped. Boxes of
    any size (down to a single pixel) are masked: a padded box is at least
    4 px on each side.
    """
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError("apply_masks expects an HxWx3 or HxWx1 uint8 array")
    h, w = image.shape[:2]
    patches = [p for r in regions if (p := _mask_patch(image, r, w, h)) is not None]
    for p in patches:
        ph, pw = p.pixels.shape[:2]
        view = image[p.y1 : p.y1 + ph, p.x1 : p.x1 + pw]
        if p.inside is None:
            view[...] = p.pixels
        else:
            view[p.inside] = p.pixels[p.inside]
    return image


def _mask_patch(image: np.ndarray, region: MaskRegion, w: int, h: int) -> _Patch | None:
    cfg = region.mask
    box = region.box
    coords = (box.x1, box.y1, box.x2, box.y2)
    if not all(math.isfinite(c) for c in coords) or box.width <= 0 or box.height <= 0:
        return None
    padded = _at_least(box.pad(cfg.padding), _MIN_SIDE)
    x1, y1, x2, y2 = padded.int_bounds(w, h)
    if x2 <= x1 or y2 <= y1:
        return None
    crop = image[y1:y2, x1:x2]
    # Sizes of the whole padded box, even where the image clips it: a face
    # cut by the frame edge gets the same cell size as if it were whole.
    full = max(padded.width, padded.height)
    if cfg.method == "solid":
        color = np.asarray(cfg.color, dtype=np.float64)
        if crop.shape[2] == 1:  # grey: the colour's brightness (BT.601, B G R order)
            color = np.asarray([color @ np.asarray([0.114, 0.587, 0.299])])
        pixels = np.empty_like(crop)
        pixels[...] = np.clip(np.rint(color), 0, 255).astype(np.uint8)
    elif cfg.method == "blur":
        pixels = _blur(crop, sigma=cfg.blur_strength * full / 6.0)
    elif cfg.method == "pixelate":
        pixels = _pixelate(crop, cell=_cell_size(full, cfg.blocks), smooth=False)
    else:
        pixels = _pixelate(crop, cell=_cell_size(full, cfg.blocks), smooth=True)
    if cfg.shape == "ellipse":
        return _Patch(x1, y1, pixels, _ellipse(padded, x1, y1, crop.shape[1], crop.shape[0]))
    return _Patch(x1, y1, pixels, None)


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
    grid = cv2.GaussianBlur(grid, (0, 0), sigmaX=_CELL_PX * 0.6, borderType=cv2.BORDER_REPLICATE)
    return _as_crop(cv2.resize(grid, (cw, ch), interpolation=cv2.INTER_LINEAR), crop)


def _blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with ``sigma`` in crop pixels, computed only from the crop."""
    ch, cw = crop.shape[:2]
    sigma = max(sigma, 1.0)
    if sigma <= _MAX_DIRECT_SIGMA:
        out = cv2.GaussianBlur(crop, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
        return _as_crop(out, crop)
    # A large kernel on a downscaled copy: same result to the eye, a fraction
    # of the cost. The downscale itself averages, which only removes more.
    f = _MAX_DIRECT_SIGMA / sigma
    sw, sh = max(1, math.ceil(cw * f)), max(1, math.ceil(ch * f))
    small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(
        small, (0, 0), sigmaX=_MAX_DIRECT_SIGMA, borderType=cv2.BORDER_REPLICATE
    )
    return _as_crop(cv2.resize(small, (cw, ch), interpolation=cv2.INTER_LINEAR), crop)


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
