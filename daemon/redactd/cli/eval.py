"""``redactd eval``: detection and masking measured on labelled image or video sets."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from redactd.cli.common import err, load_config, startup_failed, with_config
from redactd.core.errors import ConfigError, ExitCode, ModelError

if TYPE_CHECKING:
    from redactd.core.config import Config
    from redactd.evaluation.dataset import LabelledSet
    from redactd.evaluation.runner import EvalReport
    from redactd.pipeline.process import Pipeline


#: A labelled set, of images or of videos.
S = TypeVar("S")

def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = with_config(sub.add_parser("eval", help="measure detection and masking on labelled sets"))
    sp.add_argument(
        "dataset",
        metavar="DATASET_DIR",
        help="a labelled set or a folder of sets (images; or videos with MOT gt.txt / "
        "COCO-video JSON beside each, docs/EVAL.md)",
    )
    sp.add_argument("--profile", default="default")
    sp.add_argument("--out", default="eval-report", metavar="DIR", help="report folder")
    sp.add_argument(
        "--attack", action="store_true", help="also attack the masks (re-detect, deblur, OCR)"
    )
    sp.add_argument(
        "--limit", type=int, metavar="N", help="at most N images (spread) or videos per set"
    )
    sp.add_argument(
        "--sweep",
        metavar="T1,T2,...",
        help="also run the profile with each of these thresholds for the classes a set "
        "labels (masked recall against over-masking; one more pipeline run per value)",
    )
    sp.add_argument(
        "--show-names",
        action="store_true",
        help="name the most over-masked images on stderr (never in the report or logs)",
    )
    sp.add_argument(
        "--negatives",
        type=int,
        metavar="N",
        help="also score a set of N generated text negatives: the sets' photos with "
        "burned-in timestamps, captions, posters, signs and logos that must stay unmasked",
    )
    sp.set_defaults(func=run)


class _Usage(Exception):
    """A bad option value: the message names the option, exit 64."""


def _sweep(args: argparse.Namespace) -> tuple[float, ...]:
    """The checked ``--limit`` / ``--negatives`` / ``--sweep`` values (the thresholds)."""
    if args.limit is not None and args.limit < 1:
        raise _Usage("--limit must be at least 1")
    if args.negatives is not None and args.negatives < 1:
        raise _Usage("--negatives must be at least 1")
    try:
        sweep = tuple(float(t) for t in args.sweep.split(",") if t.strip()) if args.sweep else ()
    except ValueError:
        raise _Usage("--sweep takes comma-separated thresholds, e.g. 0.05,0.2,0.3") from None
    if any(not 0.0 <= t <= 1.0 for t in sweep):
        raise _Usage("--sweep thresholds must lie in 0..1")
    return sweep


def run(args: argparse.Namespace) -> int:
    from redactd.evaluation import report

    try:
        sweep = _sweep(args)
    except _Usage as e:
        err(f"error: {e}")
        return ExitCode.USAGE
    try:
        # Before the long run: a missing plotting library is an error, not a silent skip.
        report.require_matplotlib()
    except report.PlotError as e:
        err(f"error: {e}")
        return ExitCode.CONFIG
    from redactd.evaluation import video_labels

    if video_labels.is_video_set(Path(args.dataset)):
        return _videos(args)
    return _images(args, sweep)


def _load(
    args: argparse.Namespace,
    load_sets: Callable[..., list[S]],
    data_error: type[Exception],
) -> tuple[Config, list[S], Pipeline] | int:
    """Config, labelled sets and pipeline for one eval run, or the exit code
    of the first that fails (78 config or models, 65 unreadable labels)."""
    from redactd.pipeline.process import Pipeline

    try:
        cfg = load_config(args.config)
        cfg.profile(args.profile)
        sets = load_sets(Path(args.dataset), limit=args.limit)
        return cfg, sets, Pipeline.load(cfg, [args.profile])
    except (ConfigError, ModelError) as e:
        return startup_failed(e)
    except data_error as e:
        err(f"dataset error: {e}")
        return ExitCode.DATAERR


def _images(args: argparse.Namespace, sweep: tuple[float, ...]) -> int:
    """``redactd eval`` on labelled image sets."""
    import shutil
    import tempfile

    from redactd.evaluation import dataset, runner

    loaded = _load(args, dataset.load, dataset.DatasetError)
    if isinstance(loaded, int):
        return loaded
    cfg, sets, pipeline = loaded
    out = Path(args.out)
    try:
        recognizer = runner.load_recognizer(pipeline, cfg, sets) if args.attack else None
        out.mkdir(parents=True, exist_ok=True)
        # Masked outputs live only here (mode 0700) while their image is scored.
        work = Path(tempfile.mkdtemp(prefix=".redactd-eval-", dir=out))

        if args.negatives:
            # Generated into the private work folder: deleted with it after the run.
            from redactd.evaluation import negatives

            if negatives.generate(sets, work / "text_negatives", args.negatives, seed=0):
                sets = [*sets, *dataset.load(work / "text_negatives")]
            else:
                err("warning: no picture of the sets could carry text negatives")

        def progress(i: int, done: int, total: int) -> None:
            if done == total or done % 25 == 0:
                err(f"set {i + 1}/{len(sets)}: {done}/{total} images")

        try:
            result = runner.evaluate(
                pipeline,
                cfg,
                args.profile,
                sets,
                work,
                attack=args.attack,
                recognizer=recognizer,
                limit=args.limit,
                progress=progress,
                sweep=sweep,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except ModelError as e:
        return startup_failed(e)
    finally:
        pipeline.close()
    _report(result, sets, out, args.show_names)
    return ExitCode.OK


def _report(result: EvalReport, sets: list[LabelledSet], out: Path, show_names: bool) -> None:
    """Write the report files and tell the operator (names only on their terminal)."""
    from redactd.evaluation import report

    written = report.write(result, out)
    print(report.summary(result))
    if show_names:
        # The terminal only: reports and logs never name an image.
        for lset, rep in zip(sets, result.sets, strict=True):
            for w in rep.worst:
                rel = lset.images[w.index].path.relative_to(lset.root)
                err(f"{rep.name} over-masking #{w.rank} ({w.overmask:.3f}): {rel}")
    err(f"report written: {', '.join(p.name for p in written)} in the --out folder")


def _videos(args: argparse.Namespace) -> int:
    """``redactd eval`` on labelled videos (MOT ``gt.txt`` or COCO-video JSON beside each)."""
    import shutil
    import tempfile

    from redactd.evaluation import video_labels, video_report, video_runner

    if args.sweep or args.negatives:
        err("error: --sweep and --negatives apply to image sets only")
        return ExitCode.USAGE
    loaded = _load(args, video_labels.load_sets, video_labels.VideoLabelError)
    if isinstance(loaded, int):
        return loaded
    _cfg, sets, pipeline = loaded
    out = Path(args.out)

    def progress(i: int, done: int, total: int) -> None:
        err(f"video set {i + 1}/{len(sets)}: {done}/{total} videos")

    try:
        out.mkdir(parents=True, exist_ok=True)
        recognizer = video_runner.load_recognizer(pipeline, sets) if args.attack else None
        work = Path(tempfile.mkdtemp(prefix=".redactd-eval-", dir=out))
        try:
            result = video_runner.evaluate(
                pipeline,
                args.profile,
                sets,
                work,
                progress=progress,
                attack=args.attack,
                recognizer=recognizer,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except ModelError as e:
        return startup_failed(e)
    finally:
        pipeline.close()
    written = video_report.write(result, out)
    print(video_report.markdown(result).split("\n\nPer video:")[0])
    if args.show_names:
        # The terminal only: reports and logs name sets and videos by index.
        for si, vs in enumerate(sets):
            for vi, v in enumerate(vs.videos):
                err(f"video {si + 1}.{vi + 1}: {vs.name}/{v.path.name}")
    err(f"report written: {len(written)} files (video-report.md) in the --out folder")
    return ExitCode.OK
