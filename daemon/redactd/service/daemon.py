"""`redactd run`: check the set-up, recover, load models, then serve.

Refuses to start (exit 78, ExitCode.CONFIG, so systemd's
``RestartPreventExitStatus=78`` does not loop) on: an invalid config, a
world-writable config file, no ``[[watch]]`` entry, overlapping folders, an
inbound folder that is missing or not readable and writable (the claim is a
rename), an outbound/quarantine folder that cannot be created or written, a
work area held by another redactd process, a model of a profile with
``require_validation`` without a passing validation record (docs/VALIDATION.md),
and missing or unverified models.

Order: config -> folders -> work area lock -> recovery of unfinished jobs ->
stray temporaries -> models (one pipeline per worker: detectors are not
re-entrant) -> watchers and workers -> READY=1.

Exit codes: 0 after SIGTERM/SIGINT, 78 as above (also when a model fails
while running), 75 when a job hung past ``service.job_timeout_seconds`` and
70 when the main loop itself failed (both: the service manager restarts the
process, whose recovery picks up every claimed job; see ``supervisor``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from redactd import __version__
from redactd.core import config as config_mod
from redactd.core import log
from redactd.core.config import Config
from redactd.core.errors import ConfigError, ConfigErrors, ExitCode, ModelError
from redactd.core.fsutil import errname
from redactd.service.notify import Notifier
from redactd.service.spool.errors import SpoolBusy
from redactd.service.spool.job import Job
from redactd.service.spool.workarea import Spool
from redactd.service.supervisor import Supervisor, make_target

if TYPE_CHECKING:
    from redactd.pipeline.job import JobRunner


def _config_errors(logger: Any, e: ConfigError) -> int:
    errors = e.errors if isinstance(e, ConfigErrors) else [e]
    for one in errors:
        # Config keys and reasons name the operator's settings, not inputs.
        logger.error("config.invalid", key=one.key, reason=one.reason)
    return ExitCode.CONFIG


def check_folders(cfg: Config) -> list[ConfigError]:
    """The folder problems that make the service refuse to start."""
    problems = list(config_mod.check_folders(cfg))
    if not cfg.watch:
        problems.append(ConfigError("watch", "no [[watch]] folder configured"))
    for i, w in enumerate(cfg.watch):
        key = f"watch[{i}]"
        if not w.inbound.is_dir():
            problems.append(ConfigError(f"{key}.inbound", "is missing or not a folder"))
        elif not os.access(w.inbound, os.R_OK | os.W_OK | os.X_OK):
            problems.append(
                ConfigError(f"{key}.inbound", "must be readable and writable (files are moved out)")
            )
        for role in ("outbound", "quarantine"):
            folder: Path = getattr(w, role)
            try:
                folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            except OSError as e:
                problems.append(ConfigError(f"{key}.{role}", f"cannot be created ({errname(e)})"))
                continue
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                problems.append(ConfigError(f"{key}.{role}", "is not a writable folder"))
    return problems


def check_validation(cfg: Config) -> list[ConfigError]:
    """Models of profiles with ``require_validation`` that have no passing record."""
    from redactd.models import validation
    from redactd.stages.detect import registry  # the detector table; models are not loaded

    problems: list[ConfigError] = []
    wanting = [n for n, p in sorted(cfg.profiles.items()) if p.require_validation]
    if not wanting:
        return problems
    try:
        key = validation.read_key(cfg.validation.hmac_key_file)
    except (OSError, ValueError) as e:
        reason = errname(e) if isinstance(e, OSError) else str(e)
        return [ConfigError("validation.hmac_key_file", f"unusable ({reason})")]
    records = validation.load_records(cfg.validation.dir)
    for name in wanting:
        try:
            specs = registry.profile_models(cfg, name)
        except ModelError as e:
            problems.append(ConfigError(f"profiles.{name}.require_validation", str(e)))
            continue
        for spec in specs:
            v = validation.verdict(spec.name, validation.model_digest(spec), records, key)
            if not v.passed:
                problems.append(
                    ConfigError(
                        f"profiles.{name}.require_validation",
                        f"{v.message()}; run 'redactd models validate'",
                    )
                )
    return problems


def _describe(info: Any) -> Any:
    if dataclasses.is_dataclass(info) and not isinstance(info, type):
        return {
            k: [str(x) for x in v] if isinstance(v, (tuple, list)) else str(v)
            for k, v in dataclasses.asdict(info).items()
        }
    return str(info)


def operator_vocabulary(cfg: Config) -> set[str]:
    """Names redactd knows without looking at any input: the manifest's
    models and their files, the derived models, and the config's profiles
    and detectors. ``log.scrub`` keeps them, so a start-up error says which
    model is missing and how to fetch it."""
    from redactd.models import derived
    from redactd.models import manifest as manifest_mod

    words: set[str] = set(cfg.profiles) | set(derived.RECIPES)
    for prof in cfg.profiles.values():
        words.update(prof.face.detectors)
        words.update(prof.plate.detectors)
    try:
        for name, spec in manifest_mod.load().models.items():
            words.add(name)
            words.update(spec.files)
    except ModelError:
        pass  # the manifest's own error is reported when the models load
    return words


def _load_runners(cfg: Config) -> list[JobRunner]:
    from redactd.pipeline.job import JobRunner  # models are heavy: import when needed
    from redactd.pipeline.process import Pipeline

    # One pipeline shared by every worker (it is thread-safe): one copy of
    # each compiled model instead of one per worker (measured with 2 workers:
    # peak RSS 2.5 GB instead of 3.6-4 GB), and no workers x all-cores
    # oversubscription. The workers' inferences take turns on LATENCY
    # networks: the service does not get the "auto" hint's THROUGHPUT
    # streams, which measured slower on the multi-pass default profile and
    # grew peak memory to 4 GB (benchmarks/RESULTS.md); an operator may still
    # set performance_hint = "THROUGHPUT".
    pipeline = Pipeline.load(cfg)
    log.get("redactd.service").info(
        "service.models", models=[_describe(m) for m in pipeline.describe()]
    )
    return [JobRunner(pipeline)] * cfg.service.workers


def run(config_path: Path) -> int:
    """Run the daemon until a signal stops it; returns the exit code."""
    log.configure()
    logger = log.get("redactd.service")
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as e:
        return _config_errors(logger, e)
    try:
        if config_mod.world_writable(config_path):
            return _config_errors(
                logger, ConfigError("", "the config file is world-writable; refusing to use it")
            )
    except OSError as e:
        logger.error("config.invalid", key="", reason=f"cannot stat the config file ({errname(e)})")
        return ExitCode.CONFIG
    log.configure(cfg.logging.level, cfg.logging.format)
    logger = log.get("redactd.service")
    logger.info("service.starting", version=__version__, watches=len(cfg.watch), pid=os.getpid())

    problems = check_folders(cfg)
    if problems:
        return _config_errors(logger, ConfigErrors(problems))
    unvalidated = check_validation(cfg)
    if unvalidated:
        return _config_errors(logger, ConfigErrors(unvalidated))
    try:
        spool = Spool(cfg.service.work_dir, cfg.service.quarantine_file_mode)
        spool.lock()
    except SpoolBusy as e:
        return _config_errors(logger, ConfigError("service.work_dir", str(e)))
    except OSError as e:
        return _config_errors(logger, ConfigError("service.work_dir", f"unusable ({errname(e)})"))

    try:
        return _serve(cfg, spool, logger)
    finally:
        spool.unlock()


def _recover(cfg: Config, spool: Spool, logger: Any) -> list[Job]:
    """The unfinished jobs of the work area, retargeted; stray temporaries removed."""
    recovered = spool.recover()
    inbound_of = {w.inbound: i for i, w in enumerate(cfg.watch)}
    for job in recovered:
        # Results go where the current config says for that inbound folder;
        # a job of a folder no longer watched keeps its recorded targets.
        i = inbound_of.get(job.target.inbound)
        if i is not None:
            job.target = make_target(cfg, i)
        logger.info("job.recovered", job=job.id, state=job.state, attempts=job.attempts, watch=i)
    strays = spool.sweep_strays([f for w in cfg.watch for f in (w.outbound, w.quarantine)])
    if strays:
        logger.info("service.strays_removed", files=strays)
    return recovered


def _serve(cfg: Config, spool: Spool, logger: Any) -> int:
    recovered = _recover(cfg, spool, logger)
    log.know(operator_vocabulary(cfg))
    try:
        runners = _load_runners(cfg)
    except ModelError as e:
        # redactd's own message (model name, the command that fixes it); a
        # third-party part of it (OpenVINO's text) still loses its paths.
        logger.error("service.model_error", error=log.scrub(str(e)))
        return ExitCode.CONFIG
    except ConfigError as e:
        return _config_errors(logger, e)
    notifier = Notifier()
    sup = Supervisor(cfg, runners, spool, notifier, recovered)
    code = _supervise(sup, notifier, logger)
    if sup.workers_alive:
        # A worker is stuck in native code; its job stays claimed for the next
        # start. Leave without waiting for it (interpreter shutdown would).
        sys.stdout.flush()
        sys.stderr.flush()
        spool.unlock()
        os._exit(code)
    return code


def _supervise(sup: Supervisor, notifier: Notifier, logger: Any) -> int:
    """Run the loop with our signal handlers installed; its exit code."""

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        sup.request_stop()

    def on_hup(signum: int, _frame: FrameType | None) -> None:
        sup.request_reload()

    handlers: tuple[tuple[signal.Signals, Any], ...] = (
        (signal.SIGTERM, on_stop),
        (signal.SIGINT, on_stop),
        (signal.SIGHUP, on_hup),
        # The watcher's lease probe (stability.writer_active) must not die of a
        # lease break: SIGIO's default action terminates the process.
        (signal.SIGIO, signal.SIG_IGN),
    )
    old = {s: signal.signal(s, h) for s, h in handlers}
    try:
        return sup.run()
    except Exception as e:
        # Not a job's error (those have their catch-all): the loop itself broke.
        # Say what, without paths, and exit non-zero so the manager restarts us.
        tb = log.scrub("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        logger.error(
            "service.crashed", error=type(e).__name__, message=log.scrub(str(e)), traceback=tb
        )
        sup.request_stop()
        sup.abandon()
        return ExitCode.SOFTWARE
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        notifier.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m redactd.service.daemon CONFIG\n")
        return ExitCode.CONFIG
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
