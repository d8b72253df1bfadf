"""Writing an ``EvalReport``: ``report.json``, ``report.md`` and PNG plots.

Plots (precision-recall curve per set and class, recall by object size,
masked recall against over-masking) need matplotlib, a dependency of the
package. It is imported only here and only when plots are written; when it
is missing, ``write`` raises ``PlotError`` (the CLI says how to install it)
instead of silently writing a report without plots.

Reports name the sets (the folder names the user chose), never an image.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from redactd.evaluation.attack import (
    REDETECT_FLOOR,
    REDETECT_MIN_HEIGHT,
    REDETECT_THRESHOLD,
)
from redactd.evaluation.metrics import ClassMetrics, PRCurve
from redactd.evaluation.runner import EvalReport, SetReport


class PlotError(RuntimeError):
    """Plots were asked for but matplotlib cannot be imported."""


JSON_NAME = "report.json"
MD_NAME = "report.md"
#: At most this many points of a PR curve go into the JSON (evenly spread over the ranks).
PR_POINTS = 200


def _thin(curve: PRCurve | None) -> dict[str, list[float]] | None:
    if curve is None:
        return None
    n = len(curve.recall)
    step = max(1, math.ceil(n / PR_POINTS))
    idx = list(range(0, n, step))
    if n and idx[-1] != n - 1:
        idx.append(n - 1)
    return {
        "recall": [round(curve.recall[i], 5) for i in idx],
        "precision": [round(curve.precision[i], 5) for i in idx],
        "score": [round(curve.scores[i], 5) for i in idx],
    }


def _clean(value: Any) -> Any:
    """JSON-safe: floats rounded, NaN/inf as null, tuples as lists."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _class_json(c: Any) -> dict[str, Any]:
    m: ClassMetrics = c.metrics
    box = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "pr_curve"}
    box["by_size"] = [
        {"lo": b.lo, "hi": b.hi, "boxes": b.boxes, "found": b.found, "recall": b.recall}
        for b in m.by_size
    ]
    px = dataclasses.asdict(c.pixels)
    px.update(
        masked_recall=c.pixels.masked_recall,
        strict_recall=c.pixels.strict_recall,
        small_masked_recall=c.pixels.small_masked_recall,
        detail_recall=c.pixels.detail_recall,
    )
    return {
        "cls": m.cls,
        "enabled_in_profile": c.enabled,
        "box": box,
        "pr_curve": _thin(m.pr_curve),
        "masked": px,
    }


def to_json(report: EvalReport) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    sets = []
    for s in report.sets:
        sets.append(
            {
                "name": s.name,
                "format": s.format,
                "images": s.images,
                "total_images": s.total_images,
                "labels_complete": s.labels_complete,
                "failed": s.failed,
                "failed_reasons": s.failed_reasons,
                "overmask": s.overmask,
                "overmask_far": s.overmask_far,
                "overmask_image_mean": s.overmask_image_mean,
                "images_over_1pct": s.images_over_1pct,
                # By rank only: an image's position or name would identify it.
                "worst_overmask": [
                    {"rank": w.rank, "overmask": w.overmask, "changed_pixels": w.changed_pixels}
                    for w in s.worst
                ],
                "negatives": (
                    None
                    if s.negatives is None
                    else {
                        **dataclasses.asdict(s.negatives),
                        "masked_share": s.negatives.masked_share,
                        "by_kind": [
                            {"kind": k, "regions": n, "masked": m}
                            for k, n, m in s.negatives_by_kind
                        ],
                    }
                ),
                "sweep": [dataclasses.asdict(p) for p in s.sweep],
                "latency": dataclasses.asdict(s.latency),
                "seconds": s.seconds,
                "classes": [_class_json(c) for c in s.classes],
                "attack": [dataclasses.asdict(a) for a in s.attack],
            }
        )
    data = {
        "redactd_version": report.redactd_version,
        "created_utc": report.created_utc,
        "profile": report.profile,
        "limit": report.limit,
        "attack": report.attack,
        "hardware": dataclasses.asdict(report.hardware),
        "settings": report.settings,
        "profile_settings": report.profile_settings,
        "sets": sets,
    }
    cleaned: dict[str, Any] = _clean(data)
    return cleaned


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def _box_table(sets: tuple[SetReport, ...]) -> list[str]:
    lines = [
        "| set | class | images | boxes (ignored) | AP50 | AP50:95 | recall@thr "
        "| precision@thr | FNR | small recall (<32 px) | masked recall | masked ≥90% "
        "| small masked | masked (strict) | over-masking | far over-masking |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sets:
        for c in s.classes:
            m, p = c.metrics, c.pixels
            note = "" if c.enabled else " (not enabled in profile)"
            lines.append(
                f"| {s.name} | {m.cls}{note} | {s.images} | {m.boxes} ({m.ignored_boxes}) "
                f"| {_f(m.ap50)} | {_f(m.ap50_95)} | {_f(m.recall)} @{m.threshold:g} "
                f"| {_f(m.precision)} | {_f(m.fnr)} | {_f(m.small_recall)} ({m.small_boxes}) "
                f"| {_f(p.masked_recall)} | {_f(p.strict_recall)} | {_f(p.small_masked_recall)} "
                f"| {_f(p.detail_recall)} | {_f(s.overmask, 4)} | {_f(s.overmask_far, 4)} |"
            )
        if not s.classes:
            lines.append(
                f"| {s.name} | – | {s.images} | – | – | – | – | – | – | – | – | – | – | – "
                f"| {_f(s.overmask, 4)} | {_f(s.overmask_far, 4)} |"
            )
    return lines


def _overmask_table(sets: tuple[SetReport, ...]) -> list[str]:
    lines = [
        "| set | over-masking (pixels) | mean per image | images > 1 % "
        "| worst 10 images (rank: over-masking) |",
        "|---|---:|---:|---:|---|",
    ]
    for s in sets:
        worst = ", ".join(f"{w.rank}: {w.overmask:.3f}" for w in s.worst) or "–"
        lines.append(
            f"| {s.name} | {_f(s.overmask, 4)} | {_f(s.overmask_image_mean, 4)} "
            f"| {s.images_over_1pct}/{s.images} | {worst} |"
        )
    return lines


def _negatives_table(sets: tuple[SetReport, ...]) -> list[str]:
    rows = [s for s in sets if s.negatives is not None]
    if not rows:
        return []
    lines = [
        "| set | images with text | text regions | masked (strict) | share masked "
        "| images with a masked region | by kind (masked/regions) "
        "| per image, most masked first (masked/regions) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in rows:
        n = s.negatives
        assert n is not None
        kinds = ", ".join(f"{k} {m}/{c}" for k, c, m in s.negatives_by_kind)
        masked = [f"{m}/{c}" for c, m in n.per_image if m]
        rest = len(n.per_image) - len(masked)
        per = ", ".join([*masked, *([f"{rest} images 0"] if rest else [])])
        lines.append(
            f"| {s.name} | {n.images} | {n.regions} | {n.masked} | {_f(n.masked_share)} "
            f"| {n.images_with_masked} | {kinds} | {per} |"
        )
    return lines


def _sweep_table(sets: tuple[SetReport, ...]) -> list[str]:
    if not any(len(s.sweep) > len([c for c in s.classes if c.enabled]) for s in sets):
        return []
    lines = [
        "| set | class | threshold | masked recall | masked (strict) | over-masking |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in sets:
        for pt in s.sweep:
            mark = " (profile)" if pt.operating else ""
            lines.append(
                f"| {s.name} | {pt.cls} | {pt.threshold:g}{mark} | {_f(pt.masked_recall)} "
                f"| {_f(pt.detail_recall)} | {_f(pt.overmask, 4)} |"
            )
    return lines


def _latency_table(report: EvalReport) -> list[str]:
    lines = [
        "| set | images | failed | mean ms | median ms | p95 ms | ms per megapixel "
        "| detect ms (mean) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.sets:
        la = s.latency
        failed = f"{s.failed}" + (
            " (" + ", ".join(f"{k}: {v}" for k, v in sorted(s.failed_reasons.items())) + ")"
            if s.failed_reasons
            else ""
        )
        lines.append(
            f"| {s.name} | {s.images} | {failed} | {_ms(la.mean_ms)} | {_ms(la.median_ms)} "
            f"| {_ms(la.p95_ms)} | {_ms(la.ms_per_megapixel)} | {_ms(la.detect_mean_ms)} |"
        )
    return lines


def _attack_table(report: EvalReport) -> list[str]:
    lines = [
        f"| set | class | mask | anonymized | judged (≥{REDETECT_MIN_HEIGHT:g} px) "
        f"| found in input | re-detected | after deblur | at floor {REDETECT_FLOOR:g} "
        "| at floor, deblurred | plates read in input | readable | after deblur "
        "| readable incl. missed |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.sets:
        for a in s.attack:
            plates = a.cls == "plate" and a.plates_with_text > 0
            read = (
                f"{a.readable_original}/{a.plates_with_text} | {a.readable} | "
                f"{a.readable_deblurred} | {a.readable_all}"
                if plates
                else "– | – | – | –"
            )
            lines.append(
                f"| {s.name} | {a.cls} | {a.method} | {a.anonymized}/{a.boxes} | {a.judged} "
                f"| {a.found_original} | {a.redetected} | {a.redetected_deblurred} "
                f"| {a.floor_redetected} | {a.floor_redetected_deblurred} | {read} |"
            )
    return lines


def _profile_lines(report: EvalReport) -> list[str]:
    lines = []
    for cls in ("face", "plate"):
        c = report.profile_settings.get(cls)
        if not isinstance(c, dict):
            continue
        if not c.get("enabled"):
            lines.append(f"- {cls}: not enabled")
            continue
        m = c.get("mask", {})
        t = c.get("tiling", {})
        lines.append(
            f"- {cls}: detectors {', '.join(c.get('detectors', ()))}, threshold "
            f"{c.get('threshold')}, tiling "
            + (
                "(" + ", ".join(f"{k} {v}" for k, v in t.items() if k != "enabled") + ")"
                if t.get("enabled")
                else "off"
            )
            + f"; mask "
            f"{m.get('method')} {m.get('shape')}, padding {m.get('padding')}, "
            f"blocks {m.get('blocks')}, blur_strength {m.get('blur_strength')}"
        )
    return ["Profile settings:", "", *lines] if lines else []


def to_markdown(report: EvalReport, plots: list[str], plot_note: str | None) -> str:
    """A human-readable summary (tables per measure, the settings, the hardware)."""
    out = [
        *_header_lines(report),
        "## Detection and masking",
        "",
        *_box_table(report.sets),
        "",
        _DETECTION_NOTE.format(change=report.settings.get("change_threshold", 12)),
        "",
        "## Over-masking per image",
        "",
        *_overmask_table(report.sets),
        "",
        *(
            [
                "## Text regions (negatives) masked",
                "",
                *_negatives_table(report.sets),
                "",
                "A text region (burned-in timestamp, caption, poster, sign, logo) counts as "
                "masked by the strict rule above. The target is zero.",
                "",
            ]
            if _negatives_table(report.sets)
            else []
        ),
        *(
            ["## Threshold sweep", "", *_sweep_table(report.sets), ""]
            if _sweep_table(report.sets)
            else []
        ),
        "## Latency (`Pipeline.process` per image)",
        "",
        *_latency_table(report),
        "",
    ]
    if report.attack:
        out += ["## Resistance to reconstruction", "", *_attack_table(report), "", _ATTACK_NOTE, ""]
    if plots:
        out += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    if plot_note:
        out += [f"Plots: {plot_note}", ""]
    return "\n".join(out)


def _header_lines(report: EvalReport) -> list[str]:
    """Title, version and date, hardware, detectors and the profile's settings."""
    hw = report.hardware
    return [
        f"# redactd eval — profile `{report.profile}`",
        "",
        f"redactd {report.redactd_version}, {report.created_utc}"
        + (f", at most {report.limit} images per set" if report.limit else ""),
        "",
        f"Hardware: {hw.cpu}, {hw.usable_cpus} usable of {hw.logical_cpus} logical CPUs; "
        f"{hw.platform}; Python {hw.python}; OpenVINO {hw.openvino}.",
        "",
        "Detectors: " + ("; ".join(hw.detectors) if hw.detectors else "none"),
        "",
        *_profile_lines(report),
        "",
    ]


#: What the detection table's columns mean (``change``: the change threshold).
_DETECTION_NOTE = (
    "AP and precision count only images whose labels are complete (`–` where none "
    "are); recall and masked recall count every image. Masked recall: share of "
    "labelled boxes of which at least half the pixels changed (max channel "
    "difference > {change:g}) in the real output. "
    "Masked (strict): at least 70 % of the box's detail pixels (those a box blur of "
    "half the box's size moves by more than 10 in luma; all pixels when fewer than "
    "10 % are) changed by more than 10 in luma. Over-masking: share of the pixels "
    "outside every labelled box grown by 30 % of its size on each side that changed "
    "(luma > 10, after a 3x3 opening); far over-masking: the older measure (channel "
    "> 12, boxes grown by their whole size). On sets whose labels are incomplete "
    "both include unlabelled objects."
)

#: What the attack table's columns mean.
_ATTACK_NOTE = (
    f"Re-detected: anonymized boxes at least {REDETECT_MIN_HEIGHT:g} px tall that the "
    f"profile's detectors find again with score ≥ {REDETECT_THRESHOLD:g} (IoU ≥ 0.3), "
    "on the masked output and after deblurring (Wiener σ 1.5 and 3 px + unsharp). "
    f"'At floor' counts every anonymized box found with score ≥ {REDETECT_FLOOR:g}; "
    "the `solid` row shows what context alone gives there. Readable: anonymized "
    "plates the PP-OCR recogniser still reads (exact, or one character off for "
    "plates of 5+ characters). A method that masks the set's classes exactly as the "
    "profile does repeats the profile's numbers (it is not run twice)."
)


def summary(report: EvalReport) -> str:
    """A few lines for the terminal: per set and class, the headline numbers."""
    lines = []
    for s in report.sets:
        for c in s.classes:
            m, p = c.metrics, c.pixels
            lines.append(
                f"{s.name} {m.cls}: masked recall {_f(p.masked_recall)} "
                f"(strict {_f(p.detail_recall)}) of {p.boxes}, "
                f"over-masking {_f(s.overmask, 4)}, "
                f"recall@{m.threshold:g} {_f(m.recall)}, AP50 {_f(m.ap50)}, "
                f"median {_ms(s.latency.median_ms)} ms/image"
            )
        if s.negatives is not None:
            n = s.negatives
            lines.append(
                f"{s.name} text regions: {n.masked} of {n.regions} masked "
                f"({n.images_with_masked} of {n.images} images), "
                f"over-masking {_f(s.overmask, 4)}"
            )
        for a in s.attack:
            if a.method == "profile":
                lines.append(
                    f"{s.name} {a.cls}: re-detected {a.redetected}/{a.judged}, after deblur "
                    f"{a.redetected_deblurred}; readable plates {a.readable} "
                    f"(after deblur {a.readable_deblurred})"
                )
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on the Agg backend; ``PlotError`` when matplotlib is missing.

    Shared by the image and the video reports.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotError(
            "matplotlib is not installed: the plots need it (reinstall redactd with its "
            "dependencies, e.g. make install, or pip install matplotlib)"
        ) from e
    return plt


def require_matplotlib() -> None:
    """``PlotError`` unless the plots can be drawn (checked before a long run)."""
    pyplot()


def write_plots(report: EvalReport, out: Path) -> tuple[list[str], str | None]:
    """PNG plots into ``out``; returns (file names, note). ``PlotError`` without matplotlib."""
    plt = pyplot()
    drawn = (
        _plot_pr_curves(plt, report, out),
        _plot_recall_by_size(plt, report, out),
        _plot_recall_vs_overmask(plt, report, out),
    )
    return [name for name in drawn if name is not None], None


def _plot_pr_curves(plt: Any, report: EvalReport, out: Path) -> str | None:
    """``pr_curves.png``: precision against recall per set and class (None: nothing to draw)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    name = None
    drawn = False
    for s in report.sets:
        for c in s.classes:
            curve = c.metrics.pr_curve
            if curve is None:
                continue
            ax.plot(
                curve.recall,
                curve.precision,
                label=f"{s.name} / {c.metrics.cls} (AP50 {_f(c.metrics.ap50)})",
            )
            drawn = True
    if drawn:
        ax.set_xlabel("recall (IoU 0.5)")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"Precision-recall, profile {report.profile}")
        fig.tight_layout()
        name = "pr_curves.png"
        fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _plot_recall_by_size(plt: Any, report: EvalReport, out: Path) -> str | None:
    """``recall_by_size.png``: operating-point recall per box-height bin (None: nothing)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    name = None
    drawn = False
    for s in report.sets:
        for c in s.classes:
            bins = [b for b in c.metrics.by_size if b.boxes]
            if not bins:
                continue
            labels = [f"{b.lo:g}-{b.hi:g}" if b.hi else f"≥{b.lo:g}" for b in bins]
            ax.plot(
                labels,
                [b.found / b.boxes for b in bins],
                marker="o",
                label=f"{s.name} / {c.metrics.cls}",
            )
            drawn = True
    if drawn:
        ax.set_xlabel("labelled box height (px)")
        ax.set_ylabel("recall at the operating threshold")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title("Recall by object size")
        fig.tight_layout()
        name = "recall_by_size.png"
        fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _plot_recall_vs_overmask(plt: Any, report: EvalReport, out: Path) -> str | None:
    """``recall_vs_overmask.png``: the threshold sweep, strict masked recall against
    over-masking, each point labelled with its threshold (None: no sweep points)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    name = None
    drawn = False
    right = 0.0
    for s in report.sets:
        for cls in sorted({pt.cls for pt in s.sweep}):
            pts = [
                pt
                for pt in s.sweep
                if pt.cls == cls and pt.overmask is not None and pt.detail_recall is not None
            ]
            if not pts:
                continue
            (line,) = ax.plot(
                [pt.overmask for pt in pts],
                [pt.detail_recall for pt in pts],
                marker="o",
                label=f"{s.name} / {cls}",
            )
            right = max(right, *(pt.overmask or 0.0 for pt in pts))
            for pt in pts:
                ax.annotate(
                    f"{pt.threshold:g}" + ("*" if pt.operating else ""),
                    (pt.overmask, pt.detail_recall),
                    fontsize=6,
                    textcoords="offset points",
                    xytext=(3, 3),
                    color=line.get_color(),
                )
            drawn = True
    if drawn:
        ax.set_xlabel("over-masking (share of pixels outside the grown labelled boxes)")
        ax.set_ylabel("masked recall (strict rule)")
        ax.set_xlim(0, right * 1.15 + 1e-3)
        ax.set_ylim(top=1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"Masked recall vs over-masking (threshold; * = profile {report.profile})")
        fig.tight_layout()
        name = "recall_vs_overmask.png"
        fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def write(report: EvalReport, out: Path, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (optionally) the plots into ``out``.

    ``PlotError`` (before anything is written) when plots are asked for and
    matplotlib is missing.
    """
    if plots:
        pyplot()
    out.mkdir(parents=True, exist_ok=True)
    names, note = write_plots(report, out) if plots else ([], "not requested")
    (out / JSON_NAME).write_text(json.dumps(to_json(report), indent=1) + "\n", encoding="utf-8")
    (out / MD_NAME).write_text(to_markdown(report, names, note), encoding="utf-8")
    return [out / JSON_NAME, out / MD_NAME, *(out / n for n in names)]
