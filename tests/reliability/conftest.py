"""Fixtures for the daemon reliability tests: real subprocesses, cleaned up.

Every daemon started through ``daemons`` is killed at teardown, and a test
fails if it leaves a thread running in the test process.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import SHARED
from tests.helpers.media import Labelled, read_labels
from tests.helpers.service import Daemon


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in left:
        t.join(2.0)
    left = [t.name for t in left if t.is_alive()]
    assert not left, f"test leaked threads: {left}"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make daemons; all of them are killed when the test ends."""
    made: list[Daemon] = []

    def make(config: Path, name: str = "daemon", **kw: object) -> Daemon:
        d = Daemon(config=config, log_path=tmp_path / f"{name}.log", **kw)  # type: ignore[arg-type]
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture(scope="session")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-model cache for all starts (each start recompiles otherwise)."""
    return tmp_path_factory.mktemp("ovcache")


def pick_face_images(n: int, min_face: int = 48, max_bytes: int = 250_000) -> list[Labelled]:
    """Deterministic choice of small real photos with at least one big labelled face.

    The Kaggle mask set (about 400 px wide) keeps each real-model job short
    on a loaded 2-core machine; recall on small faces is not under test here.
    """
    assert SHARED is not None
    chosen = []
    for item in read_labels(SHARED / "eval" / "faces_mask_kaggle"):
        if item.path.stat().st_size > max_bytes:
            continue
        if not any(w >= min_face and h >= min_face for _x, _y, w, h in item.faces):
            continue
        chosen.append(item)
        if len(chosen) == n:
            break
    return chosen


@pytest.fixture
def face_images(tmp_path: Path) -> list[tuple[Path, Labelled | None]]:
    """~15 real labelled face images (``../shared``), else variants of the one
    real portrait every install has (matplotlib's sample photo of Grace Hopper,
    its face box labelled here), so a masking check never checks nothing."""
    if SHARED is not None:
        return [(item.path, item) for item in pick_face_images(15)]
    return portrait_variants(tmp_path / "portraits", 15)


#: Grace Hopper's face in matplotlib's ``grace_hopper.jpg`` (512x600): x, y, w, h.
PORTRAIT_FACE = (174, 128, 184, 206)


def portrait_variants(folder: Path, n: int) -> list[tuple[Path, Labelled | None]]:
    """``n`` JPEGs of the packaged portrait (mirrored every other one, each at
    another quality, so no two files are equal), with the face box labelled."""
    import matplotlib.cbook

    src = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert src is not None and src.shape[:2] == (600, 512)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, Labelled | None]] = []
    x, y, w, h = PORTRAIT_FACE
    for i in range(n):
        img, box = (cv2.flip(src, 1), (512 - x - w, y, w, h)) if i % 2 else (src, PORTRAIT_FACE)
        p = folder / f"portrait_{i:03d}.jpg"
        assert cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 70 + i])
        out.append((p, Labelled(p, 512, 600, (box,), ())))
    return out


def small_jpeg(path: Path, seed: int, size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    img[0, 0] = (10, 20, 30)  # never one of the fake detector's trigger colours
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    path.write_bytes(buf.tobytes())


def coloured_jpeg(path: Path, bgr: tuple[int, int, int], size: int = 64) -> None:
    """An image whose top-left pixel steers the fake detector (lossless: PNG data)."""
    img = np.full((size, size, 3), 128, np.uint8)
    img[:8, :8] = bgr
    ok, buf = cv2.imencode(".png", img)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def copy_in(src: Path, dst: Path) -> None:
    """Drop a file into inbound the way a well-behaved writer does (write, then rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".incoming-{secrets.token_hex(4)}")  # a dotfile: ignored
    shutil.copyfile(src, tmp)
    tmp.rename(dst)


def changed_boxes(
    original: Path, output: Path, boxes: tuple[tuple[int, int, int, int], ...], min_side: int = 48
) -> tuple[int, int]:
    """(masked, total) over the labelled boxes of at least ``min_side`` pixels.

    A box counts as masked when its pixels changed far beyond re-encoding
    noise (mean absolute difference over 8 grey levels).
    """
    a = cv2.imread(str(original), cv2.IMREAD_COLOR)
    b = cv2.imread(str(output), cv2.IMREAD_COLOR)
    assert a is not None and b is not None and a.shape == b.shape
    masked = total = 0
    for x, y, w, h in boxes:
        if w < min_side or h < min_side:
            continue
        total += 1
        diff = np.abs(a[y : y + h, x : x + w].astype(np.int16) - b[y : y + h, x : x + w])
        if float(diff.mean()) > 8.0:
            masked += 1
    return masked, total
