"""Deterministic synthetic plate scenes (no third-party image is committed)."""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_plate(h: int = 480, w: int = 640) -> np.ndarray:
    """A BGR scene: gradient background, a red car body, a white plate reading ``ABC 1234``."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (60 + 80 * xx / w).astype(np.uint8)
    img[..., 1] = (70 + 60 * yy / h).astype(np.uint8)
    img[..., 2] = 90
    cv2.rectangle(img, (120, 140), (520, 420), (40, 40, 160), -1)  # car body
    cv2.rectangle(img, (250, 300), (390, 340), (235, 235, 235), -1)  # plate
    cv2.rectangle(img, (250, 300), (390, 340), (20, 20, 20), 2)
    cv2.putText(
        img, "ABC 1234", (258, 331), cv2.FONT_HERSHEY_SIMPLEX, 0.75, (10, 10, 10), 2, cv2.LINE_AA
    )
    return img


#: The plate's box in ``synthetic_plate()``.
SYNTHETIC_PLATE_BOX = (250, 300, 391, 341)


def caption_scene(h: int = 480, w: int = 800) -> np.ndarray:
    """Plate-looking text that is not a plate: a dark poster with short white captions."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (40 + 30 * yy / h).astype(np.uint8)
    img[..., 1] = (30 + 20 * xx / w).astype(np.uint8)
    img[..., 2] = 50
    for i, text in enumerate(("SALE 2024", "OPEN 24H", "EXIT B12")):
        cv2.putText(
            img, text, (60, 120 + 130 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (240, 240, 240), 3,
            cv2.LINE_AA,
        )
    cv2.putText(
        img, "2026-12-02 06:25:13 CAM 3", (420, 460), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
        (255, 255, 255), 1, cv2.LINE_AA,
    )
    return img
