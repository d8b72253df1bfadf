"""Per-file instructions: extra regions to mask, people to keep, profile overrides.

They come from a JSON sidecar beside the input (``NAME.EXT.redact.json``) or
from ``redactd process --mask/--keep/--sidecar``; the format is published as
``schemas/sidecar.schema.json`` and described in ``docs/SIDECAR.md``.

Contract:

* ``parse`` / ``load_sidecar`` / ``parse_spec`` validate strictly (unknown
  keys, wrong types, empty or reversed boxes, too many regions) and raise
  ``PermanentInputError("invalid_sidecar")`` whose detail names the field
  and the rule. Details MUST NOT repeat string values of the file (they
  could be names); numbers, indices and short key names are fine.
* ``resolve`` applies profile overrides only within what the profile's
  ``[profiles.NAME.instructions]`` allows; anything else raises
  ``PermanentInputError("instruction_not_allowed")``.
* ``to_pixels`` places a region on a picture of a given size (upright
  pixels, like detections); a region wholly outside the picture raises
  ``invalid_sidecar`` naming the region.
* Keep matching (``split_kept``, ``best_matches``): a detection matches a
  keep region when at least ``KEEP_SHARE`` of its box lies inside it; a
  region keeps at most its best match per class. ``check_allowed`` and
  ``place_keep`` bound keep (``keep_limit_exceeded``): how many regions, and
  how much of the picture each may cover.
* Trust (``load_sidecar(policy=...)``, ``load_instructions``,
  ``sidecar_source``): with ``trusted_dir`` or ``hmac_key_file`` configured,
  a sidecar is used only from the trusted folder or with a valid ``hmac``;
  else ``sidecar_untrusted``.
* Hostile documents (huge or non-finite numbers, deep nesting, non-UTF-8,
  duplicate keys) raise ``invalid_sidecar``, never another exception.

Pure computation (numpy-free even): no frames, no files except
``load_sidecar``'s one read (and the HMAC key file's).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import hmac
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from redactd.core.config import InstructionsConfig, MaskMethod, Profile
from redactd.core.errors import PermanentInputError
from redactd.core.types import CLASSES, Box, Detection, ObjectClass

#: A sidecar is the media file's full name plus this suffix.
SIDECAR_SUFFIX = ".redact.json"

#: The format version this parser reads (``"version"`` is optional; any other
#: value is refused so a newer file is never half-understood).
VERSION = 1

#: Bounds that keep a hostile or broken sidecar cheap to refuse.
MAX_BYTES = 1 << 20
MAX_REGIONS = 1000
MAX_POINTS = 1000
MAX_COORD = 1_000_000.0
#: Longest integer literal read (a 400-digit number is no coordinate; Python
#: refuses > 4300 digits with a ValueError of its own).
MAX_INT_DIGITS = 20

#: Share of a detection's box that must lie in a keep region for it to match.
KEEP_SHARE = 0.5

#: Growth of each side of a kept box, relative to its size, that other masks'
#: padding may not cover (their own detected box is masked regardless).
KEEP_MARGIN = 0.2

#: A video keep seed looks for its person on detector frames up to this long
#: after the seed (a single missed detection at the seed must not waste it).
SEED_WINDOW_SECONDS = 1.0

#: Slack for comparing frame times with the seconds of a sidecar (float
#: timestamps of a frame exactly at a boundary).
TIME_EPS = 1e-3

METHODS: tuple[str, ...] = get_args(MaskMethod)

Units = Literal["px", "rel"]
Shape = Literal["box", "polygon"]
Point = tuple[float, float]


# --------------------------------------------------------------------------- names


def sidecar_path(media: Path) -> Path:
    """``NAME.EXT`` -> ``NAME.EXT.redact.json`` in the same folder."""
    return media.with_name(media.name + SIDECAR_SUFFIX)


def media_name_of(sidecar_name: str) -> str | None:
    """The media file name a sidecar belongs to, or ``None`` when ``sidecar_name``
    is not a sidecar name (no suffix, or nothing before it)."""
    if sidecar_name.endswith(SIDECAR_SUFFIX) and len(sidecar_name) > len(SIDECAR_SUFFIX):
        return sidecar_name[: -len(SIDECAR_SUFFIX)]
    return None


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Region:
    """One region of a ``mask`` or ``keep`` list, as written (not yet in pixels).

    ``ref`` names it in messages (``"mask[0]"``, ``"--keep[1]"``).
    ``points``: ``((x1, y1), (x2, y2))`` for a box, the vertices of a polygon.
    ``units``: ``px`` (upright pixels) or ``rel`` (fractions of width/height).
    Mask regions: ``frames`` (``[first, end)``, ``end`` ``None`` = to the end)
    or ``times`` (seconds from the first frame, same rule), neither = every
    frame; ``follow`` moves the region with the picture content from the
    first frame of its range; ``method`` masks it. Keep regions: ``classes``
    it keeps; ``seed_frame`` or ``seed_time`` (neither = frame 0). Ranges,
    seeds and ``follow`` matter for video only.
    """

    ref: str
    shape: Shape
    points: tuple[Point, ...]
    units: Units = "px"
    classes: tuple[ObjectClass, ...] = ("face",)
    frames: tuple[int, int | None] | None = None
    times: tuple[float, float | None] | None = None
    follow: bool = False
    method: MaskMethod = "solid"
    seed_frame: int | None = None
    seed_time: float | None = None

    def in_range(self, index: int, seconds: float) -> bool:
        """Does the mask range cover frame ``index`` shown at ``seconds`` from the first?"""
        if self.frames is not None:
            a, b = self.frames
            return index >= a and (b is None or index < b)
        if self.times is not None:
            t0, t1 = self.times
            return seconds >= t0 - TIME_EPS and (t1 is None or seconds < t1 - TIME_EPS)
        return True

    def seed_reached(self, index: int, seconds: float) -> bool:
        """Is frame ``index`` at or after this keep region's seed?"""
        if self.seed_frame is not None:
            return index >= self.seed_frame
        if self.seed_time is not None:
            return seconds >= self.seed_time - TIME_EPS
        return True


@dataclass(frozen=True)
class ClassOverride:
    """Overrides of one class: ``None`` = as the profile says."""

    enabled: bool | None = None
    mask_method: MaskMethod | None = None

    @property
    def is_empty(self) -> bool:
        return self.enabled is None and self.mask_method is None


@dataclass(frozen=True)
class Overrides:
    """Profile overrides per class (``"profile"`` in a sidecar)."""

    face: ClassOverride = field(default_factory=ClassOverride)
    plate: ClassOverride = field(default_factory=ClassOverride)

    def get(self, cls: str) -> ClassOverride:
        o: ClassOverride = getattr(self, cls)
        return o

    @property
    def is_empty(self) -> bool:
        return self.face.is_empty and self.plate.is_empty


@dataclass(frozen=True)
class Instructions:
    """Everything the instructions for one file say."""

    mask: tuple[Region, ...] = ()
    keep: tuple[Region, ...] = ()
    overrides: Overrides = field(default_factory=Overrides)

    EMPTY: ClassVar[Instructions]

    @classmethod
    def empty(cls) -> Instructions:
        return cls.EMPTY

    @property
    def is_empty(self) -> bool:
        return not self.mask and not self.keep and self.overrides.is_empty

    def merged(self, other: Instructions) -> Instructions:
        """Both sets of regions; overrides combined (the same key set to two
        different values raises ``invalid_sidecar``)."""
        per_class: dict[str, ClassOverride] = {}
        for cls in CLASSES:
            a, b = self.overrides.get(cls), other.overrides.get(cls)
            enabled = _same(a.enabled, b.enabled, f"profile.{cls}.enabled")
            method = _same(a.mask_method, b.mask_method, f"profile.{cls}.mask.method")
            per_class[cls] = ClassOverride(enabled, method)
        return Instructions(
            self.mask + other.mask,
            self.keep + other.keep,
            Overrides(face=per_class["face"], plate=per_class["plate"]),
        )


Instructions.EMPTY = Instructions()


def _same(a: Any, b: Any, key: str) -> Any:
    if a is not None and b is not None and a != b:
        raise _invalid(f"{key}: given twice with different values")
    return a if a is not None else b


# --------------------------------------------------------------------------- parsing


def _invalid(detail: str) -> PermanentInputError:
    return PermanentInputError("invalid_sidecar", detail, stage="sidecar")


_SAFE_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def _key(k: str) -> str:
    """A key name for a message: shown only when it looks like a key, never
    when it could be a value someone typed (a name)."""
    return f"'{k}'" if _SAFE_KEY.fullmatch(k) else "(not shown)"


def _unknown(obj: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = set(allowed)
    for k in obj:
        if k not in allowed:
            raise _invalid(f"{where + ': ' if where else ''}unknown key {_key(k)}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _invalid(f"duplicate key {_key(k)}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise _invalid(f"non-finite number {name} is not JSON")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _invalid(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e309 and the like overflow to infinity
        raise _invalid("a number beyond the floating-point range")
    return v


def parse(
    data: bytes | str, *, max_bytes: int = MAX_BYTES, trust: Trust | None = None
) -> Instructions:
    """Validate a sidecar document (UTF-8 JSON, a BOM allowed).

    Raises ``PermanentInputError("invalid_sidecar", detail)``; ``detail``
    names the field and the rule (``"mask[1].box: expected 4 numbers x1<x2,
    y1<y2"``, ``"unknown key 'maks'"``). Hostile documents (huge numbers,
    deep nesting, non-UTF-8) end the same way, never in another exception.
    ``trust``: where the file came from and the HMAC key; an untrusted
    document raises ``sidecar_untrusted`` (``Trust.check``).
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise _invalid(f"larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _invalid("not UTF-8 text") from None
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except json.JSONDecodeError as e:
        raise _invalid(f"not valid JSON (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise _invalid("nested too deeply") from None
    except (ValueError, OverflowError, MemoryError):
        raise _invalid("not valid JSON") from None
    if trust is not None:
        trust.check(doc)
    try:
        return from_object(doc)
    except RecursionError:
        raise _invalid("nested too deeply") from None
    except (ValueError, OverflowError, TypeError):
        # A rule not spelled out above broke on a hostile value: still the
        # sidecar's fault, never a traceback.
        raise _invalid("a value out of range") from None


# --------------------------------------------------------------------------- trust


def _untrusted(detail: str) -> PermanentInputError:
    return PermanentInputError("sidecar_untrusted", detail, stage="sidecar")


@dataclass(frozen=True)
class Trust:
    """What is known about one sidecar's origin (``trust_for``).

    ``required``: the profile names ``trusted_dir`` or ``hmac_key_file``;
    ``in_trusted_dir``: the file lies in ``trusted_dir``; ``key``: the HMAC
    key (``None``: no key configured).
    """

    required: bool = False
    in_trusted_dir: bool = False
    key: bytes | None = None

    def check(self, doc: Any) -> None:
        """Raise ``sidecar_untrusted`` unless the document may be used.

        A document with an ``"hmac"`` is checked against the key (a wrong
        one is refused wherever the file lies); one without is used only
        from the trusted folder, or when no trust is configured.
        """
        mac = doc.get("hmac") if isinstance(doc, dict) else None
        if self.key is not None and mac is not None:
            if not isinstance(mac, str) or not hmac.compare_digest(
                mac.lower(), sidecar_hmac(doc, self.key)
            ):
                raise _untrusted("hmac: does not match the document")
            return
        if self.required and not self.in_trusted_dir:
            raise _untrusted("not from instructions.trusted_dir and no valid hmac")


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes an HMAC covers: the document without ``"hmac"``, keys
    sorted, no whitespace, UTF-8 (``json.dumps(..., sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)``)."""
    body = {k: v for k, v in doc.items() if k != "hmac"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def sidecar_hmac(doc: dict[str, Any], key: bytes) -> str:
    """The hex HMAC-SHA256 of ``canonical(doc)`` (what ``"hmac"`` must hold)."""
    return hmac.new(key, canonical(doc), hashlib.sha256).hexdigest()


def read_hmac_key(path: Path) -> bytes:
    """The HMAC key file's bytes (surrounding whitespace stripped). It must be a
    regular file readable by its owner only: else ``sidecar_untrusted``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise _untrusted("instructions.hmac_key_file: cannot be read") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise _untrusted("instructions.hmac_key_file: must be a file of mode 0600 or stricter")
        key = os.read(fd, 4096).strip()
    except OSError:
        raise _untrusted("instructions.hmac_key_file: cannot be read") from None
    finally:
        os.close(fd)
    if len(key) < 16:
        raise _untrusted("instructions.hmac_key_file: key shorter than 16 bytes")
    return key


def _inside(a: Path, b: Path) -> bool:
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def trust_for(cfg: InstructionsConfig, path: Path) -> Trust:
    """The ``Trust`` of the sidecar file ``path`` under a profile's settings."""
    required = cfg.trusted_dir is not None or cfg.hmac_key_file is not None
    if not required:
        return Trust()
    in_dir = False
    if cfg.trusted_dir is not None:
        with_links = path.parent.resolve()  # a symlinked folder is judged by its target
        in_dir = _inside(with_links, cfg.trusted_dir.resolve())
    key = read_hmac_key(cfg.hmac_key_file) if cfg.hmac_key_file is not None else None
    return Trust(True, in_dir, key)


def sidecar_source(cfg: InstructionsConfig, rel: Sequence[str]) -> Path | None:
    """The trusted sidecar of an input, if there is one.

    ``rel``: the input's path below its inbound folder, as parts (the file's
    name last). With ``cfg.trusted_dir`` set this is
    ``trusted_dir/REL.../NAME.EXT.redact.json`` when that name exists (even as
    a symlink: ``load_sidecar`` then refuses it); else ``None``.
    """
    if cfg.trusted_dir is None or not rel:
        return None
    parts = list(rel[:-1])
    if any(p in ("", ".", "..") or "/" in p for p in (*parts, rel[-1])):
        return None
    p = cfg.trusted_dir.joinpath(*parts, rel[-1] + SIDECAR_SUFFIX)
    return p if (p.exists() or p.is_symlink()) else None


def load_instructions(
    cfg: InstructionsConfig, inbound: Path | None, rel: Sequence[str]
) -> Instructions | None:
    """Everything a job's sidecars say (the daemon's entry point).

    ``inbound``: the sidecar that came with the input (``None``: none);
    ``rel``: the input's path below its inbound (``sidecar_source``). Both are
    read under ``cfg``'s trust rules and merged; ``None`` when neither exists.
    """
    found = [p for p in (inbound, sidecar_source(cfg, rel)) if p is not None]
    if not found:
        return None
    out = Instructions.EMPTY
    for p in found:
        out = out.merged(load_sidecar(p, policy=cfg))
    return out


def load_sidecar(
    path: Path, *, max_bytes: int = MAX_BYTES, policy: InstructionsConfig | None = None
) -> Instructions:
    """Read and ``parse`` a sidecar file. It MUST be a regular file (symlinks
    refused: ``not_regular_file``); unreadable -> ``unreadable``.
    ``policy``: the profile's instruction settings, whose trust rules apply
    (``trust_for``; ``None``: trusted, e.g. a test)."""
    trust = trust_for(policy, path) if policy is not None else None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink under O_NOFOLLOW
            raise PermanentInputError("not_regular_file", "sidecar", stage="sidecar") from None
        raise PermanentInputError("unreadable", "sidecar", stage="sidecar") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermanentInputError("not_regular_file", "sidecar", stage="sidecar")
        if st.st_size > max_bytes:
            raise _invalid(f"larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        raise PermanentInputError("unreadable", "sidecar", stage="sidecar") from None
    finally:
        os.close(fd)
    return parse(b"".join(chunks), max_bytes=max_bytes, trust=trust)


def from_object(doc: Any) -> Instructions:
    """Validate an already decoded JSON document (see ``parse``)."""
    if not isinstance(doc, dict):
        raise _invalid("expected a JSON object at the top level")
    _unknown(doc, ("version", "mask", "keep", "profile", "hmac"), "")
    if "version" in doc and (_is_bool(doc["version"]) or doc["version"] != VERSION):
        raise _invalid(f"version: only {VERSION} is understood")
    if "hmac" in doc and not (
        isinstance(doc["hmac"], str) and re.fullmatch(r"[0-9a-fA-F]{64}", doc["hmac"])
    ):
        raise _invalid("hmac: expected 64 hex digits (HMAC-SHA256)")
    mask = tuple(_region(obj, f"mask[{i}]", "mask") for i, obj in enumerate(_list(doc, "mask")))
    keep = tuple(_region(obj, f"keep[{i}]", "keep") for i, obj in enumerate(_list(doc, "keep")))
    overrides = _overrides(doc["profile"]) if "profile" in doc else Overrides()
    return Instructions(mask, keep, overrides)


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise _invalid(f"{key}: expected a list of regions")
    if len(value) > MAX_REGIONS:
        raise _invalid(f"{key}: more than {MAX_REGIONS} regions")
    return value


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v) and abs(v) <= 1e300
    except OverflowError:  # an int beyond the float range
        return False


def _is_int(v: Any) -> bool:
    # JSON Schema's "integer" includes 1.0; so does this parser.
    if isinstance(v, float):
        return math.isfinite(v) and v.is_integer() and abs(v) < 2**63
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63


_COMMON_KEYS = ("box", "polygon", "units")
_MASK_KEYS = (*_COMMON_KEYS, "frames", "time", "follow", "method")
_KEEP_KEYS = (*_COMMON_KEYS, "classes", "frame", "time")


def _region(obj: Any, ref: str, kind: Literal["mask", "keep"]) -> Region:
    if not isinstance(obj, dict):
        raise _invalid(f"{ref}: expected an object")
    _unknown(obj, _MASK_KEYS if kind == "mask" else _KEEP_KEYS, ref)
    if ("box" in obj) == ("polygon" in obj):
        raise _invalid(f"{ref}: give exactly one of box, polygon")
    units = obj.get("units", "px")
    if units not in ("px", "rel"):
        raise _invalid(f"{ref}.units: not one of px, rel")
    shape: Shape
    if "box" in obj:
        shape, points = "box", _box(obj["box"], f"{ref}.box")
    else:
        shape, points = "polygon", _polygon(obj["polygon"], f"{ref}.polygon")
    if kind == "mask":
        if "frames" in obj and "time" in obj:
            raise _invalid(f"{ref}: give frames or time, not both")
        frames = _frames(obj["frames"], f"{ref}.frames") if "frames" in obj else None
        times = _times(obj["time"], f"{ref}.time") if "time" in obj else None
        follow = obj.get("follow", False)
        if not _is_bool(follow):
            raise _invalid(f"{ref}.follow: expected true or false")
        method = obj.get("method", "solid")
        if method not in METHODS:
            raise _invalid(f"{ref}.method: not one of {', '.join(METHODS)}")
        return Region(
            ref, shape, points, units, frames=frames, times=times, follow=follow, method=method
        )
    classes = _classes(obj.get("classes", ["face"]), f"{ref}.classes")
    if "frame" in obj and "time" in obj:
        raise _invalid(f"{ref}: give frame or time, not both")
    seed_frame = seed_time = None
    if "frame" in obj:
        if not _is_int(obj["frame"]) or obj["frame"] < 0:
            raise _invalid(f"{ref}.frame: expected a frame number >= 0")
        seed_frame = int(obj["frame"])
    if "time" in obj:
        if not _is_number(obj["time"]) or obj["time"] < 0:
            raise _invalid(f"{ref}.time: expected seconds >= 0")
        seed_time = float(obj["time"])
    return Region(
        ref, shape, points, units, classes=classes, seed_frame=seed_frame, seed_time=seed_time
    )


def _coords_ok(values: Sequence[float], where: str) -> None:
    if any(abs(v) > MAX_COORD for v in values):
        raise _invalid(f"{where}: coordinates beyond +-{MAX_COORD:.0f}")


def _box(v: Any, where: str) -> tuple[Point, ...]:
    rule = f"{where}: expected 4 numbers x1<x2, y1<y2"
    if not isinstance(v, list) or len(v) != 4 or not all(_is_number(x) for x in v):
        raise _invalid(rule)
    x1, y1, x2, y2 = (float(x) for x in v)
    if not (x1 < x2 and y1 < y2):
        raise _invalid(rule)
    _coords_ok((x1, y1, x2, y2), where)
    return ((x1, y1), (x2, y2))


def _polygon(v: Any, where: str) -> tuple[Point, ...]:
    if not isinstance(v, list) or not 3 <= len(v) <= MAX_POINTS:
        raise _invalid(f"{where}: expected 3 to {MAX_POINTS} points [x, y]")
    pts: list[Point] = []
    for i, p in enumerate(v):
        if not isinstance(p, list) or len(p) != 2 or not all(_is_number(x) for x in p):
            raise _invalid(f"{where}[{i}]: expected [x, y] (2 numbers)")
        pts.append((float(p[0]), float(p[1])))
    _coords_ok([c for p in pts for c in p], where)
    if abs(polygon_area(pts)) <= 0.0:
        raise _invalid(f"{where}: encloses no area")
    return tuple(pts)


def _frames(v: Any, where: str) -> tuple[int, int | None]:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not _is_int(v[0])
        or v[0] < 0
        or not (v[1] is None or _is_int(v[1]))
    ):
        raise _invalid(f"{where}: expected [first, end] frame numbers >= 0 (end null = to the end)")
    if v[1] is not None and v[1] <= v[0]:
        raise _invalid(f"{where}: end not after start")
    return (int(v[0]), None if v[1] is None else int(v[1]))


def _times(v: Any, where: str) -> tuple[float, float | None]:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not _is_number(v[0])
        or v[0] < 0
        or not (v[1] is None or _is_number(v[1]))
    ):
        raise _invalid(f"{where}: expected [start, end] seconds >= 0 (end null = to the end)")
    if v[1] is not None and v[1] <= v[0]:
        raise _invalid(f"{where}: end before start")
    return (float(v[0]), None if v[1] is None else float(v[1]))


def _classes(v: Any, where: str) -> tuple[ObjectClass, ...]:
    rule = f"{where}: expected a non-empty list of {', '.join(CLASSES)} without repeats"
    if not isinstance(v, list) or not v or len(set(map(str, v))) != len(v):
        raise _invalid(rule)
    out: list[ObjectClass] = []
    for c in v:
        if c not in CLASSES:
            raise _invalid(rule)
        out.append(c)
    return tuple(out)


def _overrides(v: Any) -> Overrides:
    if not isinstance(v, dict):
        raise _invalid("profile: expected an object")
    _unknown(v, CLASSES, "profile")
    per_class: dict[str, ClassOverride] = {}
    for cls in CLASSES:
        body = v.get(cls, {})
        where = f"profile.{cls}"
        if not isinstance(body, dict):
            raise _invalid(f"{where}: expected an object")
        _unknown(body, ("enabled", "mask"), where)
        enabled = body.get("enabled")
        if enabled is not None and not _is_bool(enabled):
            raise _invalid(f"{where}.enabled: expected true or false")
        method = None
        if "mask" in body:
            m = body["mask"]
            if not isinstance(m, dict):
                raise _invalid(f"{where}.mask: expected an object")
            _unknown(m, ("method",), f"{where}.mask")
            if "method" in m:
                if m["method"] not in METHODS:
                    raise _invalid(f"{where}.mask.method: not one of {', '.join(METHODS)}")
                method = m["method"]
        per_class[cls] = ClassOverride(enabled, method)
    return Overrides(face=per_class["face"], plate=per_class["plate"])


# --------------------------------------------------------------------------- command line


def parse_spec(spec: str, kind: Literal["mask", "keep"], ref: str) -> Region:
    """One ``--mask`` / ``--keep`` argument (compact form, docs/SIDECAR.md)::

        [px:|rel:][box:|poly:]COORDS{@OPTION}
        COORDS   box: x1,y1,x2,y2      poly: x,y;x,y;x,y[;...]
        --mask   @f=A-B  @f=A-  @t=T0-T1  @t=T0-  @follow  @method=NAME
        --keep   @N  @f=N  @t=SECONDS  @classes=face+plate

    Checked by the same rules as a sidecar region (``ref`` names it).
    """
    head, *options = spec.strip().split("@")
    obj: dict[str, Any] = {}
    shape = "box"
    while ":" in head:
        prefix, rest = head.split(":", 1)
        if prefix in ("px", "rel") and "units" not in obj:
            obj["units"] = prefix
        elif prefix in ("box", "poly"):
            shape = prefix
        else:
            raise _invalid(f"{ref}: unknown prefix; use px:, rel:, box: or poly:")
        head = rest
    try:
        if shape == "box":
            obj["box"] = [float(x) for x in head.split(",")]
        else:
            obj["polygon"] = [[float(c) for c in p.split(",")] for p in head.split(";") if p]
    except ValueError:
        form = "x1,y1,x2,y2" if shape == "box" else "x,y;x,y;x,y"
        raise _invalid(f"{ref}: expected numbers as {form}") from None
    for opt in options:
        _spec_option(obj, opt.strip(), kind, ref)
    return _region(obj, ref, kind)


def _spec_option(obj: dict[str, Any], opt: str, kind: str, ref: str) -> None:
    name, _eq, value = opt.partition("=")
    try:
        if kind == "mask":
            if opt == "follow":
                obj["follow"] = True
            elif name == "method" and value:
                obj["method"] = value
            elif name in ("f", "t") and value:
                a, dash, b = value.partition("-")
                if not dash:
                    raise ValueError
                conv = int if name == "f" else float
                obj["frames" if name == "f" else "time"] = [conv(a), conv(b) if b else None]
            else:
                raise ValueError
        elif name == "classes" and value:
            obj["classes"] = value.split("+")
        elif name == "t" and value:
            obj["time"] = float(value)
        elif name == "f" and value:
            obj["frame"] = int(value)
        elif not _eq and opt.isdigit():
            obj["frame"] = int(opt)
        else:
            raise ValueError
    except ValueError:
        allowed = (
            "@f=A-B, @t=T0-T1, @follow, @method=NAME"
            if kind == "mask"
            else "@N, @f=N, @t=SECONDS, @classes=face+plate"
        )
        raise _invalid(f"{ref}: unknown option; use {allowed}") from None


# --------------------------------------------------------------------------- profile


def _not_allowed(detail: str) -> PermanentInputError:
    return PermanentInputError("instruction_not_allowed", detail, stage="sidecar")


def check_allowed(instr: Instructions, profile: Profile) -> None:
    """Raise ``instruction_not_allowed`` for anything the profile does not allow."""
    if instr.is_empty:
        return
    cfg = profile.instructions
    if not cfg.enabled:
        raise _not_allowed("instructions: not accepted by this profile")
    if instr.keep and not cfg.allow_keep:
        raise _not_allowed("keep: not allowed by this profile")
    if len(instr.keep) > cfg.keep_max_regions:
        raise PermanentInputError(
            "keep_limit_exceeded",
            f"keep: {len(instr.keep)} regions, over instructions.keep_max_regions "
            f"({cfg.keep_max_regions})",
            stage="sidecar",
        )
    for cls in CLASSES:
        o = instr.overrides.get(cls)
        if o.mask_method is not None and "mask_method" not in cfg.allow_overrides:
            raise _not_allowed(f"profile.{cls}.mask.method: not allowed by this profile")
        if o.enabled is not None:
            if "classes" not in cfg.allow_overrides:
                raise _not_allowed(f"profile.{cls}.enabled: not allowed by this profile")
            if o.enabled and not profile.of(cls).enabled:
                # Its detectors are not loaded: enabling it here cannot work.
                raise _not_allowed(f"profile.{cls}.enabled: this profile does not detect {cls}s")


def resolve(instr: Instructions | None, profile: Profile) -> Profile:
    """The profile to process with: ``profile`` with the allowed overrides of
    ``instr`` applied. Raises ``instruction_not_allowed`` (see ``check_allowed``)."""
    if instr is None or instr.is_empty:
        return profile
    check_allowed(instr, profile)
    changes: dict[str, Any] = {}
    for cls in CLASSES:
        o = instr.overrides.get(cls)
        cc = profile.of(cls)
        if o.enabled is not None:
            cc = dataclasses.replace(cc, enabled=o.enabled)
        if o.mask_method is not None:
            cc = dataclasses.replace(cc, mask=dataclasses.replace(cc.mask, method=o.mask_method))
        changes[cls] = cc
    return dataclasses.replace(profile, **changes)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class PixelRegion:
    """A region placed on one picture: upright pixels.

    ``box`` is the bounding box clipped to the picture (never empty);
    ``polygon`` the vertices (not clipped) for a polygon region, else ``None``.
    """

    region: Region
    box: Box
    polygon: tuple[Point, ...] | None = None

    def shifted(self, dx: float, dy: float, width: int, height: int) -> PixelRegion:
        """Moved by ``(dx, dy)`` (a followed region); ``box`` clipped again,
        possibly to an empty box once the region has left the picture."""
        poly = None
        if self.polygon is not None:
            poly = tuple((x + dx, y + dy) for x, y in self.polygon)
        return PixelRegion(self.region, self.box.shifted(dx, dy).clip(width, height), poly)


def to_pixels(region: Region, width: int, height: int) -> PixelRegion:
    """Place ``region`` on a ``width`` x ``height`` upright picture.

    Parts outside the picture are clipped; a region wholly outside raises
    ``invalid_sidecar`` ("mask[0]: outside the 640x480 picture").
    """
    sx, sy = (float(width), float(height)) if region.units == "rel" else (1.0, 1.0)
    pts = tuple((x * sx, y * sy) for x, y in region.points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    clipped = Box(min(xs), min(ys), max(xs), max(ys)).clip(width, height)
    if clipped.width <= 0 or clipped.height <= 0:
        raise _invalid(f"{region.ref}: outside the {width}x{height} picture")
    return PixelRegion(region, clipped, pts if region.shape == "polygon" else None)


def place_keep(region: Region, width: int, height: int, max_share: float) -> PixelRegion:
    """``to_pixels`` for a keep region, which may cover at most ``max_share``
    of the picture (``instructions.keep_max_share``): a region over the whole
    frame would keep whoever stands anywhere. Else ``keep_limit_exceeded``."""
    pr = to_pixels(region, width, height)
    area = pr.box.area
    if pr.polygon is not None:
        part = _clip_polygon(pr.polygon, Box(0.0, 0.0, float(width), float(height)))
        area = abs(polygon_area(part)) if len(part) >= 3 else 0.0
    share = area / float(width * height)
    if share > max_share + 1e-9:
        raise PermanentInputError(
            "keep_limit_exceeded",
            f"{region.ref}: covers {share:.2f} of the picture, over "
            f"instructions.keep_max_share ({max_share:g})",
            stage="sidecar",
        )
    return pr


def polygon_area(pts: Sequence[Point]) -> float:
    """Signed area (shoelace)."""
    s = 0.0
    for i, (x1, y1) in enumerate(pts):
        x2, y2 = pts[(i + 1) % len(pts)]
        s += x1 * y2 - x2 * y1
    return s / 2.0


def _clip_polygon(pts: Sequence[Point], b: Box) -> list[Point]:
    """Sutherland-Hodgman clip of any simple polygon by the box (area exact)."""
    out = list(pts)
    edges = (
        (lambda p: p[0] >= b.x1, lambda p, q: _at_x(p, q, b.x1)),
        (lambda p: p[0] <= b.x2, lambda p, q: _at_x(p, q, b.x2)),
        (lambda p: p[1] >= b.y1, lambda p, q: _at_y(p, q, b.y1)),
        (lambda p: p[1] <= b.y2, lambda p, q: _at_y(p, q, b.y2)),
    )
    for inside, cut in edges:
        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cut(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cut(prev, cur))
        if not out:
            break
    return out


def _at_x(p: Point, q: Point, x: float) -> Point:
    t = (x - p[0]) / (q[0] - p[0])
    return (x, p[1] + t * (q[1] - p[1]))


def _at_y(p: Point, q: Point, y: float) -> Point:
    t = (y - p[1]) / (q[1] - p[1])
    return (p[0] + t * (q[0] - p[0]), y)


def coverage(box: Box, pr: PixelRegion) -> float:
    """Share of ``box``'s area that lies inside the region (0..1)."""
    if box.area <= 0:
        return 0.0
    if pr.polygon is None:
        ix = min(box.x2, pr.box.x2) - max(box.x1, pr.box.x1)
        iy = min(box.y2, pr.box.y2) - max(box.y1, pr.box.y1)
        return max(0.0, ix) * max(0.0, iy) / box.area
    part = _clip_polygon(pr.polygon, box)
    return abs(polygon_area(part)) / box.area if len(part) >= 3 else 0.0


def matches(d: Detection, pr: PixelRegion) -> bool:
    """Does detection ``d`` match keep region ``pr`` (class and ``KEEP_SHARE``)?"""
    return d.cls in pr.region.classes and coverage(d.box, pr) >= KEEP_SHARE


@dataclass(frozen=True)
class KeepSplit:
    """Detections of one picture split by the keep regions: ``matched`` holds
    the indices (into the keep list) of the regions that kept something."""

    masked: tuple[Detection, ...]
    kept: tuple[Detection, ...]
    matched: frozenset[int]


def split_kept(detections: Sequence[Detection], keeps: Sequence[PixelRegion]) -> KeepSplit:
    """Images: each keep region keeps at most one detection per class (its
    best match, as ``best_matches``); every other detection is masked."""
    kept_idx: set[int] = set()
    matched: set[int] = set()
    for k, pr in enumerate(keeps):
        hit = _best_indices(detections, pr)
        kept_idx |= hit
        if hit:
            matched.add(k)
    return KeepSplit(
        tuple(d for i, d in enumerate(detections) if i not in kept_idx),
        tuple(d for i, d in enumerate(detections) if i in kept_idx),
        frozenset(matched),
    )


def protected(kept: Iterable[Detection]) -> tuple[Box, ...]:
    """The areas other masks' padding must leave alone: each kept box grown by
    ``KEEP_MARGIN`` (a detector's face box stops at the hairline and chin)."""
    return tuple(d.box.pad(KEEP_MARGIN) for d in kept)


def _best_indices(detections: Sequence[Detection], pr: PixelRegion) -> set[int]:
    out: set[int] = set()
    for cls in pr.region.classes:
        cands = [i for i, d in enumerate(detections) if d.cls == cls and matches(d, pr)]
        if cands:
            out.add(
                max(
                    cands,
                    key=lambda i: (detections[i].box.iou(pr.box), coverage(detections[i].box, pr)),
                )
            )
    return out


def best_matches(detections: Sequence[Detection], pr: PixelRegion) -> list[Detection]:
    """Per class of the region, the matching detection with the highest IoU
    with the region's box (none for a class without a match): a region keeps
    at most one person (one plate) per picture, per video track."""
    return [detections[i] for i in sorted(_best_indices(detections, pr))]


__all__ = [
    "KEEP_MARGIN",
    "KEEP_SHARE",
    "MAX_BYTES",
    "MAX_POINTS",
    "MAX_REGIONS",
    "SEED_WINDOW_SECONDS",
    "SIDECAR_SUFFIX",
    "VERSION",
    "ClassOverride",
    "Instructions",
    "KeepSplit",
    "Overrides",
    "PixelRegion",
    "Region",
    "Trust",
    "best_matches",
    "canonical",
    "check_allowed",
    "coverage",
    "from_object",
    "load_instructions",
    "load_sidecar",
    "matches",
    "media_name_of",
    "parse",
    "parse_spec",
    "place_keep",
    "polygon_area",
    "protected",
    "read_hmac_key",
    "resolve",
    "sidecar_hmac",
    "sidecar_path",
    "sidecar_source",
    "split_kept",
    "to_pixels",
    "trust_for",
]
