"""Calibration inputs for INT8 quantization: exactly what the detector's network sees.

``redactd models quantize`` calibrates on the operator's own footage: a
folder of images and/or videos. INT8 ranges fitted to other inputs than the
ones the model meets at run time lose faces, so every calibration input goes
through the run-time path:

* decoding as the pipeline does it: ``media.image.decode`` (EXIF orientation
  applied; the first page of a multi-page file) or ``media.video`` frames
  turned upright by their display matrix;
* the multi-scale plan of the profile's tiling for the model's class
  (``detect.multiscale.plan`` / ``crop``: the coarse pass scaled to
  ``max_side``, the fine pass at ``upscale``, tiled);
* the adapter's own pre-processing (size rounding, colour order,
  normalisation): its ``detect`` is run with a stand-in for its network that
  keeps the input and stops there, so the array handed to the quantizer is
  the one the compiled model would get, by construction.

Which pictures: files are sniffed by content (anything else is skipped and
counted), put in an order shuffled by ``seed``, and taken round-robin, one
picture per file per round (an image gives one, a video a new frame each
round, spread over its length with seeded jitter), until their passes reach
the requested number of samples; every pass of a picture is used, so coarse
and fine inputs keep their run-time proportion. The same folder, seed and
settings give the same inputs.

This layer sits beside ``pipeline`` (it decodes media and prepares detector
inputs; it never writes). Paths stay in memory: nothing here logs, and
errors carry counts only.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np

from redactd.core.config import DEFAULT_IGNORE, LimitsConfig, TilingConfig
from redactd.core.errors import RedactdError
from redactd.stages.detect import centerface, multiscale, yolo_plate, yunet
from redactd.stages.detect.base import Detector
from redactd.stages.detect.runtime import Network
from redactd.stages.media import image, sniff, video

DEFAULT_SAMPLES = 300


class CalibrationError(RedactdError):
    """The calibration folder gives nothing to calibrate on (message: counts only)."""


class _Captured(Exception):
    """Raised by ``_Capture.infer`` to stop the adapter once its input is kept."""


class _Capture:
    """Stands in for an adapter's ``Network``: keeps the input, runs nothing."""

    name = "calibration"
    input_shape = None

    def __init__(self) -> None:
        self.blob: np.ndarray | None = None

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        self.blob = blob
        raise _Captured

    def close(self) -> None:
        pass


#: Adapters by manifest ``decoder`` whose pre-processing calibration can reproduce.
_ADAPTERS: dict[str, Callable[[Network], Detector]] = {
    "centerface": lambda n: centerface.CenterFace(n),
    "yunet": lambda n: yunet.YuNet(n),
    "yolo_plate": lambda n: yolo_plate.YoloPlate(n),
}


def supported(decoder: str) -> bool:
    return decoder in _ADAPTERS


def model_inputs(decoder: str, picture: np.ndarray, tiling: TilingConfig) -> Iterator[np.ndarray]:
    """The network inputs of every pass of ``picture`` (upright BGR), in plan order."""
    capture = _Capture()
    adapter = _ADAPTERS[decoder](cast(Network, capture))
    h, w = picture.shape[:2]
    for t in multiscale.plan(w, h, tiling):
        capture.blob = None
        with contextlib.suppress(_Captured):
            adapter.detect(multiscale.crop(picture, t), 1.0)
        if capture.blob is None:  # pragma: no cover - an adapter that skipped its network
            raise RuntimeError(f"the {decoder} adapter did not call its network")
        yield capture.blob


@dataclass(frozen=True)
class _Source:
    """One file of the calibration folder and the pictures taken from it."""

    path: Path
    kind: Literal["image", "video"]
    format: str
    passes: int  # passes per picture (from the header size)
    length: int  # pictures available: 1 for an image, frames for a video
    taken: int  # pictures taken


class CalibrationSet:
    """The calibration inputs; iterable more than once, always in the same order.

    ``len()`` is the number of inputs planned (at most the requested
    samples); ``frames`` the pictures they come from (planned; after an
    iteration, the pictures that gave inputs to it); ``files`` the files
    used; ``skipped`` the files that were not images or videos or could not
    be read. ``failed`` counts pictures that were probed fine but failed to
    decode during the last iteration (their inputs are missing from it).
    """

    def __init__(
        self,
        sources: list[tuple[_Source, tuple[int, ...]]],
        samples: int,
        decoder: str,
        tiling: TilingConfig,
        limits: LimitsConfig,
        skipped: int,
    ) -> None:
        self._sources = sources
        self._samples = samples
        self.decoder = decoder
        self.tiling = tiling
        self.limits = limits
        self.skipped = skipped
        self.files = len(sources)
        self.frames = sum(s.taken for s, _ in sources)
        planned = sum(s.passes * s.taken for s, _ in sources)
        self._len = min(samples, planned)
        self.failed = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[np.ndarray]:
        self.failed = 0
        used = n = 0
        try:
            for src, frames in self._sources:
                for picture in self._pictures(src, frames):
                    used += 1
                    for blob in model_inputs(self.decoder, picture, self.tiling):
                        yield blob
                        n += 1
                        if n >= self._samples:
                            return
        finally:
            self.frames = used

    def _pictures(self, src: _Source, frames: tuple[int, ...]) -> Iterator[np.ndarray]:
        try:
            if src.kind == "image":
                yield image.decode(src.path, self.limits).pages[0].bgr
                return
            wanted = set(frames)
            last = max(frames)
            settings = video.EncodeSettings(keep_audio=False)
            # decode only: the output is never opened, nothing is written
            with video.Transcoder(
                src.path, Path(os.devnull), src.format, settings, self.limits
            ) as tx:
                for f in tx.frames():
                    if f.index in wanted:
                        yield video.rotate_upright(f.bgr(), f.rotation)
                    if f.index >= last:
                        return
        except RedactdError:
            self.failed += 1


def _files(folder: Path) -> list[Path]:
    """Regular-looking files under ``folder`` (hidden and partial names skipped), sorted."""
    out: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _ignored(d))
        out.extend(Path(root) / n for n in sorted(names) if not _ignored(n))
    return sorted(out, key=lambda p: str(p.relative_to(folder)))


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pat) for pat in DEFAULT_IGNORE)


def _probe(path: Path, tiling: TilingConfig, limits: LimitsConfig) -> _Source | None:
    """The file's kind, passes per picture and length; ``None`` when unusable."""
    try:
        mt = sniff.sniff(path)
        if mt.kind == "image":
            w, h, _pages = image.probe(path, limits)
            return _Source(path, "image", mt.format, len(multiscale.plan(w, h, tiling)), 1, 0)
        info = video.probe(path, mt.format, limits)
        length = info.frames
        if not length and info.fps and info.duration:
            length = math.floor(info.fps * info.duration)
        if not length:
            length = _count_frames(path, mt.format, limits)
        if info.width <= 0 or info.height <= 0 or length <= 0:
            return None
        passes = len(multiscale.plan(info.width, info.height, tiling))
        return _Source(path, "video", mt.format, passes, length, 0)
    except RedactdError:
        return None


def _count_frames(path: Path, fmt: str, limits: LimitsConfig) -> int:
    settings = video.EncodeSettings(keep_audio=False)
    with video.Transcoder(path, Path(os.devnull), fmt, settings, limits) as tx:
        return sum(1 for _ in tx.frames())


def _spread(length: int, k: int, rng: random.Random) -> tuple[int, ...]:
    """``k`` distinct frame indices of ``range(length)``: one per equal stretch, jittered."""
    k = min(k, length)
    picks = {min(length - 1, int((i + rng.random()) * length / k)) for i in range(k)}
    return tuple(sorted(picks))


def _one_per_file(
    paths: Sequence[Path], budget: int, tiling: TilingConfig, limits: LimitsConfig
) -> tuple[list[_Source], int, int]:
    """Round 0: one picture of each file, in the given order, until ``budget`` passes
    are planned. Returns (files chosen, files not usable, budget left)."""
    chosen: list[_Source] = []
    skipped = 0
    for p in paths:
        if budget <= 0:
            break
        src = _probe(p, tiling, limits)
        if src is None:
            skipped += 1
            continue
        chosen.append(src)
        budget -= src.passes
    return chosen, skipped, budget


def _more_video_frames(chosen: Sequence[_Source], budget: int) -> list[int]:
    """Pictures taken per chosen file: later rounds add one more frame of each video
    while the budget lasts."""
    taken = [1] * len(chosen)
    while budget > 0:
        grew = False
        for i, src in enumerate(chosen):
            if budget <= 0:
                break
            if src.kind == "video" and taken[i] < src.length:
                taken[i] += 1
                budget -= src.passes
                grew = True
        if not grew:
            break
    return taken


def collect(
    folder: Path,
    decoder: str,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    tiling: TilingConfig | None = None,
    limits: LimitsConfig | None = None,
) -> CalibrationSet:
    """Plan the calibration inputs for a model with adapter ``decoder`` from ``folder``.

    Reads headers only (videos without a declared length are decoded once to
    count their frames); pictures are decoded when the set is iterated.
    Raises ``CalibrationError`` when ``folder`` is not a folder or holds no
    readable image or video, ``ValueError`` for an adapter calibration
    cannot reproduce or ``samples`` < 1.
    """
    if decoder not in _ADAPTERS:
        raise ValueError(f"no calibration recipe for adapter {decoder!r}")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    tiling = tiling or TilingConfig()
    limits = limits or LimitsConfig()
    if not folder.is_dir():
        raise CalibrationError("the calibration folder does not exist or is not a folder")
    rng = random.Random(seed)
    paths = _files(folder)
    rng.shuffle(paths)
    chosen, skipped, budget = _one_per_file(paths, samples, tiling, limits)
    if not chosen:
        raise CalibrationError(
            f"the calibration folder holds no readable image or video ({len(paths)} files "
            f"looked at, {skipped} not usable)"
        )
    taken = _more_video_frames(chosen, budget)
    sources = []
    for src, k in zip(chosen, taken, strict=True):
        frames = _spread(src.length, k, rng) if src.kind == "video" else (0,)
        sources.append((_Source(src.path, src.kind, src.format, src.passes, src.length,
                                len(frames)), frames))
    return CalibrationSet(sources, samples, decoder, tiling, limits, skipped)
