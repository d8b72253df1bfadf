"""Small pictures for the masking tests and how to tell what a mask changed."""

from __future__ import annotations

import numpy as np


def textured(h: int = 200, w: int = 300, seed: int = 0) -> np.ndarray:
    """Fine random texture over a gradient: detail a weak mask would keep."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.int16)
    img += np.linspace(-60, 60, w, dtype=np.int16)[None, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel: does any channel differ?"""
    return np.any(a != b, axis=-1)
