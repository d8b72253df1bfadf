"""`redactd eval` end to end, and the reconstruction attacks on the default masks.

The CLI runs as a real process on small copies of ../shared/eval sets (real
images, real models). Its masked recall is checked against an independent
count: the same images go through `redactd process`, and the test itself
compares output and input pixels per labelled box (tests/helpers/media.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from redactd.core.config import load as load_config
from redactd.evaluation import dataset, runner
from redactd.evaluation.ocr import TextRecognizer
from redactd.models import manifest
from redactd.pipeline.process import Pipeline
from tests.conftest import REPO
from tests.helpers.media import changed_fraction

pytestmark = [pytest.mark.shared, pytest.mark.slow]

SECRET = "Qorvath-Lindqvist"  # in every copied file name: must never reach logs


def _config(tmp: Path, models_dir: Path) -> Path:
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
    )
    return cfg


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env=env,
    )


def _copy_set(src: Path, dst: Path, picks: list[int]) -> list[dict]:
    """Copy the picked lines of a set (images renamed to carry SECRET) into ``dst``."""
    rows = [json.loads(line) for line in (src / "labels.jsonl").read_text().splitlines()]
    (dst / "images").mkdir(parents=True)
    out = []
    for n, i in enumerate(picks):
        row = dict(rows[i])
        name = f"images/{SECRET}-{n:02d}{Path(row['image']).suffix}"
        shutil.copyfile(src / row["image"], dst / name)
        row["image"] = name
        out.append(row)
    (dst / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    return out


def _with_boxes(src: Path, n: int, min_h: int = 0) -> list[int]:
    rows = [json.loads(line) for line in (src / "labels.jsonl").read_text().splitlines()]
    ok = [
        i
        for i, r in enumerate(rows)
        if any(not b["ignore"] and b["h"] >= min_h for b in r["boxes"]) and len(r["boxes"]) <= 12
    ]
    step = max(1, len(ok) // n)
    return ok[::step][:n]


def _independent_masked(rows: list[dict], root: Path, outdir: Path) -> tuple[int, int]:
    """Anonymized / counted boxes by the test's own pixel comparison."""
    anonymized = total = 0
    for r in rows:
        before = np.asarray(Image.open(root / r["image"]).convert("RGB"))
        after = np.asarray(Image.open(outdir / Path(r["image"]).name).convert("RGB"))
        for b in r["boxes"]:
            if b["ignore"]:
                continue
            total += 1
            anonymized += changed_fraction(before, after, (b["x"], b["y"], b["w"], b["h"])) >= 0.5
    return anonymized, total


def test_eval_cli_reports_and_masked_recall_matches_an_independent_pixel_check(
    tmp_path: Path, eval_dir: Path, models_dir: Path
) -> None:
    sets = tmp_path / "sets"
    faces_src = eval_dir / "faces_mask_kaggle"
    plates_src = eval_dir / "plates_openalpr_us"
    faces = _copy_set(faces_src, sets / "faces", _with_boxes(faces_src, 3))
    plates = _copy_set(plates_src, sets / "plates", _with_boxes(plates_src, 2))
    cfg = _config(tmp_path, models_dir)
    out = tmp_path / "report"

    r = _run("eval", str(sets), "--config", str(cfg), "--out", str(out), "--negatives", "3")
    assert r.returncode == 0, r.stderr
    logs = r.stdout + r.stderr
    assert SECRET not in logs, "an image name reached the logs or the terminal"
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert "| faces | face |" in md and "| plates | plate |" in md
    assert SECRET not in (out / "report.json").read_text() + md
    assert not list(out.glob(".redactd-eval-*")), "masked outputs left behind"
    by_name = {s["name"]: s for s in report["sets"]}
    assert set(by_name) == {"faces", "plates", "text_negatives"}
    assert report["hardware"]["cpu"] and report["hardware"]["detectors"]
    assert {"pr_curves.png", "recall_vs_overmask.png"} <= {p.name for p in out.glob("*.png")}
    for s in report["sets"]:
        assert 0.0 <= s["overmask"] <= 1.0 and s["overmask_far"] is not None
        # Worst images by rank only: no position or name that would identify one.
        assert s["worst_overmask"] and set(s["worst_overmask"][0]) == {
            "rank",
            "overmask",
            "changed_pixels",
        }
        assert [w["rank"] for w in s["worst_overmask"]] == list(
            range(1, len(s["worst_overmask"]) + 1)
        )
    neg = by_name["text_negatives"]["negatives"]
    assert neg["images"] == 3 and neg["regions"] >= 6
    assert sum(k["regions"] for k in neg["by_kind"]) == neg["regions"]
    assert "## Text regions (negatives) masked" in md

    for name, rows in (("faces", faces), ("plates", plates)):
        proc = tmp_path / "proc" / name
        p = _run("process", str(sets / name / "images"), "-o", str(proc), "--config", str(cfg))
        assert p.returncode == 0, p.stderr
        anonymized, total = _independent_masked(rows, sets / name, proc)
        (cls_report,) = by_name[name]["classes"]
        masked = cls_report["masked"]
        assert masked["boxes"] == total
        assert masked["detail_masked"] <= total and masked["detail_recall"] is not None
        # Same pipeline, same inputs: the two counts must agree (one box of
        # slack for a pixel on the 50 % line after a different decode).
        assert abs(masked["anonymized"] - anonymized) <= 1, (masked, anonymized, total)
        box = cls_report["box"]
        assert box["recall"] is not None and 0.0 <= box["recall"] <= 1.0
        assert by_name[name]["latency"]["images"] == len(rows)
    # Plate labels are incomplete: precision and AP are left out there.
    plate_box = by_name["plates"]["classes"][0]["box"]
    assert plate_box["precision"] is None and plate_box["ap50"] is None
    face_box = by_name["faces"]["classes"][0]["box"]
    assert face_box["ap50"] is not None and face_box["precision"] is not None


def test_show_names_names_the_worst_images_on_the_terminal_only(
    tmp_path: Path, eval_dir: Path, models_dir: Path
) -> None:
    src = eval_dir / "faces_mask_kaggle"
    _copy_set(src, tmp_path / "sets" / "faces", _with_boxes(src, 2))
    out = tmp_path / "report"
    args = ("eval", str(tmp_path / "sets"), "--config", str(_config(tmp_path, models_dir)))
    r = _run(*args, "--out", str(out), "--show-names")
    assert r.returncode == 0, r.stderr
    named = [line for line in r.stderr.splitlines() if "over-masking #" in line]
    assert len(named) == 2 and all(SECRET in line for line in named)
    assert SECRET not in (out / "report.json").read_text() + (out / "report.md").read_text()
    r = _run(*args, "--out", str(tmp_path / "report2"))
    assert r.returncode == 0 and SECRET not in r.stdout + r.stderr


def test_eval_without_matplotlib_is_an_error_before_any_work(tmp_path: Path) -> None:
    """The plots are part of the report: no silent report without them."""
    block = tmp_path / "block" / "matplotlib"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text('raise ImportError("blocked by the test")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "block"), env.get("PYTHONPATH", "")])
    out = tmp_path / "report"
    r = _run("eval", str(tmp_path / "no-such-set"), "--out", str(out), env=env)
    assert r.returncode == 78, r.stderr
    assert "matplotlib" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_coco_json_reads_as_the_same_set_as_labels_jsonl(tmp_path: Path, eval_dir: Path) -> None:
    src = eval_dir / "faces_wider_val"
    rows = _copy_set(src, tmp_path / "jsonl", _with_boxes(src, 3))
    coco_dir = tmp_path / "coco"
    shutil.copytree(tmp_path / "jsonl" / "images", coco_dir / "images")
    images, anns = [], []
    for i, r in enumerate(rows):
        images.append(
            {
                "id": i + 1,
                "file_name": Path(r["image"]).name,
                "width": r["width"],
                "height": r["height"],
            }
        )
        for b in r["boxes"]:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 7,
                    "bbox": [b["x"], b["y"], b["w"], b["h"]],
                    "iscrowd": int(b["ignore"]),
                }
            )
        anns.append(
            {"id": len(anns) + 1, "image_id": i + 1, "category_id": 9, "bbox": [0, 0, 5, 5]}
        )
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 7, "name": "human face"}, {"id": 9, "name": "person"}],
    }
    (coco_dir / "annotations.json").write_text(json.dumps(coco))

    (a,) = dataset.load(tmp_path / "jsonl")
    (b,) = dataset.load(coco_dir)
    assert (a.format, b.format) == ("jsonl", "coco")
    assert b.skipped_categories == len(rows)  # the "person" boxes are not faces or plates
    assert len(a.images) == len(b.images) == len(rows)
    for x, y in zip(a.images, b.images, strict=True):
        assert x.path.name == y.path.name and y.path.is_file()
        assert [(bx.cls, bx.box, bx.ignore) for bx in x.boxes] == [
            (by.cls, by.box, by.ignore) for by in y.boxes
        ]
    # A folder of sets finds both, in name order.
    assert [s.name for s in dataset.load(tmp_path)] == ["coco", "jsonl"]


@pytest.fixture(scope="module")
def ocr_models(models_dir: Path) -> Path:
    """The plate recogniser beside the default models (fetched from the registry if absent)."""
    spec = manifest.load().get("ppocr_rec")
    if spec.missing_or_bad(models_dir):
        r = _run("models", "fetch", "ppocr_rec", "--store", str(models_dir))
        assert r.returncode == 0, r.stderr
    return models_dir


def test_default_masks_resist_redetection_deblur_and_plate_reading(
    tmp_path: Path, eval_dir: Path, ocr_models: Path
) -> None:
    """On a subset of every shared set: zero re-detected faces and zero readable plates.

    The same attacks find the faces and read the plates of the unmasked
    inputs (so the zeros are not an attack that sees nothing).
    """
    cfg_path = _config(tmp_path, ocr_models)
    cfg = load_config(cfg_path)
    picks = {
        "faces_mask_kaggle": 3,
        "faces_wider_val": 1,
        "plates_openalpr_us": 1,
        "plates_openalpr_eu": 1,
        "plates_openalpr_br": 1,
    }
    pipeline = Pipeline.load(cfg, ["default"])
    work = tmp_path / "work-eval"
    work.mkdir(mode=0o700)
    found = read = judged = plates = 0
    try:
        recognizer = TextRecognizer.load(manifest.load(), pipeline.detectors.runtime, ocr_models)
        for name, n in picks.items():
            (lset,) = dataset.load(eval_dir / name, limit=n)
            rep = runner.evaluate_set(
                pipeline, cfg, "default", lset, work, attack=True, methods=(), recognizer=recognizer
            )
            for a in rep.attack:
                assert a.method == "profile"
                if a.cls == "face":
                    # A face found again may be recognised. A plate's identity
                    # is its text: the plate detector finds the solid
                    # plate-shaped box it leaves on a bumper again (shape and
                    # place suffice), and only readability counts there.
                    assert a.redetected == 0, f"{name}: masked {a.cls} found again: {a}"
                    assert a.redetected_deblurred == 0, f"{name}: found again after deblur: {a}"
                assert a.readable == 0 and a.readable_deblurred == 0, f"{name}: readable: {a}"
                found += a.found_original
                judged += a.judged
                read += a.readable_original
                plates += a.plates_with_text
    finally:
        pipeline.close()
    assert judged >= 5
    assert found >= 0.7 * judged, "the re-detection attack finds too few unmasked objects"
    assert plates == 3 and read >= 2, "the recogniser reads too few unmasked plates"
