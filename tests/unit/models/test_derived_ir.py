"""Derived models of kind ``ir`` (converted on fetch): provenance, status, spec."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from redactd.core.errors import ModelError
from redactd.models import derived, manifest

IR = "yolov8n_plate-ir"


def _install(
    store: Path, man: manifest.Manifest, *, source_files: dict[str, str] | None = None
) -> derived.Provenance:
    folder = store / IR
    folder.mkdir(parents=True)
    files = {}
    for name, body in ((f"{IR}.xml", b"<net/>"), (f"{IR}.bin", b"\0" * 64)):
        (folder / name).write_bytes(body)
        files[name] = hashlib.sha256(body).hexdigest()
    source = man.get("yolov8n_plate")
    prov = derived.Provenance(
        name=IR, source=source.name, source_files=source_files or dict(source.files),
        files=files, main=f"{IR}.xml", calibration_digest="", samples=0, frames=0, seed=0,
        preset="", heads="float", fast_bias_correction=False, nncf_version="",
        openvino_version="2026.4.1", redactd_version="0.1.0", created="2026-12-02T06:00:00Z",
        kind="ir", conversion={"converter": "redactd.models.yolo_convert", "parameters": 3},
    )
    (folder / derived.PROVENANCE).write_text(prov.to_json())
    return prov


def test_ir_provenance_round_trips_and_its_spec_is_the_sources_recipe(tmp_path: Path) -> None:
    man = manifest.load()
    prov = _install(tmp_path, man)
    doc = json.loads((tmp_path / IR / derived.PROVENANCE).read_text())
    assert doc["kind"] == "ir" and "calibration" not in doc
    assert derived.read_provenance(tmp_path, IR) == prov
    spec = derived.spec(man, IR, tmp_path)
    assert spec.main == f"{IR}.xml" and spec.files == prov.files
    assert spec.input == man.get("yolov8n_plate").input and spec.decoder == "yolo_plate"
    assert derived.status(man, IR, tmp_path).ok
    assert derived.recipe(IR).hint() == "redactd models fetch yolov8n_plate"
    assert derived.conversion_of("yolov8n_plate") == derived.recipe(IR)
    with pytest.raises(ModelError, match="cannot be quantized"):
        derived.recipe_for_source("yolov8n_plate")


def test_an_ir_made_from_another_checkpoint_is_refused(tmp_path: Path) -> None:
    man = manifest.load()
    _install(tmp_path, man, source_files={"best.pt": "0" * 64})
    with pytest.raises(ModelError, match="another version of 'yolov8n_plate'"):
        derived.spec(man, IR, tmp_path)
    st = derived.status(man, IR, tmp_path)
    assert st.state == "bad" and "redactd models fetch yolov8n_plate" in st.reason


def test_an_ir_provenance_with_a_bad_digest_or_path_is_unreadable(tmp_path: Path) -> None:
    man = manifest.load()
    prov = _install(tmp_path, man)
    path = tmp_path / IR / derived.PROVENANCE
    for bad in (
        replace(prov, files={**prov.files, f"{IR}.bin": "xyz"}),
        replace(prov, files={"../evil.bin": "0" * 64, f"{IR}.xml": "0" * 64}),
    ):
        path.write_text(bad.to_json())
        with pytest.raises(ModelError, match="unreadable or incomplete"):
            derived.read_provenance(tmp_path, IR)
