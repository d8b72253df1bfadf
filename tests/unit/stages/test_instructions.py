"""Per-file instructions: the parser, the published schema, placement, keep
matching and what a profile allows."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from redactd.core.config import InstructionsConfig, Profile
from redactd.core.config import parse as parse_config
from redactd.core.errors import PermanentInputError
from redactd.core.types import Box, Detection
from redactd.stages.instructions.model import Instructions
from redactd.stages.instructions.parse import (
    SIDECAR_SUFFIX,
    load_sidecar,
    media_name_of,
    parse,
    parse_spec,
    sidecar_path,
)
from redactd.stages.instructions.place import coverage, split_kept, to_pixels
from redactd.stages.instructions.policy import resolve
from tests.conftest import REPO


@pytest.fixture()
def jsonschema() -> ModuleType:
    """The ``jsonschema`` package (a test dependency): only the schema tests need it."""
    return pytest.importorskip("jsonschema")


SCHEMA = json.loads((REPO / "schemas" / "sidecar.schema.json").read_text())
SECRET = "Zqxjv Hemlworth"  # a value that must never come back in an error


def invalid(doc: object) -> PermanentInputError:
    with pytest.raises(PermanentInputError) as e:
        parse(json.dumps(doc))
    assert e.value.reason == "invalid_sidecar"
    return e.value


# --------------------------------------------------------------------------- names


def test_sidecar_names() -> None:
    assert sidecar_path(Path("/in/a b.JPG")) == Path("/in/a b.JPG.redact.json")
    assert media_name_of("clip.mp4" + SIDECAR_SUFFIX) == "clip.mp4"
    assert media_name_of(SIDECAR_SUFFIX) is None
    assert media_name_of("clip.mp4") is None
    assert media_name_of("clip.mp4.reason.json") is None


# --------------------------------------------------------------------------- schema agreement

VALID: list[dict] = [
    {},
    {"version": 1},
    {"keep": [{"box": [410, 120, 520, 260]}]},
    {"keep": [{"box": [0.4, 0.1, 0.6, 0.5], "units": "rel", "time": 12.5}]},
    {"keep": [{"polygon": [[1, 1], [50, 1], [25, 40]], "classes": ["face", "plate"], "frame": 3}]},
    {"mask": [{"polygon": [[0.1, 0.6], [0.4, 0.6], [0.4, 0.9]], "units": "rel"}]},
    {"mask": [{"box": [20, 20, 220, 80], "time": [5, 15], "follow": True, "method": "blur"}]},
    {"mask": [{"box": [20, 20, 220, 80], "frames": [100, None]}]},
    {"mask": [{"box": [20, 20, 220, 80], "frames": [0, 10]}], "keep": []},
    {"profile": {"face": {"mask": {"method": "solid"}}, "plate": {"enabled": False}}},
    {"profile": {}},
]

#: (document, the field the error must name)
INVALID: list[tuple[object, str]] = [
    ([], "top level"),
    ({"maks": []}, "unknown key 'maks'"),
    ({"version": 2}, "version"),
    ({"mask": {}}, "mask:"),
    ({"mask": [{"box": [1, 2, 3]}]}, "mask[0].box"),
    ({"mask": [{"box": [1, 2, 3, "4"]}]}, "mask[0].box"),
    ({"mask": [{"box": [1, 2, 3, True]}]}, "mask[0].box"),
    ({"mask": [{"box": [0, 0, 5, 5]}, {"polygon": [[0, 0], [1, 1]]}]}, "mask[1].polygon"),
    ({"mask": [{"polygon": [[0, 0], [1, 1], [2]]}]}, "mask[0].polygon[2]"),
    ({"mask": [{"box": [0, 0, 5, 5], "polygon": [[0, 0], [5, 0], [0, 5]]}]}, "mask[0]"),
    ({"mask": [{}]}, "mask[0]"),
    ({"mask": [{"box": [0, 0, 5, 5], "units": "mm"}]}, "mask[0].units"),
    ({"mask": [{"box": [0, 0, 5, 5], "method": SECRET}]}, "mask[0].method"),
    ({"mask": [{"box": [0, 0, 5, 5], "follow": "yes"}]}, "mask[0].follow"),
    ({"mask": [{"box": [0, 0, 5, 5], "frames": [-1, 5]}]}, "mask[0].frames"),
    ({"mask": [{"box": [0, 0, 5, 5], "frames": [1.5, 5]}]}, "mask[0].frames"),
    ({"mask": [{"box": [0, 0, 5, 5], "time": [1]}]}, "mask[0].time"),
    ({"mask": [{"box": [0, 0, 5, 5], "frames": [0, 5], "time": [0, 1]}]}, "mask[0]"),
    ({"mask": [{"box": [0, 0, 5, 5], "classes": ["face"]}]}, "unknown key 'classes'"),
    ({"mask": [{"box": [0, 0, 5, 2e6]}]}, "mask[0].box"),
    ({"mask": [{"box": [0, 0, 5, 5]}] * 1001}, "mask: more than 1000"),
    ({"mask": [{"polygon": [[i, i % 7] for i in range(1001)]}]}, "mask[0].polygon"),
    ({"keep": [{"box": [0, 0, 5, 5], "classes": []}]}, "keep[0].classes"),
    ({"keep": [{"box": [0, 0, 5, 5], "classes": ["face", "face"]}]}, "keep[0].classes"),
    ({"keep": [{"box": [0, 0, 5, 5], "classes": [SECRET]}]}, "keep[0].classes"),
    ({"keep": [{"box": [0, 0, 5, 5], "time": -1}]}, "keep[0].time"),
    ({"keep": [{"box": [0, 0, 5, 5], "frame": 1, "time": 1}]}, "keep[0]"),
    ({"keep": [{"box": [0, 0, 5, 5], "follow": True}]}, "unknown key 'follow'"),
    ({"profile": {"face": {"mask": {"method": SECRET}}}}, "profile.face.mask.method"),
    ({"profile": {"plate": {"enabled": "no"}}}, "profile.plate.enabled"),
    ({"profile": {"face": {"threshold": 0.1}}}, "unknown key 'threshold'"),
    ({"profile": {"person": {}}}, "unknown key 'person'"),
    ({SECRET: 1}, "unknown key"),
]

#: Rules JSON Schema cannot express: the schema accepts these, the parser does not.
PARSER_ONLY: list[tuple[object, str]] = [
    ({"mask": [{"box": [5, 5, 1, 1]}]}, "mask[0].box: expected 4 numbers x1<x2, y1<y2"),
    ({"mask": [{"box": [0, 0, 5, 5]}, {"box": [0, 9, 5, 9]}]}, "mask[1].box"),
    ({"mask": [{"box": [0, 0, 5, 5], "time": [5, 2]}]}, "mask[0].time: end before start"),
    ({"mask": [{"box": [0, 0, 5, 5], "frames": [5, 5]}]}, "mask[0].frames"),
    ({"mask": [{"polygon": [[0, 0], [1, 1], [2, 2]]}]}, "mask[0].polygon: encloses no area"),
]


@pytest.mark.parametrize("doc", VALID)
def test_valid_documents_pass_the_schema_and_the_parser(jsonschema: ModuleType, doc: dict) -> None:
    jsonschema.validate(doc, SCHEMA)
    parse(json.dumps(doc))


@pytest.mark.parametrize(("doc", "field"), INVALID)
def test_invalid_documents_fail_both_with_the_field_named(
    jsonschema: ModuleType, doc: object, field: str
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)
    err = invalid(doc)
    assert field in err.detail, err.detail
    assert SECRET not in str(err) and "Zqxjv" not in err.detail


@pytest.mark.parametrize(("doc", "message"), PARSER_ONLY)
def test_rules_beyond_the_schema_are_enforced_by_the_parser(
    jsonschema: ModuleType, doc: object, message: str
) -> None:
    jsonschema.validate(doc, SCHEMA)
    assert message in invalid(doc).detail


def test_the_schema_is_itself_valid_draft_2020_12(jsonschema: ModuleType) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{", "not valid JSON (line 1"),
        (b'{"mask": [], "mask": []}', "duplicate key 'mask'"),
        (b'{"mask": [{"box": [0, 0, NaN, 1]}]}', "non-finite"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_broken_json_is_refused_by_name(raw: bytes, field: str) -> None:
    with pytest.raises(PermanentInputError) as e:
        parse(raw, max_bytes=1 << 20)
    assert e.value.reason == "invalid_sidecar"
    assert field in e.value.detail or "nested" in e.value.detail


def test_size_limit_and_byte_order_mark() -> None:
    with pytest.raises(PermanentInputError, match="larger than"):
        parse(b" " * 2000 + b"{}", max_bytes=1000)
    assert parse("\ufeff{}".encode()).is_empty


def test_parsed_regions_keep_their_fields() -> None:
    instr = parse(json.dumps(VALID[6] | {"keep": VALID[3]["keep"]}))
    (m,) = instr.mask
    assert (m.ref, m.shape, m.units, m.method, m.follow) == ("mask[0]", "box", "px", "blur", True)
    assert m.times == (5.0, 15.0) and m.frames is None
    assert m.in_range(0, 4.9) is False and m.in_range(0, 5.0) and not m.in_range(0, 15.0)
    (k,) = instr.keep
    assert (k.units, k.classes, k.seed_time, k.seed_frame) == ("rel", ("face",), 12.5, None)
    assert not k.seed_reached(100, 12.0) and k.seed_reached(3, 12.5)
    assert parse("{}").is_empty and parse("{}") == Instructions.EMPTY


def test_load_sidecar_reads_files_and_refuses_symlinks(tmp_path: Path) -> None:
    side = tmp_path / "a.jpg.redact.json"
    side.write_text(json.dumps(VALID[2]))
    assert len(load_sidecar(side).keep) == 1
    link = tmp_path / "b.jpg.redact.json"
    os.symlink(side, link)
    with pytest.raises(PermanentInputError) as e:
        load_sidecar(link)
    assert e.value.reason == "not_regular_file"
    with pytest.raises(PermanentInputError) as e:
        load_sidecar(tmp_path / "missing.redact.json")
    assert e.value.reason == "unreadable"


# --------------------------------------------------------------------------- command line


def test_command_line_specs_mean_the_same_as_sidecar_regions() -> None:
    m = parse_spec("rel:poly:0.1,0.6;0.4,0.6;0.4,0.9@t=2-5@follow@method=blur", "mask", "--mask[0]")
    assert (m.shape, m.units, m.times, m.follow, m.method) == (
        "polygon",
        "rel",
        (2.0, 5.0),
        True,
        "blur",
    )
    assert m.points == ((0.1, 0.6), (0.4, 0.6), (0.4, 0.9))
    assert parse_spec("1,2,3,4@f=10-", "mask", "m").frames == (10, None)
    k = parse_spec("410,120,520,260@150", "keep", "--keep[0]")
    assert (k.shape, k.units, k.seed_frame) == ("box", "px", 150)
    k = parse_spec("px:box:1,2,3,4@t=1.5@classes=face+plate", "keep", "k")
    assert (k.seed_time, k.classes) == (1.5, ("face", "plate"))


@pytest.mark.parametrize(
    ("spec", "kind", "field"),
    [
        ("1,2,3", "mask", "--mask[3].box"),
        ("5,5,1,1", "mask", "--mask[3].box"),
        ("a,b,c,d", "mask", "--mask[3]: expected numbers"),
        ("mm:1,2,3,4", "mask", "--mask[3]: unknown prefix"),
        ("1,2,3,4@t=5", "mask", "--mask[3]: unknown option"),
        ("1,2,3,4@t=5-2", "mask", "--mask[3].time: end before start"),
        ("1,2,3,4@follow", "keep", "--mask[3]: unknown option"),
        ("1,2,3,4@classes=dog", "keep", "--mask[3].classes"),
        ("poly:1,1;2,2", "mask", "--mask[3].polygon"),
    ],
)
def test_bad_command_line_specs_name_the_argument(spec: str, kind: str, field: str) -> None:
    with pytest.raises(PermanentInputError) as e:
        parse_spec(spec, kind, "--mask[3]")  # type: ignore[arg-type]
    assert field in e.value.detail


# --------------------------------------------------------------------------- placement


def test_rel_and_px_place_the_same_region() -> None:
    px = to_pixels(parse_spec("64,48,320,240", "mask", "a"), 640, 480)
    rel = to_pixels(parse_spec("rel:0.1,0.1,0.5,0.5", "mask", "b"), 640, 480)
    assert px.box == rel.box == Box(64, 48, 320, 240)
    poly = to_pixels(parse_spec("rel:poly:0,0;0.5,0;0,0.5", "mask", "c"), 640, 480)
    assert poly.polygon == ((0, 0), (320, 0), (0, 240))


def test_regions_are_clipped_and_one_wholly_outside_is_an_error() -> None:
    part = to_pixels(parse_spec("-50,-50,100,100", "mask", "m"), 640, 480)
    assert part.box == Box(0, 0, 100, 100)
    with pytest.raises(PermanentInputError) as e:
        to_pixels(parse(json.dumps({"mask": [{"box": [700, 0, 800, 100]}]})).mask[0], 640, 480)
    assert e.value.detail == "mask[0]: outside the 640x480 picture"


def test_coverage_of_boxes_and_polygons() -> None:
    square = to_pixels(parse_spec("0,0,100,100", "keep", "k"), 640, 480)
    assert coverage(Box(50, 0, 150, 100), square) == pytest.approx(0.5)
    tri = to_pixels(parse_spec("poly:0,0;100,0;0,100", "keep", "k"), 640, 480)
    assert coverage(Box(0, 0, 100, 100), tri) == pytest.approx(0.5)
    assert coverage(Box(0, 0, 40, 40), tri) == pytest.approx(1.0)
    assert coverage(Box(60, 60, 100, 100), tri) == pytest.approx(0.0)
    # a concave polygon (an L) covering three quarters of the box
    ell = to_pixels(parse_spec("poly:0,0;100,0;100,50;50,50;50,100;0,100", "keep", "k"), 640, 480)
    assert coverage(Box(0, 0, 100, 100), ell) == pytest.approx(0.75)


def face(x1: float, y1: float, x2: float, y2: float, cls: str = "face") -> Detection:
    return Detection(cls, Box(x1, y1, x2, y2), 0.9)  # type: ignore[arg-type]


def test_image_keep_keeps_detections_half_inside_their_region() -> None:
    keep = [to_pixels(parse_spec("100,100,200,200", "keep", "k"), 640, 480)]
    inside = face(110, 110, 190, 190)
    half = face(150, 100, 250, 200)  # exactly 50 %
    less = face(160, 100, 260, 200)  # 40 %
    plate = face(110, 110, 190, 150, "plate")  # not a kept class
    split = split_kept([half, plate], keep)
    assert split.kept == (half,)
    assert split.masked == (plate,)
    assert split.matched == frozenset({0})
    none = split_kept([less], keep)
    assert none.kept == () and none.matched == frozenset()
    # A region keeps one person per picture: the best match; the rest stay masked.
    split = split_kept([inside, half, less, plate], keep)
    assert split.kept == (inside,)
    assert split.masked == (half, less, plate)


# --------------------------------------------------------------------------- profile rules


def profile(**kw: object) -> Profile:
    return dataclasses.replace(Profile(), instructions=InstructionsConfig(**kw))  # type: ignore[arg-type]


def not_allowed(instr: Instructions, prof: Profile) -> str:
    with pytest.raises(PermanentInputError) as e:
        resolve(instr, prof)
    assert e.value.reason == "instruction_not_allowed"
    return e.value.detail


def test_allowed_overrides_change_the_profile() -> None:
    instr = parse(
        '{"profile": {"face": {"mask": {"method": "solid"}}, "plate": {"enabled": false}}}'
    )
    p = resolve(instr, profile(allow_overrides=("mask_method", "classes")))
    assert p.face.mask.method == "solid" and p.face.mask.padding == Profile().face.mask.padding
    assert p.plate.enabled is False
    assert resolve(Instructions.EMPTY, Profile()) == Profile()
    assert resolve(None, Profile()) == Profile()


def test_overrides_and_keep_beyond_the_profile_are_refused() -> None:
    method = parse('{"profile": {"face": {"mask": {"method": "blur"}}}}')
    assert not_allowed(method, profile(allow_overrides=())) == (
        "profile.face.mask.method: not allowed by this profile"
    )
    off = parse('{"profile": {"plate": {"enabled": false}}}')
    assert not_allowed(off, Profile()) == "profile.plate.enabled: not allowed by this profile"
    keep = parse('{"keep": [{"box": [0, 0, 5, 5]}]}')
    assert not_allowed(keep, profile(allow_keep=False)) == "keep: not allowed by this profile"
    masks = parse('{"mask": [{"box": [0, 0, 5, 5]}]}')
    # mask regions alone need no permission and leave the profile as it is
    strict = profile(allow_keep=False, allow_overrides=())
    assert resolve(masks, strict) == strict
    assert "not accepted" in not_allowed(masks, profile(enabled=False))
    # a class the profile does not detect cannot be switched on (no detector loaded)
    no_plates = dataclasses.replace(
        profile(allow_overrides=("classes",)),
        plate=dataclasses.replace(Profile().plate, enabled=False),
    )
    on = parse('{"profile": {"plate": {"enabled": true}}}')
    assert "does not detect" in not_allowed(on, no_plates)


def test_instructions_config_keys_are_checked(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "profiles": {
                "dsar": {"instructions": {"allow_overrides": ["classes"], "allow_keep": True}}
            }
        },
        tmp_path,
    )
    assert cfg.profile("dsar").instructions.allow_overrides == ("classes",)
    with pytest.raises(Exception, match=r"profiles\.x\.instructions\.allow_overrides\[0\]"):
        parse_config(
            {"profiles": {"x": {"instructions": {"allow_overrides": ["threshold"]}}}}, tmp_path
        )


def test_merging_conflicting_overrides_is_an_error() -> None:
    a = parse(
        '{"profile": {"face": {"mask": {"method": "blur"}}}, "mask": [{"box": [0, 0, 1, 1]}]}'
    )
    b = parse('{"mask": [{"box": [0, 0, 2, 2]}]}')
    assert len(a.merged(b).mask) == 2
    c = parse('{"profile": {"face": {"mask": {"method": "solid"}}}}')
    with pytest.raises(PermanentInputError, match=r"profile\.face\.mask\.method: given twice"):
        a.merged(c)
