"""The job record beside each output: schema, hashes, no names, agreement
with the ``job.done`` log line; and a real ``keep`` on a real photo.

Plumbing runs use the fake detector daemon; the ``keep`` run and the
``redactd process`` run use the real default face model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest

from tests.helpers.media import Labelled, read_labels
from tests.helpers.service import (
    REPO,
    Daemon,
    Folders,
    rel_names,
    temporaries,
    wait_until,
    write_config,
)
from tests.helpers.sidecars import noisy_png, sidecar

SCHEMA = json.loads((REPO / "schemas" / "job-record.schema.json").read_text())
REC = ".redactd.json"
RECORD_ON = "[profiles.default.record]\nenabled = true"
NAME = "Jane_Doe_passport_scan.png"


def validate(record: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(record)


def strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (k, *strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []


def assert_no_personal_data(text: str, record: dict[str, Any], root: Path) -> None:
    for part in ("Jane", "Doe", "passport", "scan", NAME, str(root)):
        assert part.lower() not in text.lower(), part
    # OpenVINO's version string has slashes ("...-releases/2026/4"): not a path of ours
    allowed = {record["schema"], *(m["openvino"] for m in record["models"])}
    for s in strings(record):
        if s not in allowed:
            assert "/" not in s and "\\" not in s, f"a path-like value: {s!r}"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def fake_daemon(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path, extra: str = ""
) -> tuple[Folders, Daemon]:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(tmp_path / "redactd.toml", f, models_dir, detectors=("fake",))
    if extra:
        cfg.write_text(cfg.read_text() + "\n" + extra + "\n")
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    return f, d


def test_the_record_validates_matches_the_bytes_names_nothing_and_agrees_with_the_log(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = fake_daemon(tmp_path, daemons, models_dir, RECORD_ON)
    staged = tmp_path / NAME
    noisy_png(staged, 7)
    input_sha = sha(staged)
    (f.inbound / "2026").mkdir()
    media = f.inbound / "2026" / NAME
    blur_faces = {"face": {"mask": {"method": "blur"}}}
    sidecar(media, {"mask": [{"box": [0, 0, 12, 12]}], "profile": blur_faces})
    staged.rename(media)
    out = f.outbound / "2026" / NAME
    rec_path = out.with_name(NAME + REC)
    wait_until(lambda: out.exists() and rec_path.exists(), 30, "output and record", d)
    assert rel_names(f.outbound) == sorted(["2026/" + NAME, "2026/" + NAME + REC])
    text = rec_path.read_text()
    record = json.loads(text)
    validate(record)
    assert record["input_sha256"] == input_sha
    assert record["output_sha256"] == sha(out)
    assert record["output_bytes"] == out.stat().st_size
    assert record["kind"] == "image" and record["media_type"] == "png"
    assert (record["frames"], record["width"], record["height"]) == (1, 64, 64)
    assert record["masked"]["face"] == 1 and record["extra_regions"] == 1
    assert record["instructions"] == {
        "mask_regions": 1,
        "keep_regions": 0,
        "overrides": ["profile.face.mask.method"],
    }
    [model] = record["models"]
    assert model["detector"] == "fake" and len(model["files_sha256"]) >= 1
    assert model["openvino"]
    assert_no_personal_data(text, record, tmp_path)

    # The job.done line: the record's fields, field by field, minus the input's hash.
    [line] = [ln for ln in d.text().splitlines() if '"job.done"' in ln]
    event = json.loads(line)
    assert "input_sha256" not in event and input_sha not in d.text()
    for key, value in record.items():
        if key != "input_sha256":
            assert event[key] == value, key
    assert event["job"] == record["job"]
    assert d.stop() == 0
    assert temporaries(f.inbound, f.outbound, f.quarantine) == []


def test_records_are_off_by_default(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = fake_daemon(tmp_path, daemons, models_dir)
    noisy_png(f.inbound / "a.png", 8)
    wait_until(lambda: rel_names(f.outbound) == ["a.png"], 30, "delivery", d)
    [event] = d.events("job.done")
    # the log still carries the record's fields, without any hash
    assert "output_sha256" not in event and "input_sha256" not in event
    assert event["schema"].endswith("/job-record/1") and event["masked"] == {"face": 1, "plate": 0}
    assert d.stop() == 0
    assert rel_names(f.outbound) == ["a.png"]


def test_redactd_process_writes_the_record_beside_its_output(
    tmp_path: Path, models_dir: Path
) -> None:
    cfg = tmp_path / "redactd.toml"
    cfg.write_text(
        f"[models]\ndir = {json.dumps(str(models_dir))}\n"
        "[profiles.default.plate]\nenabled = false\n" + RECORD_ON + "\n"
    )
    src = tmp_path / "in" / NAME
    noisy_png(src, 9)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / NAME).write_bytes(b"an earlier result")  # the record follows the new name
    cmd = [sys.executable, "-m", "redactd.cli", "process", str(src), "-o", str(tmp_path / "out")]
    r = subprocess.run(
        [*cmd, "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    stem = NAME[: -len(".png")]
    out = tmp_path / "out" / f"{stem} (1).png"
    record = json.loads(out.with_name(out.name + REC).read_text())
    validate(record)
    assert record["input_sha256"] == sha(src) and record["output_sha256"] == sha(out)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [NAME, out.name, out.name + REC]
    )
    [event] = [json.loads(ln) for ln in r.stdout.splitlines() if '"job.done"' in ln]
    for key, value in record.items():
        if key != "input_sha256":
            assert event[key] == value, key
    assert_no_personal_data(out.with_name(out.name + REC).read_text(), record, tmp_path)


# --------------------------------------------------------------------------- a real keep


def two_faces_far_apart(eval_dir: Path) -> Labelled:
    """The labelled photo whose two big faces (and no others) are farthest apart."""
    best: tuple[float, Labelled] | None = None
    for item in read_labels(eval_dir / "faces_wider_val"):
        big = [b for b in item.faces if b[2] >= 48 and b[3] >= 48]
        if len(big) != 2 or len(item.faces) != 2 or item.ignored:
            continue
        (ax, ay, aw, ah), (bx, by, bw, bh) = big
        gap = max(
            abs((ax + aw / 2) - (bx + bw / 2)) / ((aw + bw) / 2),
            abs((ay + ah / 2) - (by + bh / 2)) / ((ah + bh) / 2),
        )
        if best is None or gap > best[0]:
            best = (gap, item)
    if best is None:
        pytest.skip("no photo with two big faces far apart in the eval set")
    return best[1]


def mean_diff(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    return float(np.abs(a[y : y + h, x : x + w].astype(np.int16) - b[y : y + h, x : x + w]).mean())


def test_a_kept_face_stays_while_the_other_is_masked_with_the_real_model(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    ov_cache: Path,
    eval_dir: Path,
) -> None:
    item = two_faces_far_apart(eval_dir)
    keep_box, other = item.faces
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(tmp_path / "redactd.toml", f, models_dir, cache_dir=ov_cache)
    cfg.write_text(
        cfg.read_text()
        + "\n[profiles.default.plate]\nenabled = false\n"
        + "[profiles.default.instructions]\nallow_keep = true\n"
        + RECORD_ON
    )
    d = daemons(cfg).start()
    d.wait_ready()
    x, y, w, h = keep_box
    # a mask polygon over a background patch far from both faces
    poly = [[0, item.height - 40], [40, item.height - 40], [20, item.height - 1]]
    media = f.inbound / "applicant.jpg"
    sidecar(
        media,
        {
            "keep": [{"box": [x - w * 0.2, y - h * 0.2, x + w * 1.2, y + h * 1.2]}],
            "mask": [{"polygon": poly}],
        },
    )
    media.write_bytes(item.path.read_bytes())
    out = f.outbound / "applicant.jpg"
    wait_until(lambda: out.exists(), 120, "delivery", d)
    a = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
    b = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert a is not None and b is not None and a.shape == b.shape
    assert mean_diff(a, b, keep_box) < 4.0, "the kept face changed beyond re-encoding"
    assert mean_diff(a, b, other) > 8.0, "the other face was not masked"
    assert mean_diff(a, b, (5, item.height - 36, 25, 20)) > 8.0, "the mask polygon was not applied"
    record = json.loads(out.with_name(out.name + REC).read_text())
    validate(record)
    assert record["kept"]["face"] >= 1 and record["masked"]["face"] >= 1
    assert record["keep_unmatched"] == 0 and record["extra_regions"] == 1
    assert d.stop() == 0
