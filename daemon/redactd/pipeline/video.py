"""The video stage order: decode -> detect -> track -> mask -> encode, streaming.

Three threads, joined by small bounded queues, so decoding and encoding
overlap with detection (PyAV, OpenVINO and OpenCV release the GIL):

* the **reader** decodes frames (``media.video.Transcoder.frames``) and turns
  the frames the detectors will see into upright BGR;
* the **caller's thread** runs the detectors and the tracker and holds the
  look-ahead buffer: a frame leaves it only when ``lookback`` newer frames
  have been tracked, so a track born later can still add masks to it;
* the **writer** masks each frame (only the rectangle around its boxes is
  converted to BGR and back) and encodes it.

Per-file instructions (``redactd.stages.instructions``) ride along: extra mask
regions are placed on the frames of their range (``follow`` ones moved by a
``follow.RegionFollower`` seeded on the range's first frame, which needs that
frame's picture: the reader converts it like a detector frame); a ``keep``
seed marks the track of the detection best matching it on the first detector
frame at or after the seed (within ``SEED_WINDOW_SECONDS``), and that
track's boxes are taken out of the masks of frames from the seed on when the
frame leaves the look-ahead buffer. A track that dies is never kept again:
the person gets a new track and is masked (fail closed).

Memory is bounded: at most ``lookback + 1`` buffered frames plus the queue
slots, whatever the video's length.

Fail closed: every written frame has been judged by the detectors, or, with
``detect_every = k`` > 1, is a frame the ``ChangeGate`` proved to show what
the last detected frame (at most ``k - 1`` frames and ``1 / skip_min_fps``
seconds back) showed, masked by the tracker's boxes; any error in any thread
stops all three, removes the output and raises. Frame count, timestamps,
audio and rotation are the transcoder's contract (``media.video``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from redactd.core.config import LimitsConfig, Profile
from redactd.core.errors import PermanentInputError
from redactd.core.types import CLASSES, Box, Detection, JobResult, ObjectClass, StageTimings
from redactd.pipeline.plan import ProgressFn, extra_mask_region
from redactd.stages.follow import RegionFollower
from redactd.stages.instructions import place as instr_mod
from redactd.stages.instructions.model import Instructions, PixelRegion
from redactd.stages.mask import MaskRegion, apply_masks, mask_area
from redactd.stages.media.sniff import MediaType
from redactd.stages.track import MultiTracker

if TYPE_CHECKING:
    # At run time ``media.video`` is imported by the functions that use it:
    # it loads PyAV (FFmpeg's libraries, ~60 ms), which a run on photos never
    # needs and which would otherwise be a tenth of `redactd process`'s
    # start-up.
    from redactd.stages.media import video

#: ``detect(upright_bgr, floor)``: every enabled detector of the profile on one
#: frame, detections down to ``floor`` (``None``: the class thresholds).
#: MUST raise on failure (``Pipeline.detect_frame`` does).
DetectFn = Callable[[np.ndarray, "float | None"], list[Detection]]

#: Frames the reader and the writer may run ahead of / behind the detector.
QUEUE_FRAMES = 4

#: Extra pixels around a padded mask box converted with it (the mask of a box
#: reads only its padded box; the margin keeps rounding on the safe side).
_MARGIN = 2

#: Smallest side of a mask box, as ``mask.apply_masks`` grows it.
_MIN_SIDE = 4.0


class ChangeGate:
    """Decides, frame by frame, whether the detectors must see a frame.

    A frame may go undetected only when all of these hold (else it is
    detected, and becomes the reference):

    * fewer than ``every - 1`` frames were skipped since the reference (the
      last detected frame);
    * it is at most ``1 / min_fps`` seconds after the reference by the
      frames' own timestamps (a 1-5 fps NVR export or a time-lapse, where a
      person moves far between frames, is detected on every frame);
    * it has the reference's size, and no ``CELL`` x ``CELL`` pixel window of
      its luma (nor the matching chroma window) differs from the reference
      by more than ``max_change`` levels on average: a face appearing, a
      person entering or a scene cut changes windows far beyond compression
      noise.

    The comparison is against the last *detected* frame, never the previous
    one, so slow changes add up until they force a detection.
    ``detected``/``skipped`` count the frames of each kind.
    """

    #: Side of the averaging window in luma pixels: a face the detectors find
    #: (>= ~10 px) covers a whole window when it is 2 windows wide or less.
    CELL = 8

    def __init__(self, every: int, min_fps: float, max_change: float) -> None:
        self.every = every
        self.max_gap = 1.0 / min_fps + 1e-6
        self.max_change = max_change
        self._ref: np.ndarray | None = None
        self._ref_time = 0.0
        self._since = 0
        self.detected = 0
        self.skipped = 0

    def must_detect(self, frame: video.Frame) -> bool:
        """Decide for ``frame`` (call once per frame, in order)."""
        if self.every > 1 and self._may_skip(frame):
            self._since += 1
            self.skipped += 1
            return False
        if self.every > 1:
            # Kept apart from the frame, which is masked in place later.
            self._ref = frame.yuv.copy()
        self._ref_time = frame.time
        self._since = 0
        self.detected += 1
        return True

    def _may_skip(self, frame: video.Frame) -> bool:
        ref = self._ref
        if ref is None or self._since + 1 >= self.every:
            return False
        if not 0.0 <= frame.time - self._ref_time <= self.max_gap:
            return False
        if ref.shape != frame.yuv.shape:
            return False
        return not self.changed(frame.yuv, ref, frame.width, frame.height)

    def changed(self, yuv: np.ndarray, ref: np.ndarray, width: int, height: int) -> bool:
        """Does any window of the I420 pictures differ beyond ``max_change``?"""
        diff = cv2.absdiff(yuv, ref).reshape(-1)
        n = width * height
        cw, ch = width // 2, height // 2
        planes = (
            (diff[:n].reshape(height, width), self.CELL),
            (diff[n : n + cw * ch].reshape(ch, cw), self.CELL // 2),
            (diff[n + cw * ch : n + 2 * cw * ch].reshape(ch, cw), self.CELL // 2),
        )
        for plane, cell in planes:
            if plane.size == 0:
                continue
            k = (min(cell, plane.shape[1]), min(cell, plane.shape[0]))
            # The mean of every k-window (borders replicated): its maximum is
            # at least the mean of any aligned block.
            means = cv2.blur(plane, k, borderType=cv2.BORDER_REPLICATE)
            if float(means.max()) > self.max_change:
                return True
        return False


@dataclass(frozen=True)
class VideoPlan:
    """The per-job video settings derived from a profile."""

    detect_every: int
    lookback: int
    floor: float | None
    thresholds: dict[ObjectClass, float]
    tracking: bool
    skip_min_fps: float = 10.0
    skip_max_change: float = 6.0

    def gate(self) -> ChangeGate:
        """A new ``ChangeGate`` for one job."""
        return ChangeGate(self.detect_every, self.skip_min_fps, self.skip_max_change)

    @classmethod
    def from_profile(cls, prof: Profile) -> VideoPlan:
        thresholds: dict[ObjectClass, float] = {
            c: prof.of(c).threshold for c in CLASSES if prof.of(c).enabled
        }
        tr = prof.track
        if not tr.enabled:
            # Without a tracker nothing covers the frames between detector runs:
            # every frame is detected.
            return cls(1, 0, None, thresholds, False)
        v = prof.video
        k = v.detect_every
        # Skipped frames are proven unchanged (ChangeGate); the look-back still
        # reaches k - 1 frames so a track's first boxes cover any skipped
        # frame before its first detection.
        lookback = max(tr.lookback, k - 1)
        # One floor for every detector call: never above a class threshold,
        # or that class would lose detections between the two.
        low = [t for t in thresholds.values() if tr.low_threshold < t]
        floor = min(tr.low_threshold, *thresholds.values()) if low else None
        return cls(k, lookback, floor, thresholds, True, v.skip_min_fps, v.skip_max_change)


@dataclass
class _Pending:
    """A frame in the look-ahead buffer and what to mask on it (upright pixels):
    ``boxes`` of detections and tracks, ``kept`` boxes (not masked; other
    masks' padding stays off them), ``extra`` regions of the instructions."""

    frame: video.Frame
    boxes: list[Detection] = field(default_factory=list)
    kept: list[Detection] = field(default_factory=list)
    extra: list[MaskRegion] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class _Decoded:
    """A decoded frame; its upright BGR picture on detector frames (``detect``)
    and on frames a followed region needs; ``seconds`` since the first frame."""

    frame: video.Frame
    bgr: np.ndarray | None
    detect: bool = True
    seconds: float = 0.0


@dataclass
class _Times:
    decode: float = 0.0
    detect: float = 0.0
    track: float = 0.0
    mask: float = 0.0
    encode: float = 0.0


class _Stop(Exception):
    """Raised inside a worker when another thread failed first."""


_END = object()


class _Worker(threading.Thread):
    """A thread whose first exception is kept for the caller to re-raise."""

    def __init__(self, name: str, body: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.body = body
        self.stop = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.body()
        except _Stop:
            pass
        except BaseException as e:
            self.error = e
            self.stop.set()


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[object], stop: threading.Event) -> object:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def process_video(
    src: Path,
    dst: Path,
    media: MediaType,
    prof: Profile,
    limits: LimitsConfig,
    detect: DetectFn,
    progress: ProgressFn | None = None,
    instructions: Instructions | None = None,
) -> JobResult:
    """Anonymize the video ``src`` into the new file ``dst``.

    ``dst`` MUST NOT exist; it is created exclusively, fsynced when complete,
    and removed again when anything fails. Its container is chosen by
    ``output_suffix`` (the caller names the file accordingly).
    Raises ``PermanentInputError`` (corrupt, truncated, unprocessed_frames,
    too_long, too_many_pixels, unsupported_type, detector_failed,
    encode_failed), ``TransientError`` (disk full, I/O), or what ``detect``
    or ``progress`` raise.
    ``instructions``: extra masks and keep seeds (see the module docstring);
    ``prof`` MUST already carry their overrides (``instructions.resolve``).
    Keep seeds need the tracker: without it ``instruction_not_allowed``.
    """
    from redactd.stages.media import video

    instr = instructions if instructions is not None else Instructions.EMPTY
    plan = VideoPlan.from_profile(prof)
    if instr.keep and not plan.tracking:
        # Without tracks a kept person could not be told from whoever later
        # stands in the same place.
        raise PermanentInputError(
            "instruction_not_allowed", "keep: needs the tracker (track.enabled)", stage="sidecar"
        )
    times = _Times()
    tx = video.Transcoder(src, dst, media.format, _encode_settings(media, dst, prof), limits)
    try:
        with tx:
            run = _Run(tx, prof, plan, detect, progress, times, instr)
            counts = run.execute()
            out_bytes = tx.finish()
    except BaseException:
        if tx.created:
            with contextlib.suppress(FileNotFoundError):
                dst.unlink()
        raise
    return _result(src, media, tx, out_bytes, counts, times, run.accounts())


def _encode_settings(media: MediaType, dst: Path, prof: Profile) -> video.EncodeSettings:
    from redactd.stages.media import video

    muxer, _suffix = video.output_format(media.format, dst.suffix)
    return video.EncodeSettings(
        muxer=muxer,
        crf=prof.video.crf,
        preset=prof.video.preset,
        keep_audio=prof.video.keep_audio,
        strip_metadata=prof.output.strip_metadata,
    )


def _result(
    src: Path,
    media: MediaType,
    tx: video.Transcoder,
    out_bytes: int,
    counts: dict[str, int],
    times: _Times,
    accounts: dict[str, Any],
) -> JobResult:
    info = tx.info
    return JobResult(
        kind="video",
        media_type=media.format,
        counts=counts,
        frames=tx.frames_written,
        width=info.width,
        height=info.height,
        input_bytes=src.stat().st_size,
        output_bytes=out_bytes,
        timings=StageTimings(
            decode_ms=times.decode * 1000.0,
            detect_ms=times.detect * 1000.0,
            track_ms=times.track * 1000.0,
            mask_ms=times.mask * 1000.0,
            encode_ms=times.encode * 1000.0,
        ),
        **accounts,
    )


class _Run:
    """One video job: the three threads and the look-ahead buffer."""

    def __init__(
        self,
        tx: video.Transcoder,
        prof: Profile,
        plan: VideoPlan,
        detect: DetectFn,
        progress: ProgressFn | None,
        times: _Times,
        instr: Instructions = Instructions.EMPTY,
    ) -> None:
        self.tx = tx
        self.instr = instr
        self.follow = tuple(r for r in instr.mask if r.follow)
        self.directions: _Directions | None = None
        self.prof = prof
        self.plan = plan
        self.detect = detect
        self.progress = progress
        self.times = times
        self.stop = threading.Event()
        self.in_q: queue.Queue[object] = queue.Queue(QUEUE_FRAMES)
        self.out_q: queue.Queue[object] = queue.Queue(QUEUE_FRAMES)
        self.raw_counts: dict[str, int] = {c: 0 for c in CLASSES}
        self.tracks_started: dict[str, int] | None = None
        self.gate = plan.gate()
        info = tx.info
        if info.fps and info.duration:
            self.total: int | None = info.frames or round(info.fps * info.duration)
        else:
            self.total = info.frames

    # -- threads -------------------------------------------------------------

    def _read(self) -> None:
        from redactd.stages.media import video

        gate = self.gate
        t0 = time.perf_counter()
        start: float | None = None
        for frame in self.tx.frames():
            start = frame.time if start is None else start
            seconds = frame.time - start
            bgr = None
            detect = gate.must_detect(frame)
            if detect or any(r.in_range(frame.index, seconds) for r in self.follow):
                bgr = video.rotate_upright(frame.bgr(), frame.rotation)
            self.times.decode += time.perf_counter() - t0
            _put(self.in_q, _Decoded(frame, bgr, detect, seconds), self.stop)
            t0 = time.perf_counter()
        _put(self.in_q, _END, self.stop)

    def _write(self) -> None:
        while True:
            item = _get(self.out_q, self.stop)
            if item is _END:
                return
            assert isinstance(item, _Pending)
            t0 = time.perf_counter()
            self._mask(item)
            t1 = time.perf_counter()
            self.tx.write(item.frame)
            t2 = time.perf_counter()
            self.times.mask += t1 - t0
            self.times.encode += t2 - t1

    # -- the caller's thread ---------------------------------------------------

    def execute(self) -> dict[str, int]:
        """Run the job to its end; the counts per class. Re-raises the first error."""
        reader = _Worker("redactd-video-read", self._read, self.stop)
        writer = _Worker("redactd-video-write", self._write, self.stop)
        reader.start()
        writer.start()
        try:
            self._track_loop()
            _put(self.out_q, _END, self.stop)
            writer.join()
        except _Stop:
            pass  # a worker failed: its error is raised below
        finally:
            self.stop.set()  # releases a worker still waiting on a queue
            reader.join()
            writer.join()
        for w in (reader, writer):
            if w.error is not None:
                raise w.error
        return self._counts()

    def _track_loop(self) -> None:
        tracker: MultiTracker | None = None
        buffer: deque[_Pending] = deque()
        done = 0
        while True:
            item = _get(self.in_q, self.stop)
            if item is _END:
                break
            assert isinstance(item, _Decoded)
            directions = self._directions_for(item.frame)
            if tracker is None and self.plan.tracking:
                tracker = self._tracker_for(item.frame)
            dets = self._judge(item)
            pending = _Pending(item.frame)
            t1 = time.perf_counter()
            pending.extra.extend(directions.extra(item.frame.index, item.seconds, item.bgr))
            self._place(pending, item, dets, tracker, directions, buffer)
            self.times.track += time.perf_counter() - t1
            buffer.append(pending)
            while len(buffer) > self.plan.lookback:
                _put(self.out_q, self._release(buffer.popleft()), self.stop)
                done += 1
                self._progress(done)
            if tracker is not None:
                self.tracks_started = tracker.started()
        if self.directions is not None:
            self.directions.finish()
        while buffer:
            _put(self.out_q, self._release(buffer.popleft()), self.stop)
            done += 1
            self._progress(done)

    def _directions_for(self, frame: video.Frame) -> _Directions:
        if self.directions is None:
            # Placed once the picture size is known; a region wholly
            # outside the picture fails the job here, before any output frame.
            w, h = _upright_size(frame)
            share = self.prof.instructions.keep_max_share
            self.directions = _Directions(self.instr, w, h, share)
        return self.directions

    def _tracker_for(self, frame: video.Frame) -> MultiTracker:
        plan = self.plan
        w, h = _upright_size(frame)
        return MultiTracker(
            self.prof.track,
            plan.thresholds,
            w,
            h,
            plan.lookback,
            {c: self.prof.of(c) for c in plan.thresholds},
        )

    def _judge(self, item: _Decoded) -> list[Detection] | None:
        """The detectors' answer on a frame the gate sends to them (None: not
        judged anew; the tracker carries the masks of an unchanged frame)."""
        if not item.detect:
            return None
        assert item.bgr is not None
        t0 = time.perf_counter()
        dets = list(self.detect(item.bgr, self.plan.floor))
        self.times.detect += time.perf_counter() - t0
        for d in dets:
            if d.score >= self.plan.thresholds.get(d.cls, 1.1):
                self.raw_counts[d.cls] = self.raw_counts.get(d.cls, 0) + 1
        return dets

    def _place(
        self,
        pending: _Pending,
        item: _Decoded,
        dets: list[Detection] | None,
        tracker: MultiTracker | None,
        directions: _Directions,
        buffer: deque[_Pending],
    ) -> None:
        """What to mask on this frame, and on the buffered frames before it
        that a new track reaches back to (look-back)."""
        index = item.frame.index
        if tracker is not None:
            step = tracker.step(index, dets)
            assigned = step.assigned if dets is not None else None
            directions.seek(index, item.seconds, assigned)
            pending.boxes.extend(step.current)
            first = buffer[0].frame.index if buffer else index
            for b in step.backfill:
                i = b.frame - first
                if 0 <= i < len(buffer):
                    buffer[i].boxes.append(b.detection)
        elif dets is not None:
            thresholds = self.plan.thresholds
            pending.boxes.extend(d for d in dets if d.score >= thresholds.get(d.cls, 0.0))

    def _release(self, p: _Pending) -> _Pending:
        """A frame leaving the buffer: the boxes of kept tracks move to ``kept``
        (every mark of this frame's kept tracks has been made by now)."""
        if self.directions is not None and self.directions.kept:
            index = p.frame.index
            masked: list[Detection] = []
            for d in p.boxes:
                (p.kept if self.directions.is_kept(d, index) else masked).append(d)
            p.boxes = masked
        return p

    def _progress(self, done: int) -> None:
        if self.progress is not None:
            total = self.total if self.total is None or self.total >= done else None
            self.progress(done, total)

    def _counts(self) -> dict[str, int]:
        if self.tracks_started is not None:
            return {c: self.tracks_started.get(c, 0) for c in CLASSES}
        return dict(self.raw_counts)

    def accounts(self) -> dict[str, Any]:
        """The ``JobResult`` counts besides ``counts``: detected, tracked,
        masked, kept per class, extra regions applied, keep seeds unmatched."""
        detected = {c: self.raw_counts.get(c, 0) for c in CLASSES}
        tracked = self._counts() if self.tracks_started is not None else dict(detected)
        d = self.directions
        kept = {c: d.kept_count.get(c, 0) if d else 0 for c in CLASSES}
        return {
            "detected": detected,
            "tracked": tracked,
            "masked": {c: max(0, tracked.get(c, 0) - kept[c]) for c in CLASSES},
            "kept": kept,
            "extra_regions": len(d.applied) if d else 0,
            "keep_unmatched": d.unmatched if d else 0,
        }

    # -- masking (writer thread) ---------------------------------------------

    def _mask(self, p: _Pending) -> None:
        if not p.boxes and not p.extra:
            return
        f = p.frame
        protect = tuple(_to_stored(b, f) for b in instr_mod.protected(p.kept))
        regions = [
            MaskRegion(
                box=_to_stored(d.box, f), mask=self.prof.of(d.cls).mask, protect=protect
            )
            for d in p.boxes
        ]
        regions += [
            MaskRegion(
                _to_stored(r.box, f),
                r.mask,
                None if r.polygon is None else tuple(_point_to_stored(q, f) for q in r.polygon),
            )
            for r in p.extra
        ]
        rect = _union_bounds(regions, f.width, f.height)
        if rect is None:
            return
        region = f.region(*rect)
        dx, dy = -region.x, -region.y
        apply_masks(
            region.bgr,
            [
                MaskRegion(
                    r.box.shifted(dx, dy),
                    r.mask,
                    None if r.polygon is None else tuple((x + dx, y + dy) for x, y in r.polygon),
                    tuple(b.shifted(dx, dy) for b in r.protect),
                )
                for r in regions
            ],
            frame_size=(f.width, f.height),
        )
        f.paste(region)


#: A keep seed that found nothing on the detector frames of this many frames
#: after it gives up even when the frame times do not advance.
_SEED_MAX_FRAMES = 250


@dataclass
class _Seed:
    """A keep region waiting for its person: ``start`` is the first frame at
    or after the seed (``None``: not reached yet)."""

    pr: PixelRegion
    start: int | None = None
    start_seconds: float = 0.0


class _Directions:
    """The instructions of one video job, applied in the caller's thread.

    ``extra`` gives each frame's extra mask regions (moving the followed ones);
    ``seek`` marks kept tracks; ``is_kept`` tells a kept track's box on a frame
    from the seed on. Counts: ``applied`` mask regions, ``kept_count`` per
    class, ``unmatched`` seeds.
    """

    def __init__(
        self, instr: Instructions, width: int, height: int, keep_max_share: float = 1.0
    ) -> None:
        self.width, self.height = width, height
        self.mask = [instr_mod.to_pixels(r, width, height) for r in instr.mask]
        self.seeds = [
            _Seed(instr_mod.place_keep(r, width, height, keep_max_share)) for r in instr.keep
        ]
        self.followers: dict[int, RegionFollower] = {}
        self.applied: set[int] = set()
        self.kept: dict[tuple[str, int], int] = {}
        self.kept_count: dict[str, int] = {}
        self.unmatched = 0

    def extra(self, index: int, seconds: float, bgr: np.ndarray | None) -> list[MaskRegion]:
        out: list[MaskRegion] = []
        for i, pr in enumerate(self.mask):
            if not pr.region.in_range(index, seconds):
                continue
            placed = self._followed(i, pr, bgr) if pr.region.follow else pr
            out.append(extra_mask_region(placed))
            self.applied.add(i)
        return out

    def _followed(self, i: int, pr: PixelRegion, bgr: np.ndarray | None) -> PixelRegion:
        if bgr is None:  # the reader converts every frame a followed region needs
            raise RuntimeError("no picture for a followed region")
        f = self.followers.get(i)
        if f is None:
            f = self.followers[i] = RegionFollower(bgr, pr.box)
            pos = f.current()
        else:
            pos = f.update(bgr)
        if pos.lost:
            # Fail closed: the last position, grown, as a box (polygon or not).
            return PixelRegion(pr.region, pos.box.clip(self.width, self.height), None)
        return pr.shifted(pos.dx, pos.dy, self.width, self.height)

    def seek(self, index: int, seconds: float, assigned: tuple[Detection, ...] | None) -> None:
        """Frame ``index``: reach seeds; on detector frames (``assigned``: the
        detections with their track ids) mark the best match of each."""
        for seed in list(self.seeds):
            if seed.start is None:
                if not seed.pr.region.seed_reached(index, seconds):
                    continue
                seed.start, seed.start_seconds = index, seconds
            if assigned is None:
                continue
            hits = instr_mod.best_matches([d for d in assigned if d.track_id is not None], seed.pr)
            if hits:
                for d in hits:
                    self._keep(d, seed.start)
                self.seeds.remove(seed)
            elif (
                seconds - seed.start_seconds >= instr_mod.SEED_WINDOW_SECONDS
                or index - seed.start >= _SEED_MAX_FRAMES
            ):
                self.seeds.remove(seed)
                self.unmatched += 1

    def _keep(self, d: Detection, start: int) -> None:
        assert d.track_id is not None
        key = (d.cls, d.track_id)
        if key in self.kept:
            self.kept[key] = min(self.kept[key], start)
            return
        self.kept[key] = start
        self.kept_count[d.cls] = self.kept_count.get(d.cls, 0) + 1

    def is_kept(self, d: Detection, index: int) -> bool:
        if d.track_id is None:
            return False
        start = self.kept.get((d.cls, d.track_id))
        return start is not None and index >= start

    def finish(self) -> None:
        """The video ended: seeds still waiting matched nothing."""
        self.unmatched += len(self.seeds)
        self.seeds.clear()


def _upright_size(frame: video.Frame) -> tuple[int, int]:
    if (frame.rotation // 90) % 2 and frame.rotation % 90 == 0:
        return frame.height, frame.width
    return frame.width, frame.height


def _to_stored(b: Box, f: video.Frame) -> Box:
    from redactd.stages.media import video

    return Box(*video.box_to_stored(b.x1, b.y1, b.x2, b.y2, f.rotation, f.width, f.height))


def _point_to_stored(p: tuple[float, float], f: video.Frame) -> tuple[float, float]:
    from redactd.stages.media import video

    x, y, _x, _y = video.box_to_stored(p[0], p[1], p[0], p[1], f.rotation, f.width, f.height)
    return (x, y)


def _union_bounds(
    regions: Iterable[MaskRegion], width: int, height: int
) -> tuple[int, int, int, int] | None:
    """Pixel rectangle covering every region's padded box (what masking reads and writes)."""
    x1 = y1 = float("inf")
    x2 = y2 = float("-inf")
    for r in regions:
        b = r.box
        if r.polygon is not None:
            xs, ys = [q[0] for q in r.polygon], [q[1] for q in r.polygon]
            b = Box(min(xs), min(ys), max(xs), max(ys))
        if not b.width > 0 or not b.height > 0:
            continue
        p = b if r.polygon is not None else mask_area(b, r.mask, width, height)
        cx, cy = p.center
        hw, hh = max(p.width, _MIN_SIDE) / 2.0, max(p.height, _MIN_SIDE) / 2.0
        x1, y1 = min(x1, cx - hw), min(y1, cy - hh)
        x2, y2 = max(x2, cx + hw), max(y2, cy + hh)
    if x1 == float("inf"):
        return None
    ix1, iy1, ix2, iy2 = Box(x1 - _MARGIN, y1 - _MARGIN, x2 + _MARGIN, y2 + _MARGIN).int_bounds(
        width, height
    )
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    return ix1, iy1, ix2, iy2


__all__ = [
    "ChangeGate",
    "DetectFn",
    "VideoPlan",
    "process_video",
]
