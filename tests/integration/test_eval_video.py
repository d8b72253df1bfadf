"""`redactd eval` on labelled videos: MOT labels, exact known answers, the real pipeline.

The known-answer test builds the "processed output" itself: every counted
face box filled solid in every frame, except one track left untouched for
three consecutive counted frames. The scorer must report exactly those three
track-frames unmasked, one unstable track and one flicker event.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from redactd.core.config import default_config
from redactd.core.errors import PermanentInputError
from redactd.core.types import Box
from redactd.evaluation import video_labels, video_runner
from redactd.evaluation.video_labels import TrackBox
from tests.helpers.synthvideo import SECRET, labelled_clip

REPO = Path(__file__).resolve().parents[2]




def test_mot_round_trip_keeps_every_box(tmp_path: Path) -> None:
    boxes = [
        TrackBox(0, 1, "face", Box.from_xywh(10, 20, 30, 40)),
        TrackBox(0, 2, "plate", Box.from_xywh(100.5, 50, 60, 15)),
        TrackBox(7, 1, "face", Box.from_xywh(12, 22, 30, 41), ignore=True),
        TrackBox(9, 5, "face", Box.from_xywh(1234567, 0.1, 30.25, 1 / 3)),
    ]
    text = video_labels.format_mot(boxes)
    again, skipped = video_labels.parse_mot(text)
    assert again == sorted(boxes, key=lambda b: (b.frame, b.track)) and skipped == 0
    assert video_labels.format_mot(again) == text
    # MOT frames count from 1; other classes (here 7, a MOT "static person") are skipped
    parsed, skipped = video_labels.parse_mot("1,3,5,6,7,8,1,1,1\n2,4,5,6,7,8,1,7,1\n")
    assert parsed == [TrackBox(0, 3, "face", Box.from_xywh(5, 6, 7, 8))] and skipped == 1
    with pytest.raises(video_labels.VideoLabelError, match="line 1"):
        video_labels.parse_mot("1,3,5,6,-7,8\n")


def test_coco_video_json_reads_as_the_same_boxes_as_mot() -> None:
    doc = {
        "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "person"}],
        "images": [{"id": 10, "frame_id": 0}, {"id": 11, "frame_id": 1}],
        "annotations": [
            {"image_id": 10, "category_id": 1, "bbox": [10, 20, 30, 40], "track_id": 1},
            {"image_id": 11, "category_id": 1, "bbox": [12, 22, 30, 41], "track_id": 1,
             "iscrowd": 1},
            {"image_id": 11, "category_id": 2, "bbox": [0, 0, 5, 5], "track_id": 9},
        ],
    }  # fmt: skip
    boxes, skipped = video_labels.parse_coco_video(doc)
    mot, _ = video_labels.parse_mot("1,1,10,20,30,40,1,1,1\n2,1,12,22,30,41,0,1,1\n")
    assert boxes == mot and skipped == 1


def test_cvat_video_xml_reads_as_the_same_boxes_as_mot() -> None:
    xml = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
  <track id="1" label="Face" source="manual">
    <box frame="0" outside="0" occluded="0" keyframe="1" xtl="10" ytl="20" xbr="40" ybr="60"
         z_order="0"></box>
    <box frame="1" outside="0" occluded="1" keyframe="0" xtl="12" ytl="22" xbr="42" ybr="63"
         z_order="0"><attribute name="ignore">true</attribute></box>
    <box frame="2" outside="1" occluded="0" keyframe="1" xtl="12" ytl="22" xbr="42" ybr="63"
         z_order="0"></box>
  </track>
  <track id="4" label="person"><box frame="0" outside="0" xtl="0" ytl="0" xbr="5" ybr="5"/></track>
</annotations>"""
    boxes, skipped = video_labels.parse_cvat_video(xml)
    mot, _ = video_labels.parse_mot("1,1,10,20,30,40,1,1,1\n2,1,12,22,30,41,0,1,1\n")
    assert boxes == mot and skipped == 1
    with pytest.raises(video_labels.VideoLabelError, match="not well-formed"):
        video_labels.parse_cvat_video("<annotations><track>")


@pytest.mark.shared
def test_one_track_unmasked_for_three_frames_is_reported_exactly(
    tmp_path: Path, eval_dir: Path
) -> None:
    gt = labelled_clip(tmp_path / "set", eval_dir)
    (video,) = video_labels.load_sets(tmp_path / "set")[0].videos
    counted = [b for b in video.boxes if not b.ignore]
    by_track: dict[int, list[int]] = {}
    for b in counted:
        by_track.setdefault(b.track, []).append(b.frame)
    # the victim: a track with counted frames on both sides of the gap
    victim = max(by_track, key=lambda t: len(by_track[t]))
    frames = sorted(by_track[victim])
    gap = set(frames[len(frames) // 2 : len(frames) // 2 + 3])
    inputs = list(video_runner.decode_rgb(video.path))
    assert len(inputs) == gt.frames

    def pairs():  # the "processed output": solid boxes but the victim's three frames
        for t, before in enumerate(inputs):
            after = before.copy()
            for b in video.boxes:
                if b.frame == t and not (b.track == victim and t in gap):
                    x1, y1, x2, y2 = b.box.int_bounds(before.shape[1], before.shape[0])
                    # every pixel moved far from its value (black on bright, white on dark)
                    bright = before[y1:y2, x1:x2].mean(axis=2, keepdims=True) > 127
                    after[y1:y2, x1:x2] = np.where(bright, 0, 255)
            yield before, after

    score = video_runner.score_frames(video, pairs(), fps=25.0)
    (face,) = score.classes
    assert face.box_frames == len(counted)
    assert face.masked == len(counted) - 3
    s = face.stability
    assert (s.tracks, s.stable_tracks) == (len(by_track), len(by_track) - 1)
    assert (s.track_frames, s.masked_track_frames) == (len(counted), len(counted) - 3)
    assert s.flicker_events == 1
    assert s.flicker_per_minute == pytest.approx(1 / (gt.frames / 25.0 / 60.0))
    (track,) = [t for t in score.tracks if t.track == victim]
    k = frames.index(min(gap))
    assert track.pattern == "1" * k + "000" + "1" * (len(frames) - k - 3)
    # masks fitted to the boxes change nothing outside them: no over-masking at all
    assert score.overmask == 0.0
    assert all(f.overmask == 0.0 for f in score.per_frame)
    # an output missing its last frames counts them unmasked (fail closed)
    short = video_runner.score_frames(
        video, ((b, a if t < gt.frames - 5 else None) for t, (b, a) in enumerate(pairs())), 25.0
    )
    assert short.output_frames == gt.frames - 5
    assert short.classes[0].masked < face.masked or not any(
        b.frame >= gt.frames - 5 for b in counted
    )


@pytest.mark.shared
@pytest.mark.slow
def test_eval_cli_scores_a_video_set_end_to_end_and_names_nothing(
    tmp_path: Path, eval_dir: Path, models_dir: Path
) -> None:
    labelled_clip(tmp_path / "sets" / f"cam-{SECRET}", eval_dir, frames=24)
    cfg = tmp_path / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp_path / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp_path / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
    )
    out = tmp_path / "report"
    r = subprocess.run(
        [sys.executable, "-m", "redactd.cli", "eval", str(tmp_path / "sets"),
         "--config", str(cfg), "--out", str(out), "--show-names", "--attack"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "video-report.json").read_text())
    (s,) = rep["sets"]
    (face,) = s["classes"]
    assert face["class"] == "face" and face["box_frames"] > 40
    # the default profile masks nearly every counted face-frame of this clip
    assert face["masked_recall_strict"] >= 0.8
    assert s["latency"]["frames_per_second"] > 0 and rep["hardware"]["cpu"]
    assert s["per_video"][0]["tracks"] and len(s["per_video"][0]["per_frame"]) == 24
    # --attack: 8 sampled frames, the profile's masks and every mask method; the
    # attack has teeth on the input, none on the profile's masks
    rows = {a["method"]: a for a in s["attack"]}
    assert set(rows) == {"profile", "mosaic", "blur", "pixelate", "solid"}
    assert all(a["cls"] == "face" and a["plates_with_text"] == 0 for a in rows.values())
    att = rows["profile"]
    assert s["attack_frames"] == 8 and att["judged"] > 0
    assert att["found_original"] > 0 and att["redetected"] == 0
    assert {p.name for p in out.iterdir()} >= {
        "video-report.json", "video-report.md", "video-1-1-over-time.png", "video-1-1-tracks.png"
    }  # fmt: skip
    for p in out.iterdir():
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p.name
    assert SECRET not in r.stdout
    assert f"video 1.1: cam-{SECRET}/{SECRET}.mp4" in r.stderr  # --show-names: terminal only
    assert not [p for p in out.iterdir() if p.name.startswith(".redactd-eval-")]


@pytest.mark.shared
def test_product_generator_writes_a_labelled_set_eval_can_read(
    tmp_path: Path, eval_dir: Path
) -> None:
    from redactd.evaluation import synthvideo as product

    r = subprocess.run(
        [sys.executable, "-m", "redactd.evaluation.synthvideo", str(eval_dir / "faces_wider_val"),
         str(tmp_path / "set"), "--videos", "2", "--frames", "12", "--size", "320x192"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == [
        "clip-001.gt.txt", "clip-001.mp4", "clip-002.gt.txt", "clip-002.mp4"
    ]  # fmt: skip
    (vset,) = video_labels.load_sets(tmp_path / "set")
    for v in vset.videos:
        frames = list(video_runner.decode_rgb(v.path))
        assert len(frames) == 12 and frames[0].shape == (192, 320, 3)
        assert {b.track for b in v.boxes} == set(range(1, product.TRACKS + 1))
        assert all(0 <= b.box.x1 < b.box.x2 <= 320 and 0 <= b.box.y1 < b.box.y2 <= 192
                   for b in v.boxes)  # fmt: skip
        assert sum(not b.ignore for b in v.boxes) >= 12  # most face-frames are counted
    # a labelled clip masked in every counted box by the scorer's own rule scores 100 %
    v = vset.videos[0]
    frames = list(video_runner.decode_rgb(v.path))

    def solid():
        for t, f in enumerate(frames):
            g = f.copy()
            for b in v.boxes:
                if b.frame == t:
                    x1, y1, x2, y2 = b.box.int_bounds(320, 192)
                    # every pixel moved by at least 127 (black where bright, white where dark)
                    bright = g[y1:y2, x1:x2].mean(axis=2, keepdims=True) > 127
                    g[y1:y2, x1:x2] = np.where(bright, 0, 255)
            yield f, g

    assert video_runner.score_frames(v, solid(), 25.0).classes[0].recall == 1.0


class _Refusing:
    """Plumbing stand-in for a pipeline that quarantines its input (no model needed)."""

    cfg = default_config()

    def process(self, *args: object, **kwargs: object) -> None:
        raise PermanentInputError("corrupt", "test")


def test_an_undecodable_video_counts_every_labelled_box_unmasked(tmp_path: Path) -> None:
    (tmp_path / "v.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    (tmp_path / "v.gt.txt").write_text("1,1,10,10,20,20,1,1,1\n3,1,12,10,20,20,1,1,1\n")
    (video,) = video_labels.load_sets(tmp_path)[0].videos
    score = video_runner.run_video(_Refusing(), "default", video, tmp_path / "o.mp4", 0)  # type: ignore[arg-type]
    assert score.error == "corrupt"
    (face,) = score.classes
    assert (face.box_frames, face.masked, face.stability.stable_tracks) == (2, 0, 0)


class _Reader:
    """Plumbing stand-in for the recogniser: reads a fixed string per crop width."""

    def __init__(self, by_width: dict[int, str]) -> None:
        self.by_width = by_width

    def read(self, crop: np.ndarray) -> str:
        return self.by_width.get(crop.shape[1], "")


def test_only_unlabelled_counted_plates_with_plate_like_readings_get_a_text() -> None:
    from redactd.evaluation import attack
    from redactd.evaluation.labels import LabelledBox, LabelledImage

    def plate(w: int, **kw: object) -> LabelledBox:
        return LabelledBox("plate", Box.from_xywh(100, 100, w, 20), **kw)  # type: ignore[arg-type]

    boxes = (
        plate(100),  # reads as plate text
        plate(200),  # reads "A-1 2": 3 letters and digits, not plate-like
        plate(300, ignore=True),  # ignore boxes are not judged
        plate(400, extra={"text": "XY 99 ZZ"}),  # a labelled text is kept
        LabelledBox("face", Box.from_xywh(100, 100, 100, 20)),
    )
    im = LabelledImage(Path("x"), 1000, 400, True, boxes)
    widths = {attack.plate_crop(np.zeros((400, 1000, 3), np.uint8), b.box).shape[1]: b.box.width
              for b in boxes}  # fmt: skip
    reader = _Reader(
        {cw: {100: "AB 123 CD", 200: "A-1 2", 300: "GG 777", 400: "QQ 111"}[int(w)]
         for cw, w in widths.items()}
    )  # fmt: skip
    out = attack.with_read_text(im, np.zeros((400, 1000, 3), np.uint8), reader)  # type: ignore[arg-type]
    texts = [b.extra.get("text") for b in out.boxes]
    assert texts == ["AB 123 CD", None, None, "XY 99 ZZ", None]
    assert [b.box for b in out.boxes] == [b.box for b in boxes]
    assert attack.with_read_text(im, np.zeros((400, 1000, 3), np.uint8), None) is im
