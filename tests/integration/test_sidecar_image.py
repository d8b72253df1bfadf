"""Per-file instructions on a real image with the real CenterFace detector,
through the pipeline and through ``redactd process`` as a real process.

The image is the first of ../shared/eval/faces_wider_val (labels.jsonl order)
with 3 to 6 labelled faces, none ignored, all at least 40 px tall, and one
face clear of the others (no other face within its own size): that face is
the one kept. Pixels are compared after decoding input and output (a JPEG
re-encode changes an untouched face by about one grey level on average; a
mask by tens).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from redactd.core.config import load
from redactd.pipeline.process import Pipeline
from redactd.stages.instructions.parse import parse
from tests.conftest import REPO

pytestmark = pytest.mark.slow

UNCHANGED = 3.0
MASKED = 15.0
SECRET = "Zqxjv-Hemlworth"

BoxT = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class Scene:
    path: Path
    width: int
    height: int
    kept: BoxT
    others: tuple[BoxT, ...]
    polygon: tuple[tuple[int, int], ...]  # a triangle away from every face


def _clear(a: BoxT, others: list[BoxT]) -> bool:
    x, y, w, h = a
    grown = (x - w, y - h, x + 2 * w, y + 2 * h)
    return all(
        ox + ow <= grown[0] or grown[2] <= ox or oy + oh <= grown[1] or grown[3] <= oy
        for ox, oy, ow, oh in others
    )


def _far_triangle(width: int, height: int, faces: list[BoxT]) -> tuple[tuple[int, int], ...]:
    """A 60 px triangle whose bounding box keeps 40 px from every face."""
    for y in range(10, height - 70, 10):
        for x in range(10, width - 70, 10):
            if all(
                x + 60 + 40 <= fx or fx + fw + 40 <= x or y + 60 + 40 <= fy or fy + fh + 40 <= y
                for fx, fy, fw, fh in faces
            ):
                return ((x, y), (x + 60, y + 10), (x + 20, y + 60))
    raise AssertionError("no face-free spot")


@pytest.fixture(scope="module")
def scene(eval_dir: Path) -> Scene:
    d = eval_dir / "faces_wider_val"
    for line in (d / "labels.jsonl").read_text().splitlines():
        rec = json.loads(line)
        boxes = rec["boxes"]
        faces = [(b["x"], b["y"], b["w"], b["h"]) for b in boxes if not b["ignore"]]
        if not 3 <= len(faces) <= 6 or len(faces) != len(boxes) or rec["width"] > 1100:
            continue
        if any(h < 40 for *_xyw, h in faces):
            continue
        for i, f in enumerate(faces):
            others = faces[:i] + faces[i + 1 :]
            if _clear(f, others):
                tri = _far_triangle(rec["width"], rec["height"], faces)
                return Scene(d / rec["image"], rec["width"], rec["height"], f, tuple(others), tri)
    raise AssertionError("no suitable image in faces_wider_val")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def diff(a: np.ndarray, b: np.ndarray, box: BoxT) -> float:
    x, y, w, h = box
    return float(np.abs(a[y : y + h, x : x + w] - b[y : y + h, x : x + w]).mean())


def polygon_black(out: np.ndarray, tri: tuple[tuple[int, int], ...]) -> float:
    """Share of the pixels well inside the triangle that are black."""
    import cv2

    m = np.zeros(out.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.asarray(tri, np.int32)], 1)
    m = cv2.erode(m, np.ones((3, 3), np.uint8)).astype(bool)
    return float((out[m].max(axis=1) < 40).mean())  # black, give or take JPEG noise


def _config(tmp: Path, models_dir: Path) -> Path:
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
        # faces only: plate masks of signs would change pixels these tests compare
        "[profiles.default.plate]\nenabled = false\n"
        # keep is off by default (anyone who writes to inbound could unmask)
        "[profiles.default.instructions]\nallow_keep = true\n"
        "[profiles.strict.plate]\nenabled = false\n"
        "[profiles.strict.instructions]\nallow_keep = false\n"
    )
    return cfg


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    return _config(tmp_path_factory.mktemp("sidecarimg"), models_dir)


@pytest.fixture(scope="module")
def pipeline(config_file: Path) -> Iterator[Pipeline]:
    p = Pipeline.load(load(config_file), ["default"])
    yield p
    p.close()


def _box_json(b: BoxT) -> list[int]:
    x, y, w, h = b
    return [x, y, x + w, y + h]


# --------------------------------------------------------------------------- pipeline


def test_keep_leaves_one_face_unchanged_and_masks_every_other(
    pipeline: Pipeline, scene: Scene, tmp_path: Path
) -> None:
    instr = parse(
        json.dumps(
            {
                "version": 1,
                "keep": [{"box": _box_json(scene.kept)}],
                "mask": [{"polygon": [list(p) for p in scene.polygon]}],
            }
        )
    )
    kept_out, plain_out = tmp_path / "kept.jpg", tmp_path / "plain.jpg"
    result = pipeline.process(scene.path, kept_out, "default", instructions=instr)
    pipeline.process(scene.path, plain_out, "default")
    src, kept, plain = pixels(scene.path), pixels(kept_out), pixels(plain_out)
    others = [diff(src, kept, b) for b in scene.others]
    print(
        f"\nkept face {diff(src, kept, scene.kept):.1f}, without keep "
        f"{diff(src, plain, scene.kept):.1f}, others {[round(o, 1) for o in others]}"
    )
    assert diff(src, kept, scene.kept) < UNCHANGED, "the kept face was changed"
    assert diff(src, plain, scene.kept) > MASKED, "without keep the same face is masked"
    assert min(others) > MASKED, "a bystander was not masked"
    assert polygon_black(kept, scene.polygon) == 1.0, "the extra polygon is not masked"
    assert polygon_black(plain, scene.polygon) < 0.5
    assert result.kept["face"] == 1 and result.keep_unmatched == 0
    assert result.masked["face"] == result.detected["face"] - 1
    assert result.extra_regions == 1
    assert result.log_fields()["faces_kept"] == 1


def test_keep_region_on_no_face_keeps_nothing(
    pipeline: Pipeline, scene: Scene, tmp_path: Path
) -> None:
    xs = [p[0] for p in scene.polygon]
    ys = [p[1] for p in scene.polygon]
    instr = parse(json.dumps({"keep": [{"box": [min(xs), min(ys), max(xs), max(ys)]}]}))
    result = pipeline.process(scene.path, tmp_path / "o.jpg", "default", instructions=instr)
    assert result.keep_unmatched == 1 and result.kept["face"] == 0
    assert diff(pixels(scene.path), pixels(tmp_path / "o.jpg"), scene.kept) > MASKED


# --------------------------------------------------------------------------- command line


def _process(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_cli_keep_and_mask_flags(config_file: Path, scene: Scene, tmp_path: Path) -> None:
    x, y, w, h = scene.kept
    poly = ";".join(f"{px},{py}" for px, py in scene.polygon)
    src = tmp_path / f"{SECRET}.jpg"
    shutil.copyfile(scene.path, src)
    r = _process(
        config_file, str(src), "-o", str(tmp_path / "out"),
        "--keep", f"{x},{y},{x + w},{y + h}", "--mask", f"poly:{poly}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = pixels(tmp_path / "out" / src.name)
    before = pixels(src)
    assert diff(before, out, scene.kept) < UNCHANGED
    assert min(diff(before, out, b) for b in scene.others) > MASKED
    assert polygon_black(out, scene.polygon) == 1.0
    done = [json.loads(line) for line in r.stdout.splitlines() if '"job.done"' in line]
    assert done and done[0]["faces_kept"] == 1 and done[0]["extra_regions"] == 1
    assert SECRET not in r.stdout + r.stderr


def test_cli_sidecar_file_and_sidecar_beside_the_input(
    config_file: Path, scene: Scene, tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    src = inbox / "photo.jpg"
    shutil.copyfile(scene.path, src)
    keep = {"keep": [{"box": _box_json(scene.kept)}]}
    (inbox / "photo.jpg.redact.json").write_text(json.dumps(keep))
    mask = {"mask": [{"polygon": [list(p) for p in scene.polygon]}]}
    given = tmp_path / "given.json"
    given.write_text(json.dumps(mask))
    r = _process(config_file, str(inbox), "-o", str(tmp_path / "out"), "--sidecar", str(given))
    assert r.returncode == 0, r.stderr
    assert "processed 1 file(s), 0 failed" in r.stderr, "the sidecar is not an input"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.jpg"]
    out, before = pixels(tmp_path / "out" / "photo.jpg"), pixels(src)
    assert diff(before, out, scene.kept) < UNCHANGED, "the sidecar beside the input was used"
    assert polygon_black(out, scene.polygon) == 1.0, "--sidecar was used"


def test_cli_invalid_instructions_fail_with_the_field_named(
    config_file: Path, scene: Scene, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mask": [{"box": [0, 0, 9, 9]}, {"box": [5, 5, 1, 1]}]}))
    r = _process(config_file, str(scene.path), "-o", str(tmp_path / "o1"), "--sidecar", str(bad))
    assert r.returncode == 64
    assert r.stderr.strip().splitlines() == [
        "error: invalid_sidecar: mask[1].box: expected 4 numbers x1<x2, y1<y2"
    ]
    assert not (tmp_path / "o1").exists() or not any((tmp_path / "o1").iterdir())

    r = _process(config_file, str(scene.path), "-o", str(tmp_path / "o2"), "--keep", "1,2,3")
    assert r.returncode == 64 and "--keep[0].box" in r.stderr and "Traceback" not in r.stderr

    r = _process(
        config_file, str(scene.path), "-o", str(tmp_path / "o3"),
        "--profile", "strict", "--keep", "1,2,3,4",
    )  # fmt: skip
    assert r.returncode == 64
    assert "instruction_not_allowed: keep: not allowed by this profile" in r.stderr

    # A broken sidecar beside one input fails that input only, naming the field.
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copyfile(scene.path, inbox / f"{SECRET}.jpg")
    (inbox / f"{SECRET}.jpg.redact.json").write_text(
        json.dumps({"keep": [{"box": [0, 0, 1, 1], "time": -2}]})
    )
    r = _process(config_file, str(inbox), "-o", str(tmp_path / "o4"))
    assert r.returncode == 65
    assert "invalid_sidecar: keep[0].time: expected seconds >= 0" in r.stderr
    assert "Traceback" not in r.stderr and SECRET not in r.stderr + r.stdout
