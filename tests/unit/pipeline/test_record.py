"""The job record's fields against its published schema, and the log's share of them."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema

from redactd.core.config import Profile
from redactd.core.types import JobResult, StageTimings
from redactd.pipeline.record import (
    SCHEMA_ID,
    FileDigest,
    InstructionsUsed,
    JobRecord,
    digest_file,
    models_used,
    publish_with_record,
)
from redactd.stages.detect.registry import ModelInfo
from redactd.stages.instructions.parse import parse
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "schemas" / "job-record.schema.json").read_text())
SHA = "ab" * 32


def record(instructions: InstructionsUsed | None = None) -> JobRecord:
    t = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=timezone.utc)
    models = [
        ModelInfo("centerface", "centerface", "x", "CPU", "f32", (SHA,), "2026.4.0"),
        ModelInfo("yolov8_plate", "yolov8n_plate-ir", "y", "CPU", "f32", (SHA, SHA), "2026.4.0"),
        ModelInfo("yunet", "face_detection_yunet", "z", "CPU", "f32", (SHA,), "2026.4.0"),
    ]
    result = JobResult(
        kind="video",
        media_type="mp4",
        frames=250,
        width=1280,
        height=720,
        input_bytes=10,
        output_bytes=20,
        timings=StageTimings(1.26, 2.0, 3.0, 4.0, 5.0),
        detected={"face": 40},
        tracked={"face": 3},
        masked={"face": 2},
        kept={"face": 1},
        extra_regions=1,
    )
    return JobRecord(
        job="0123456789abcdef",
        profile="default",
        result=result,
        models=models_used(models, Profile()),
        instructions=instructions,
        started=t,
        finished=t + timedelta(seconds=3),
        input=FileDigest(SHA, 10),
        output=FileDigest("cd" * 32, 20),
    )


def test_a_record_validates_against_the_published_schema() -> None:
    used = InstructionsUsed.of(
        parse(b'{"keep": [{"box": [0, 0, 5, 5]}], "profile": {"plate": {"enabled": false}}}')
    )
    for instr in (None, used):
        doc = json.loads(record(instr).to_bytes())
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)
        assert doc["schema"] == SCHEMA_ID == SCHEMA["$id"]
    assert used == InstructionsUsed(0, 1, ("profile.plate.enabled",))


def test_fields_are_complete_counted_per_class_and_timed_in_utc() -> None:
    doc = record().fields()
    assert set(doc) == set(SCHEMA["required"])
    assert doc["started"] == "2026-11-26T10:00:00.123Z"
    assert doc["finished"] == "2026-11-26T10:00:03.123Z"
    assert doc["detected"] == {"face": 40, "plate": 0}
    assert doc["kept"] == {"face": 1, "plate": 0}
    assert doc["timings_ms"]["decode"] == 1.3
    # only the detectors the profile runs (yunet is loaded for another profile)
    assert [m["detector"] for m in doc["models"]] == ["centerface", "yolov8_plate"]


def test_the_log_fields_are_the_record_without_the_input_hash() -> None:
    r = record()
    full, logged = r.fields(), r.log_fields()
    assert "input_sha256" not in logged
    assert {k: v for k, v in full.items() if k != "input_sha256"} == logged


def test_an_empty_instruction_set_is_recorded_as_none() -> None:
    assert InstructionsUsed.of(None) is None
    assert InstructionsUsed.of(parse(b"{}")) is None


def test_publish_with_record_takes_a_name_free_for_both(tmp_path: Path) -> None:
    (tmp_path / "a.jpg.redactd.json").write_text("someone else's")
    tmp = tmp_path / ".redactd-tmp-1.jpg"
    tmp.write_bytes(b"out")
    final = publish_with_record(tmp, tmp_path / "a.jpg", b"{}\n", 0o640)
    assert final.name == "a (1).jpg"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a (1).jpg",
        "a (1).jpg.redactd.json",
        "a.jpg.redactd.json",
    ]
    assert digest_file(final) == FileDigest(hashlib.sha256(b"out").hexdigest(), 3)
    assert oct(final.stat().st_mode & 0o777) == "0o640"
