"""The detector table, profile checks and ``Detectors.find`` with scripted detectors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from redactd.core import config as config_mod
from redactd.core.config import ClassConfig, Config, Profile, TilingConfig
from redactd.core.errors import ConfigError, ConfigErrors
from redactd.core.types import Box, Detection, ObjectClass
from redactd.models.manifest import ModelSpec
from redactd.stages.detect import registry
from redactd.stages.detect.runtime import InferenceError, Runtime


class Scripted:
    """Returns fixed detections (image coordinates) filtered by the threshold."""

    def __init__(self, cls: ObjectClass, dets: list[tuple[float, float, float, float, float]]):
        self.name = "scripted"
        self.cls = cls
        self.dets = dets
        self.closed = False

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        h, w = image.shape[:2]
        return [
            Detection(self.cls, Box(x1, y1, x2, y2).clip(w, h), s, self.name)
            for x1, y1, x2, y2, s in self.dets
            if s >= threshold
        ]

    def close(self) -> None:
        self.closed = True


class Raising(Scripted):
    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        raise InferenceError("inference failed on model 'scripted' (RuntimeError)")


Rows = list[tuple[float, float, float, float, float]]  # x1, y1, x2, y2, score
FACES_A: Rows = [(10, 10, 50, 50, 0.9), (100, 100, 130, 130, 0.25), (200, 10, 240, 50, 0.12)]
FACES_B: Rows = [(12, 12, 52, 52, 0.8), (300, 300, 340, 340, 0.6)]
PLATES: Rows = [(400, 400, 480, 430, 0.7)]


@pytest.fixture(autouse=True)
def scripted_detectors() -> Iterator[dict[str, Scripted]]:
    made: dict[str, Scripted] = {}

    Row = tuple[float, float, float, float, float]

    def factory(
        name: str, cls: ObjectClass, dets: list[Row], kind: type[Scripted]
    ) -> registry.Factory:
        def make(spec: ModelSpec, runtime: Runtime, store: Path) -> Scripted:
            made[name] = kind(cls, dets)
            return made[name]

        return make

    saved = dict(registry.DETECTORS)
    table: tuple[tuple[str, ObjectClass, list[Row], type[Scripted]], ...] = (
        ("t-a", "face", FACES_A, Scripted),
        ("t-b", "face", FACES_B, Scripted),
        ("t-plate", "plate", PLATES, Scripted),
        ("t-raise", "face", [], Raising),
    )
    for name, cls, dets, kind in table:
        info = registry.DetectorInfo(name, cls, "centerface", factory(name, cls, dets, kind))
        registry.register(info)
    yield made
    registry.DETECTORS.clear()
    registry.DETECTORS.update(saved)


def make_config(tmp_path: Path, **profiles: Profile) -> Config:
    base = config_mod.default_config(tmp_path)
    return dataclasses.replace(
        base,
        profiles=dict(profiles),
        runtime=dataclasses.replace(base.runtime, cache_dir=tmp_path / "cache"),
    )


def profile(face: tuple[str, ...], plate: tuple[str, ...] = (), threshold: float = 0.2) -> Profile:
    off = TilingConfig(enabled=False, max_side=8192)  # one pass at native size
    return Profile(
        face=ClassConfig(detectors=face, threshold=threshold, tiling=off, enabled=bool(face)),
        plate=ClassConfig(detectors=plate, threshold=0.5, tiling=off, enabled=bool(plate)),
    )


IMAGE = np.zeros((600, 800, 3), dtype=np.uint8)


def test_builtin_table_has_the_face_detectors() -> None:
    for name in ("centerface", "yunet", "face-detection-0204", "face-detection-0205"):
        assert registry.DETECTORS[name].cls == "face"
    assert registry.DETECTORS["yunet"].model == "face_detection_yunet"


def test_check_profiles_names_unknown_detectors_and_wrong_classes(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        default=profile(("t-a", "nope")),
        other=profile(("t-plate",), ("t-a",)),
    )
    errors = {e.key: e.reason for e in registry.check_profiles(cfg)}
    assert set(errors) == {
        "profiles.default.face.detectors[1]",
        "profiles.other.face.detectors[0]",
        "profiles.other.plate.detectors[0]",
    }
    assert "unknown detector 'nope'" in errors["profiles.default.face.detectors[1]"]
    assert "finds plates, not faces" in errors["profiles.other.face.detectors[0]"]


def test_load_refuses_a_profile_with_an_unknown_detector(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("nope",)))
    with pytest.raises(ConfigErrors) as e:
        registry.load(cfg)
    assert e.value.errors[0].key == "profiles.default.face.detectors[0]"


def test_load_refuses_an_unknown_profile(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("t-a",)))
    with pytest.raises(ConfigError):
        registry.load(cfg, ["missing"])


def test_each_detector_is_loaded_once_for_all_profiles(
    tmp_path: Path, scripted_detectors: dict[str, Scripted]
) -> None:
    cfg = make_config(tmp_path, a=profile(("t-a",)), b=profile(("t-a", "t-b")))
    dets = registry.load(cfg)
    try:
        assert sorted(m.detector for m in dets.describe()) == ["t-a", "t-b"]
        assert {m.model for m in dets.describe()} == {"centerface"}
        assert len(scripted_detectors) == 2
    finally:
        dets.close()
    assert all(d.closed for d in scripted_detectors.values())


def test_find_applies_the_class_threshold(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("t-a",), threshold=0.2))
    dets = registry.load(cfg)
    found = dets.find(IMAGE, cfg.profile("default"))
    assert sorted(d.score for d in found) == [0.25, 0.9]
    assert all(d.cls == "face" and d.detector == "t-a" for d in found)


def test_floor_overrides_the_threshold_for_low_score_detections(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("t-a",), threshold=0.2))
    found = registry.load(cfg).find(IMAGE, cfg.profile("default"), floor=0.1)
    assert sorted(d.score for d in found) == [0.12, 0.25, 0.9]


def test_several_detectors_are_united_and_overlaps_merged(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("t-a", "t-b"), threshold=0.2))
    found = registry.load(cfg).find(IMAGE, cfg.profile("default"))
    # (10,10)-(50,50) from a and (12,12)-(52,52) from b are one face: one box
    # covering both, with the better score
    got = sorted(((d.box.x1, d.box.y1, d.box.x2, d.box.y2), d.score) for d in found)
    assert got == [
        ((10, 10, 52, 52), 0.9),
        ((100, 100, 130, 130), 0.25),
        ((300, 300, 340, 340), 0.6),
    ]


def test_every_enabled_class_is_detected(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("t-a",), ("t-plate",)))
    found = registry.load(cfg).find(IMAGE, cfg.profile("default"))
    assert {d.cls for d in found} == {"face", "plate"}
    plates = [d for d in found if d.cls == "plate"]
    assert len(plates) == 1 and plates[0].box == Box(400, 400, 480, 430)


def test_disabled_class_is_not_detected(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile((), ("t-plate",)))
    found = registry.load(cfg).find(IMAGE, cfg.profile("default"))
    assert {d.cls for d in found} == {"plate"}


def test_find_raises_when_a_detector_fails(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("t-a", "t-raise")))
    dets = registry.load(cfg)
    with pytest.raises(InferenceError):
        dets.find(IMAGE, cfg.profile("default"))
    assert issubclass(InferenceError, RuntimeError)


def test_find_rejects_images_that_are_not_bgr_uint8(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, default=profile(("t-a",)))
    dets = registry.load(cfg)
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), IMAGE.astype(float)):
        with pytest.raises(ValueError):
            dets.find(bad, cfg.profile("default"))


def test_profile_using_a_detector_that_was_not_loaded_fails_closed(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, a=profile(("t-a",)), b=profile(("t-b",)))
    dets = registry.load(cfg, ["a"])
    with pytest.raises(Exception, match="not loaded"):
        dets.find(IMAGE, cfg.profile("b"))
