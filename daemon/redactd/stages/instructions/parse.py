"""Reading instructions: sidecar names, sidecar files (JSON) and the
``--mask`` / ``--keep`` command-line specs, validated strictly.

Everything here turns untrusted text into ``model`` values or raises
``invalid_sidecar`` whose detail names the field and the rule (never a
string value of the file: it could be a name). Hostile documents (huge or
non-finite numbers, deep nesting, non-UTF-8, duplicate keys) end the same
way, never in another exception. The only files read are the sidecars
(``load_sidecar``) and, through ``trust``, the HMAC key file.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from redactd.core.config import InstructionsConfig, MaskMethod
from redactd.core.errors import PermanentInputError
from redactd.core.types import CLASSES, ObjectClass
from redactd.stages.instructions.model import (
    ClassOverride,
    Instructions,
    Overrides,
    Point,
    Region,
    Shape,
    invalid_sidecar,
)
from redactd.stages.instructions.place import polygon_area
from redactd.stages.instructions.trust import Trust, trust_for

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


METHODS: tuple[str, ...] = get_args(MaskMethod)


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


_SAFE_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def _key(k: str) -> str:
    """A key name for a message: shown only when it looks like a key, never
    when it could be a value someone typed (a name)."""
    return f"'{k}'" if _SAFE_KEY.fullmatch(k) else "(not shown)"


def _unknown(obj: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = set(allowed)
    for k in obj:
        if k not in allowed:
            raise invalid_sidecar(f"{where + ': ' if where else ''}unknown key {_key(k)}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise invalid_sidecar(f"duplicate key {_key(k)}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise invalid_sidecar(f"non-finite number {name} is not JSON")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise invalid_sidecar(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e309 and the like overflow to infinity
        raise invalid_sidecar("a number beyond the floating-point range")
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
        raise invalid_sidecar(f"larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise invalid_sidecar("not UTF-8 text") from None
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except json.JSONDecodeError as e:
        raise invalid_sidecar(f"not valid JSON (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise invalid_sidecar("nested too deeply") from None
    except (ValueError, OverflowError, MemoryError):
        raise invalid_sidecar("not valid JSON") from None
    if trust is not None:
        trust.check(doc)
    try:
        return from_object(doc)
    except RecursionError:
        raise invalid_sidecar("nested too deeply") from None
    except (ValueError, OverflowError, TypeError):
        # A rule not spelled out above broke on a hostile value: still the
        # sidecar's fault, never a traceback.
        raise invalid_sidecar("a value out of range") from None


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
            raise invalid_sidecar(f"larger than {max_bytes} bytes")
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
        raise invalid_sidecar("expected a JSON object at the top level")
    _unknown(doc, ("version", "mask", "keep", "profile", "hmac"), "")
    if "version" in doc and (_is_bool(doc["version"]) or doc["version"] != VERSION):
        raise invalid_sidecar(f"version: only {VERSION} is understood")
    if "hmac" in doc and not (
        isinstance(doc["hmac"], str) and re.fullmatch(r"[0-9a-fA-F]{64}", doc["hmac"])
    ):
        raise invalid_sidecar("hmac: expected 64 hex digits (HMAC-SHA256)")
    mask = tuple(_region(obj, f"mask[{i}]", "mask") for i, obj in enumerate(_list(doc, "mask")))
    keep = tuple(_region(obj, f"keep[{i}]", "keep") for i, obj in enumerate(_list(doc, "keep")))
    overrides = _overrides(doc["profile"]) if "profile" in doc else Overrides()
    return Instructions(mask, keep, overrides)


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise invalid_sidecar(f"{key}: expected a list of regions")
    if len(value) > MAX_REGIONS:
        raise invalid_sidecar(f"{key}: more than {MAX_REGIONS} regions")
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
        raise invalid_sidecar(f"{ref}: expected an object")
    _unknown(obj, _MASK_KEYS if kind == "mask" else _KEEP_KEYS, ref)
    if ("box" in obj) == ("polygon" in obj):
        raise invalid_sidecar(f"{ref}: give exactly one of box, polygon")
    units = obj.get("units", "px")
    if units not in ("px", "rel"):
        raise invalid_sidecar(f"{ref}.units: not one of px, rel")
    shape: Shape
    if "box" in obj:
        shape, points = "box", _box(obj["box"], f"{ref}.box")
    else:
        shape, points = "polygon", _polygon(obj["polygon"], f"{ref}.polygon")
    if kind == "mask":
        if "frames" in obj and "time" in obj:
            raise invalid_sidecar(f"{ref}: give frames or time, not both")
        frames = _frames(obj["frames"], f"{ref}.frames") if "frames" in obj else None
        times = _times(obj["time"], f"{ref}.time") if "time" in obj else None
        follow = obj.get("follow", False)
        if not _is_bool(follow):
            raise invalid_sidecar(f"{ref}.follow: expected true or false")
        method = obj.get("method", "solid")
        if method not in METHODS:
            raise invalid_sidecar(f"{ref}.method: not one of {', '.join(METHODS)}")
        return Region(
            ref, shape, points, units, frames=frames, times=times, follow=follow, method=method
        )
    classes = _classes(obj.get("classes", ["face"]), f"{ref}.classes")
    if "frame" in obj and "time" in obj:
        raise invalid_sidecar(f"{ref}: give frame or time, not both")
    seed_frame = seed_time = None
    if "frame" in obj:
        if not _is_int(obj["frame"]) or obj["frame"] < 0:
            raise invalid_sidecar(f"{ref}.frame: expected a frame number >= 0")
        seed_frame = int(obj["frame"])
    if "time" in obj:
        if not _is_number(obj["time"]) or obj["time"] < 0:
            raise invalid_sidecar(f"{ref}.time: expected seconds >= 0")
        seed_time = float(obj["time"])
    return Region(
        ref, shape, points, units, classes=classes, seed_frame=seed_frame, seed_time=seed_time
    )


def _coords_ok(values: Sequence[float], where: str) -> None:
    if any(abs(v) > MAX_COORD for v in values):
        raise invalid_sidecar(f"{where}: coordinates beyond +-{MAX_COORD:.0f}")


def _box(v: Any, where: str) -> tuple[Point, ...]:
    rule = f"{where}: expected 4 numbers x1<x2, y1<y2"
    if not isinstance(v, list) or len(v) != 4 or not all(_is_number(x) for x in v):
        raise invalid_sidecar(rule)
    x1, y1, x2, y2 = (float(x) for x in v)
    if not (x1 < x2 and y1 < y2):
        raise invalid_sidecar(rule)
    _coords_ok((x1, y1, x2, y2), where)
    return ((x1, y1), (x2, y2))


def _polygon(v: Any, where: str) -> tuple[Point, ...]:
    if not isinstance(v, list) or not 3 <= len(v) <= MAX_POINTS:
        raise invalid_sidecar(f"{where}: expected 3 to {MAX_POINTS} points [x, y]")
    pts: list[Point] = []
    for i, p in enumerate(v):
        if not isinstance(p, list) or len(p) != 2 or not all(_is_number(x) for x in p):
            raise invalid_sidecar(f"{where}[{i}]: expected [x, y] (2 numbers)")
        pts.append((float(p[0]), float(p[1])))
    _coords_ok([c for p in pts for c in p], where)
    if abs(polygon_area(pts)) <= 0.0:
        raise invalid_sidecar(f"{where}: encloses no area")
    return tuple(pts)


def _frames(v: Any, where: str) -> tuple[int, int | None]:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not _is_int(v[0])
        or v[0] < 0
        or not (v[1] is None or _is_int(v[1]))
    ):
        raise invalid_sidecar(
            f"{where}: expected [first, end] frame numbers >= 0 (end null = to the end)"
        )
    if v[1] is not None and v[1] <= v[0]:
        raise invalid_sidecar(f"{where}: end not after start")
    return (int(v[0]), None if v[1] is None else int(v[1]))


def _times(v: Any, where: str) -> tuple[float, float | None]:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not _is_number(v[0])
        or v[0] < 0
        or not (v[1] is None or _is_number(v[1]))
    ):
        raise invalid_sidecar(
            f"{where}: expected [start, end] seconds >= 0 (end null = to the end)"
        )
    if v[1] is not None and v[1] <= v[0]:
        raise invalid_sidecar(f"{where}: end before start")
    return (float(v[0]), None if v[1] is None else float(v[1]))


def _classes(v: Any, where: str) -> tuple[ObjectClass, ...]:
    rule = f"{where}: expected a non-empty list of {', '.join(CLASSES)} without repeats"
    if not isinstance(v, list) or not v or len(set(map(str, v))) != len(v):
        raise invalid_sidecar(rule)
    out: list[ObjectClass] = []
    for c in v:
        if c not in CLASSES:
            raise invalid_sidecar(rule)
        out.append(c)
    return tuple(out)


def _overrides(v: Any) -> Overrides:
    if not isinstance(v, dict):
        raise invalid_sidecar("profile: expected an object")
    _unknown(v, CLASSES, "profile")
    per_class: dict[str, ClassOverride] = {}
    for cls in CLASSES:
        body = v.get(cls, {})
        where = f"profile.{cls}"
        if not isinstance(body, dict):
            raise invalid_sidecar(f"{where}: expected an object")
        _unknown(body, ("enabled", "mask"), where)
        enabled = body.get("enabled")
        if enabled is not None and not _is_bool(enabled):
            raise invalid_sidecar(f"{where}.enabled: expected true or false")
        method = None
        if "mask" in body:
            m = body["mask"]
            if not isinstance(m, dict):
                raise invalid_sidecar(f"{where}.mask: expected an object")
            _unknown(m, ("method",), f"{where}.mask")
            if "method" in m:
                if m["method"] not in METHODS:
                    raise invalid_sidecar(f"{where}.mask.method: not one of {', '.join(METHODS)}")
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
            raise invalid_sidecar(f"{ref}: unknown prefix; use px:, rel:, box: or poly:")
        head = rest
    try:
        if shape == "box":
            obj["box"] = [float(x) for x in head.split(",")]
        else:
            obj["polygon"] = [[float(c) for c in p.split(",")] for p in head.split(";") if p]
    except ValueError:
        form = "x1,y1,x2,y2" if shape == "box" else "x,y;x,y;x,y"
        raise invalid_sidecar(f"{ref}: expected numbers as {form}") from None
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
        raise invalid_sidecar(f"{ref}: unknown option; use {allowed}") from None
