"""The explicit table of detectors by name, and the set loaded for one config.

A profile names detectors per class (``profiles.<p>.face.detectors``). Each
name maps to a ``DetectorInfo``: the class it finds, the manifest model it
runs and a factory that verifies and compiles that model. Plate detectors
(and the scripted fakes of the tests) join the table through ``register``.

``load`` compiles every detector the chosen profiles need exactly once (the
profiles share them); ``Detectors.find`` runs, per enabled class, every
configured detector over the multi-scale passes of that class, takes the
union and merges it by NMS.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from redactd.core import log
from redactd.core.config import ClassConfig, Config, Profile
from redactd.core.errors import ConfigError, ConfigErrors, ModelError
from redactd.core.types import CLASSES, Detection, ObjectClass
from redactd.models import derived, manifest
from redactd.models.manifest import ModelSpec
from redactd.stages.detect import (
    centerface,
    lpd_yunet,
    multiscale,
    omz_plate,
    omz_ssd,
    ppocr_plate,
    yolo_plate,
    yunet,
)
from redactd.stages.detect.base import Detector
from redactd.stages.detect.runtime import Network, Runtime

Factory = Callable[[ModelSpec, Runtime, Path], Detector]


@dataclass(frozen=True)
class DetectorInfo:
    """One registered detector: ``name`` (used in profiles), its class, its manifest model."""

    name: str
    cls: ObjectClass
    model: str
    factory: Factory


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded detector runs on (logged once at start, kept in job records)."""

    detector: str
    model: str
    identity: str  # ModelSpec.identity: a hash over the model's file hashes
    device: str
    precision: str
    # sha256 of each model file (verified at load), in file-name order
    files_sha256: tuple[str, ...] = ()
    openvino: str = ""  # OpenVINO runtime version


DETECTORS: dict[str, DetectorInfo] = {}


def register(info: DetectorInfo) -> None:
    """Add (or replace) a detector in the table."""
    DETECTORS[info.name] = info


register(DetectorInfo("centerface", "face", "centerface", centerface.create))
register(DetectorInfo("yunet", "face", "face_detection_yunet", yunet.create))
# INT8 models made on this server by `redactd models quantize` (models/derived.py)
register(DetectorInfo("centerface-int8", "face", "centerface-int8", centerface.create))
register(DetectorInfo("yunet-int8", "face", "face_detection_yunet-int8", yunet.create))
# Open Model Zoo face detectors: detector name = manifest model name; "-int8"
# is the FP16-INT8 IR of the same network.
for _omz in (
    "face-detection-retail-0004",
    "face-detection-retail-0004-int8",
    "face-detection-retail-0005",
    "face-detection-retail-0005-int8",
    "face-detection-adas-0001",
    "face-detection-adas-0001-int8",
    "face-detection-0200",
    "face-detection-0200-int8",
    "face-detection-0202",
    "face-detection-0202-int8",
    "face-detection-0204",
    "face-detection-0204-int8",
    "face-detection-0205",
):
    register(DetectorInfo(_omz, "face", _omz, omz_ssd.create))
# plates: the default (YOLOv8n plate detector; its IR is built from the fetched
# checkpoint by `models fetch`, models/derived.py kind "ir"), text regions with
# plate geometry (selectable for operators who cannot accept the YOLO weights'
# provenance), every text region, and the plate-specific models that come from
# a URL or a mirror (docs/PLATES.md)
register(DetectorInfo("yolov8_plate", "plate", "yolov8n_plate-ir", yolo_plate.create))
register(DetectorInfo("ppocr_plate", "plate", "ppocr_det", ppocr_plate.create))
register(DetectorInfo("ppocr_text", "plate", "ppocr_det", ppocr_plate.create_text))
register(DetectorInfo("lpd_yunet", "plate", "license_plate_detection_yunet", lpd_yunet.create))
for _omz in (
    "vehicle-license-plate-detection-barrier-0106",
    "vehicle-license-plate-detection-barrier-0106-int8",
):
    register(DetectorInfo(_omz, "plate", _omz, omz_plate.create))


def check_profiles(cfg: Config) -> list[ConfigError]:
    """Unknown detector names, or a detector listed under the wrong class."""
    errors: list[ConfigError] = []
    for pname, prof in cfg.profiles.items():
        for cls in CLASSES:
            cc = prof.of(cls)
            for i, dname in enumerate(cc.detectors):
                key = f"profiles.{pname}.{cls}.detectors[{i}]"
                info = DETECTORS.get(dname)
                if info is None:
                    known = ", ".join(sorted(n for n, d in DETECTORS.items() if d.cls == cls))
                    errors.append(
                        ConfigError(key, f"unknown detector {dname!r}; known: {known or 'none'}")
                    )
                elif info.cls != cls:
                    errors.append(
                        ConfigError(key, f"detector {dname!r} finds {info.cls}s, not {cls}s")
                    )
    return errors


def check_derived(cfg: Config) -> list[ModelError]:
    """Derived models (``redactd models quantize``) the profiles use that are absent or altered.

    Converted IRs (kind ``ir``) are left to ``models verify`` like the fetched
    models they come from: ``models fetch`` makes them, so a config checked
    before its models are installed (deploy/install.sh) is not refused for them.
    """
    names = {
        DETECTORS[d].model
        for prof in cfg.profiles.values()
        for cls in CLASSES
        if prof.of(cls).enabled
        for d in prof.of(cls).detectors
        if d in DETECTORS and DETECTORS[d].model in derived.RECIPES
        and derived.RECIPES[DETECTORS[d].model].kind == "int8"
    }
    if not names:
        return []
    models = manifest.load()
    errors = []
    for name in sorted(names):
        try:
            derived.spec(models, name, cfg.models.dir)
        except ModelError as e:
            errors.append(e)
    return errors


def profile_models(cfg: Config, profile: str) -> list[ModelSpec]:
    """The manifest (or derived) models the enabled classes of ``profile`` run, by name.

    Derived models are read from their provenance without hashing (loading
    verifies the files); raises ``ModelError`` for an unknown or absent one.
    """
    prof = cfg.profile(profile)
    names = sorted(
        {
            DETECTORS[d].model
            for cls in CLASSES
            if prof.of(cls).enabled
            for d in prof.of(cls).detectors
            if d in DETECTORS
        }
    )
    models = manifest.load()
    return [
        derived.spec(models, n, cfg.models.dir, verify=False)
        if n in derived.RECIPES
        else models.get(n)
        for n in names
    ]


def _infer_info(det: Detector) -> tuple[str, str]:
    network = getattr(det, "network", None)
    execution = getattr(network, "execution", None)
    if execution is None:
        return ("none", "none")
    return (str(execution.device), str(execution.precision))


@dataclass
class _Loaded:
    info: DetectorInfo
    detector: Detector
    model: ModelInfo


@dataclass(frozen=True)
class _Pass:
    """One detector run: a class's detector over one tile of the frame."""

    cls: str
    dname: str
    detector: Detector
    tile: multiscale.Tile
    threshold: float


def _networks(detector: object) -> list[Network]:
    """The runtime networks an adapter holds (``network``, or several as attributes)."""
    return [v for v in vars(detector).values() if isinstance(v, Network)]


def _merged(
    cls: str,
    cc: ClassConfig,
    passes: list[_Pass],
    results: list[list[multiscale.TileDetection]],
    w: int,
    h: int,
) -> list[Detection]:
    """One class's detections from its passes' ``results``: each detector's
    tiles merged by NMS at ``nms_iou``, then the detectors' boxes merged
    (unthresholded; ``find`` applies the class's threshold)."""
    found: list[Detection] = []
    for dname in cc.detectors:
        tiles = [
            td
            for p, r in zip(passes, results, strict=True)
            if p.cls == cls and p.dname == dname
            for td in r
        ]
        found.extend(
            Detection(d.cls, d.box.clip(w, h), d.score, d.detector, d.track_id)
            for d in multiscale.merge(tiles, cc.nms_iou)
        )
    if len(cc.detectors) > 1:
        # Ensemble: overlapping boxes of different detectors merge into their
        # union (plain NMS let a tight high-score box drop a larger one and
        # lost plate coverage: docs/PLATES.md). Marking every box as "cut"
        # makes multiscale.merge grow the kept box instead of discarding.
        found = multiscale.merge([multiscale.TileDetection(d, cut=True) for d in found], cc.nms_iou)
    return found


@dataclass
class Detectors:
    """The detectors loaded for one config; ``find`` is the detection stage.

    ``find`` is thread-safe (the networks keep a pool of infer requests).
    """

    loaded: dict[str, _Loaded] = field(default_factory=dict)
    runtime: Runtime | None = None
    _pool: concurrent.futures.ThreadPoolExecutor | None = field(default=None, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def find(
        self, image: np.ndarray, profile: Profile, floor: float | None = None
    ) -> list[Detection]:
        """All detections of the profile's enabled classes in a BGR uint8 ``HxWx3`` image.

        Every configured detector of a class runs over that class's multi-scale
        passes; the union is merged by NMS at the class's ``nms_iou``. Returns
        detections with ``score >= threshold`` of the class, or ``>= floor``
        when ``floor`` is given. MUST raise (never return ``[]``) when a
        detector fails, so the caller can fail closed.

        The passes (class x detector x tile) are independent: when the runtime
        runs several inferences at once (THROUGHPUT hint: one per stream) they
        run concurrently; the result is the same as in sequence.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("detectors take HxWx3 uint8 BGR images")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError("detectors take non-empty images")
        h, w = image.shape[:2]
        passes = self._plan(profile, floor, w, h)
        results = self._run(image, passes)
        out: list[Detection] = []
        for cls in CLASSES:
            cc = profile.of(cls)
            if not cc.enabled:
                continue
            threshold = cc.threshold if floor is None else floor
            found = _merged(cls, cc, passes, results, w, h)
            out.extend(d for d in found if d.score >= threshold)
        return out

    def _plan(self, profile: Profile, floor: float | None, w: int, h: int) -> list[_Pass]:
        """The passes of ``find``: each enabled class's detectors over its
        multi-scale tiles, in class, detector, tile order."""
        passes: list[_Pass] = []
        for cls in CLASSES:
            cc = profile.of(cls)
            if not cc.enabled:
                continue
            if not cc.detectors:
                raise ModelError(f"no detector configured for enabled class {cls!r}")
            threshold = cc.threshold if floor is None else floor
            for dname in cc.detectors:
                entry = self.loaded.get(dname)
                if entry is None:
                    raise ModelError(f"detector {dname!r} was not loaded for this profile")
                for tile in multiscale.plan(w, h, cc.tiling):
                    passes.append(_Pass(cls, dname, entry.detector, tile, threshold))
        return passes

    def _run(self, image: np.ndarray, passes: list[_Pass]) -> list[list[multiscale.TileDetection]]:
        """Each pass's detections in frame coordinates, in the order of ``passes``."""

        def one(p: _Pass) -> list[multiscale.TileDetection]:
            dets = p.detector.detect(multiscale.crop(image, p.tile), p.threshold)
            return multiscale.to_frame(dets, p.tile)

        pool = self._executor() if len(passes) > 1 else None
        if pool is None:
            return [one(p) for p in passes]
        # Largest passes first: they bound the wall time, the small ones fill in.
        sizes = [p.tile.out_w * p.tile.out_h for p in passes]
        order = sorted(range(len(passes)), key=lambda i: -sizes[i])
        futures = {i: pool.submit(one, passes[i]) for i in order}
        # .result() re-raises a failed pass's exception: fail closed as in sequence.
        return [futures[i].result() for i in range(len(passes))]

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor | None:
        with self._pool_lock:
            if self._pool is None:
                n = self.parallel
                if n <= 1:
                    return None
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=n, thread_name_prefix="redactd-detect"
                )
            return self._pool

    @property
    def parallel(self) -> int:
        """Inferences the loaded networks run at once (1 under the LATENCY hint)."""
        n = 1
        for entry in self.loaded.values():
            for net in _networks(entry.detector):
                n = max(n, net.parallel)
        return n

    def describe(self) -> list[ModelInfo]:
        """One ``ModelInfo`` per loaded detector, in name order."""
        return [self.loaded[n].model for n in sorted(self.loaded)]

    def close(self) -> None:
        """Release the compiled models (and the pass threads)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        for entry in self.loaded.values():
            close = getattr(entry.detector, "close", None)
            if callable(close):
                close()
        self.loaded.clear()


def load(
    cfg: Config, profile_names: Iterable[str] | None = None, concurrency: int = 1
) -> Detectors:
    """Load (verify and compile) every detector the named profiles use, once each.

    ``profile_names`` defaults to every profile of the config; ``concurrency``
    is how many jobs will use the detectors at once (with the profiles'
    passes it resolves the ``"auto"`` performance hint, see below). Raises
    ``ConfigError`` for an unknown profile or detector name, ``ModelError``
    when a model is missing, fails its sha256 check or cannot be compiled.
    """
    names = list(cfg.profiles) if profile_names is None else list(profile_names)
    wanted = _wanted(cfg, names)
    prefixes = tuple(f"profiles.{p}." for p in names)
    errors = [e for e in check_profiles(cfg) if e.key.startswith(prefixes)]
    if errors:
        raise ConfigErrors(errors)
    result = Detectors()
    if not wanted:
        return result
    models = manifest.load()
    runtime = Runtime(cfg.runtime, _streams(cfg, names, concurrency))
    result.runtime = runtime
    try:
        for dname in wanted:
            entry = result.loaded[dname] = _load_one(dname, models, runtime, cfg)
            _log_loaded(entry.model, runtime)
    except BaseException:
        result.close()
        raise
    return result


def _wanted(cfg: Config, names: list[str]) -> list[str]:
    """The detectors the enabled classes of the named profiles use, each once,
    in the order they are first named."""
    wanted: list[str] = []
    for pname in names:
        prof = cfg.profile(pname)
        for cls in CLASSES:
            cc = prof.of(cls)
            if cc.enabled:
                wanted.extend(d for d in cc.detectors if d not in wanted)
    return wanted


def _streams(cfg: Config, names: list[str], concurrency: int) -> int:
    """The concurrency that resolves the "auto" performance hint.

    Concurrent jobs get one OpenVINO stream each only where a job's
    inferences are small, i.e. profiles of one pass per class (no tiles or
    fine pass; `fast`): there 2 streams beat 2 threads on one small input by
    ~20 %. With the default profile's native-size and plate passes, streams
    ran slower and the daemon's peak memory grew 1.6x (benchmarks/RESULTS.md),
    so such jobs share one LATENCY stream. The daemon passes concurrency 1
    (see service.daemon._load_pipelines).
    """
    profiles = [cfg.profile(p) for p in names]
    one_pass = all(
        not p.of(cls).tiling.enabled for p in profiles for cls in CLASSES if p.of(cls).enabled
    )
    return concurrency if one_pass else 1


def _load_one(dname: str, models: manifest.Manifest, runtime: Runtime, cfg: Config) -> _Loaded:
    """Resolve, verify and compile detector ``dname``."""
    info = DETECTORS[dname]
    spec = derived.resolve(models, info.model, cfg.models.dir)
    det = info.factory(spec, runtime, cfg.models.dir)
    det.name = dname
    device, precision = _infer_info(det)
    model = ModelInfo(
        dname,
        spec.name,
        spec.identity,
        device,
        precision,
        files_sha256=tuple(spec.files[rel] for rel in sorted(spec.files)),
        openvino=runtime.version,
    )
    return _Loaded(info, det, model)


def _log_loaded(model: ModelInfo, runtime: Runtime) -> None:
    log.get("redactd.stages.detect").info(
        "detector.loaded",
        detector=model.detector,
        model=model.model,
        model_identity=model.identity,
        device=model.device,
        precision=model.precision,
        openvino=runtime.version,
        hint=runtime.hint,
    )
