"""``redactd eval``: the evaluation of one profile on labelled sets, image by image.

Per image, in this order:

1. decode it as the pipeline does and run the profile's detectors with the
   score floor lowered to ``EVAL_FLOOR`` (box metrics need the whole
   precision-recall curve; the operating point keeps the scores >= the
   class threshold, see ``redactd.evaluation.metrics``);
2. anonymize it with the real pipeline (``Pipeline.process``) into a private
   work folder, time it, and compare output and input pixels
   (``redactd.evaluation.pixels``);
3. with ``sweep``: the same for the profile with the threshold of the
   set's classes set to each value tried (recall against over-masking);
4. with ``attack``: the attacks of ``redactd.evaluation.attack`` on that
   output, then the same for every mask method (the profile with only
   ``mask.method`` changed, for every class), each through the real pipeline;
5. delete the outputs.

Masked outputs exist only inside the work folder and only while their
image is scored. Logs carry counts and timings, never names or paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from redactd import __version__
from redactd.core import log
from redactd.core.config import Config, MaskMethod, Profile
from redactd.core.errors import PermanentInputError, TransientError
from redactd.core.types import Detection, ObjectClass
from redactd.evaluation import attack as attack_mod
from redactd.evaluation import pixels as pixels_mod
from redactd.evaluation.dataset import LabelledSet
from redactd.evaluation.labels import LabelledImage
from redactd.evaluation.metrics import ClassMetrics, class_metrics
from redactd.evaluation.ocr import TextRecognizer
from redactd.models import manifest
from redactd.pipeline.process import Pipeline
from redactd.stages.detect.runtime import Runtime
from redactd.stages.media import image as image_io

#: Score floor of the detection pass behind the box metrics (the PR curve starts here).
EVAL_FLOOR = attack_mod.REDETECT_FLOOR


@dataclass(frozen=True)
class Latency:
    """Wall time of ``Pipeline.process`` per image (decode, detect, mask, encode)."""

    images: int
    mean_ms: float | None
    median_ms: float | None
    p95_ms: float | None
    ms_per_megapixel: float | None  # total time / total megapixels
    detect_mean_ms: float | None


#: The worst images by over-masking kept per set (listed by rank, never by name).
WORST_IMAGES = 10


@dataclass(frozen=True)
class WorstImage:
    """One of a set's most over-masked images. ``index`` is its position in the set
    (for ``--show-names`` on the terminal only; reports give the rank)."""

    rank: int
    overmask: float
    changed_pixels: int
    index: int


@dataclass(frozen=True)
class SweepPoint:
    """Masked recall and over-masking of the profile with one class threshold changed."""

    cls: str
    threshold: float
    operating: bool  # the profile's own threshold
    masked_recall: float | None
    detail_recall: float | None
    overmask: float | None


@dataclass(frozen=True)
class ClassReport:
    """Box metrics and masked recall of one class on one set."""

    metrics: ClassMetrics
    pixels: pixels_mod.PixelSummary
    enabled: bool  # whether the profile detects and masks this class at all


@dataclass(frozen=True)
class SetReport:
    """Everything measured on one labelled set."""

    name: str
    format: str
    images: int
    total_images: int
    labels_complete: bool
    failed: int
    failed_reasons: dict[str, int]
    classes: tuple[ClassReport, ...]
    overmask: float | None
    latency: Latency
    attack: tuple[attack_mod.AttackSummary, ...] = ()
    seconds: float = 0.0
    overmask_far: float | None = None
    #: Mean of the per-image over-masking, and how many images exceed 1 %.
    overmask_image_mean: float | None = None
    images_over_1pct: int = 0
    worst: tuple[WorstImage, ...] = ()
    negatives: pixels_mod.NegativeSummary | None = None
    #: Negative regions by kind: (kind, regions, masked).
    negatives_by_kind: tuple[tuple[str, int, int], ...] = ()
    sweep: tuple[SweepPoint, ...] = ()


@dataclass(frozen=True)
class Hardware:
    """The machine and runtime the numbers were measured on."""

    cpu: str
    logical_cpus: int
    usable_cpus: int
    platform: str
    python: str
    openvino: str
    detectors: tuple[str, ...]  # "name: model (device, precision)"


@dataclass(frozen=True)
class EvalReport:
    """The result of one ``redactd eval`` run."""

    redactd_version: str
    created_utc: str
    profile: str
    limit: int | None
    attack: bool
    hardware: Hardware
    sets: tuple[SetReport, ...]
    settings: dict[str, float]
    profile_settings: dict[str, Any] = dataclasses.field(default_factory=dict)


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or the platform's guess."""
    with contextlib.suppress(OSError):
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def hardware(pipeline: Pipeline) -> Hardware:
    """Describe this machine and the loaded detectors."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    runtime = getattr(pipeline.detectors, "runtime", None)
    return Hardware(
        cpu=cpu_model(),
        logical_cpus=os.cpu_count() or 0,
        usable_cpus=usable,
        platform=platform.platform(),
        python=platform.python_version(),
        openvino=str(runtime.version) if runtime is not None else "not loaded",
        detectors=tuple(
            f"{m.detector}: {m.model} ({m.device}, {m.precision})" for m in pipeline.describe()
        ),
    )


def settings() -> dict[str, float]:
    """The constants that define the measures (copied into every report)."""
    return {
        "iou_match": 0.5,
        "small_height_px": 32.0,
        "eval_floor": EVAL_FLOOR,
        "change_threshold": float(pixels_mod.CHANGE_THRESHOLD),
        "anonymized_share": pixels_mod.ANONYMIZED_SHARE,
        "strict_share": pixels_mod.STRICT_SHARE,
        "far_margin": pixels_mod.FAR_MARGIN,
        "luma_threshold": pixels_mod.LUMA_THRESHOLD,
        "detail_threshold": pixels_mod.DETAIL_THRESHOLD,
        "strict_detail_share": pixels_mod.STRICT_DETAIL_SHARE,
        "min_detail_share": pixels_mod.MIN_DETAIL_SHARE,
        "growth": pixels_mod.GROWTH,
        "opening_px": float(pixels_mod.OPENING),
        "redetect_floor": attack_mod.REDETECT_FLOOR,
        "redetect_threshold": attack_mod.REDETECT_THRESHOLD,
        "redetect_min_height_px": attack_mod.REDETECT_MIN_HEIGHT,
        "redetect_iou": attack_mod.REDETECT_IOU,
    }


def method_variant(profile: Profile, method: MaskMethod) -> Profile:
    """``profile`` with every class masked by ``method`` (all other settings kept)."""
    return dataclasses.replace(
        profile,
        face=dataclasses.replace(
            profile.face, mask=dataclasses.replace(profile.face.mask, method=method)
        ),
        plate=dataclasses.replace(
            profile.plate, mask=dataclasses.replace(profile.plate.mask, method=method)
        ),
    )


@dataclass
class _Variant:
    """A profile to attack and the pipeline that runs it (shares the loaded detectors)."""

    label: str
    name: str
    profile: Profile
    pipeline: Pipeline
    boxes: list[attack_mod.BoxAttack]


def _variants(
    pipeline: Pipeline, cfg: Config, profile_name: str, methods: Sequence[MaskMethod]
) -> list[_Variant]:
    prof = cfg.profile(profile_name)
    out = [_Variant("profile", profile_name, prof, pipeline, [])]
    for m in methods:
        variant = method_variant(prof, m)
        name = f"{profile_name}.eval-{m}"
        vcfg = dataclasses.replace(cfg, profiles={**cfg.profiles, name: variant})
        out.append(_Variant(m, name, variant, Pipeline(vcfg, pipeline.detectors), []))
    return out


def load_recognizer(
    pipeline: Pipeline, cfg: Config, sets: Sequence[LabelledSet]
) -> TextRecognizer | None:
    """The plate recogniser, when some set labels plate strings (``ModelError`` if missing)."""
    if not any(
        b.cls == "plate" and isinstance(b.extra.get("text"), str)
        for s in sets
        for im in s.images
        for b in im.boxes
    ):
        return None
    runtime = getattr(pipeline.detectors, "runtime", None) or Runtime(cfg.runtime)
    return TextRecognizer.load(manifest.load(), runtime, cfg.models.dir)


def _bgr(path: Path) -> np.ndarray:
    rgb = pixels_mod.read_rgb(path)
    return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def threshold_variant(profile: Profile, cls: ObjectClass, threshold: float) -> Profile:
    """``profile`` with the detection threshold of class ``cls`` set to ``threshold``."""
    return profile.with_class(cls, dataclasses.replace(profile.of(cls), threshold=threshold))


def worst_images(results: Sequence[pixels_mod.PixelResult]) -> tuple[WorstImage, ...]:
    """The ``WORST_IMAGES`` most over-masked images (ties: set order), worst first."""
    scored = [(r.overmask, i, r.out_changed) for i, r in enumerate(results)]
    ranked = sorted(((v, i, c) for v, i, c in scored if v is not None), key=lambda t: (-t[0], t[1]))
    return tuple(
        WorstImage(rank=k + 1, overmask=v, changed_pixels=c, index=i)
        for k, (v, i, c) in enumerate(ranked[:WORST_IMAGES])
    )


def _negatives_by_kind(
    images: Sequence[LabelledImage], results: Sequence[pixels_mod.PixelResult]
) -> tuple[tuple[str, int, int], ...]:
    counts: dict[str, list[int]] = {}
    for im, r in zip(images, results, strict=True):
        for kind, share in zip(im.negative_kinds, r.negatives, strict=True):
            c = counts.setdefault(kind or "text", [0, 0])
            c[0] += 1
            c[1] += share >= pixels_mod.STRICT_DETAIL_SHARE
    return tuple((k, n, m) for k, (n, m) in sorted(counts.items()))


def _latency(runs: Sequence[pixels_mod.MaskedImage], images: Sequence[LabelledImage]) -> Latency:
    ok = [(r, im) for r, im in zip(runs, images, strict=True) if r.job is not None]
    if not ok:
        return Latency(0, None, None, None, None, None)
    ms = [r.wall_ms for r, _ in ok]
    mp = sum(im.width * im.height for _, im in ok) / 1e6
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    detect = [r.job.timings.detect_ms for r, _ in ok if r.job is not None]
    return Latency(
        images=len(ok),
        mean_ms=statistics.fmean(ms),
        median_ms=statistics.median(ms),
        p95_ms=p95,
        ms_per_megapixel=sum(ms) / mp if mp else None,
        detect_mean_ms=statistics.fmean(detect) if detect else None,
    )


def _floor_detections(
    pipeline: Pipeline, image: LabelledImage, prof: Profile, cfg: Config
) -> tuple[list[Detection], np.ndarray | None]:
    try:
        decoded = image_io.decode(image.path, cfg.limits)
    except (PermanentInputError, TransientError, OSError):
        return [], None
    bgr = decoded.pages[0].bgr
    return pipeline.detect_frame(bgr, prof, EVAL_FLOOR), bgr


@dataclass(frozen=True)
class _Sweep:
    """One threshold tried for one class: its profile variant and the pipeline running it."""

    cls: ObjectClass
    threshold: float
    pipeline: Pipeline
    profile_name: str


def _sweeps(
    pipeline: Pipeline,
    cfg: Config,
    profile_name: str,
    classes: Sequence[ObjectClass],
    thresholds: Sequence[float],
) -> list[_Sweep]:
    """A variant per class and threshold, except the profile's own and disabled classes."""
    prof = cfg.profile(profile_name)
    out: list[_Sweep] = []
    for c in classes:
        for t in sorted(set(thresholds)):
            if t == prof.of(c).threshold or not prof.of(c).enabled:
                continue
            name = f"{profile_name}.eval-{c}-{t:g}"
            vcfg = dataclasses.replace(
                cfg, profiles={**cfg.profiles, name: threshold_variant(prof, c, t)}
            )
            out.append(_Sweep(c, t, Pipeline(vcfg, pipeline.detectors), name))
    return out


def _masking_as_profile(
    variants: Sequence[_Variant], prof: Profile, classes: Sequence[ObjectClass]
) -> set[str]:
    """Labels of the method variants that mask ``classes`` exactly as the profile does.

    They give the same attack results: the profile's are reused instead of
    running the pipeline again.
    """
    return {
        v.label
        for v in variants[1:]
        if all(v.profile.of(c).mask == prof.of(c).mask for c in classes)
    }


def _delete(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _run_sweeps(
    sweeps: Sequence[_Sweep], image: LabelledImage, k: int, work: Path
) -> list[pixels_mod.PixelResult]:
    """``image`` through each sweep variant, in order; each output is deleted at once."""
    out = []
    for j, s in enumerate(sweeps):
        dst = work / f"{k:06d}-sweep{j}{image.path.suffix.lower()}"
        run = pixels_mod.run_pipeline(s.pipeline, image, s.profile_name, dst)
        out.append(run.pixels)
        _delete(run.output)
    return out


def evaluate_set(
    pipeline: Pipeline,
    cfg: Config,
    profile_name: str,
    lset: LabelledSet,
    work: Path,
    *,
    attack: bool = False,
    methods: Sequence[MaskMethod] = attack_mod.METHODS,
    recognizer: TextRecognizer | None = None,
    progress: Callable[[int, int], None] | None = None,
    sweep: Sequence[float] = (),
) -> SetReport:
    """Measure one set (see the module doc). ``work`` MUST be a private, existing folder.

    With ``attack``, the profile itself and one variant per mask method in
    ``methods`` are attacked (``methods=()``: the profile only). ``sweep``:
    thresholds tried for each class the set labels (besides the profile's).
    """
    t0 = time.perf_counter()
    prof = cfg.profile(profile_name)
    sweeps = _sweeps(pipeline, cfg, profile_name, lset.classes, sweep)
    sweep_results: list[list[pixels_mod.PixelResult]] = [[] for _ in sweeps]
    variants = _variants(pipeline, cfg, profile_name, methods) if attack else []
    same = _masking_as_profile(variants, prof, lset.classes)
    to_run = [v for v in variants if v.label not in same]
    dets: list[list[Detection]] = []
    runs: list[pixels_mod.MaskedImage] = []
    for k, image in enumerate(lset.images):
        floor_dets, original = _floor_detections(pipeline, image, prof, cfg)
        dets.append(floor_dets)
        dst = work / f"{k:06d}-profile{image.path.suffix.lower()}"
        run = pixels_mod.run_pipeline(pipeline, image, profile_name, dst)
        runs.append(run)
        for results, px in zip(sweep_results, _run_sweeps(sweeps, image, k, work), strict=True):
            results.append(px)
        try:
            if attack and original is not None:
                base = attack_mod.baseline(image, original, floor_dets, recognizer)
                for v in to_run:
                    _attack_variant(v, image, k, run, base, recognizer, work)
        finally:
            _delete(run.output)
        if progress is not None:
            progress(k + 1, len(lset.images))
    summaries = tuple(
        attack_mod.summarise(v.label, c, variants[0].boxes if v.label in same else v.boxes)
        for v in variants
        for c in lset.classes
    )
    swept = list(zip(sweeps, sweep_results, strict=True))
    return _set_report(lset, prof, dets, runs, summaries, swept, t0)


def _sweep_points(
    classes: Sequence[ClassReport],
    swept: Sequence[tuple[_Sweep, Sequence[pixels_mod.PixelResult]]],
    results: Sequence[pixels_mod.PixelResult],
) -> tuple[SweepPoint, ...]:
    """The operating point of each enabled class, and each swept threshold (by class, threshold)."""
    points = [
        SweepPoint(
            cls=c.pixels.cls,
            threshold=c.metrics.threshold,
            operating=True,
            masked_recall=c.pixels.masked_recall,
            detail_recall=c.pixels.detail_recall,
            overmask=pixels_mod.overmask(results),
        )
        for c in classes
        if c.enabled
    ]
    for s, res in swept:
        summ = pixels_mod.summarise(res, s.cls)
        points.append(
            SweepPoint(
                s.cls,
                s.threshold,
                False,
                summ.masked_recall,
                summ.detail_recall,
                pixels_mod.overmask(res),
            )
        )
    points.sort(key=lambda p: (p.cls, p.threshold))
    return tuple(points)


def _set_report(
    lset: LabelledSet,
    prof: Profile,
    dets: Sequence[Sequence[Detection]],
    runs: Sequence[pixels_mod.MaskedImage],
    attack: tuple[attack_mod.AttackSummary, ...],
    swept: Sequence[tuple[_Sweep, Sequence[pixels_mod.PixelResult]]],
    t0: float,
) -> SetReport:
    """The set's report from its per-image measurements (``t0``: when the set started)."""
    results = [r.pixels for r in runs]
    classes = tuple(
        ClassReport(
            metrics=class_metrics(lset.images, dets, c, prof.of(c).threshold),
            pixels=pixels_mod.summarise(results, c),
            enabled=bool(prof.of(c).enabled),
        )
        for c in lset.classes
    )
    reasons: dict[str, int] = {}
    for r in runs:
        if r.error is not None:
            reasons[r.error] = reasons.get(r.error, 0) + 1
    per_image = [v for v in (r.overmask for r in results) if v is not None]
    has_negatives = any(im.negatives for im in lset.images)
    return SetReport(
        name=lset.name,
        format=lset.format,
        images=len(lset.images),
        total_images=lset.total_images,
        labels_complete=lset.labels_complete,
        failed=sum(1 for r in runs if r.error is not None),
        failed_reasons=reasons,
        classes=classes,
        overmask=pixels_mod.overmask(results),
        latency=_latency(runs, lset.images),
        attack=attack,
        seconds=time.perf_counter() - t0,
        overmask_far=pixels_mod.overmask_far(results),
        overmask_image_mean=statistics.fmean(per_image) if per_image else None,
        images_over_1pct=sum(1 for v in per_image if v > 0.01),
        worst=worst_images(results),
        negatives=pixels_mod.summarise_negatives(results) if has_negatives else None,
        negatives_by_kind=_negatives_by_kind(lset.images, results) if has_negatives else (),
        sweep=_sweep_points(classes, swept, results),
    )


def _attack_variant(
    v: _Variant,
    image: LabelledImage,
    k: int,
    run: pixels_mod.MaskedImage,
    base: attack_mod.Baseline,
    recognizer: TextRecognizer | None,
    work: Path,
) -> None:
    if v.label == "profile":
        vrun = run
    else:
        dst = work / f"{k:06d}-{v.label}{image.path.suffix.lower()}"
        vrun = pixels_mod.run_pipeline(v.pipeline, image, v.name, dst)
    try:
        if vrun.output is None or not vrun.pixels.ok:
            # No output: nothing was masked, so nothing is attacked (the
            # failure is already counted by the masked-recall pass).
            return
        masked = _bgr(vrun.output)
        v.boxes.extend(
            attack_mod.attack_image(
                v.pipeline, v.profile, image, masked, vrun.pixels, recognizer, base
            )
        )
    finally:
        if vrun is not run:
            _delete(vrun.output)


def evaluate(
    pipeline: Pipeline,
    cfg: Config,
    profile_name: str,
    sets: Sequence[LabelledSet],
    work: Path,
    *,
    attack: bool = False,
    methods: Sequence[MaskMethod] = attack_mod.METHODS,
    recognizer: TextRecognizer | None = None,
    limit: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    sweep: Sequence[float] = (),
) -> EvalReport:
    """Measure every set; ``progress(set_index, done, total)`` is called after each image."""
    logger = log.get("redactd.eval")
    reports = []
    for i, lset in enumerate(sets):

        def step(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i, done, total)

        rep = evaluate_set(
            pipeline,
            cfg,
            profile_name,
            lset,
            work,
            attack=attack,
            methods=methods,
            recognizer=recognizer,
            progress=step,
            sweep=sweep,
        )
        logger.info(
            "eval.set_done",
            set_index=i,
            images=rep.images,
            failed=rep.failed,
            seconds=round(rep.seconds, 1),
        )
        reports.append(rep)
    return EvalReport(
        redactd_version=__version__,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        profile=profile_name,
        limit=limit,
        attack=attack,
        hardware=hardware(pipeline),
        sets=tuple(reports),
        settings=settings(),
        profile_settings=dataclasses.asdict(cfg.profile(profile_name)),
    )
