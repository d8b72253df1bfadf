"""``redactd process``: anonymize files or folders once, with the daemon's job runner.

Each input is planned (profile resolved with its instructions, file sniffed),
processed into a temporary beside its final name, recorded when the profile
keeps records, and published without replacing anything (``pipeline.job``;
the daemon runs the same steps through its spool).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from redactd.cli.common import err, load_config, startup_failed, with_config
from redactd.core import fsutil, log
from redactd.core.config import DEFAULT_IGNORE, Profile
from redactd.core.errors import (
    REASONS,
    ConfigError,
    ExitCode,
    ModelError,
    PermanentInputError,
    TransientError,
)
from redactd.pipeline.record import publish_with_record
from redactd.stages.instructions.model import Instructions
from redactd.stages.instructions.parse import media_name_of

if TYPE_CHECKING:
    from redactd.pipeline.job import JobRunner

_EPILOG = """\
region SPEC (--mask, --keep): [px:|rel:][box:|poly:]COORDS[@OPTION...]
  COORDS      box x1,y1,x2,y2 or poly x,y;x,y;x,y (upright picture; px by
              default, rel: = fractions of width and height)
  --mask      @f=A-B frames A..B-1, @f=A- from frame A, @t=T0-T1 seconds,
              @follow (video: move with the content), @method=mosaic|blur|pixelate|solid
  --keep      @N or @f=N seed frame, @t=SECONDS seed time (video; default 0),
              @classes=face+plate (default face)
  Quote SPECs in the shell (; and @). A SPEC starting with '-' needs --mask=SPEC.
examples:
  --keep 410,120,520,260                        keep the face in this box
  --mask 'rel:poly:0.1,0.6;0.4,0.6;0.4,0.9'     mask a polygon
  --keep 'rel:0.4,0.1,0.6,0.5@t=12.5'           video: keep who is there at 12.5 s
  --mask '20,20,220,80@t=5-15@follow'           video: follow a badge from 5 s to 15 s
A NAME.EXT.redact.json beside an input is used too (added to these).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = with_config(
        sub.add_parser(
            "process",
            help="anonymize files or folders once",
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    sp.add_argument("inputs", nargs="+", metavar="INPUT")
    sp.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    sp.add_argument("--profile", default="default")
    sp.add_argument(
        "--show-names", action="store_true", help="name failed inputs on stderr (never in logs)"
    )
    sp.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="files processed at once (default 1; more overlap one file's decoding and "
        "encoding with another's detection, and one more than the CPU cores keeps them "
        "all busy; with runtime.performance_hint \"auto\" and a one-pass profile such "
        "as fast, the jobs share OpenVINO's THROUGHPUT streams)",
    )
    sp.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="SPEC",
        help="also mask this region in every input (repeatable; SPEC below)",
    )
    sp.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="SPEC",
        help="leave the detections in this region unmasked (repeatable; SPEC below)",
    )
    sp.add_argument(
        "--sidecar",
        metavar="FILE",
        help="instructions for every input from a JSON file (docs/SIDECAR.md)",
    )
    sp.set_defaults(func=run)


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pat) for pat in DEFAULT_IGNORE)


#: Suffixes of media files: a directory *named* like one, given as an input, is
#: almost certainly a mistake and gets its own refusal instead of a silent walk.
MEDIA_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}
    | {".mp4", ".mov", ".mkv", ".webm", ".avi", ".ts", ".h264", ".h265", ".dav"}
)


def _inputs(paths: Sequence[str]) -> Iterator[tuple[Path, Path]]:
    """(source, relative output path) for every input file; folders recursively.

    Symlinks met inside folders are yielded too so that they get their
    specific refusal instead of silently vanishing; they are never followed.
    """
    for raw in paths:
        p = Path(raw)
        if media_name_of(p.name) is not None:
            continue  # an instruction sidecar: read with its media file, not an input
        if p.is_dir() and not p.is_symlink() and p.suffix.lower() not in MEDIA_SUFFIXES:
            for root, dirs, files in os.walk(p, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not _ignored(d))
                for f in sorted(files):
                    if _ignored(f) or media_name_of(f) is not None:
                        continue
                    src = Path(root) / f
                    yield src, src.relative_to(p)
        else:
            yield p, Path(p.name)


class _ProgressBar:
    """A one-line frame counter on an interactive stderr (videos); no names."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.shown = False
        self.last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done != total:
            return
        self.last = now
        if total:
            width = 30
            fill = int(width * min(done, total) / total)
            bar = "#" * fill + "." * (width - fill)
            text = f"\rjob={self.job} [{bar}] {done}/{total} frames"
        else:
            text = f"\rjob={self.job} {done} frames"
        sys.stderr.write(text)
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


#: Reasons whose detail (naming a field of the instructions, never a value) is
#: more useful on stderr than the reason's general description.
_DETAILED_REASONS = frozenset(
    {"invalid_sidecar", "instruction_not_allowed", "keep_limit_exceeded", "sidecar_untrusted"}
)


def _cli_instructions(args: argparse.Namespace, prof: Profile) -> Instructions:
    """``--sidecar FILE`` (under the profile's trust rules) plus every
    ``--mask`` / ``--keep`` SPEC (typed by the operator: trusted)."""
    from redactd.stages.instructions.parse import load_sidecar, parse_spec

    policy = prof.instructions
    base = load_sidecar(Path(args.sidecar), policy=policy) if args.sidecar else Instructions.EMPTY
    masks = tuple(parse_spec(s, "mask", f"--mask[{i}]") for i, s in enumerate(args.mask))
    keeps = tuple(parse_spec(s, "keep", f"--keep[{i}]") for i, s in enumerate(args.keep))
    return base.merged(Instructions(masks, keeps))


def _instructions_for(src: Path, given: Instructions, prof: Profile) -> Instructions:
    """The command line's instructions plus the input's own sidecar, if any."""
    from redactd.stages.instructions.parse import load_sidecar, sidecar_path

    side = sidecar_path(src)
    if side.exists() or side.is_symlink():
        return given.merged(load_sidecar(side, policy=prof.instructions))
    return given


@dataclass(frozen=True)
class _Batch:
    """What every file of one ``process`` call shares."""

    runner: JobRunner
    profile_name: str
    profile: Profile
    given: Instructions
    outdir: Path
    show_names: bool
    progress_bar: bool


def run(args: argparse.Namespace) -> int:
    from redactd.pipeline.job import JobRunner
    from redactd.pipeline.process import Pipeline
    from redactd.stages.instructions.policy import check_allowed

    try:
        cfg = load_config(args.config)
        prof = cfg.profile(args.profile)
        given = _cli_instructions(args, prof)
        check_allowed(given, prof)
        todo = list(_inputs(args.inputs))
        # No more jobs than files: a file alone runs fastest under the
        # LATENCY hint, which "auto" picks for a single job.
        jobs = max(1, min(args.jobs, len(todo)))
        pipeline = Pipeline.load(cfg, [args.profile], concurrency=jobs)
    except (ConfigError, ModelError) as e:
        return startup_failed(e)
    except PermanentInputError as e:
        # --sidecar / --mask / --keep: one line naming the field, no traceback.
        err(f"error: {e.reason}: {e.detail or REASONS.get(e.reason, '')}")
        return ExitCode.USAGE
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    batch = _Batch(
        JobRunner(pipeline),
        args.profile,
        prof,
        given,
        outdir,
        args.show_names,
        jobs == 1 and sys.stderr.isatty(),
    )
    try:
        ok, failed = _run_all(todo, jobs, lambda src, rel: _one(batch, src, rel))
    finally:
        pipeline.close()
    err(f"processed {ok} file(s), {failed} failed")
    return ExitCode.OK if failed == 0 else ExitCode.DATAERR


def _run_all(
    todo: list[tuple[Path, Path]], jobs: int, one: Callable[[Path, Path], bool]
) -> tuple[int, int]:
    """(succeeded, failed) over every input, ``jobs`` at a time."""
    if jobs == 1:
        results = [one(src, rel) for src, rel in todo]
    else:
        # Several files at once: one's decode, mask and encode overlap the
        # other's inference (the pipeline is thread-safe; the detectors'
        # networks take turns, or run side by side as THROUGHPUT streams).
        with concurrent.futures.ThreadPoolExecutor(jobs, "redactd-process") as pool:
            futures = [pool.submit(one, src, rel) for src, rel in todo]
            results = [fut.result() for fut in futures]
    ok = sum(results)
    return ok, len(results) - ok


def _one(batch: _Batch, src: Path, rel: Path) -> bool:
    """Plan, run, record and publish one input; False (reported) when it failed."""
    job = log.new_job_id()
    t0 = time.perf_counter()
    logger = log.get()
    try:
        instr = _instructions_for(src, batch.given, batch.profile)
        plan = batch.runner.plan(src, rel.name, batch.profile_name, instr)
        final = batch.outdir / rel.parent / plan.output_name
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = fsutil.tmp_name(final)
        bar = _ProgressBar(job) if batch.progress_bar else None
        try:
            done = batch.runner.run(job, plan, src, tmp, bar)
        finally:
            if bar is not None:
                bar.close()
        if plan.profile.record.enabled:  # the record first, beside the output
            data = done.record.to_bytes()
            publish_with_record(tmp, final, data, plan.profile.output.file_mode)
        else:
            fsutil.publish(tmp, final, plan.profile.output.file_mode)
    except (PermanentInputError, TransientError) as e:
        reason = e.reason
        logger.warning("job.failed", job=job, reason=reason, stage=getattr(e, "stage", ""))
        text = REASONS.get(reason, e.detail)
        if reason in _DETAILED_REASONS and e.detail:
            text = e.detail
        err(f"error job={job}{_where(batch, src)}: {reason}: {text}")
        return False
    except OSError as e:
        logger.warning("job.failed", job=job, reason="io_error", errno=e.errno)
        err(f"error job={job}{_where(batch, src)}: io_error: {log.scrub(e.strerror or '')}")
        return False
    # The same fields as the record (minus the input's sha256): logs agree.
    fields: dict[str, object] = {
        "job": job,
        **done.result.log_fields(),
        **done.record.log_fields(),
    }
    fields["total_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
    logger.info("job.done", **fields)
    return True


def _where(batch: _Batch, src: Path) -> str:
    """The input's name on stderr, only when the operator asked for names."""
    return f" ({src})" if batch.show_names else ""
