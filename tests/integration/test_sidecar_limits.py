"""``keep`` bounded and trusted, and hostile sidecars refused cleanly, through
``redactd process --sidecar`` as a real process (real CenterFace) and the
real Pipeline (a fake detector for the one-person-per-region plumbing).

The reviewer's findings: ``{"keep": [{"box": [0, 0, 1, 1], "units": "rel",
"classes": ["face", "plate"]}]}`` from anyone unmasked everyone; a
400-digit integer in a sidecar ended as ``internal_error`` with a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from redactd.core.config import load
from redactd.core.errors import PermanentInputError
from redactd.core.types import Box, Detection
from redactd.pipeline.process import Pipeline
from redactd.stages.instructions.parse import parse
from tests.conftest import REPO
from tests.helpers.sidecars import HOSTILE

EVERYONE = {"keep": [{"box": [0, 0, 1, 1], "units": "rel", "classes": ["face", "plate"]}]}
KEY = b"0123456789abcdef-operator-secret"


def _config(tmp: Path, models_dir: Path, instructions: str = "") -> Path:
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
        "[profiles.default.plate]\nenabled = false\n"
        "[profiles.default.face.tiling]\nenabled = false\n"
        + (f"[profiles.default.instructions]\n{instructions}\n" if instructions else "")
    )
    return cfg


def _image(path: Path) -> Path:
    rng = np.random.default_rng(3)
    img = rng.integers(40, 200, (240, 320, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _process(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def _run_sidecar(
    tmp_path: Path, cfg: Path, doc: object | bytes, where: Path | None = None
) -> subprocess.CompletedProcess[str]:
    side = (where or tmp_path) / "given.json"
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    src = _image(tmp_path / "photo.png")
    return _process(cfg, str(src), "-o", str(tmp_path / "out"), "--sidecar", str(side))


def _no_output(tmp_path: Path) -> bool:
    out = tmp_path / "out"
    return not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- keep


def test_keep_everyone_is_refused_by_default(tmp_path: Path, models_dir: Path) -> None:
    r = _run_sidecar(tmp_path, _config(tmp_path, models_dir), EVERYONE)
    assert r.returncode == 64, r.stderr
    assert "instruction_not_allowed: keep: not allowed by this profile" in r.stderr
    assert _no_output(tmp_path)


def test_keep_everyone_exceeds_the_share_limit_when_keep_is_allowed(
    tmp_path: Path, models_dir: Path
) -> None:
    cfg = _config(tmp_path, models_dir, "allow_keep = true")
    r = _run_sidecar(tmp_path, cfg, EVERYONE)
    assert r.returncode == 65, r.stderr
    assert "keep_limit_exceeded: keep[0]: covers 1.00 of the picture" in r.stderr
    assert "keep_max_share (0.25)" in r.stderr
    assert _no_output(tmp_path)
    # the same region within the share is accepted
    r = _run_sidecar(tmp_path, cfg, {"keep": [{"box": [0, 0, 0.5, 0.5], "units": "rel"}]})
    assert r.returncode == 0, r.stderr


def test_too_many_keep_regions_are_refused(tmp_path: Path, models_dir: Path) -> None:
    cfg = _config(tmp_path, models_dir, "allow_keep = true\nkeep_max_regions = 2")
    doc = {"keep": [{"box": [i * 10, 0, i * 10 + 5, 5]} for i in range(3)]}
    r = _run_sidecar(tmp_path, cfg, doc)
    assert r.returncode == 64, r.stderr
    assert "keep_limit_exceeded: keep: 3 regions, over instructions.keep_max_regions (2)" in (
        r.stderr
    )


class _Squares:
    """Finds a face at every saturated red square (one detection each)."""

    def find(self, image: np.ndarray, profile: object, floor: float | None = None) -> list:
        red = ((image[..., 2] > 180) & (image[..., 1] < 90) & (image[..., 0] < 90)).astype(np.uint8)
        n, _lab, stats, _c = cv2.connectedComponentsWithStats(red)
        return [
            Detection("face", Box(float(x), float(y), float(x + w), float(y + h)), 0.9, "sq")
            for x, y, w, h, area in stats[1:n]
            if area >= 20
        ]

    def describe(self) -> list:
        return []

    def close(self) -> None:
        pass


def test_a_keep_region_keeps_one_person_per_picture(tmp_path: Path, models_dir: Path) -> None:
    """Three faces inside one keep region: the best match is kept, two masked."""
    cfg = load(_config(tmp_path, models_dir, "allow_keep = true"))
    img = np.full((400, 400, 3), 128, np.uint8)
    squares = [(20, 20), (80, 20), (140, 20)]
    for x, y in squares:
        img[y : y + 30, x : x + 30] = (0, 0, 255)
    src = tmp_path / "group.png"
    assert cv2.imwrite(str(src), img)
    instr = parse(json.dumps({"keep": [{"box": [75, 15, 175, 55]}]}))  # 0.025 of the picture
    dst = tmp_path / "out.png"
    result = Pipeline(cfg, _Squares()).process(src, dst, "default", instructions=instr)  # type: ignore[arg-type]
    assert result.kept["face"] == 1 and result.masked["face"] == 2
    out = cv2.imread(str(dst))
    still_red = [bool((out[y + 10 : y + 20, x + 10 : x + 20, 2] > 180).all()) for x, y in squares]
    # the square best covered by the region is kept (80, 20); the other two masked
    assert still_red == [False, True, False]


# --------------------------------------------------------------------------- trust


def test_trusted_dir_only_sidecars_from_it_are_used(tmp_path: Path, models_dir: Path) -> None:
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    cfg = _config(tmp_path, models_dir, f'allow_keep = true\ntrusted_dir = "{trusted}"')
    corner = {"mask": [{"box": [0, 0, 10, 10]}]}
    r = _run_sidecar(tmp_path, cfg, corner)
    assert r.returncode == 64, r.stderr
    assert "sidecar_untrusted: not from instructions.trusted_dir and no valid hmac" in r.stderr
    r = _run_sidecar(tmp_path, cfg, corner, where=trusted)
    assert r.returncode == 0, r.stderr


def _signed(doc: dict[str, object], key: bytes = KEY) -> dict[str, object]:
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**doc, "hmac": hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}


def test_hmac_signed_sidecars_only(tmp_path: Path, models_dir: Path) -> None:
    key_file = tmp_path / "sidecar.key"
    key_file.write_bytes(KEY + b"\n")
    os.chmod(key_file, 0o600)
    cfg = _config(tmp_path, models_dir, f'allow_keep = true\nhmac_key_file = "{key_file}"')
    doc = {"keep": [{"box": [0.1, 0.1, 0.3, 0.3], "units": "rel"}]}
    r = _run_sidecar(tmp_path, cfg, _signed(doc))
    assert r.returncode == 0, r.stderr
    r = _run_sidecar(tmp_path, cfg, doc)  # unsigned
    assert r.returncode == 64 and "sidecar_untrusted" in r.stderr
    forged = {**EVERYONE, "hmac": _signed(doc)["hmac"]}  # another document's signature
    r = _run_sidecar(tmp_path, cfg, forged)
    assert r.returncode == 64 and "sidecar_untrusted: hmac: does not match" in r.stderr
    r = _run_sidecar(tmp_path, cfg, _signed(doc, b"another-key-of-16-bytes"))
    assert r.returncode == 64 and "sidecar_untrusted" in r.stderr
    os.chmod(key_file, 0o644)  # a key others can read is no key
    r = _run_sidecar(tmp_path, cfg, _signed(doc))
    assert r.returncode == 64 and "hmac_key_file: must be a file of mode 0600" in r.stderr


# --------------------------------------------------------------------------- hostile






@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_sidecar_is_invalid_never_a_traceback(name: str) -> None:
    """The parser itself: every hostile document is ``invalid_sidecar``."""
    with pytest.raises(PermanentInputError) as ei:
        parse(HOSTILE[name])
    assert ei.value.reason == "invalid_sidecar"


@pytest.mark.parametrize(
    "name", ["int_400_digits", "int_5000_digits", "time_400_digits", "deep_objects", "nan"]
)
def test_hostile_sidecar_through_the_cli(tmp_path: Path, models_dir: Path, name: str) -> None:
    r = _run_sidecar(tmp_path, _config(tmp_path, models_dir), HOSTILE[name])
    assert r.returncode == 64, r.stderr
    assert r.stderr.startswith("error: invalid_sidecar: "), r.stderr
    assert "Traceback" not in r.stderr
    assert _no_output(tmp_path)


def test_a_bom_is_allowed(tmp_path: Path, models_dir: Path) -> None:
    doc = b'\xef\xbb\xbf{"mask": [{"box": [0, 0, 10, 10]}]}'
    r = _run_sidecar(tmp_path, _config(tmp_path, models_dir), doc)
    assert r.returncode == 0, r.stderr


def test_video_keep_everyone_exceeds_the_share_limit(tmp_path: Path, models_dir: Path) -> None:
    from tests.helpers.scripted_video import RedFaceDetector, background, write_video

    cfg = load(_config(tmp_path, models_dir, "allow_keep = true"))
    src = tmp_path / "clip.mp4"
    write_video(src, [background(i) for i in range(6)], 25)
    dst = tmp_path / "out.mp4"
    with pytest.raises(PermanentInputError) as ei:
        Pipeline(cfg, RedFaceDetector()).process(  # type: ignore[arg-type]
            src, dst, "default", instructions=parse(json.dumps(EVERYONE))
        )
    assert ei.value.reason == "keep_limit_exceeded"
    assert not dst.exists()
