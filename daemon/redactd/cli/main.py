"""The ``redactd`` command line.

Sub-commands: ``run`` (the daemon), ``process`` (the same pipeline once),
``detect`` (detections as JSON), ``check-config``, ``models list|fetch|verify``.

Logs (JSON on stdout) never carry file names or paths. Human messages go to
stderr and name inputs only by a job id, unless the operator asks for names
with ``--show-names`` on their own terminal.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from redactd.core import log
from redactd.core.config import DEFAULT_IGNORE, Config, default_config, load, world_writable
from redactd.core.errors import (
    REASONS,
    ConfigError,
    ConfigErrors,
    ExitCode,
    ModelError,
    PermanentInputError,
    TransientError,
)
from redactd.pipeline.record import JobRecord, publish_with_record
from redactd.stages.instructions import Instructions, media_name_of

if TYPE_CHECKING:
    from redactd.core.config import Profile
    from redactd.core.types import JobResult
    from redactd.models.manifest import Manifest
    from redactd.pipeline.process import Pipeline


DEFAULT_CONFIG_PATHS = (Path("/etc/redactd/redactd.toml"),)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    env = os.environ.get("REDACTD_CONFIG")
    if env:
        return Path(env)
    for p in DEFAULT_CONFIG_PATHS:
        if p.is_file():
            return p
    return None


def _load_config(arg: str | None, log_to_stderr: bool = False) -> Config:
    path = _config_path(arg)
    cfg = load(path) if path is not None else default_config()
    # Commands whose stdout is data (detect --json, models, status) log to stderr.
    log.configure(cfg.logging.level, cfg.logging.format, sys.stderr if log_to_stderr else None)
    return cfg


def _print_config_error(e: ConfigError) -> None:
    errors = e.errors if isinstance(e, ConfigErrors) else [e]
    for one in errors:
        _err(f"config error: {one}")


# --------------------------------------------------------------------------- check-config


def cmd_check_config(args: argparse.Namespace) -> int:
    from redactd.stages.detect import registry

    path = _config_path(args.config)
    try:
        cfg = load(path) if path is not None else default_config()
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    problems = registry.check_profiles(cfg)
    if path is not None and world_writable(path):
        problems.append(ConfigError("", "the config file is world-writable; refuse to use it"))
    if problems:
        for p in problems:
            _err(f"config error: {p}")
        return ExitCode.CONFIG
    try:
        missing = registry.check_derived(cfg)  # INT8 models made by `models quantize`
    except ModelError as e:
        missing = [e]
    if missing:
        for m in missing:
            _err(f"model error: {m}")
        return ExitCode.CONFIG
    from redactd.service.daemon import check_validation

    # The same records `redactd run` demands at start-up (docs/VALIDATION.md):
    # a config that check-config passes must not then refuse to start on them.
    unvalidated = check_validation(cfg)
    if unvalidated:
        for p in unvalidated:
            _err(f"config error: {p}")
        return ExitCode.CONFIG
    _err(f"config OK: {len(cfg.watch)} watched folder(s), {len(cfg.profiles)} profile(s)")
    return ExitCode.OK


# --------------------------------------------------------------------------- process


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
    from redactd.stages.instructions import load_sidecar, parse_spec

    policy = prof.instructions
    base = load_sidecar(Path(args.sidecar), policy=policy) if args.sidecar else Instructions.EMPTY
    masks = tuple(parse_spec(s, "mask", f"--mask[{i}]") for i, s in enumerate(args.mask))
    keeps = tuple(parse_spec(s, "keep", f"--keep[{i}]") for i, s in enumerate(args.keep))
    return base.merged(Instructions(masks, keeps))


def _instructions_for(src: Path, given: Instructions, prof: Profile) -> Instructions:
    """The command line's instructions plus the input's own sidecar, if any."""
    from redactd.stages.instructions import load_sidecar, sidecar_path

    side = sidecar_path(src)
    if side.exists() or side.is_symlink():
        return given.merged(load_sidecar(side, policy=prof.instructions))
    return given


def _job_record(
    job: str,
    profile_name: str,
    prof: Profile,
    pipeline: Pipeline,
    result: JobResult,
    instr: Instructions | None,
    started: datetime,
    src: Path,
    tmp: Path,
) -> JobRecord:
    """The job record of one ``process`` run (hashes only when the profile keeps records)."""
    from redactd.pipeline.record import digest_file

    keep = prof.record.enabled
    return JobRecord.of_job(
        job,
        profile_name,
        prof,
        result,
        pipeline.describe(),
        instr,
        started,
        input=digest_file(src) if keep else None,
        output=digest_file(tmp) if keep else None,
    )


def cmd_process(args: argparse.Namespace) -> int:
    from redactd.core import fsutil
    from redactd.pipeline.process import Pipeline
    from redactd.stages.instructions import check_allowed

    try:
        cfg = _load_config(args.config)
        prof = cfg.profile(args.profile)
        given = _cli_instructions(args, prof)
        check_allowed(given, prof)
        todo = list(_inputs(args.inputs))
        # No more jobs than files: a file alone runs fastest under the
        # LATENCY hint, which "auto" picks for a single job.
        jobs = max(1, min(args.jobs, len(todo)))
        pipeline = Pipeline.load(cfg, [args.profile], concurrency=jobs)
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    except ModelError as e:
        _err(f"model error: {e}")
        return ExitCode.CONFIG
    except PermanentInputError as e:
        # --sidecar / --mask / --keep: one line naming the field, no traceback.
        _err(f"error: {e.reason}: {e.detail or REASONS.get(e.reason, '')}")
        return ExitCode.USAGE
    logger = log.get()
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)

    def one(src: Path, rel: Path) -> bool:
        job = log.new_job_id()
        t0 = time.perf_counter()
        started = datetime.now(timezone.utc)
        try:
            final = outdir / rel.parent / pipeline.output_name(src, rel.name)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = fsutil.tmp_name(final)
            bar = _ProgressBar(job) if jobs == 1 and sys.stderr.isatty() else None
            try:
                instr = _instructions_for(src, given, prof)
                result = pipeline.process(src, tmp, args.profile, bar, instr)
            finally:
                if bar is not None:
                    bar.close()
            record = _job_record(
                job, args.profile, prof, pipeline, result, instr, started, src, tmp
            )
            if prof.record.enabled:  # the record first, beside the output
                publish_with_record(tmp, final, record.to_bytes(), prof.output.file_mode)
            else:
                fsutil.publish(tmp, final, prof.output.file_mode)
        except (PermanentInputError, TransientError) as e:
            reason = e.reason
            logger.warning("job.failed", job=job, reason=reason, stage=getattr(e, "stage", ""))
            where = f" ({src})" if args.show_names else ""
            text = REASONS.get(reason, e.detail)
            if reason in _DETAILED_REASONS and e.detail:
                text = e.detail
            _err(f"error job={job}{where}: {reason}: {text}")
            return False
        except OSError as e:
            logger.warning("job.failed", job=job, reason="io_error", errno=e.errno)
            where = f" ({src})" if args.show_names else ""
            _err(f"error job={job}{where}: io_error: {log.scrub(e.strerror or '')}")
            return False
        # The same fields as the record (minus the input's sha256): logs agree.
        done: dict[str, object] = {"job": job, **result.log_fields(), **record.log_fields()}
        done["total_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        logger.info("job.done", **done)
        return True

    ok = failed = 0
    try:
        if jobs == 1:
            results = (one(src, rel) for src, rel in todo)
            for good in results:
                ok, failed = ok + good, failed + (not good)
        else:
            # Several files at once: one's decode, mask and encode overlap the
            # other's inference (the pipeline is thread-safe; the detectors'
            # networks take turns, or run side by side as THROUGHPUT streams).
            with concurrent.futures.ThreadPoolExecutor(jobs, "redactd-process") as pool:
                futures = [pool.submit(one, src, rel) for src, rel in todo]
                for fut in futures:
                    good = fut.result()
                    ok, failed = ok + good, failed + (not good)
    finally:
        pipeline.close()
    _err(f"processed {ok} file(s), {failed} failed")
    return ExitCode.OK if failed == 0 else ExitCode.DATAERR


# --------------------------------------------------------------------------- detect


def cmd_detect(args: argparse.Namespace) -> int:
    from redactd.pipeline.process import Pipeline

    try:
        cfg = _load_config(args.config, log_to_stderr=True)
        pipeline = Pipeline.load(cfg, [args.profile])
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    except ModelError as e:
        _err(f"model error: {e}")
        return ExitCode.CONFIG
    try:
        dets = pipeline.detect_file(Path(args.image), args.profile)
    except PermanentInputError as e:
        _err(f"error: {e.reason}: {REASONS.get(e.reason, '')}")
        return ExitCode.DATAERR
    finally:
        pipeline.close()
    out = [
        {
            "cls": d.cls,
            "box": [round(d.box.x1, 1), round(d.box.y1, 1), round(d.box.x2, 1), round(d.box.y2, 1)],
            "score": round(d.score, 4),
            "detector": d.detector,
        }
        for d in dets
    ]
    if args.json:
        print(json.dumps(out))
    else:
        for o in out:
            print(f"{o['cls']}\t{o['score']:.3f}\t{o['box']}\t{o['detector']}")
    return ExitCode.OK


# --------------------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    from redactd.models import derived
    from redactd.models import fetch as fetch_mod
    from redactd.models import manifest as manifest_mod

    try:
        cfg = _load_config(args.config, log_to_stderr=True)
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    store = Path(args.store) if args.store else cfg.models.dir
    try:
        man = manifest_mod.load()
        if args.action == "list":
            for st in fetch_mod.status(man, store):
                print(st.line())
            for name in sorted(derived.RECIPES):
                print(derived.status(man, name, store).list_line())
            return ExitCode.OK
        if args.action == "quantize":
            return _models_quantize(args, cfg, man, store)
        if args.action == "validate":
            return _models_validate(args, cfg)
        default = list(man.models) if args.all else list(fetch_mod.DEFAULT_MODELS)
        names = [n for n in args.names if n not in derived.RECIPES]
        # models made on this server: named, or (by default) every one present
        made = [n for n in args.names if n in derived.RECIPES]
        if not args.names:
            names, made = default, derived.installed(store)
        if args.action == "fetch":
            if made and args.names:
                raise ModelError(
                    f"model {made[0]!r} is made on this server, not fetched; to make it, "
                    f"run: {derived.recipe(made[0]).hint()}"
                )
            store.mkdir(parents=True, exist_ok=True)
            mirror = Path(args.from_dir) if args.from_dir else None
            for res in fetch_mod.fetch(man, names, store, mirror=mirror):
                print(res.line())
            return ExitCode.OK
        bad = 0
        for v in fetch_mod.verify(man, names, store):
            print(v.line())
            bad += 0 if v.ok else 1
        for n in made:
            ds = derived.status(man, n, store)
            print(ds.verify_line())
            bad += 0 if ds.ok else 1
        return ExitCode.OK if bad == 0 else ExitCode.CONFIG
    except ModelError as e:
        _err(f"model error: {e}")
        return ExitCode.CONFIG


def _models_quantize(args: argparse.Namespace, cfg: Config, man: Manifest, store: Path) -> int:
    """``redactd models quantize MODEL --calibration DIR``: one line per outcome, no names."""
    from dataclasses import asdict

    from redactd.models import derived, quantize
    from redactd.pipeline import calibration

    if len(args.names) != 1:
        _err("error: name one model, e.g. 'redactd models quantize centerface --calibration DIR'")
        return ExitCode.USAGE
    if not args.calibration:
        _err("error: --calibration DIR is required (a folder of your images and/or videos)")
        return ExitCode.USAGE
    if args.samples < 1:
        _err("error: --samples must be at least 1")
        return ExitCode.USAGE
    source = man.get(args.names[0])
    derived.recipe_for_source(source.name)
    quantize.require_nncf()
    try:
        tiling = getattr(cfg.profile(args.profile), source.task).tiling
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    try:
        cal = calibration.collect(
            Path(args.calibration),
            source.decoder,
            samples=args.samples,
            seed=args.seed,
            tiling=tiling,
            limits=cfg.limits,
        )
    except calibration.CalibrationError as e:
        _err(f"calibration error: {e}")
        return ExitCode.DATAERR
    _err(
        f"calibrating {source.name} on {len(cal)} samples from {cal.frames} frames of "
        f"{cal.files} files ({cal.skipped} files skipped), seed {args.seed}"
    )
    opts = quantize.QuantizeOptions(preset=args.preset, heads=args.heads)
    res = quantize.quantize(
        source, store, cal, seed=args.seed, options=opts, tiling=asdict(tiling)
    )
    if cal.failed:
        _err(f"warning: {cal.failed} pictures could not be decoded and were left out")
    for line in res.lines():
        print(line)
    return ExitCode.OK


def _models_validate(args: argparse.Namespace, cfg: Config) -> int:
    """``redactd models validate CANDIDATE --against BASELINE --data DIR --operator NAME``.

    Exit 0 when the candidate passed, 1 when it failed (the record is written
    either way), 64 usage, 65 data unreadable, 78 config or model problem.
    """
    import shutil
    import tempfile

    from redactd.evaluation import validate

    if len(args.names) != 1 or not args.against or not args.data or not args.operator:
        _err(
            "error: usage: redactd models validate CANDIDATE_PROFILE --against BASELINE_PROFILE "
            "--data DIR --operator NAME [--comment TEXT]"
        )
        return ExitCode.USAGE
    if args.limit is not None and args.limit < 1:
        _err("error: --limit must be at least 1")
        return ExitCode.USAGE
    try:
        cfg.profile(args.names[0])
        cfg.profile(args.against)
        data = validate.load_data(Path(args.data), limit=args.limit)
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    except validate.ValidationDataError as e:
        _err(f"dataset error: {e}")
        return ExitCode.DATAERR
    work = Path(tempfile.mkdtemp(prefix=".redactd-validate-"))
    try:
        record = validate.validate(
            cfg, args.names[0], args.against, data, work,
            operator=args.operator, comment=args.comment or "",
        )  # fmt: skip
    except (OSError, ValueError) as e:
        _err(f"error: validation failed to run ({type(e).__name__})")
        return ExitCode.CONFIG
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = validate.write(record, cfg.validation.dir)
    for c in record["checks"]:
        delta = "–" if c["delta"] is None else f"{100 * c['delta']:+.2f} points"
        print(
            f"set {c['set']} {c['measure']}: {c['baseline']:.4f} -> "
            f"{'–' if c['candidate'] is None else format(c['candidate'], '.4f')} ({delta}) "
            f"{'ok' if c['passed'] else 'FAIL'}"
        )
    print(f"{'PASSED' if record['passed'] else 'FAILED'}: record {path.name}")
    return ExitCode.OK if record["passed"] else 1


# --------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from redactd.evaluation import dataset, report, runner
    from redactd.pipeline.process import Pipeline

    if args.limit is not None and args.limit < 1:
        _err("error: --limit must be at least 1")
        return ExitCode.USAGE
    if args.negatives is not None and args.negatives < 1:
        _err("error: --negatives must be at least 1")
        return ExitCode.USAGE
    try:
        sweep = tuple(float(t) for t in args.sweep.split(",") if t.strip()) if args.sweep else ()
    except ValueError:
        _err("error: --sweep takes comma-separated thresholds, e.g. 0.05,0.2,0.3")
        return ExitCode.USAGE
    if any(not 0.0 <= t <= 1.0 for t in sweep):
        _err("error: --sweep thresholds must lie in 0..1")
        return ExitCode.USAGE
    try:
        # Before the long run: a missing plotting library is an error, not a silent skip.
        report.require_matplotlib()
    except report.PlotError as e:
        _err(f"error: {e}")
        return ExitCode.CONFIG
    from redactd.evaluation import video_labels

    if video_labels.is_video_set(Path(args.dataset)):
        return _eval_videos(args)
    try:
        cfg = _load_config(args.config)
        cfg.profile(args.profile)
        sets = dataset.load(Path(args.dataset), limit=args.limit)
        pipeline = Pipeline.load(cfg, [args.profile])
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    except ModelError as e:
        _err(f"model error: {e}")
        return ExitCode.CONFIG
    except dataset.DatasetError as e:
        _err(f"dataset error: {e}")
        return ExitCode.DATAERR
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
                _err("warning: no picture of the sets could carry text negatives")

        def progress(i: int, done: int, total: int) -> None:
            if done == total or done % 25 == 0:
                _err(f"set {i + 1}/{len(sets)}: {done}/{total} images")

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
        _err(f"model error: {e}")
        return ExitCode.CONFIG
    finally:
        pipeline.close()
    written = report.write(result, out)
    print(report.summary(result))
    if args.show_names:
        # The terminal only: reports and logs never name an image.
        for lset, rep in zip(sets, result.sets, strict=True):
            for w in rep.worst:
                rel = lset.images[w.index].path.relative_to(lset.root)
                _err(f"{rep.name} over-masking #{w.rank} ({w.overmask:.3f}): {rel}")
    _err(f"report written: {', '.join(p.name for p in written)} in the --out folder")
    return ExitCode.OK


def _eval_videos(args: argparse.Namespace) -> int:
    """``redactd eval`` on labelled videos (MOT ``gt.txt`` or COCO-video JSON beside each)."""
    import shutil
    import tempfile

    from redactd.evaluation import video_labels, video_report, video_runner
    from redactd.pipeline.process import Pipeline

    if args.sweep or args.negatives:
        _err("error: --sweep and --negatives apply to image sets only")
        return ExitCode.USAGE
    try:
        cfg = _load_config(args.config)
        cfg.profile(args.profile)
        sets = video_labels.load_sets(Path(args.dataset), limit=args.limit)
        pipeline = Pipeline.load(cfg, [args.profile])
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    except ModelError as e:
        _err(f"model error: {e}")
        return ExitCode.CONFIG
    except video_labels.VideoLabelError as e:
        _err(f"dataset error: {e}")
        return ExitCode.DATAERR
    out = Path(args.out)

    def progress(i: int, done: int, total: int) -> None:
        _err(f"video set {i + 1}/{len(sets)}: {done}/{total} videos")

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
        _err(f"model error: {e}")
        return ExitCode.CONFIG
    finally:
        pipeline.close()
    written = video_report.write(result, out)
    print(video_report.markdown(result).split("\n\nPer video:")[0])
    if args.show_names:
        # The terminal only: reports and logs name sets and videos by index.
        for si, vs in enumerate(sets):
            for vi, v in enumerate(vs.videos):
                _err(f"video {si + 1}.{vi + 1}: {vs.name}/{v.path.name}")
    _err(f"report written: {len(written)} files (video-report.md) in the --out folder")
    return ExitCode.OK


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    """Print the daemon's own snapshot (counts only; the daemon writes it)."""
    from redactd.service.supervisor import STATUS_FILE

    try:
        cfg = _load_config(args.config, log_to_stderr=True)
    except ConfigError as e:
        _print_config_error(e)
        return ExitCode.CONFIG
    path = cfg.service.status_file or cfg.service.work_dir / STATUS_FILE
    try:
        snap = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        _err("no status yet: the daemon has not run with this config")
        return 3  # LSB: program is not running
    except (OSError, ValueError) as e:
        _err(f"cannot read the status file: {type(e).__name__}")
        return 4
    if args.json:
        print(json.dumps(snap, indent=2))
        return ExitCode.OK
    age = time.time() - float(snap.get("time", 0))
    m = snap.get("metrics", {})
    print(snap.get("text", "?"))
    print(f"snapshot age: {age:.0f} s" + ("  (stale: is the daemon running?)" if age > 120 else ""))
    print(f"settling: {snap.get('settling', 0)}, retrying: {snap.get('retrying', 0)}")
    print(f"throughput: {m.get('jobs_per_minute', 0)} jobs/min (last 10 min)")
    masked = m.get("masked", {})
    print(f"masked: {masked.get('face', 0)} faces, {masked.get('plate', 0)} plates")
    last = m.get("last_success")
    if last:
        print(f"last success: {time.time() - float(last):.0f} s ago")
    reasons = m.get("quarantine_reasons", {})
    if reasons:
        print("quarantined by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    for err in m.get("last_errors", [])[-5:]:
        print(f"  {time.time() - float(err['time']):.0f} s ago: {err['reason']}")
    from redactd.cli import versions

    print("installed:")
    print("\n".join("  " + ln for ln in versions.collect(cfg.models.dir).lines()))
    return ExitCode.OK


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from redactd.service import daemon

    path = _config_path(args.config)
    if path is None:
        _err("config error: no config file; give --config or set REDACTD_CONFIG")
        return ExitCode.CONFIG
    return daemon.run(path)


# --------------------------------------------------------------------------- parser


_PROCESS_EPILOG = """\
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


def _versions_lines(config_arg: str | None) -> list[str]:
    from redactd.cli import versions

    try:
        path = _config_path(config_arg)
        cfg = load(path) if path is not None else default_config()
        store = cfg.models.dir
    except (ConfigError, OSError):  # unreadable for this user: the default store
        store = default_config().models.dir
    return versions.collect(store).lines()


class _VersionAction(argparse.Action):
    """``redactd [--config FILE] --version``: what is installed and which models."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print("\n".join(_versions_lines(getattr(namespace, "version_config", None))))
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redactd", description="Anonymize faces and licence plates.")
    p.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        help="print the versions of redactd, OpenVINO, PyAV/FFmpeg, OpenCV and the models",
    )
    p.add_argument("--config", dest="version_config", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--config", help="config file (default: $REDACTD_CONFIG, /etc/redactd/redactd.toml)"
        )
        return sp

    sp = with_config(sub.add_parser("run", help="run the daemon on the configured watched folders"))
    sp.set_defaults(func=cmd_run)

    sp = with_config(sub.add_parser("status", help="show the daemon's queue, counts and errors"))
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = with_config(
        sub.add_parser(
            "process",
            help="anonymize files or folders once",
            epilog=_PROCESS_EPILOG,
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
    sp.set_defaults(func=cmd_process)

    sp = with_config(sub.add_parser("detect", help="print detections of one image"))
    sp.add_argument("image")
    sp.add_argument("--profile", default="default")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_detect)

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
    sp.set_defaults(func=cmd_eval)

    sp = with_config(sub.add_parser("check-config", help="validate the config (exit 0 or 78)"))
    sp.set_defaults(func=cmd_check_config)

    sp = with_config(
        sub.add_parser("models", help="list, fetch, verify or quantize detector models")
    )
    sp.add_argument("action", choices=["list", "fetch", "verify", "quantize", "validate"])
    sp.add_argument("names", nargs="*", help="model names (default: the default models)")
    sp.add_argument("--all", action="store_true", help="every model in the manifest")
    sp.add_argument("--from", dest="from_dir", metavar="DIR", help="local mirror directory")
    sp.add_argument("--store", metavar="DIR", help="model store (default: the config's models.dir)")
    q = sp.add_argument_group("quantize (INT8 with NNCF; needs 'pip install redactd[quantize]')")
    q.add_argument(
        "--calibration", metavar="DIR", help="folder of your images and/or videos to calibrate on"
    )
    q.add_argument("--samples", type=int, default=300, help="model inputs to calibrate on")
    q.add_argument("--seed", type=int, default=0, help="seed of the sample choice")
    q.add_argument(
        "--profile", default="default", help="profile whose tiling cuts the inputs"
    )
    q.add_argument("--preset", choices=["performance", "mixed"], default="performance")
    q.add_argument(
        "--heads", choices=["float", "int8"], default="float", help="quantize the output heads?"
    )
    v = sp.add_argument_group(
        "validate (a candidate profile against a baseline on your labelled data; "
        "docs/VALIDATION.md)"
    )
    v.add_argument("--against", metavar="PROFILE", help="the baseline profile")
    v.add_argument("--data", metavar="DIR", help="labelled video or image sets")
    v.add_argument("--operator", metavar="NAME", help="who signs the record off")
    v.add_argument("--comment", metavar="TEXT", help="why (kept in the record)")
    v.add_argument("--limit", type=int, metavar="N", help="at most N videos/images per set")
    sp.set_defaults(func=cmd_models)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
