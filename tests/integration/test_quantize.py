"""`redactd models quantize`: INT8 CenterFace made with NNCF, stored as a hashed artefact.

Real nncf, real OpenVINO, real processes for the command line. Calibration
sets are small (16 pictures) so each quantization takes seconds; the
plumbing tests use synthetic pictures made here, the accuracy test real
images from ../shared/eval (calibrated on one set, checked on another).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from redactd.core import config as config_mod
from redactd.core.config import Config, Profile, TilingConfig
from redactd.core.errors import ModelError
from redactd.evaluation.labels import load_set
from redactd.evaluation.matching import coverage
from redactd.models import derived, manifest, quantize
from redactd.pipeline import calibration
from redactd.stages.detect import centerface, multiscale, registry, yolo_plate
from tests.helpers.service import Folders, write_config
from tests.helpers.synthvideo import write_clip

REPO = Path(__file__).resolve().parents[2]
NAME = "centerface-int8"
#: Distinctive calibration file names: they must never show in any output.
SECRET = "Jane-Doe-passport-photo"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_store(models_dir: Path, store: Path) -> Path:
    """A private store holding only the verified CenterFace (quantize writes next to it)."""
    spec = manifest.load().get("centerface")
    spec.dir(store).mkdir(parents=True)
    for rel in spec.files:
        shutil.copyfile(spec.dir(models_dir) / rel, spec.dir(store) / rel)
    return store


def synthetic_pictures(folder: Path, n: int = 16) -> Path:
    """Face-like blobs on textured backgrounds, in sizes that give coarse and fine passes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        w, h = int(rng.integers(320, 900)), int(rng.integers(240, 700))
        img = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(3):
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            ax = int(rng.integers(10, 80))
            cv2.ellipse(img, (cx, cy), (ax, int(ax * 1.3)), 0, 0, 360, (120, 150, 200), -1)
            cv2.circle(img, (cx - ax // 3, cy - ax // 4), max(2, ax // 8), (30, 30, 30), -1)
            cv2.circle(img, (cx + ax // 3, cy - ax // 4), max(2, ax // 8), (30, 30, 30), -1)
        cv2.imwrite(str(folder / f"{SECRET}-{i}.png"), img)
    return folder


def int8_config(store: Path, cache: Path) -> Config:
    base = config_mod.default_config(REPO)
    prof = Profile()
    prof = dataclasses.replace(
        prof,
        face=dataclasses.replace(prof.face, detectors=(NAME,)),
        plate=dataclasses.replace(prof.plate, enabled=False, detectors=()),
    )
    return dataclasses.replace(
        base,
        models=dataclasses.replace(base.models, dir=store),
        runtime=dataclasses.replace(base.runtime, cache_dir=cache),
        profiles={"default": prof},
    )


def write_int8_toml(path: Path, store: Path) -> Path:
    path.write_text(
        f'[models]\ndir = "{store}"\n[runtime]\ncache_dir = "{path.parent / "ovcache"}"\n'
        f'[profiles.default.face]\ndetectors = ["{NAME}"]\n'
        "[profiles.default.plate]\nenabled = false\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def made(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Quantize once through the CLI on 16 synthetic pictures: (store, calibration, output)."""
    root = tmp_path_factory.mktemp("quantize")
    store = new_store(models_dir, root / "store")
    cal = synthetic_pictures(root / "cal")
    r = cli(
        "models", "quantize", "centerface", "--calibration", str(cal),
        "--samples", "16", "--store", str(store),
    )
    assert r.returncode == 0, r.stderr
    return store, cal, r.stdout + r.stderr


def test_quantize_installs_artefact_and_provenance_with_matching_hashes(
    made: tuple[Path, Path, str], models_dir: Path
) -> None:
    store, _cal, _out = made
    folder = store / NAME
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{NAME}.bin", f"{NAME}.xml", derived.PROVENANCE,
    ]
    prov = json.loads((folder / derived.PROVENANCE).read_text())
    assert prov["files"] == {f: sha256(folder / f) for f in (f"{NAME}.bin", f"{NAME}.xml")}
    assert prov["source"] == {
        "name": "centerface",
        "files": {"centerface.onnx": sha256(models_dir / "centerface" / "centerface.onnx")},
    }
    assert prov["calibration"]["samples"] == 16
    assert len(prov["calibration"]["digest"]) == 64
    assert prov["tools"]["nncf"] and prov["tools"]["openvino"]
    assert prov["created"].endswith("Z")
    # no temporaries left in the store; files readable by a service user
    assert not [p for p in store.iterdir() if p.name.startswith(".redactd-tmp-")]
    assert all((folder / f).stat().st_mode & 0o777 == 0o644 for f in prov["files"])
    # the IR takes any H and W, like the runtime's dynamic networks
    xml = (folder / f"{NAME}.xml").read_text()
    assert 'shape="1,3,?,?"' in xml


def test_quantize_output_names_no_calibration_file_but_counts_and_hashes(
    made: tuple[Path, Path, str],
) -> None:
    store, cal, out = made
    assert SECRET not in out and str(cal) not in out
    prov = json.loads((store / NAME / derived.PROVENANCE).read_text())
    assert prov["calibration"]["digest"] in out
    assert prov["files"][f"{NAME}.bin"] in out
    assert "16 calibration samples" in out
    assert SECRET not in json.dumps(prov)


def test_calibration_digest_is_over_inputs_not_file_names(tmp_path: Path) -> None:
    """Same pictures under other names: the same digest (every picture used)."""
    a = synthetic_pictures(tmp_path / "a", n=4)
    b = tmp_path / "b"
    b.mkdir()
    for i, p in enumerate(sorted(a.iterdir())):
        shutil.copyfile(p, b / f"renamed-{9 - i}.png")
    da = quantize.calibration_digest(calibration.collect(a, "centerface", samples=100))
    db = quantize.calibration_digest(calibration.collect(b, "centerface", samples=100))
    assert da == db
    dc = quantize.calibration_digest(calibration.collect(a, "centerface", samples=3))
    assert dc != da


def test_calibration_inputs_are_what_the_adapter_feeds_its_network() -> None:
    """Every pass of the multi-scale plan, pre-processed by CenterFace's own code."""
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 256, size=(720, 1280, 3), dtype=np.uint8)
    tiling = TilingConfig(upscale=1.5)  # a coarse pass and two fine tiles
    blobs = list(calibration.model_inputs("centerface", picture, tiling))
    tiles = multiscale.plan(1280, 720, tiling)
    assert len(blobs) == len(tiles) > 1
    for blob, t in zip(blobs, tiles, strict=True):
        w, h = centerface.input_size(t.out_w, t.out_h)
        expected = cv2.dnn.blobFromImage(
            multiscale.crop(picture, t), 1.0, (w, h), swapRB=True, crop=False
        )
        assert blob.dtype == np.float32 and np.array_equal(blob, expected)


def test_plate_calibration_inputs_are_the_letterboxed_passes_of_the_plate_tiling() -> None:
    """The YOLOv8 plate adapter's own letterbox of every pass of the default plate plan."""
    rng = np.random.default_rng(2)
    picture = rng.integers(0, 256, size=(720, 1280, 3), dtype=np.uint8)
    tiling = Profile().plate.tiling  # coarse 640 px + the native pass
    blobs = list(calibration.model_inputs("yolo_plate", picture, tiling))
    tiles = multiscale.plan(1280, 720, tiling)
    assert len(blobs) == len(tiles) == 2
    for blob, t in zip(blobs, tiles, strict=True):
        expected = yolo_plate.letterbox(multiscale.crop(picture, t))
        assert blob.dtype == np.float32 and np.array_equal(blob, expected)
    assert calibration.supported("yolo_plate")


def test_calibration_spreads_video_frames_and_repeats_with_the_seed(tmp_path: Path) -> None:
    folder = tmp_path / "cal"
    folder.mkdir()
    write_clip(folder / "clip.mp4", size=(320, 240), frames=40, audio=None)
    cv2.imwrite(str(folder / "still.png"), np.full((240, 320, 3), 128, np.uint8))
    # 320x240 at 1.5x: a coarse and a fine pass per picture; 12 samples = 6
    # pictures, one image and (round-robin) five frames of the video
    tiling = TilingConfig(upscale=1.5)
    cs = calibration.collect(folder, "centerface", samples=12, seed=3, tiling=tiling)
    assert (len(cs), cs.frames, cs.files, cs.skipped) == (12, 6, 2, 0)
    blobs = list(cs)
    assert len(blobs) == 12 and cs.failed == 0
    frames = {b.tobytes() for b in blobs[::2]}
    assert len(frames) == 6  # distinct pictures (the clip's pattern moves)
    again = calibration.collect(folder, "centerface", samples=12, seed=3, tiling=tiling)
    assert quantize.calibration_digest(again) == quantize.calibration_digest(blobs)
    other = calibration.collect(folder, "centerface", samples=12, seed=4, tiling=tiling)
    assert quantize.calibration_digest(other) != quantize.calibration_digest(blobs)


def test_verify_and_list_show_the_artefact(made: tuple[Path, Path, str]) -> None:
    store, _cal, _out = made
    r = cli("models", "verify", NAME, "--store", str(store))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{NAME}: ok (2 files, sha256 verified)" in r.stdout
    # by default too (the default models are checked as well; this store lacks ppocr_det)
    r = cli("models", "verify", "--store", str(store))
    assert f"{NAME}: ok (2 files, sha256 verified)" in r.stdout.splitlines()
    r = cli("models", "list", "--store", str(store))
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    row = next(i for i, ln in enumerate(lines) if ln.startswith(NAME + " "))
    assert "installed" in lines[row] and "quantize" in lines[row]
    prov = json.loads((store / NAME / derived.PROVENANCE).read_text())
    assert "from centerface" in lines[row + 1]
    assert prov["calibration"]["digest"][:16] in lines[row + 1]


def test_flipped_byte_fails_verify_and_loading(
    made: tuple[Path, Path, str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(made[0], store)
    weights = store / NAME / f"{NAME}.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    r = cli("models", "verify", NAME, "--store", str(store))
    assert r.returncode == 78
    assert f"{NAME}: FAILED, 1 of 2 files missing or altered: {NAME}.bin" in r.stdout
    assert "redactd models quantize centerface --calibration DIR" in r.stdout
    with pytest.raises(ModelError, match="fails verification"):
        registry.load(int8_config(store, tmp_path / "cache"))
    r = cli("check-config", "--config", str(write_int8_toml(tmp_path / "c.toml", store)))
    assert r.returncode == 78
    assert "model error" in r.stderr and "fails verification" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_artefact_tells_the_operator_to_quantize(
    models_dir: Path, tmp_path: Path
) -> None:
    store = new_store(models_dir, tmp_path / "store")
    hint = "redactd models quantize centerface --calibration DIR"
    with pytest.raises(ModelError, match="has not been made on this server") as e:
        registry.load(int8_config(store, tmp_path / "cache"))
    assert hint in str(e.value)
    r = cli("check-config", "--config", str(write_int8_toml(tmp_path / "c.toml", store)))
    assert r.returncode == 78, r.stderr
    assert hint in r.stderr and "Traceback" not in r.stderr
    r = cli("models", "fetch", NAME, "--store", str(store))
    assert r.returncode == 78 and hint in r.stderr


def test_daemon_refuses_to_start_without_the_artefact(models_dir: Path, tmp_path: Path) -> None:
    store = new_store(models_dir, tmp_path / "store")
    folders = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml", folders, store, cache_dir=tmp_path / "ov", detectors=(NAME,)
    )
    cfg.write_text(cfg.read_text() + "\n[profiles.default.plate]\nenabled = false\n")
    r = cli("run", "--config", str(cfg))
    assert r.returncode == 78, r.stdout + r.stderr
    assert "redactd models quantize centerface --calibration DIR" in r.stdout + r.stderr


def test_int8_detector_loads_and_reports_its_own_identity(
    made: tuple[Path, Path, str], tmp_path: Path
) -> None:
    store = made[0]
    dets = registry.load(int8_config(store, tmp_path / "cache"))
    try:
        (info,) = dets.describe()
        spec = derived.spec(manifest.load(), NAME, store)
        assert (info.detector, info.model, info.identity) == (NAME, NAME, spec.identity)
        assert info.identity != manifest.load().get("centerface").identity
    finally:
        dets.close()


def test_cli_errors_are_one_clear_line(models_dir: Path, tmp_path: Path) -> None:
    store = new_store(models_dir, tmp_path / "store")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / f"{SECRET}.txt").write_text("not a picture")
    r = cli("models", "quantize", "centerface", "--calibration", str(empty), "--store", str(store))
    assert r.returncode == 65
    assert r.stderr.strip().splitlines() == [
        "calibration error: the calibration folder holds no readable image or video "
        "(1 files looked at, 1 not usable)"
    ]
    r = cli("models", "quantize", "nope", "--calibration", str(empty), "--store", str(store))
    assert r.returncode == 78
    assert r.stderr.startswith("model error: unknown model 'nope'")
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("models", "quantize", "ppocr_det", "--calibration", str(empty), "--store", str(store))
    assert r.returncode == 78 and "cannot be quantized; quantizable: " in r.stderr
    r = cli("models", "quantize", "centerface", "--store", str(store))
    assert r.returncode == 64 and "--calibration DIR is required" in r.stderr
    assert not (store / NAME).exists()


def test_missing_nncf_tells_how_to_install(models_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    (blocker / "nncf").mkdir(parents=True)
    (blocker / "nncf" / "__init__.py").write_text("raise ImportError('nncf blocked by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(REPO / "daemon")]))
    store = new_store(models_dir, tmp_path / "store")
    cal = synthetic_pictures(tmp_path / "cal", n=1)
    r = cli(
        "models", "quantize", "centerface", "--calibration", str(cal), "--store", str(store),
        env=env,
    )
    assert r.returncode == 78
    assert r.stderr.strip() == (
        "model error: quantization needs nncf, which is not installed: "
        "pip install 'redactd[quantize]'"
    )


@pytest.mark.shared
def test_int8_detector_finds_labelled_large_faces_of_real_images(
    models_dir: Path, eval_dir: Path, tmp_path: Path
) -> None:
    """Calibrated on 16 mask-set images; checked on WIDER images it never saw."""
    cal = tmp_path / "cal"
    cal.mkdir()
    kaggle = sorted((eval_dir / "faces_mask_kaggle" / "images").glob("*.jpg"))
    for p in kaggle[:16]:
        shutil.copyfile(p, cal / p.name)
    store = new_store(models_dir, tmp_path / "store")
    src = manifest.load().get("centerface")
    cs = calibration.collect(cal, "centerface", samples=32, seed=0)
    quantize.quantize(src, store, cs, seed=0)
    dets = registry.load(int8_config(store, tmp_path / "cache"))
    prof = Profile()
    prof = dataclasses.replace(
        prof,
        face=dataclasses.replace(prof.face, detectors=(NAME,)),
        plate=dataclasses.replace(prof.plate, enabled=False, detectors=()),
    )
    large = 0
    try:
        for item in load_set(eval_dir / "faces_wider_val"):
            faces = [
                b.box for b in item.of_class("face", ignore=False)
                if min(b.box.width, b.box.height) >= 64
            ]
            if not faces:
                continue
            image = cv2.imread(str(item.path))
            found = [d.box.pad(0.15) for d in dets.find(image, prof)]
            for face in faces:
                assert coverage(face, found) >= 0.5, "a large labelled face was not found"
            large += len(faces)
            if large >= 10:
                break
    finally:
        dets.close()
    assert large >= 10
