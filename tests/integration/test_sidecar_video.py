"""Per-file instructions on video, with the real CenterFace detector and real files.

One synthetic clip made for these tests (real face crops from ../shared/eval
over a real face-free background, rendered with known boxes):

* face A (the "applicant") walks slowly on the left for frames 0..23, is
  gone for frames 24..51 (longer than the tracker keeps a track alive), then
  comes back on frames 52..79;
* face B (a bystander) walks on the right for the whole clip;
* a textured patch (a "badge" no detector knows) moves diagonally.

It is processed once with a keep seed on A at frame 0 and a followed mask on
the patch for a time range, once with a time-ranged keep seed that matches no
one, and once without instructions. Pixels are compared with the source
frames (both are H.264: a small mean difference is codec noise; a mask
changes a face by tens of grey levels).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from redactd.core.config import load
from redactd.core.errors import PermanentInputError
from redactd.core.types import JobResult
from redactd.pipeline.process import Pipeline
from redactd.stages.instructions.model import Instructions
from redactd.stages.instructions.parse import parse
from tests.helpers.synthvideo import (
    decode_bgr,
    load_background,
    load_sprites,
    summarize,
    write_clip,
)

pytestmark = pytest.mark.slow

W, H, FPS, FRAMES = 640, 360, 25, 80
A_GONE = range(24, 52)  # frames without face A: more than the track lifetime (12)
PATCH = (60, 44)  # w, h of the followed patch
MASK_TIME = (0.4, 1.6)  # seconds: frames 10..39 at 25 fps

#: Mean absolute difference (grey levels, per channel) below which a face
#: counts as unchanged (two H.264 generations: source crf 14, output crf 20),
#: and above which it counts as masked.
UNCHANGED = 5.0
MASKED = 15.0
#: The patch is fine texture, which H.264 renders less exactly; black over it
#: changes it by about a hundred.
PATCH_UNCHANGED = 10.0


@dataclass(frozen=True)
class Clip:
    path: Path
    a: dict[int, tuple[int, int, int, int]]  # frame -> face box (x, y, w, h)
    b: dict[int, tuple[int, int, int, int]]
    patch: dict[int, tuple[int, int, int, int]]


def _blend(img: np.ndarray, spr: np.ndarray, al: np.ndarray, ox: int, oy: int) -> None:
    sh, sw = spr.shape[:2]
    img[oy : oy + sh, ox : ox + sw] = img[oy : oy + sh, ox : ox + sw] * (1 - al[..., None]) + (
        spr * al[..., None]
    )


def _place(sprite, cx: float, cy: float, face_h: float):  # type: ignore[no-untyped-def]
    k = face_h / sprite.face[3]
    sw, sh = round(sprite.bgr.shape[1] * k), round(sprite.bgr.shape[0] * k)
    spr = cv2.resize(sprite.bgr, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    al = cv2.resize(sprite.alpha, (sw, sh), interpolation=cv2.INTER_LINEAR)
    fx, fy, fw, fh = (v * k for v in sprite.face)
    ox, oy = round(cx - fx - fw / 2), round(cy - fy - fh / 2)
    box = (round(ox + fx), round(oy + fy), round(fw), round(fh))
    return spr, al, ox, oy, box


def make_clip(path: Path, eval_dir: Path) -> Clip:
    sprites = load_sprites(eval_dir, 2, seed=5)
    bg = load_background(eval_dir, (W, H), seed=2)
    rng = np.random.default_rng(11)
    patch = cv2.GaussianBlur(
        rng.integers(0, 256, (PATCH[1], PATCH[0], 3)).astype(np.uint8), (0, 0), 1.5
    )
    a: dict[int, tuple[int, int, int, int]] = {}
    b: dict[int, tuple[int, int, int, int]] = {}
    pp: dict[int, tuple[int, int, int, int]] = {}
    with av.open(str(path), "w") as oc:
        vs = oc.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.codec_context.options = {"crf": "14", "preset": "veryfast"}
        for t in range(FRAMES):
            img = bg.astype(np.float32)
            if t not in A_GONE:
                spr, al, ox, oy, box = _place(sprites[0], 150 + 0.6 * t, 150, 90)
                _blend(img, spr, al, ox, oy)
                a[t] = box
            spr, al, ox, oy, box = _place(sprites[1], 470 - 0.5 * t, 160, 90)
            _blend(img, spr, al, ox, oy)
            b[t] = box
            px, py = 250 + 2 * t, 240 + t // 2
            img[py : py + PATCH[1], px : px + PATCH[0]] = patch
            pp[t] = (px, py, PATCH[0], PATCH[1])
            vf = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="bgr24")
            vf.pts, vf.time_base = t, Fraction(1, FPS)
            for pkt in vs.encode(vf):
                oc.mux(pkt)
        for pkt in vs.encode(None):
            oc.mux(pkt)
    return Clip(path, a, b, pp)


def diff(before: np.ndarray, after: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    return float(
        np.abs(before[y : y + h, x : x + w].astype(np.int16) - after[y : y + h, x : x + w]).mean()
    )


def frames(path: Path) -> list[np.ndarray]:
    return list(decode_bgr(path))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("sidecarcfg")
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
        # faces only, one full-frame pass: these tests are about instructions
        "[profiles.default.face.tiling]\nenabled = false\n"
        "[profiles.default.plate]\nenabled = false\n"
        "[profiles.default.instructions]\nallow_keep = true\n"
        "[profiles.off.face.tiling]\nenabled = false\n"
        "[profiles.off.plate]\nenabled = false\n"
        "[profiles.off.track]\nenabled = false\n"
        "[profiles.off.instructions]\nallow_keep = true\n"
    )
    p = Pipeline.load(load(cfg), ["default", "off"])
    yield p
    p.close()


@pytest.fixture()
def notrack(pipeline: Pipeline) -> Pipeline:
    """The same pipeline; its "off" profile runs without the tracker."""
    return pipeline


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, eval_dir: Path) -> Clip:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", eval_dir)


def _run(pipeline: Pipeline, clip: Clip, out: Path, instr: Instructions | None) -> JobResult:
    return pipeline.process(clip.path, out, "default", instructions=instr)


@pytest.fixture(scope="module")
def runs(
    pipeline: Pipeline, clip: Clip, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[list[np.ndarray], JobResult]]:
    """Source frames, and outputs with and without instructions."""
    tmp = tmp_path_factory.mktemp("runs")
    ax, ay, aw, ah = clip.a[0]
    px, py, pw, ph = clip.patch[10]  # where the patch is when the mask range starts
    sidecar = (
        '{"version": 1,'
        f' "keep": [{{"box": [{ax - 8}, {ay - 8}, {ax + aw + 8}, {ay + ah + 8}], "frame": 0}}],'
        f' "mask": [{{"box": [{px}, {py}, {px + pw}, {py + ph}],'
        f' "time": [{MASK_TIME[0]}, {MASK_TIME[1]}], "follow": true}}]}}'
    )
    out: dict[str, tuple[list[np.ndarray], JobResult]] = {}
    for name, instr in (("plain", None), ("instructed", parse(sidecar))):
        dst = tmp / f"{name}.mp4"
        result = _run(pipeline, clip, dst, instr)
        out[name] = (frames(dst), result)
    return out


# --------------------------------------------------------------------------- tests


def test_kept_face_stays_unchanged_while_the_bystander_is_masked(
    clip: Clip, runs: dict[str, tuple[list[np.ndarray], JobResult]]
) -> None:
    src = frames(clip.path)
    plain, _ = runs["plain"]
    kept, result = runs["instructed"]
    a_frames = [t for t in sorted(clip.a) if t < A_GONE.start]
    a_kept = [diff(src[t], kept[t], clip.a[t]) for t in a_frames]
    a_plain = [diff(src[t], plain[t], clip.a[t]) for t in a_frames]
    b_kept = [diff(src[t], kept[t], clip.b[t]) for t in sorted(clip.b)]
    print(f"\nA kept <= {max(a_kept):.1f}, A plain >= {min(a_plain):.1f}, B >= {min(b_kept):.1f}")
    assert max(a_kept) < UNCHANGED, "the kept face was changed"
    assert min(a_plain) > MASKED, "without keep the same face is masked"
    assert min(b_kept) > MASKED, "the bystander is masked on every frame"
    assert result.kept == {"face": 1, "plate": 0}
    assert result.keep_unmatched == 0
    assert result.masked["face"] == result.tracked["face"] - 1
    fields = result.log_fields()
    assert fields["faces_kept"] == 1 and fields["extra_regions"] == 1


def test_kept_person_whose_track_died_is_masked_when_back(
    clip: Clip, runs: dict[str, tuple[list[np.ndarray], JobResult]]
) -> None:
    src = frames(clip.path)
    kept, _ = runs["instructed"]
    back = [t for t in sorted(clip.a) if t >= A_GONE.stop]
    d = [diff(src[t], kept[t], clip.a[t]) for t in back]
    print(f"\nA after its return: min change {min(d):.1f}")
    assert min(d) > MASKED, "a returning person gets a new track and is masked"


def test_follow_mask_moves_with_the_patch_within_its_time_range(
    clip: Clip, runs: dict[str, tuple[list[np.ndarray], JobResult]]
) -> None:
    plain, _ = runs["plain"]
    out, _ = runs["instructed"]
    first, end = round(MASK_TIME[0] * FPS), round(MASK_TIME[1] * FPS)
    inside = [t for t in range(FRAMES) if first <= t < end]
    outside = [t for t in range(FRAMES) if t < first or t >= end]
    covered = []
    for t in inside:
        x, y, w, h = clip.patch[t]
        black = (out[t][y : y + h, x : x + w].max(axis=2) < 40).mean()  # solid black mask
        covered.append(float(black))
    # Outside the range the patch looks as it does without instructions (the
    # detector's own masks, if a false positive reaches it, are the same in both).
    untouched = [diff(plain[t], out[t], clip.patch[t]) for t in outside]
    print(
        f"\npatch covered >= {min(covered):.3f}; change outside the range <= {max(untouched):.1f}"
    )
    # The patch moved 2 px per frame, 60 px over the range: a static mask would
    # have lost most of it by the end.
    assert min(covered) > 0.97, "the followed mask lost the patch"
    assert max(untouched) < PATCH_UNCHANGED, "masked outside its time range"


def test_keep_seed_matching_nobody_keeps_nothing(
    pipeline: Pipeline, clip: Clip, tmp_path: Path
) -> None:
    # Seeded at 1 s (frame 25) where A is absent until after the 1 s window;
    # B is outside the region.
    ax, ay, aw, ah = clip.a[0]
    instr = parse(f'{{"keep": [{{"box": [{ax}, {ay}, {ax + aw}, {ay + ah}], "time": 1.0}}]}}')
    dst = tmp_path / "unmatched.mp4"
    result = _run(pipeline, clip, dst, instr)
    assert result.keep_unmatched == 1
    assert result.kept == {"face": 0, "plate": 0}
    src, out = frames(clip.path), frames(dst)
    assert min(diff(src[t], out[t], clip.a[t]) for t in sorted(clip.a)) > MASKED


def test_polygon_mask_lands_in_the_upright_picture_of_a_rotated_video(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Stored 320x240 with a 90 degree display matrix: upright it is 240x320,
    and instruction coordinates are upright ones, like detections."""
    src = tmp_path / "turned.mp4"
    write_clip(src, size=(320, 240), frames=12, rotation=90, audio=None)
    tri = [(20, 200), (200, 230), (60, 300)]  # only fits the upright (240 wide, 320 high) picture
    instr = parse(json.dumps({"mask": [{"polygon": [list(p) for p in tri], "frames": [4, None]}]}))
    dst = tmp_path / "out.mp4"
    result = pipeline.process(src, dst, "default", instructions=instr)
    assert result.extra_regions == 1
    turns = summarize(dst).rotation // 90
    m = np.zeros((320, 240), np.uint8)
    cv2.fillPoly(m, [np.asarray(tri, np.int32)], 1)
    inner = cv2.erode(m, np.ones((5, 5), np.uint8)).astype(bool)
    outer = ~cv2.dilate(m, np.ones((5, 5), np.uint8)).astype(bool)
    for t, (before, after) in enumerate(zip(decode_bgr(src), decode_bgr(dst), strict=True)):
        up_b, up_a = np.rot90(before, turns), np.rot90(after, turns)
        black = float((up_a[inner].max(axis=1) < 40).mean())
        if t >= 4:
            assert black > 0.99, f"frame {t}: the polygon is not masked"
        else:
            assert black < 0.5, f"frame {t}: masked before its range"
        assert np.abs(up_a[outer].astype(int) - up_b[outer]).mean() < PATCH_UNCHANGED


def test_region_outside_the_picture_fails_without_output(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    src = tmp_path / "small.mp4"
    write_clip(src, size=(320, 240), frames=8, audio=None)
    instr = parse('{"mask": [{"box": [0, 0, 10, 10]}, {"box": [400, 10, 500, 50]}]}')
    dst = tmp_path / "out.mp4"
    with pytest.raises(PermanentInputError) as e:
        pipeline.process(src, dst, "default", instructions=instr)
    assert (e.value.reason, e.value.detail) == (
        "invalid_sidecar",
        "mask[1]: outside the 320x240 picture",
    )
    assert not dst.exists()


def test_keep_without_the_tracker_is_refused_without_output(
    notrack: Pipeline, tmp_path: Path
) -> None:
    src = tmp_path / "small.mp4"
    write_clip(src, size=(320, 240), frames=8, audio=None)
    instr = parse('{"keep": [{"box": [0, 0, 100, 100]}]}')
    dst = tmp_path / "out.mp4"
    with pytest.raises(PermanentInputError) as e:
        notrack.process(src, dst, "off", instructions=instr)
    assert e.value.reason == "instruction_not_allowed"
    assert "keep" in e.value.detail
    assert not dst.exists()
