"""No video frame is written unless a detector judged it or it is proven unchanged.

``detect_every = k`` used to skip detection on every frame but each k-th: a
face shown on a skipped frame only (a low-frame-rate NVR export, a scene cut,
someone passing quickly) was delivered unmasked. Now a frame may go
undetected only when ``pipeline_video.ChangeGate`` proves it shows what the
last detected frame showed.

Plumbing tests use a detector that finds the face exactly where it is drawn
(a saturated red square; no real picture holds one) and count which frames
it saw; the real-model test pastes a real face from ../shared/eval into one
frame of a clip and runs ``redactd process``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from redactd.core.config import Config, load
from redactd.core.errors import PermanentInputError
from redactd.pipeline.process import Pipeline
from redactd.pipeline.video import ChangeGate
from tests.conftest import REPO
from tests.helpers.scripted_video import H, RedFaceDetector, W, background, red_box, write_video
from tests.helpers.synthvideo import decode_bgr, load_background, load_sprites

RED = (0, 0, 255)




def _scene_b(i: int) -> np.ndarray:
    """Another scene (for the hard cut): bright, other texture."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = 200 - (yy * 100 // H)
    img[..., 1] = 180 - (xx * 100 // W)
    img[..., 2] = 90
    return img








def _draw(img: np.ndarray, x: int, y: int, s: int = 40) -> np.ndarray:
    out = img.copy()
    out[max(0, y) : y + s, max(0, x) : x + s] = RED
    return out


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("gatecfg")
    p = tmp / "redactd.toml"
    p.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        '[profiles.default.face.mask]\nmethod = "solid"\n'
        '[profiles.fast.face.mask]\nmethod = "solid"\n'
        "[profiles.fast.plate]\nenabled = false\n"
        "[profiles.default.plate]\nenabled = false\n"
        "[profiles.every1.video]\ndetect_every = 1\n"
    )
    return load(p)


def _run(cfg: Config, src: Path, profile: str) -> tuple[list[np.ndarray], RedFaceDetector]:
    det = RedFaceDetector()
    dst = src.with_name("out-" + profile + ".mp4")
    Pipeline(cfg, det).process(src, dst, profile)  # type: ignore[arg-type]
    return list(decode_bgr(dst)), det


def _assert_masked_everywhere(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
    assert len(outputs) == len(inputs)
    for i, (a, b) in enumerate(zip(inputs, outputs, strict=True)):
        face = red_box(a)
        if face is None:
            continue
        x1, y1, x2, y2 = face.int_bounds(W, H)
        region = b[y1:y2, x1:x2]
        # solid black over the whole face (codec noise aside)
        assert float(region.mean()) < 30, f"frame {i}: face left visible"
        assert red_box(b) is None, f"frame {i}: red pixels survived"


def _scenarios() -> dict[str, tuple[int, Callable[[], list[np.ndarray]]]]:
    def one_frame() -> list[np.ndarray]:
        pics = [background(i) for i in range(8)]
        pics[5] = _draw(pics[5], 140, 100)
        return pics

    def entering() -> list[np.ndarray]:
        # steps in from the left edge on frame 5 and walks fast across
        pics = [background(i) for i in range(14)]
        for i in range(5, 14):
            pics[i] = _draw(pics[i], -30 + (i - 5) * 35, 90)
        return pics

    def hard_cut() -> list[np.ndarray]:
        # scene A (no one) then, from frame 7, scene B with a face for one frame
        pics = [background(i) for i in range(7)] + [_scene_b(i) for i in range(7)]
        pics[7] = _draw(pics[7], 200, 60)
        return pics

    def one_fps() -> list[np.ndarray]:
        # an NVR export at 1 fps: someone in one frame, elsewhere in the next
        pics = [background(i) for i in range(9)]
        pics[5] = _draw(pics[5], 20, 20)
        pics[7] = _draw(pics[7], 250, 170, 30)
        return pics

    return {
        "one_frame_25fps": (25, one_frame),
        "person_entering": (25, entering),
        "hard_cut": (25, hard_cut),
        "one_fps": (1, one_fps),
    }


@pytest.mark.parametrize("profile", ["default", "fast"])
@pytest.mark.parametrize("name", list(_scenarios()))
def test_every_frame_with_a_face_is_masked(
    cfg: Config, tmp_path: Path, name: str, profile: str
) -> None:
    fps, make = _scenarios()[name]
    pics = make()
    src = tmp_path / "in.mp4"
    write_video(src, pics, fps)
    outputs, det = _run(cfg, src, profile)
    _assert_masked_everywhere(pics, outputs)
    with_face = sum(red_box(p) is not None for p in pics)
    # the detector judged every frame that shows a face
    assert det.faces_seen == with_face
    if fps < 10:
        assert det.calls == len(pics)  # low frame rate: every frame detected


def test_unchanged_frames_may_be_skipped_changed_ones_not(cfg: Config, tmp_path: Path) -> None:
    """A still scene at 25 fps: frames skipped (up to k - 1 in a row); the
    frame with a new face and the frame after it (it changed too) detected."""
    pics = [background(0) for _ in range(12)]
    pics[7] = _draw(pics[7], 100, 100)
    src = tmp_path / "still.mp4"
    write_video(src, pics, 25)
    outputs, det = _run(cfg, src, "fast")
    _assert_masked_everywhere(pics, outputs)
    assert det.faces_seen == 1
    assert det.calls < len(pics)  # the gate does skip proven-unchanged frames
    # detect_every = 1 judges every frame, whatever the content
    _out1, det1 = _run(cfg, src, "every1")
    assert det1.calls == len(pics)


def test_slowly_panning_scene_is_detected_before_change_adds_up(
    cfg: Config, tmp_path: Path
) -> None:
    """Each frame moves 2 px: compared with the last *detected* frame, the change
    adds up and forces detection within a few frames, never k frames of drift."""
    pics = [background(i, moving=True) for i in range(12)]
    src = tmp_path / "pan.mp4"
    write_video(src, pics, 25)
    _out, det = _run(cfg, src, "fast")
    assert det.calls == len(pics)  # 2 px of a 20 px checkerboard is a change


def _frame(yuv: np.ndarray, t: float, index: int = 0) -> object:
    from redactd.stages.media.video import Frame

    return Frame(index, index, t, W, H, 0, yuv)


def test_gate_rules_unit() -> None:
    """The gate's own rules: cap of k - 1 skips, frame gap, size, small face."""
    base = np.full((H * 3 // 2, W), 100, np.uint8)
    g = ChangeGate(3, 10.0, 6.0)
    assert g.must_detect(_frame(base.copy(), 0.00))  # type: ignore[arg-type]
    assert not g.must_detect(_frame(base.copy(), 0.04))  # type: ignore[arg-type]
    assert not g.must_detect(_frame(base.copy(), 0.08))  # type: ignore[arg-type]
    assert g.must_detect(_frame(base.copy(), 0.12))  # type: ignore[arg-type]  # k - 1 skipped
    # a 10 px face-sized change anywhere forces detection
    small = base.copy()
    small[50:60, 200:210] = 160
    assert g.must_detect(_frame(small, 0.16))  # type: ignore[arg-type]
    # more than 1 / min_fps after the last detected frame
    assert g.must_detect(_frame(small.copy(), 0.40))  # type: ignore[arg-type]
    # a chroma-only change (same brightness, other colour)
    tint = small.copy()
    tint[H : H + 10, 0:10] = 30
    assert g.must_detect(_frame(tint, 0.44))  # type: ignore[arg-type]
    assert g.detected == 5 and g.skipped == 2


# --------------------------------------------------------------------------- real model


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


@pytest.fixture
def face_clip(tmp_path: Path, eval_dir: Path) -> Iterator[tuple[Path, list[np.ndarray], tuple]]:
    bg = load_background(eval_dir, (640, 360))
    spr = load_sprites(eval_dir, 1, seed=3)[0]
    pics = [bg.copy() for _ in range(10)]
    h, w = spr.bgr.shape[:2]
    scale = min(1.0, 200 / h)
    import cv2

    sb = cv2.resize(spr.bgr, (int(w * scale), int(h * scale)))
    sa = cv2.resize(spr.alpha, (int(w * scale), int(h * scale)))[..., None]
    ox, oy = 220, 80
    sh, sw = sb.shape[:2]
    roi = pics[5][oy : oy + sh, ox : ox + sw].astype(np.float32)
    pics[5][oy : oy + sh, ox : ox + sw] = (roi * (1 - sa) + sb * sa).astype(np.uint8)
    fx, fy, fw, fh = (int(v * scale) for v in spr.face)
    face = (ox + fx, oy + fy, fw, fh)
    src = tmp_path / "clip.mp4"
    with av.open(str(src), "w") as oc:
        vs = oc.add_stream("libx264", rate=25)
        vs.width, vs.height = 640, 360
        vs.pix_fmt = "yuv420p"
        vs.codec_context.options = {"crf": "12", "preset": "veryfast"}
        for i, pic in enumerate(pics):
            vf = av.VideoFrame.from_ndarray(pic, format="bgr24").reformat(format="yuv420p")
            vf.pts = i
            vf.time_base = Fraction(1, 25)
            for p in vs.encode(vf):
                oc.mux(p)
        for p in vs.encode(None):
            oc.mux(p)
    yield src, pics, face


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["default", "fast"])
def test_real_face_on_one_odd_frame_is_masked(
    face_clip: tuple[Path, list[np.ndarray], tuple], models_dir: Path, tmp_path: Path, profile: str
) -> None:
    """A real face on frame 5 only (skipped by every-2nd/3rd-frame detection
    before): ``redactd process`` with the real CenterFace masks it."""
    src, pics, (x, y, w, h) = face_clip
    cfg = tmp_path / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp_path / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp_path / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
        f"[profiles.{profile}.plate]\nenabled = false\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    r = _cli(cfg, "--profile", profile, str(src), "-o", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    outputs = list(decode_bgr(out / src.name))
    assert len(outputs) == len(pics)
    a = pics[5][y : y + h, x : x + w].astype(np.int16)
    b = outputs[5][y : y + h, x : x + w].astype(np.int16)
    changed = float((np.abs(a - b).max(axis=2) > 12).mean())
    assert changed >= 0.5, f"frame 5: only {changed:.2f} of the face changed"


# --------------------------------------------------------------------------- second stream


def test_undecodable_second_video_stream_is_refused_not_dropped(
    cfg: Config, tmp_path: Path
) -> None:
    """A second camera this FFmpeg cannot decode was silently dropped (and the
    original then deleted): refused with ``undecodable_stream``, no output."""
    src = tmp_path / "two.mkv"
    with av.open(str(src), "w") as oc:
        streams = []
        for codec in ("libx264", "mpeg4"):
            s = oc.add_stream(codec, rate=25)
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            streams.append(s)
        for i in range(10):
            for s in streams:
                vf = av.VideoFrame.from_ndarray(background(i), format="bgr24")
                vf = vf.reformat(format="yuv420p")
                vf.pts, vf.time_base = i, Fraction(1, 25)
                for p in s.encode(vf):
                    oc.mux(p)
        for s in streams:
            for p in s.encode(None):
                oc.mux(p)
    data = src.read_bytes()
    assert data.count(b"V_MPEG4/ISO/ASP") == 1
    # a codec id of the same length no FFmpeg knows: the stream stays, undecodable
    src.write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_ZZZZZ/ISO/ZZZ"))
    with av.open(str(src)) as c:
        kinds = [(s.type, s.codec_context is None) for s in c.streams]
    assert kinds == [("video", False), ("video", True)]
    dst = tmp_path / "out.mkv"
    with pytest.raises(PermanentInputError) as ei:
        Pipeline(cfg, RedFaceDetector()).process(src, dst, "default")  # type: ignore[arg-type]
    assert ei.value.reason == "undecodable_stream"
    assert not dst.exists()
