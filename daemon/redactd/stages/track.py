"""Multi-object tracking that only ever ADDS masks to a video.

One tracker per object class (faces never continue plate tracks). Each track
carries a constant-velocity Kalman filter on its box centre and size
(``cx, cy, w, h`` and their velocities, in the style of SORT/ByteTrack) and
is associated to detections by IoU against its predicted box.

What the tracker adds to the raw detections of a frame (it never removes or
hides one: a raw detection at or above the class threshold is always in the
output, tracked or not):

* **bridging**: a track that misses detections keeps a mask at its predicted
  position, grown by the filter's uncertainty of the centre, for
  ``max(max_age, hold)`` frames after its last hit (``max_age`` bounds how
  long it can still be re-associated). The mask box keeps the size of the
  last DETECTED box (the filter's size may only add up to
  ``MAX_SIZE_GROWTH``, for a face coming closer): the mask padding is added
  on top of it later, so a predicted mask follows the face's size instead
  of growing with every prediction;
* **second association** (ByteTrack): a detection below the class threshold
  but at or above ``low_threshold`` is accepted when it continues a confirmed
  track, so a face turning away stays masked;
* **look-back**: when a track is born, boxes for the ``lookback`` frames
  before it are emitted as ``Backfill`` (first the birth box, grown with the
  distance in frames; once the track has a velocity, its extrapolation
  backwards). The caller holds a look-ahead buffer of frames and adds them to
  the frames it still holds;
* **detect-every-k**: frames without detector output (``detections=None``)
  get the predicted, grown boxes of every live track.

Coordinates are frame pixels; returned boxes are clipped to the frame.
The tracker is pure computation (numpy) and holds no frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from redactd.core.boxes import box_array, iou_matrix
from redactd.core.config import ClassConfig, TrackConfig
from redactd.core.types import Box, Detection, ObjectClass

#: IoU a low-score detection needs with a confirmed track's predicted box
#: (ByteTrack uses 0.5 for its second association: low-score boxes are
#: noisier, so they must sit where the track is expected).
LOW_IOU = 0.4

#: Hits after which a track counts as confirmed (may take low-score detections).
CONFIRM_HITS = 2

#: Standard deviations of the centre the mask box of a predicted (not
#: detected) frame grows by.
GROW_SIGMAS = 2.0

#: Largest growth of a predicted box, per side, relative to its size. The
#: class's mask padding (e.g. 0.2 of the box + 5 px for faces) comes on top:
#: together the mask stays within about twice the face's area.
MAX_GROWTH = 0.15

#: Largest size of a predicted mask box relative to the last detected box
#: (the filter's size estimate may grow it this far, never shrink it).
MAX_SIZE_GROWTH = 1.2

#: Relative growth per frame of distance for look-back boxes made from the
#: birth box alone (no velocity known yet), and its cap.
LOOKBACK_GROWTH = 0.03
LOOKBACK_MAX_GROWTH = 0.2

#: Process and measurement noise relative to box size (ByteTrack's weights).
_STD_POS = 1.0 / 20.0
_STD_VEL = 1.0 / 160.0


@dataclass(frozen=True)
class Backfill:
    """A box to add to an EARLIER frame (``frame`` < the frame just stepped)."""

    frame: int
    detection: Detection


@dataclass(frozen=True)
class TrackStep:
    """The tracker's answer for one frame.

    ``current``: every box to mask on the stepped frame (raw detections at or
    above threshold, accepted low-score detections, predicted boxes).
    ``backfill``: boxes for earlier frames (look-back).
    ``assigned``: the detector's boxes at or above the class threshold, each
    with the id of the track it started or continued (``track_id``; ids are
    per class and never reused), for callers that follow one object.
    """

    frame: int
    current: tuple[Detection, ...]
    backfill: tuple[Backfill, ...] = ()
    assigned: tuple[Detection, ...] = ()


class KalmanBox:
    """Constant-velocity Kalman filter on ``[cx, cy, w, h, vcx, vcy, vw, vh]``.

    Noise scales with the box size (a big near face moves more pixels per
    frame than a small far one).
    """

    _F = np.eye(8)
    _F[:4, 4:] = np.eye(4)
    _H = np.eye(4, 8)

    def __init__(self, box: Box) -> None:
        cx, cy = box.center
        w, h = max(box.width, 1.0), max(box.height, 1.0)
        self.mean = np.array([cx, cy, w, h, 0.0, 0.0, 0.0, 0.0])
        s = np.array([w, h, w, h])
        std = np.concatenate([2.0 * _STD_POS * s, 10.0 * _STD_VEL * s])
        self.cov = np.diag(std**2)

    def _scale(self) -> np.ndarray:
        w, h = max(self.mean[2], 1.0), max(self.mean[3], 1.0)
        return np.array([w, h, w, h])

    def predict(self) -> None:
        s = self._scale()
        q = np.diag(np.concatenate([_STD_POS * s, _STD_VEL * s]) ** 2)
        self.mean = self._F @ self.mean
        self.cov = self._F @ self.cov @ self._F.T + q

    def update(self, box: Box) -> None:
        cx, cy = box.center
        z = np.array([cx, cy, max(box.width, 1.0), max(box.height, 1.0)])
        r = np.diag((_STD_POS * self._scale()) ** 2)
        s = self._H @ self.cov @ self._H.T + r
        k = np.linalg.solve(s, self._H @ self.cov).T  # cov H^T S^-1 (S symmetric)
        self.mean = self.mean + k @ (z - self._H @ self.mean)
        self.cov = (np.eye(8) - k @ self._H) @ self.cov

    def box(self, sigmas: float = 0.0, min_size: tuple[float, float] = (1.0, 1.0)) -> Box:
        """The mean box, each side grown by ``sigmas`` standard deviations of
        the centre plus half a standard deviation of the size (capped)."""
        cx, cy, w, h = self.mean[:4]
        w, h = max(w, min_size[0]), max(h, min_size[1])
        gx = gy = 0.0
        if sigmas > 0:
            var = np.diag(self.cov)
            gx = sigmas * (np.sqrt(var[0]) + 0.5 * np.sqrt(var[2]))
            gy = sigmas * (np.sqrt(var[1]) + 0.5 * np.sqrt(var[3]))
            gx, gy = min(gx, MAX_GROWTH * w), min(gy, MAX_GROWTH * h)
        return Box(cx - w / 2 - gx, cy - h / 2 - gy, cx + w / 2 + gx, cy + h / 2 + gy)

    @property
    def velocity(self) -> tuple[float, float, float, float]:
        vx, vy, vw, vh = self.mean[4:]
        return float(vx), float(vy), float(vw), float(vh)


@dataclass
class _Track:
    """Mutable per-track state (internal to this module)."""

    id: int
    cls: ObjectClass
    kf: KalmanBox
    first_frame: int
    first_box: Box
    last_box: Box
    score: float
    detector: str
    hits: int = 1
    misses: int = 0  # frames since the last hit
    #: Variance of the centre (x, y) right after the last hit: a predicted
    #: mask grows by the uncertainty added since then only.
    hit_var: tuple[float, float] = (0.0, 0.0)

    @property
    def confirmed(self) -> bool:
        return self.hits >= CONFIRM_HITS


def _greedy_match(sim: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) by descending similarity, each row and column once."""
    pairs: list[tuple[int, int]] = []
    if sim.size == 0:
        return pairs
    order = np.argsort(-sim, axis=None)
    used_r: set[int] = set()
    used_c: set[int] = set()
    for flat in order:
        r, c = divmod(int(flat), sim.shape[1])
        if sim[r, c] < threshold:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


def _grow(box: Box, rel: float) -> Box:
    return box.pad(rel)


@dataclass
class ClassTracker:
    """Tracks of one object class. Use ``MultiTracker`` for a whole frame."""

    cls: ObjectClass
    cfg: TrackConfig
    threshold: float
    width: int
    height: int
    lookback: int
    #: The class's settings, for its size rule (``ClassConfig.threshold_for``):
    #: a large box below its own threshold is "low" (it may continue a
    #: confirmed track, never start one). None: ``threshold`` for every box.
    cc: ClassConfig | None = None
    tracks: list[_Track] = field(default_factory=list)
    started: int = 0
    #: ``TrackStep.assigned`` of the last step (empty without detector output).
    last_assigned: list[Detection] = field(default_factory=list)
    _next_id: int = 1

    @property
    def lifetime(self) -> int:
        """Frames a track is masked after its last hit."""
        return max(self.cfg.max_age, self.cfg.hold)

    def step(
        self, frame: int, detections: Sequence[Detection] | None
    ) -> tuple[list[Detection], list[Backfill]]:
        for t in self.tracks:
            t.kf.predict()
        out: list[Detection] = []
        backfill: list[Backfill] = []
        self.last_assigned = []
        if detections is None:
            for t in self.tracks:
                t.misses += 1
        else:
            high = [d for d in detections if d.score >= self._needs(d)]
            low = [d for d in detections if d.score < self._needs(d)]
            ids: dict[int, int] = {}
            matched_tracks = self._associate(frame, high, low, out, backfill, ids)
            assigned = [
                Detection(d.cls, d.box, d.score, d.detector, ids.get(i)) for i, d in enumerate(high)
            ]
            out.extend(assigned)  # raw detections are always masked
            self.last_assigned = [self._clipped(d) for d in assigned]
            for t in self.tracks:
                # A track born on this frame was not missed on it.
                if t.id not in matched_tracks and t.first_frame != frame:
                    t.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.lifetime and self._visible(t)]
        for t in self.tracks:
            if t.misses > 0:
                out.append(self._as_detection(t, self._mask_box(t, GROW_SIGMAS)))
        return [self._clipped(d) for d in out], [
            Backfill(b.frame, self._clipped(b.detection)) for b in backfill
        ]

    def _needs(self, d: Detection) -> float:
        if self.cc is None:
            return self.threshold
        return max(self.threshold, self.cc.threshold_for(d.box, self.width, self.height))

    def _associate(
        self,
        frame: int,
        high: list[Detection],
        low: list[Detection],
        out: list[Detection],
        backfill: list[Backfill],
        ids: dict[int, int],
    ) -> set[int]:
        """Associate; ``ids`` receives, per index into ``high``, its track's id."""
        matched: set[int] = set()
        live = [t for t in self.tracks if t.misses <= self.cfg.max_age]
        # First association: every live track against the confident detections.
        sim = self._similarity(live, [d.box for d in high])
        # An iou_threshold of 0 still needs some overlap to pair at all.
        pairs = _greedy_match(sim, max(self.cfg.iou_threshold, 1e-9))
        used_high: set[int] = set()
        for r, c in pairs:
            t, d = live[r], high[c]
            if t.confirmed:
                # The predicted box too: a detection that is jittery or
                # off-centre this frame must not uncover part of the face.
                out.append(self._as_detection(t, self._mask_box(t, 0.0)))
            self._hit(t, d)
            matched.add(t.id)
            used_high.add(c)
            ids[c] = t.id
            backfill.extend(self._refined_lookback(t, frame))
        # Second association: confirmed tracks left over against low-score boxes.
        rest = [t for t in live if t.id not in matched and t.confirmed]
        if rest and low:
            sim = self._similarity(rest, [d.box for d in low])
            for r, c in _greedy_match(sim, max(LOW_IOU, self.cfg.iou_threshold)):
                t, d = rest[r], low[c]
                predicted = self._mask_box(t, 0.0)
                self._hit(t, d)
                matched.add(t.id)
                backfill.extend(self._refined_lookback(t, frame))
                out.append(Detection(d.cls, d.box, d.score, d.detector, t.id))
                out.append(self._as_detection(t, predicted))
        # New tracks for confident detections nobody claimed.
        for c, d in enumerate(high):
            if c in used_high:
                continue
            t = self._new_track(frame, d)
            ids[c] = t.id
            backfill.extend(self._birth_lookback(t, frame))
        return matched

    def _similarity(self, tracks: Sequence[_Track], boxes: Sequence[Box]) -> np.ndarray:
        """IoU of each detection with the track's predicted box, or with that box
        grown by one sigma when that is higher (uncertain tracks gate wider)."""
        if not tracks or not boxes:
            return np.zeros((len(tracks), len(boxes)))
        dets = box_array(boxes)
        plain = iou_matrix(box_array(t.kf.box() for t in tracks), dets)
        grown = iou_matrix(box_array(t.kf.box(1.0) for t in tracks), dets)
        return np.maximum(plain, grown)

    def _hit(self, t: _Track, d: Detection) -> None:
        t.kf.update(d.box)
        t.hit_var = (float(t.kf.cov[0, 0]), float(t.kf.cov[1, 1]))
        t.hits += 1
        t.misses = 0
        t.last_box = d.box
        t.score = d.score

    def _new_track(self, frame: int, d: Detection) -> _Track:
        t = _Track(
            id=self._next_id,
            cls=self.cls,
            kf=KalmanBox(d.box),
            first_frame=frame,
            first_box=d.box,
            last_box=d.box,
            score=d.score,
            detector=d.detector,
        )
        t.hit_var = (float(t.kf.cov[0, 0]), float(t.kf.cov[1, 1]))
        self._next_id += 1
        self.started += 1
        self.tracks.append(t)
        return t

    def _birth_lookback(self, t: _Track, frame: int) -> list[Backfill]:
        """The birth box on the frames before, grown with the distance in frames."""
        out = []
        for k in range(1, self.lookback + 1):
            if frame - k < 0:
                break
            rel = min(LOOKBACK_GROWTH * k, LOOKBACK_MAX_GROWTH)
            out.append(Backfill(frame - k, self._as_detection(t, _grow(t.first_box, rel))))
        return out

    def _refined_lookback(self, t: _Track, frame: int) -> list[Backfill]:
        """Once the track has moved, extrapolate its birth box backwards with the
        mean velocity since birth (added to the birth look-back, which stays:
        masks only add). Called on every hit while frames before the birth
        are still in the caller's buffer."""
        span = frame - t.first_frame
        if span <= 0:
            return []
        b, last = t.first_box, t.last_box
        (cx0, cy0), (cx1, cy1) = b.center, last.center
        vx, vy = (cx1 - cx0) / span, (cy1 - cy0) / span
        vw, vh = (last.width - b.width) / span, (last.height - b.height) / span
        out = []
        for k in range(1, self.lookback + 1):
            f = t.first_frame - k
            if f < 0 or f < frame - self.lookback:
                continue  # before the video, or already left the caller's buffer
            w = max(b.width - vw * k, b.width * 0.5)
            h = max(b.height - vh * k, b.height * 0.5)
            x, y = cx0 - vx * k, cy0 - vy * k
            box = Box(x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            rel = min(LOOKBACK_GROWTH * k * 0.5, LOOKBACK_MAX_GROWTH)
            out.append(Backfill(f, self._as_detection(t, _grow(box, rel))))
        return out

    def _mask_box(self, t: _Track, sigmas: float) -> Box:
        """The box to mask for track ``t`` at its predicted position: the last
        detected size (grown by the filter's size estimate up to
        ``MAX_SIZE_GROWTH``, never shrunk: fail closed), each side grown by
        ``sigmas`` standard deviations of the centre's uncertainty ADDED since
        the last hit (the detected box itself was certain enough to mask;
        capped at ``MAX_GROWTH``)."""
        cx, cy, fw, fh = (float(v) for v in t.kf.mean[:4])
        lw, lh = max(t.last_box.width, 1.0), max(t.last_box.height, 1.0)
        w = min(max(fw, lw), lw * MAX_SIZE_GROWTH)
        h = min(max(fh, lh), lh * MAX_SIZE_GROWTH)
        gx = gy = 0.0
        if sigmas > 0:
            ax = max(float(t.kf.cov[0, 0]) - t.hit_var[0], 0.0)
            ay = max(float(t.kf.cov[1, 1]) - t.hit_var[1], 0.0)
            gx = min(sigmas * float(np.sqrt(ax)), MAX_GROWTH * w)
            gy = min(sigmas * float(np.sqrt(ay)), MAX_GROWTH * h)
        return Box(cx - w / 2 - gx, cy - h / 2 - gy, cx + w / 2 + gx, cy + h / 2 + gy)

    def _visible(self, t: _Track) -> bool:
        b = t.kf.box().clip(self.width, self.height)
        return b.width > 0 and b.height > 0

    def _as_detection(self, t: _Track, box: Box) -> Detection:
        return Detection(self.cls, box, t.score, t.detector, t.id)

    def _clipped(self, d: Detection) -> Detection:
        box = d.box.clip(self.width, self.height)
        return Detection(d.cls, box, d.score, d.detector, d.track_id)


class MultiTracker:
    """One ``ClassTracker`` per class; the object a video stage talks to.

    ``thresholds`` maps each tracked class to its operating threshold:
    detections at or above it are "high" (always masked, may start tracks),
    below it "low" (masked only when they continue a confirmed track).
    ``lookback`` is the number of earlier frames the caller can still change
    (its look-ahead buffer); backfills never reach further back. ``classes``:
    each class's settings, for the score a large box needs
    (``ClassConfig.threshold_for``).
    """

    def __init__(
        self,
        cfg: TrackConfig,
        thresholds: Mapping[ObjectClass, float],
        width: int,
        height: int,
        lookback: int | None = None,
        classes: Mapping[ObjectClass, ClassConfig] | None = None,
    ) -> None:
        self.cfg = cfg
        lb = cfg.lookback if lookback is None else lookback
        cc = classes or {}
        self.trackers = {
            cls: ClassTracker(cls, cfg, thr, width, height, lb, cc.get(cls))
            for cls, thr in thresholds.items()
        }

    def step(self, frame: int, detections: Sequence[Detection] | None) -> TrackStep:
        """Advance every class by one frame.

        ``frame`` MUST increase by one per call. ``detections`` are the
        detector's boxes for this frame at any score down to the low
        threshold (boxes of a class without a tracker pass through unchanged),
        or ``None`` when the detector did not run on this frame.
        """
        current: list[Detection] = []
        backfill: list[Backfill] = []
        assigned: list[Detection] = []
        for cls, tr in self.trackers.items():
            dets = None if detections is None else [d for d in detections if d.cls == cls]
            c, b = tr.step(frame, dets)
            assigned.extend(tr.last_assigned)
            current.extend(c)
            backfill.extend(b)
        if detections is not None:
            # Classes without a tracker: their raw detections still pass through.
            current.extend(d for d in detections if d.cls not in self.trackers)
        return TrackStep(frame, tuple(current), tuple(backfill), tuple(assigned))

    def started(self) -> dict[str, int]:
        """Tracks started per class (distinct objects seen, roughly)."""
        return {cls: tr.started for cls, tr in self.trackers.items()}


__all__ = ["Backfill", "ClassTracker", "KalmanBox", "MultiTracker", "TrackStep"]
