"""``redactd eval`` on labelled videos: run the real pipeline, score every frame.

Per video:

1. anonymize it with ``Pipeline.process`` into the private work folder and
   time it (latency per frame, frames per second);
2. decode input and output frame by frame (stored pixels, as labelled) and
   compare each pair with ``redactd.evaluation.pixels.compare_arrays``: the
   strict masked rule per labelled track box, over-masking per frame;
3. turn the per-box verdicts into mask stability per track
   (``redactd.evaluation.stability``);
4. with ``attack``: the image attacks of ``redactd.evaluation.attack``
   (re-detection, deblur-then-re-detection and plate reading) on
   ``ATTACK_FRAMES`` labelled frames spread evenly over the video, for the
   profile's masks and then for each mask method in ``methods`` (the video
   anonymized again by the real pipeline with only ``mask.method``
   changed; a method masking the labelled classes as the profile does
   reuses the profile's results). Plates carry no text in video labels:
   each sampled plate box is judged by what the recogniser reads in the
   input frame (``attack.with_read_text``);
5. delete the output(s).

A video the pipeline refused has no output: every box counts as unmasked
and the video is reported failed with its reason code. An output with fewer
frames than the input counts the missing frames as unmasked (fail closed).
Logs and reports carry indexes and digests, never names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from redactd import __version__
from redactd.core.errors import PermanentInputError, TransientError
from redactd.core.types import CLASSES, ObjectClass
from redactd.evaluation import attack as attack_mod
from redactd.evaluation import pixels, stability
from redactd.evaluation.labels import LabelledBox, LabelledImage
from redactd.evaluation.video_labels import LabelledVideo, TrackBox, VideoSet

if TYPE_CHECKING:
    from redactd.core.config import MaskMethod, Profile
    from redactd.evaluation.ocr import TextRecognizer
    from redactd.evaluation.runner import Hardware
    from redactd.pipeline.process import Pipeline

#: Labelled frames per video the attacks run on (spread evenly over those with counted boxes).
ATTACK_FRAMES = 8

#: Called with (frame, labels of the frame, input RGB, output RGB, pixel result).
SampleFn = Callable[[int, LabelledImage, np.ndarray, np.ndarray, pixels.PixelResult], None]


@dataclass(frozen=True)
class FrameScore:
    """One frame: counted boxes and strictly masked ones per class, over-masking."""

    frame: int
    boxes: dict[str, int]
    masked: dict[str, int]
    overmask: float | None
    out_pixels: int
    out_changed: int


@dataclass(frozen=True)
class ClassScore:
    """Per-frame strict masked recall of one class, and its stability."""

    cls: ObjectClass
    box_frames: int
    masked: int
    stability: stability.StabilitySummary

    @property
    def recall(self) -> float | None:
        return self.masked / self.box_frames if self.box_frames else None

    @property
    def fnr(self) -> float | None:
        r = self.recall
        return None if r is None else 1.0 - r


@dataclass(frozen=True)
class VideoScore:
    """Everything measured on one video."""

    index: int
    digest: str
    frames: int
    output_frames: int
    fps: float
    classes: tuple[ClassScore, ...]
    per_frame: tuple[FrameScore, ...]
    tracks: tuple[stability.TrackStability, ...]
    wall_ms: float = 0.0
    error: str | None = None
    attack: tuple[attack_mod.AttackSummary, ...] = ()
    attack_frames: int = 0

    @property
    def out_pixels(self) -> int:
        return sum(f.out_pixels for f in self.per_frame)

    @property
    def out_changed(self) -> int:
        return sum(f.out_changed for f in self.per_frame)

    @property
    def overmask(self) -> float | None:
        return self.out_changed / self.out_pixels if self.out_pixels else None

    def overmask_frames(self) -> list[float]:
        return [f.overmask for f in self.per_frame if f.overmask is not None]

    @property
    def ms_per_frame(self) -> float | None:
        return self.wall_ms / self.frames if self.frames and self.wall_ms else None

    @property
    def frames_per_second(self) -> float | None:
        return self.frames / (self.wall_ms / 1000.0) if self.frames and self.wall_ms else None


@dataclass(frozen=True)
class VideoSetScore:
    index: int
    digest: str
    videos: tuple[VideoScore, ...]

    def classes(self) -> list[ClassScore]:
        out = []
        for cls in CLASSES:
            cs = [c for v in self.videos for c in v.classes if c.cls == cls]
            if not cs:
                continue
            out.append(
                ClassScore(
                    cls,
                    sum(c.box_frames for c in cs),
                    sum(c.masked for c in cs),
                    stability.pool([c.stability for c in cs], cls),
                )
            )
        return out

    @property
    def overmask(self) -> float | None:
        px = sum(v.out_pixels for v in self.videos)
        return sum(v.out_changed for v in self.videos) / px if px else None

    @property
    def frames(self) -> int:
        return sum(v.frames for v in self.videos)

    @property
    def wall_ms(self) -> float:
        return sum(v.wall_ms for v in self.videos)


@dataclass(frozen=True)
class VideoEvalReport:
    redactd_version: str
    created_utc: str
    profile: str
    hardware: Hardware | None
    sets: tuple[VideoSetScore, ...]


def decode_rgb(path: Path) -> Iterator[np.ndarray]:
    """The stored frames of a video as ``HxWx3`` RGB (the pixels labels refer to)."""
    from redactd.stages.media import video as video_io  # PyAV, imported only where used

    return video_io.stored_frames_rgb(path)


def video_fps(path: Path) -> float:
    from redactd.stages.media import video as video_io

    return video_io.average_fps(path)


def _image(video: LabelledVideo, boxes: Sequence[TrackBox], w: int, h: int) -> LabelledImage:
    return LabelledImage(
        path=video.path,
        width=w,
        height=h,
        labels_complete=True,
        boxes=tuple(LabelledBox(b.cls, b.box, ignore=b.ignore) for b in boxes),
    )


def score_frames(
    video: LabelledVideo,
    pairs: Iterable[tuple[np.ndarray, np.ndarray | None]],
    fps: float,
    index: int = 0,
    sample: tuple[set[int], SampleFn] | None = None,
) -> VideoScore:
    """Score (input, output) frame pairs (output ``None``: missing, all unmasked).

    ``sample``: (frames, callback) -- the callback gets those frames' pairs.
    """
    by_frame = video.frames()
    per_frame: list[FrameScore] = []
    track_frames: list[stability.TrackFrame] = []
    n_in = n_out = 0
    for t, (before, after) in enumerate(pairs):
        n_in += 1
        boxes = by_frame.get(t, [])
        h, w = before.shape[:2]
        im = _image(video, boxes, w, h)
        if after is None or after.shape != before.shape:
            res = pixels.unchanged(im)
        else:
            n_out += 1
            res = pixels.compare_arrays(im, before, after)
            if sample is not None and t in sample[0]:
                sample[1](t, im, before, after, res)
        per_frame.append(_frame_score(t, boxes, res, track_frames))
    minutes = n_in / fps / 60.0 if fps > 0 else 0.0
    per_track = stability.tracks(track_frames)
    return VideoScore(
        index=index,
        digest=video.digest,
        frames=n_in,
        output_frames=n_out,
        fps=fps,
        classes=_class_scores(per_frame, per_track, minutes),
        per_frame=tuple(per_frame),
        tracks=tuple(per_track),
    )


def _frame_score(
    t: int,
    boxes: Sequence[TrackBox],
    res: pixels.PixelResult,
    track_frames: list[stability.TrackFrame],
) -> FrameScore:
    """Frame ``t``'s counted and strictly masked boxes per class; each counted box's
    track-frame is appended to ``track_frames``."""
    counts: dict[str, int] = {}
    masked: dict[str, int] = {}
    for b, bc in zip(boxes, res.boxes, strict=True):
        if b.ignore:
            continue
        ok = bc.strictly_masked
        counts[b.cls] = counts.get(b.cls, 0) + 1
        masked[b.cls] = masked.get(b.cls, 0) + int(ok)
        track_frames.append(stability.TrackFrame(t, b.track, b.cls, ok))
    return FrameScore(t, counts, masked, res.overmask, res.out_pixels, res.out_changed)


def _class_scores(
    per_frame: Sequence[FrameScore], per_track: Sequence[stability.TrackStability], minutes: float
) -> tuple[ClassScore, ...]:
    """Per class with labelled boxes or tracks: box-frames, masked ones, track stability."""
    classes = []
    for cls in CLASSES:
        n = sum(f.boxes.get(cls, 0) for f in per_frame)
        if n == 0 and not any(t.cls == cls for t in per_track):
            continue
        classes.append(
            ClassScore(
                cls,
                n,
                sum(f.masked.get(cls, 0) for f in per_frame),
                stability.summarise(per_track, cls, minutes),
            )
        )
    return tuple(classes)


def score_file(
    video: LabelledVideo,
    output: Path | None,
    index: int = 0,
    sample: tuple[set[int], SampleFn] | None = None,
) -> VideoScore:
    """Score a masked video (made by redactd or another tool) against its labels."""
    before = decode_rgb(video.path)
    after: Iterable[np.ndarray | None] = decode_rgb(output) if output is not None else iter(())

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for b, a in zip_longest(before, after):
            if b is None:
                break  # extra output frames: nothing labelled to score
            yield b, a

    return score_frames(video, pairs(), video_fps(video.path), index, sample)


def unscored(video: LabelledVideo, index: int = 0) -> VideoScore:
    """The score of a video that cannot be decoded at all: every labelled box unmasked."""
    if not video.boxes:
        return score_frames(video, iter(()), 0.0, index)
    w = int(max(b.box.x2 for b in video.boxes)) + 1
    h = int(max(b.box.y2 for b in video.boxes)) + 1
    n = max(b.frame for b in video.boxes) + 1
    blank = np.zeros((h, w, 3), np.uint8)
    return score_frames(video, ((blank, None) for _ in range(n)), 0.0, index)


def attack_frames(video: LabelledVideo, n: int = ATTACK_FRAMES) -> set[int]:
    """``n`` frames with counted boxes, spread evenly over those."""
    frames = sorted({b.frame for b in video.boxes if not b.ignore})
    if len(frames) <= n:
        return set(frames)
    return (
        {frames[round(i * (len(frames) - 1) / (n - 1))] for i in range(n)}
        if n > 1
        else {frames[len(frames) // 2]}
    )


@dataclass(frozen=True)
class MethodVariant:
    """A mask method to attack: the profile with only ``mask.method`` changed."""

    label: str  # the method ("mosaic", ...)
    name: str  # the variant's profile name inside ``pipeline.cfg``
    profile: Profile
    pipeline: Pipeline


def method_variants(
    pipeline: Pipeline, profile: str, methods: Sequence[MaskMethod]
) -> list[MethodVariant]:
    """One variant per method, sharing the loaded detectors of ``pipeline``."""
    from redactd.evaluation.runner import method_variant
    from redactd.pipeline.process import Pipeline as _Pipeline

    cfg = pipeline.cfg
    out = []
    for m in methods:
        variant = method_variant(cfg.profile(profile), m)
        name = f"{profile}.eval-{m}"
        vcfg = dataclasses.replace(cfg, profiles={**cfg.profiles, name: variant})
        out.append(MethodVariant(m, name, variant, _Pipeline(vcfg, pipeline.detectors)))
    return out


def load_recognizer(pipeline: Pipeline, sets: Sequence[VideoSet]) -> TextRecognizer | None:
    """The plate recogniser, when some video labels plates (``ModelError`` if missing)."""
    if not any(b.cls == "plate" for vs in sets for v in vs.videos for b in v.boxes):
        return None
    from redactd.evaluation.ocr import TextRecognizer
    from redactd.models import manifest
    from redactd.stages.detect.runtime import Runtime

    cfg = pipeline.cfg
    runtime = getattr(pipeline.detectors, "runtime", None) or Runtime(cfg.runtime)
    return TextRecognizer.load(manifest.load(), runtime, cfg.models.dir)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def _process(pipeline: Pipeline, profile: str, video: LabelledVideo, dst: Path) -> str | None:
    """Anonymize ``video`` into ``dst``; the reason code when the pipeline refused it."""
    try:
        pipeline.process(video.path, dst, profile)
    except (PermanentInputError, TransientError) as e:
        return e.reason
    except OSError:
        return "io_error"
    return None


@dataclass(frozen=True)
class _Sample:
    """A sampled frame's labels (plate readings as text) and the attacks on its input."""

    image: LabelledImage
    base: attack_mod.Baseline


def _attack_variant(
    v: MethodVariant,
    video: LabelledVideo,
    dst: Path,
    samples: dict[int, _Sample],
    recognizer: TextRecognizer | None,
) -> list[attack_mod.BoxAttack]:
    """The variant's own output of ``video``, attacked on the sampled frames only.

    The sampled (input, output) pairs are decoded first (8 frames), so that a
    detector or recogniser failure during the attacks propagates instead of
    reading as an undecodable output.
    """
    pairs: list[tuple[_Sample, np.ndarray, np.ndarray]] = []
    try:
        if _process(v.pipeline, v.name, video, dst) is not None:
            return []  # no output: nothing masked, nothing attacked (as for images)
        # A shorter output: its missing frames have nothing masked to attack.
        frames = zip(decode_rgb(video.path), decode_rgb(dst), strict=False)
        for t, (before, after) in enumerate(frames):
            s = samples.get(t)
            if s is not None and after.shape == before.shape:
                pairs.append((s, before, after))
    except (OSError, ValueError):
        return []  # an output that cannot be decoded: nothing to attack
    finally:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
    out: list[attack_mod.BoxAttack] = []
    for s, before, after in pairs:
        res = pixels.compare_arrays(s.image, before, after)
        out.extend(
            attack_mod.attack_image(
                v.pipeline, v.profile, s.image, _bgr(after), res, recognizer, s.base
            )
        )
    return out


@dataclass
class _ProfileAttack:
    """The profile's attacks on the sampled frames, as ``score_file`` meets them (a
    ``SampleFn``); each frame's labels and baseline are kept for the method variants."""

    pipeline: Pipeline
    profile: Profile
    recognizer: TextRecognizer | None
    samples: dict[int, _Sample] = dataclasses.field(default_factory=dict)
    attacked: list[attack_mod.BoxAttack] = dataclasses.field(default_factory=list)

    def __call__(
        self,
        t: int,
        im: LabelledImage,
        before: np.ndarray,
        after: np.ndarray,
        res: pixels.PixelResult,
    ) -> None:
        # The attacks work on BGR as the detectors do; detector failures propagate.
        b_bgr = _bgr(before)
        im = attack_mod.with_read_text(im, b_bgr, self.recognizer)  # same boxes: ``res`` holds
        floor = self.pipeline.detect_frame(b_bgr, self.profile, attack_mod.REDETECT_FLOOR)
        base = attack_mod.baseline(im, b_bgr, floor, self.recognizer)
        self.samples[t] = _Sample(im, base)
        self.attacked.extend(
            attack_mod.attack_image(
                self.pipeline, self.profile, im, _bgr(after), res, self.recognizer, base
            )
        )


def run_video(
    pipeline: Pipeline,
    profile: str,
    video: LabelledVideo,
    dst: Path,
    index: int,
    attack: bool = False,
    recognizer: TextRecognizer | None = None,
    variants: Sequence[MethodVariant] = (),
) -> VideoScore:
    """Anonymize ``video`` into ``dst`` with the real pipeline, score it, delete ``dst``.

    With ``attack``: the profile's masks and those of each of ``variants``
    are attacked on the sampled frames (plates read with ``recognizer``).
    """
    t0 = time.perf_counter()
    error = _process(pipeline, profile, video, dst)
    output: Path | None = dst if error is None else None
    wall_ms = (time.perf_counter() - t0) * 1000.0
    on_sample = _ProfileAttack(pipeline, pipeline.cfg.profile(profile), recognizer)
    sample = (attack_frames(video), on_sample) if attack and output is not None else None
    try:
        try:
            score = score_file(video, output, index, sample)
        except (OSError, ValueError):  # an output that cannot be decoded masks nothing
            error = error or "compare_failed"
            score = unscored(video, index)
    finally:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
    if error is None and score.output_frames < score.frames:
        error = "output_frames_missing"
    summaries = _attack_summaries(
        on_sample, video, dst, variants if sample is not None else (), recognizer
    )
    return VideoScore(
        **{
            **score.__dict__,
            "wall_ms": wall_ms,
            "error": error,
            "attack": summaries,
            "attack_frames": len(sample[0]) if sample else 0,
        }
    )


def _attack_summaries(
    done: _ProfileAttack,
    video: LabelledVideo,
    dst: Path,
    variants: Sequence[MethodVariant],
    recognizer: TextRecognizer | None,
) -> tuple[attack_mod.AttackSummary, ...]:
    """Attack totals of the profile (``done``) and of each method variant, per class
    the profile's attacks met; each variant's output goes beside ``dst``."""
    attacked = done.attacked
    by_method: dict[str, list[attack_mod.BoxAttack]] = {"profile": attacked}
    labelled = {b.cls for b in video.boxes}
    for v in variants:
        if all(v.profile.of(c).mask == done.profile.of(c).mask for c in labelled):
            by_method[v.label] = attacked  # masks these classes as the profile does
            continue
        vdst = dst.with_name(f"{dst.stem}-{v.label}{dst.suffix}")
        by_method[v.label] = _attack_variant(v, video, vdst, done.samples, recognizer)
    return tuple(
        attack_mod.summarise(label, c, boxes)
        for label, boxes in by_method.items()
        for c in CLASSES
        if any(a.cls == c for a in attacked)
    )


def evaluate(
    pipeline: Pipeline,
    profile: str,
    sets: Sequence[VideoSet],
    work: Path,
    *,
    progress: Callable[[int, int, int], None] | None = None,
    with_hardware: bool = True,
    attack: bool = False,
    recognizer: TextRecognizer | None = None,
    methods: Sequence[MaskMethod] = attack_mod.METHODS,
) -> VideoEvalReport:
    """Every video of every set through ``profile``; outputs live in ``work`` while scored.

    With ``attack``, the profile and one variant per mask method in
    ``methods`` are attacked (``methods=()``: the profile only).
    """
    import hashlib

    from redactd.evaluation.runner import hardware

    variants = method_variants(pipeline, profile, methods) if attack else []
    out = []
    for si, vs in enumerate(sets):
        scores = []
        for vi, video in enumerate(vs.videos):
            dst = work / f"video-{si}-{vi}{video.path.suffix.lower()}"
            scores.append(
                run_video(pipeline, profile, video, dst, vi, attack, recognizer, variants)
            )
            if progress is not None:
                progress(si, vi + 1, len(vs.videos))
        digest = hashlib.sha256("".join(v.digest for v in vs.videos).encode()).hexdigest()
        out.append(VideoSetScore(si, digest, tuple(scores)))
    return VideoEvalReport(
        redactd_version=__version__,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        profile=profile,
        hardware=hardware(pipeline) if with_hardware else None,
        sets=tuple(out),
    )
