"""The video part of ``redactd eval``'s report: ``video-report.json``, ``video-report.md``, plots.

Sets and videos are named by index (``set 1``, ``video 1.2``) and the
sha256 of their files, never by name: the clips may be personal data.
``redactd eval --show-names`` prints the index-to-name table on the
terminal (stderr) only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from redactd.evaluation.video_runner import ClassScore, VideoEvalReport, VideoScore

#: Over-masking share above which a frame counts as "over 1 %".
FRAME_OVER = 0.01


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)


def _class_json(c: ClassScore) -> dict[str, Any]:
    s = c.stability
    return {
        "class": c.cls,
        "box_frames": c.box_frames,
        "masked": c.masked,
        "masked_recall_strict": _r(c.recall),
        "fnr": _r(c.fnr),
        "tracks": s.tracks,
        "stable_tracks": s.stable_tracks,
        "stable_track_share": _r(s.stable_share),
        "track_frames": s.track_frames,
        "track_frames_masked_share": _r(s.masked_share),
        "flicker_events": s.flicker_events,
        "flicker_per_minute": _r(s.flicker_per_minute, 3),
    }


def _overmask_json(per: list[float], pooled: float | None) -> dict[str, Any]:
    return {
        "pooled": _r(pooled, 5),
        "frame_mean": _r(sum(per) / len(per), 5) if per else None,
        "frame_max": _r(max(per), 5) if per else None,
        "frames_over_1pct": sum(1 for v in per if v > FRAME_OVER),
    }


def _attack_json(summaries: Any) -> list[dict[str, Any]]:
    # plates_with_text: plates judged by their input reading (video labels carry no text).
    keys = ("method", "cls", "boxes", "anonymized", "judged", "found_original", "redetected",
            "redetected_deblurred", "floor_redetected", "floor_redetected_deblurred",
            "plates_with_text", "readable_original", "readable", "readable_deblurred",
            "readable_all")  # fmt: skip
    return [{k: getattr(a, k) for k in keys} for a in summaries]


def _pool_attacks(videos: Any) -> list[dict[str, Any]]:
    """Counts of every video's attacks added up per (method, class)."""
    pooled: dict[tuple[str, str], dict[str, Any]] = {}
    for v in videos:
        for a in _attack_json(v.attack):
            key = (a["method"], a["cls"])
            if key not in pooled:
                pooled[key] = dict(a)
            else:
                for k, val in a.items():
                    if isinstance(val, int):
                        pooled[key][k] += val
    return list(pooled.values())


def _video_json(si: int, v: VideoScore) -> dict[str, Any]:
    return {
        "attack_frames": v.attack_frames,
        "attack": _attack_json(v.attack),
        "video": f"{si + 1}.{v.index + 1}",
        "sha256": v.digest,
        "frames": v.frames,
        "output_frames": v.output_frames,
        "fps": _r(v.fps, 3),
        "error": v.error,
        "classes": [_class_json(c) for c in v.classes],
        "overmask": _overmask_json(v.overmask_frames(), v.overmask),
        "latency": {
            "ms_per_frame": _r(v.ms_per_frame, 2),
            "frames_per_second": _r(v.frames_per_second, 2),
        },
        "per_frame": [
            {
                "frame": f.frame,
                "boxes": f.boxes,
                "masked": f.masked,
                "overmask": _r(f.overmask, 5),
            }
            for f in v.per_frame
        ],
        "tracks": [
            {
                "class": t.cls,
                "track": t.track,
                "first": t.first,
                "last": t.last,
                "frames": t.frames,
                "masked": t.masked,
                "flicker_events": t.flicker_events,
                "pattern": t.pattern,
            }
            for t in v.tracks
        ],
    }


def to_json(report: VideoEvalReport) -> dict[str, Any]:
    sets = []
    for s in report.sets:
        per = [x for v in s.videos for x in v.overmask_frames()]
        wall = s.wall_ms
        sets.append(
            {
                "set": s.index + 1,
                "sha256": s.digest,
                "videos": len(s.videos),
                "frames": s.frames,
                "failed": sum(1 for v in s.videos if v.error),
                "classes": [_class_json(c) for c in s.classes()],
                "overmask": _overmask_json(per, s.overmask),
                "latency": {
                    "ms_per_frame": _r(wall / s.frames, 2) if s.frames and wall else None,
                    "frames_per_second": _r(s.frames / (wall / 1000.0), 2)
                    if s.frames and wall
                    else None,
                },
                "attack_frames": sum(v.attack_frames for v in s.videos),
                "attack": _pool_attacks(s.videos),
                "per_video": [_video_json(s.index, v) for v in s.videos],
            }
        )
    return {
        "kind": "video",
        "redactd_version": report.redactd_version,
        "created_utc": report.created_utc,
        "profile": report.profile,
        "hardware": dataclasses.asdict(report.hardware) if report.hardware else None,
        "sets": sets,
    }


def _pct(v: float | None, nd: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{nd}f} %"


def markdown(report: VideoEvalReport) -> str:
    d = to_json(report)
    lines = [f"# redactd eval (video): profile `{report.profile}`", ""]
    if report.hardware is not None:
        hw = report.hardware
        lines += [
            f"redactd {report.redactd_version}, {report.created_utc}; {hw.cpu} "
            f"({hw.usable_cpus} of {hw.logical_cpus} CPUs usable), OpenVINO {hw.openvino}; "
            f"detectors: {'; '.join(hw.detectors)}",
            "",
        ]
    lines += _class_table(d["sets"])
    lines += _attack_table(d["sets"])
    lines += ["", "Per video:", ""]
    lines += _per_video_lines(d["sets"])
    lines += [
        "",
        "Definitions: docs/EVAL.md (video). Masked recall uses the strict pixel rule "
        "per labelled box and frame; over-masking is per frame as for images.",
        "",
    ]
    return "\n".join(lines)


def _class_table(sets: list[dict[str, Any]]) -> list[str]:
    """One row per set and class: recall, stability, over-masking, speed (``to_json`` sets)."""
    lines = [
        "| set | class | box-frames | masked recall (strict) | FNR | track-frames masked | "
        "stable tracks | flicker / min | over-masking (pooled / frame mean / max) | "
        "ms / frame | fps |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sets:
        om, lat = s["overmask"], s["latency"]
        for c in s["classes"]:
            fpm = c["flicker_per_minute"]
            lines.append(
                f"| {s['set']} ({s['videos']} videos, {s['frames']} frames) | {c['class']} | "
                f"{c['box_frames']} | {_pct(c['masked_recall_strict'])} | {_pct(c['fnr'])} | "
                f"{_pct(c['track_frames_masked_share'])} | {c['stable_tracks']}/{c['tracks']} | "
                f"{'–' if fpm is None else f'{fpm:.1f}'} | {_pct(om['pooled'], 2)} / "
                f"{_pct(om['frame_mean'], 2)} / {_pct(om['frame_max'], 2)} | "
                f"{lat['ms_per_frame'] or '–'} | {lat['frames_per_second'] or '–'} |"
            )
    return lines


def _attack_table(sets: list[dict[str, Any]]) -> list[str]:
    """The attacks on sampled frames, one row per set, class and method (none: no lines)."""
    att = [(s, a) for s in sets for a in s["attack"]]
    if not att:
        return []
    lines = [
        "",
        "Attacks on sampled frames (the profile's masks and each mask method; "
        "re-detection score >= 0.2 on anonymized boxes >= 24 px; plates judged by what "
        "the recogniser reads in the input frame):",
        "",
        "| set | frames | class | method | judged | found in the input | re-detected | "
        "after deblur | plates judged | readable | after deblur | readable incl. missed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, a in att:
        plates = a["cls"] == "plate"
        lines.append(
            f"| {s['set']} | {s['attack_frames']} | {a['cls']} | {a['method']} | "
            f"{a['judged']} | {a['found_original']} | {a['redetected']} | "
            f"{a['redetected_deblurred']} | "
            + (
                f"{a['plates_with_text']} | {a['readable']} | {a['readable_deblurred']} | "
                f"{a['readable_all']} |"
                if plates
                else "– | – | – | – |"
            )
        )
    return lines


def _per_video_lines(sets: list[dict[str, Any]]) -> list[str]:
    """One bullet per video: by number and checksum, never by name."""
    lines = []
    for s in sets:
        for v in s["per_video"]:
            cls = ", ".join(
                f"{c['class']} {_pct(c['masked_recall_strict'])} "
                f"({c['stable_tracks']}/{c['tracks']} tracks stable, "
                f"{c['flicker_events']} flicker events)"
                for c in v["classes"]
            )
            err = f"; failed: {v['error']}" if v["error"] else ""
            lines.append(
                f"- video {v['video']} (sha256 {v['sha256'][:12]}, {v['frames']} frames): {cls}; "
                f"over-masking {_pct(v['overmask']['pooled'], 2)}{err}"
            )
    return lines


def write_plots(report: VideoEvalReport, out: Path) -> list[str]:
    """Recall and over-masking over time per video, stability per track (PNG)."""
    from redactd.evaluation.report import pyplot

    plt = pyplot()
    names = []
    for s in report.sets:
        for v in s.videos:
            tag = f"{s.index + 1}-{v.index + 1}"
            t = [f.frame for f in v.per_frame]
            rec = [
                (sum(f.masked.values()) / sum(f.boxes.values())) if sum(f.boxes.values()) else None
                for f in v.per_frame
            ]
            om = [f.overmask for f in v.per_frame]
            fig, ax = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
            ax[0].plot(t, [float("nan") if r is None else r for r in rec], drawstyle="steps-mid")
            ax[0].set_ylabel("masked recall (strict)")
            ax[0].set_ylim(-0.05, 1.05)
            ax[1].plot(t, [float("nan") if o is None else 100 * o for o in om])
            ax[1].set_ylabel("over-masking %")
            ax[1].set_xlabel("frame")
            fig.suptitle(f"video {s.index + 1}.{v.index + 1}")
            name = f"video-{tag}-over-time.png"
            fig.savefig(out / name, dpi=90)
            plt.close(fig)
            names.append(name)
            if v.tracks:
                fig, ax = plt.subplots(figsize=(8, 0.4 * len(v.tracks) + 1.2))
                for i, tr in enumerate(v.tracks):
                    frames = list(range(tr.first, tr.first + len(tr.pattern)))
                    colours = ["tab:green" if c == "1" else "tab:red" for c in tr.pattern]
                    ax.scatter(frames, [i] * len(frames), c=colours, marker="s", s=8)
                ax.set_yticks(range(len(v.tracks)))
                ax.set_yticklabels([f"{tr.cls} {tr.track}" for tr in v.tracks])
                ax.set_xlabel("counted frame of the track (green masked, red not)")
                name = f"video-{tag}-tracks.png"
                fig.tight_layout()
                fig.savefig(out / name, dpi=90)
                plt.close(fig)
                names.append(name)
    return names


def write(report: VideoEvalReport, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "video-report.json").write_text(json.dumps(to_json(report), indent=1) + "\n")
    (out / "video-report.md").write_text(markdown(report))
    written = [out / "video-report.json", out / "video-report.md"]
    if plots:
        written += [out / n for n in write_plots(report, out)]
    return written
