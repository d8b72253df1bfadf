"""The main loop: watchers feed a queue of paths, workers run jobs.

Memory stays bounded by the number of waiting *paths* (a candidate is a
path, a relative name and a few integers; an image is only ever decoded by
the worker running it), so 10,000 waiting files cost a few megabytes.

What happens to a job, by outcome:

* success -> delivered, ``job.done``;
* ``PermanentInputError`` -> quarantined with its reason code;
* ``TransientError`` -> retried with exponential back-off, quarantined only
  after ``service.max_attempts`` (with the last reason code when it is a
  known one, e.g. ``unreadable``, else ``too_many_attempts``);
* disk full (``TransientError("disk_full")``/ENOSPC) or free space in the
  outbound folder below ``service.min_free_bytes`` -> the outbound folder
  is *paused*: its jobs wait (not counted as attempts), ``STATUS=`` and the
  status file say so, and work resumes when space returns;
* ``ModelError`` -> the job is put back and the service stops with 78
  (a broken model must not be retried file after file);
* anything else is a bug: the one per-job catch-all logs it (scrubbed) and
  quarantines the job as ``internal_error``; the daemon keeps running.

Sidecars: a job claimed with its sidecar runs with its instructions; an
invalid sidecar (``invalid_sidecar``, ``instruction_not_allowed``) or one
for a profile whose instructions are off (``instructions_disabled``) sends
the input and its sidecar to quarantine together. A sidecar claimed alone
(the watcher gave up waiting for its input) is quarantined as
``sidecar_without_input``.

Job records: for a profile with ``record.enabled`` the input's sha256 is
taken once before processing, the output's from the written temporary; the
record is staged in the outbound folder and published before the output
(``spool``). The ``job.done`` event carries the same fields
(``JobRecord.log_fields``), minus the input's sha256.

A job that reports no progress for ``service.job_timeout_seconds`` (from
its start or its last progress report: a long video that keeps reporting
frames is never hung) cannot be interrupted (Python threads cannot be
killed and the detectors run native code), so the loop marks it
``timed_out`` in its manifest, stops sending ``WATCHDOG=1`` and shuts down
with exit code 75 (ExitCode.TEMPFAIL); systemd's ``Restart=on-failure`` starts a
fresh process, whose recovery quarantines the job with ``job_timeout``.

Signals (handlers only set flags; the loop acts): SIGTERM/SIGINT stop taking
work, let running jobs finish within ``service.stop_timeout_seconds`` and
exit 0; a job still running then stays claimed in the work area and is run
again at the next start. SIGHUP reloads the config: watched folders, ignore
globs, timings and logging take effect at once; changes to profiles, models,
runtime, limits, workers or the work area need a restart (logged as
``config.reload_needs_restart``).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import json
import os
import random
import stat
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from redactd.core import config as config_mod
from redactd.core import log
from redactd.core.config import Config
from redactd.core.errors import (
    REASONS,
    ConfigError,
    ExitCode,
    ModelError,
    PermanentInputError,
    TransientError,
)
from redactd.core.fsutil import errname
from redactd.core.types import JobResult
from redactd.pipeline.record import FileDigest, JobRecord
from redactd.service.metrics import Metrics
from redactd.service.names import is_sidecar_name
from redactd.service.notify import Notifier
from redactd.service.spool import InputChanged, Job, NotMovable, Spool, Target, free_bytes
from redactd.service.stability import writer_active
from redactd.service.watch import Candidate, FolderWatcher
from redactd.stages.instructions.model import Instructions
from redactd.stages.instructions.parse import load_instructions, sidecar_path, sidecar_source

if TYPE_CHECKING:  # the registry pulls in OpenVINO: only the daemon's start loads it
    from redactd.pipeline.job import JobRunner


_TICK = 0.25
_SPACE_CHECK = 1.0
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class _Work:
    """A candidate from a watcher, with the watcher that must release it."""

    cand: Candidate
    watcher: FolderWatcher
    target: Target


@dataclass
class _Pause:
    folder: Path
    needed: int
    since: float
    parked: list[Job | _Work] = field(default_factory=list)


@dataclass
class _Active:
    job: Job
    started: float
    frames_done: int = 0
    frames_total: int | None = None
    #: When the job last reported progress (a video's frames): a job that
    #: makes progress is not hung, however long it runs.
    progressed: float = 0.0


@dataclass(frozen=True)
class Status:
    """A snapshot for STATUS= and the status file (counts only)."""

    state: str
    queued: int
    settling: int
    active: int
    retrying: int
    done: int
    quarantined: int
    paused_folders: int
    #: Per active video job: frames done and total (None when unknown).
    progress: tuple[tuple[int, int | None], ...] = ()

    def text(self) -> str:
        s = (
            f"{self.state}: {self.queued} queued, {self.active} active, "
            f"{self.done} done, {self.quarantined} quarantined"
        )
        if self.retrying:
            s += f", {self.retrying} retrying"
        if self.paused_folders:
            s += f"; paused: {self.paused_folders} outbound folder(s) full"
        for done, total in self.progress:
            s += f"; video {done}/{total} frames" if total else f"; video {done} frames"
        return s


#: The status snapshot in the work area when ``service.status_file`` is unset.
STATUS_FILE = "status.json"


class _DiskFull(Exception):
    """Internal signal: the outbound filesystem is out of space."""


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, TransientError):
        cause = e.__cause__
        return e.reason in ("disk_full", "no_space") or (
            isinstance(cause, OSError) and cause.errno in _DISK_FULL_ERRNOS
        )
    return isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS


def make_target(cfg: Config, index: int) -> Target:
    w = cfg.watch[index]
    return Target(
        inbound=w.inbound,
        outbound=w.outbound,
        quarantine=w.quarantine,
        profile=w.profile,
        file_mode=cfg.profile(w.profile).output.file_mode,
    )


class Supervisor:
    """Owns the queue, the worker threads, retries, pauses and the main loop."""

    def __init__(
        self,
        cfg: Config,
        runners: list[JobRunner],
        spool: Spool,
        notifier: Notifier,
        recovered: list[Job] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.runners = runners
        self.spool = spool
        self.notifier = notifier
        self.clock = clock
        self.log = log.get("redactd.service")
        self.watchers: list[FolderWatcher] = []
        self._cond = threading.Condition()
        self._jobs: deque[Job] = deque(recovered or [])
        self._cands: deque[_Work] = deque()
        self._delayed: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._paused: dict[int, _Pause] = {}
        self._active: dict[int, _Active] = {}
        self._stopping = threading.Event()
        # Plain flags, not Events: signal handlers run in the main thread
        # between bytecodes, possibly while the main thread holds an Event's
        # internal lock (Event.set() from a handler then deadlocks).
        self._stop_requested = False
        self._reload_requested = False
        self._exit_code: int = ExitCode.OK
        self._healthy = True
        self._threads: list[threading.Thread] = []
        self.done = 0
        self.quarantined = 0
        self.retries = 0
        self.metrics = Metrics()
        self._last_status: Status | None = None
        self._last_status_write = 0.0
        self._last_notify = float("-inf")
        self._status_lock = threading.Lock()

    # ------------------------------------------------------------------ control

    def request_stop(self, code: int | None = None) -> None:
        """Ask the loop to stop (signal-handler safe: only sets flags)."""
        if code is not None and self._exit_code == ExitCode.OK:
            self._exit_code = code
        self._stop_requested = True

    def request_reload(self) -> None:
        """Ask the loop to reload the config (signal-handler safe)."""
        self._reload_requested = True

    def abandon(self) -> None:
        """After a crash of the loop: make workers stop taking work (jobs in
        hand stay claimed in the work area for the next start)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for w in self.watchers:
            with contextlib.suppress(Exception):
                w.stop()

    @property
    def workers_alive(self) -> int:
        return sum(1 for t in self._threads if t.is_alive())

    # ------------------------------------------------------------------ main loop

    def start(self) -> None:
        """Start watchers and workers (the first tick scans every inbound)."""
        self.watchers = self._make_watchers(self.cfg)
        for w in self.watchers:
            w.start()
        for i, p in enumerate(self.runners):
            t = threading.Thread(
                target=self._worker, args=(p,), name=f"redactd-worker-{i}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def _make_watchers(self, cfg: Config) -> list[FolderWatcher]:
        return [
            FolderWatcher(
                i,
                w,
                cfg.service.settle_seconds,
                cfg.service.rescan_seconds,
                empty_grace_seconds=cfg.service.empty_file_grace_seconds,
            )
            for i, w in enumerate(cfg.watch)
        ]

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.start()
        now = self.clock()
        self.tick(now)  # the start-up scan, before READY
        self.notifier.ready(self.status().text())
        self.log.info(
            "service.ready",
            watches=len(self.watchers),
            modes=[w.mode for w in self.watchers],
            workers=len(self.runners),
            recovered=len(self._jobs),
        )
        next_ping = now
        next_space = now
        while not self._stop_requested:
            now = self.clock()
            self.tick(now)
            if now >= next_space:
                next_space = now + _SPACE_CHECK
                self._check_space(now)
            self._check_timeouts(now)
            self._publish_status(now)
            interval = self.notifier.watchdog_interval
            if interval is not None and self._healthy and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + interval
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            if not self._stop_requested:
                time.sleep(_TICK)
        return self.shutdown()

    def tick(self, now: float) -> None:
        """One step of the loop: watchers, due retries."""
        fresh: list[_Work] = []
        for w in self.watchers:
            for cand in w.tick(now):
                fresh.append(_Work(cand, w, make_target(self.cfg, w.index)))
        with self._cond:
            self._cands.extend(fresh)
            while self._delayed and self._delayed[0][0] <= now:
                _, _, job = heapq.heappop(self._delayed)
                self._jobs.append(job)
            if fresh or self._jobs:
                self._cond.notify_all()

    def shutdown(self) -> int:
        """Stop taking work, let running jobs finish within the stop timeout."""
        self.log.info("service.stopping", active=len(self._active))
        self.notifier.stopping(f"stopping: {len(self._active)} active")
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for w in self.watchers:
            w.stop()
        deadline = time.monotonic() + self.cfg.service.stop_timeout_seconds
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        left = [a.job.id for a in list(self._active.values())]
        if left:
            # Still claimed in the work area: the next start runs them again.
            self.log.warning("service.stop_timeout", jobs=len(left), requeued=left)
        else:
            pipelines = {id(r.pipeline): r.pipeline for r in self.runners}  # workers share one
            for p in pipelines.values():
                with contextlib.suppress(Exception):
                    p.close()
        self._publish_status(self.clock(), force=True, state="stopped")
        self.log.info(
            "service.stopped", done=self.done, quarantined=self.quarantined, code=self._exit_code
        )
        return self._exit_code

    # ------------------------------------------------------------------ status

    def status(self, state: str | None = None) -> Status:
        with self._cond:
            queued = len(self._jobs) + len(self._cands)
            queued += sum(len(p.parked) for p in self._paused.values())
            retrying = len(self._delayed)
            paused = len(self._paused)
            active = len(self._active)
            progress = tuple(
                (a.frames_done, a.frames_total) for a in self._active.values() if a.frames_done
            )
        if state is None:
            state = "stopping" if self._stopping.is_set() else ("paused" if paused else "running")
        return Status(
            state=state,
            queued=queued,
            settling=sum(w.pending() for w in self.watchers),
            active=active,
            retrying=retrying,
            done=self.done,
            quarantined=self.quarantined,
            paused_folders=paused,
            progress=progress,
        )

    def _progress_of(self, worker: int) -> Callable[[int, int | None], None]:
        """A progress callback for the job this worker runs (shown in STATUS=)."""

        def progress(done: int, total: int | None) -> None:
            a = self._active.get(worker)
            if a is not None:
                if done != a.frames_done:
                    a.progressed = self.clock()
                a.frames_done, a.frames_total = done, total

        return progress

    def _publish_status(self, now: float, force: bool = False, state: str | None = None) -> None:
        with self._status_lock:
            self._publish_status_locked(now, force, state)

    def _publish_status_locked(self, now: float, force: bool, state: str | None) -> None:
        st = self.status(state)
        # STATUS= at most once a second
        if (force or now - self._last_notify >= 1.0) and self.notifier.status(st.text()):
            self._last_notify = now
        if st == self._last_status and not force and now - self._last_status_write < 10.0:
            return
        self._last_status = st
        self._last_status_write = now
        svc = self.cfg.service
        status_file = svc.status_file or svc.work_dir / STATUS_FILE
        body = {
            "time": time.time(),
            "text": st.text(),
            **st.__dict__,
            "metrics": self.metrics.snapshot(),
        }
        self._write_small(status_file, json.dumps(body) + "\n")
        if svc.metrics_file is not None:
            self._write_small(svc.metrics_file, self._metrics(st))

    def _metrics(self, st: Status) -> str:
        return self.metrics.render(
            {
                "redactd_queue_depth": ("Files waiting (claimed or ready).", st.queued),
                "redactd_settling": ("Files seen, waiting to be complete.", st.settling),
                "redactd_active_jobs": ("Jobs being processed.", st.active),
                "redactd_retrying": ("Jobs waiting for a retry.", st.retrying),
                "redactd_paused": ("Outbound folders paused for lack of space.", st.paused_folders),
            }
        )

    def _write_small(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError as e:
            self.log.warning("service.status_write_failed", errno=errname(e))

    # ------------------------------------------------------------------ space

    def _pause(self, folder: Path, needed: int, item: Job | _Work) -> None:
        dev = folder.stat().st_dev
        with self._cond:
            p = self._paused.get(dev)
            if p is None:
                p = self._paused[dev] = _Pause(folder, needed, self.clock())
                new = True
            else:
                p.needed = max(p.needed, needed)
                new = False
            p.parked.append(item)
        if new:
            try:
                free = free_bytes(folder)
            except OSError:
                free = -1
            reason = "work_area_full" if folder == self.spool.dir else "outbound_full"
            self.log.warning("service.paused", reason=reason, free_bytes=free, needed_bytes=needed)
            self._publish_status(self.clock(), force=True)

    def _paused_dev(self, folder: Path) -> int | None:
        try:
            dev = folder.stat().st_dev
        except OSError:
            return None
        with self._cond:
            return dev if dev in self._paused else None

    def _check_space(self, now: float) -> None:
        with self._cond:
            paused = list(self._paused.items())
        for dev, p in paused:
            try:
                free = free_bytes(p.folder)
            except OSError:
                continue
            if free < p.needed:
                continue
            with self._cond:
                self._paused.pop(dev, None)
                for item in p.parked:
                    if isinstance(item, Job):
                        self._jobs.append(item)
                    else:
                        self._cands.append(item)
                self._cond.notify_all()
            self.log.info(
                "service.resumed",
                free_bytes=free,
                paused_s=round(now - p.since, 1),
                requeued=len(p.parked),
            )

    # ------------------------------------------------------------------ timeouts

    def _check_timeouts(self, now: float) -> None:
        limit = self.cfg.service.job_timeout_seconds
        for a in list(self._active.values()):
            # Measured from the last progress: a long video that keeps
            # reporting frames is working, not hung.
            if now - max(a.started, a.progressed) <= limit or a.job.timed_out:
                continue
            a.job.timed_out = True
            with contextlib.suppress(OSError):
                self.spool.save(a.job)
            self._healthy = False  # no more WATCHDOG=1: a hung pipeline gets restarted
            self.log.error("job.timeout", job=a.job.id, running_s=round(now - a.started, 1))
            self.request_stop(ExitCode.TEMPFAIL)

    # ------------------------------------------------------------------ reload

    def reload(self) -> None:
        """Apply a changed config where that is safe; see the module docstring."""
        src = self.cfg.source
        if src is None:
            return
        try:
            new = config_mod.load(src)
            if config_mod.world_writable(src):
                raise ConfigError("", "the config file is world-writable")
        except ConfigError as e:
            self.log.error("config.reload_failed", error=log.scrub(str(e)))
            return
        except OSError as e:
            self.log.error("config.reload_failed", errno=errname(e))
            return
        old = self.cfg
        needs: list[str] = []
        for key in ("profiles", "runtime", "models", "limits"):
            if getattr(new, key) != getattr(old, key):
                needs.append(key)
        for key in ("workers", "work_dir"):
            if getattr(new.service, key) != getattr(old.service, key):
                needs.append(f"service.{key}")
        if not {w.profile for w in new.watch} <= {w.profile for w in old.watch}:
            needs.append("watch.profile")
        if needs:
            self.log.warning("config.reload_needs_restart", keys=needs)
            return
        for wc in new.watch:
            for folder in (wc.outbound, wc.quarantine):
                folder.mkdir(mode=0o750, parents=True, exist_ok=True)
        old_watchers = self.watchers
        self.cfg = new
        log.configure(new.logging.level, new.logging.format)
        self.watchers = self._make_watchers(new)
        for w in old_watchers:
            w.stop()  # candidates already queued still release to their old watcher
        for w in self.watchers:
            w.start()
        self.log.info("config.reloaded", watches=len(self.watchers))

    # ------------------------------------------------------------------ workers

    def _take(self) -> Job | _Work | None:
        with self._cond:
            while not self._stopping.is_set():
                if self._jobs:
                    return self._jobs.popleft()
                if self._cands:
                    return self._cands.popleft()
                self._cond.wait(0.5)
        return None

    def _worker(self, runner: JobRunner) -> None:
        while not self._stopping.is_set():
            item = self._take()
            if item is None:
                return
            self._handle(item, runner)

    def _handle(self, item: Job | _Work, runner: JobRunner) -> None:
        job: Job | None = item if isinstance(item, Job) else None
        me = threading.get_ident()
        try:
            if isinstance(item, _Work):
                job = self._claim(item)
                if job is None:
                    return
            assert job is not None
            with structlog.contextvars.bound_contextvars(job=job.id):
                self._active[me] = _Active(job, self.clock())
                self._advance(job, runner)
        except Exception as e:
            # The one per-job catch-all: a bug must cost one file, not the service.
            tb = log.scrub("".join(traceback.format_exception(type(e), e, e.__traceback__)))
            self.log.error(
                "job.internal_error",
                job=job.id if job else None,
                error=type(e).__name__,
                message=log.scrub(str(e))[:300],
                traceback=tb[-4000:],
            )
            if job is not None:
                self._quarantine(job, "internal_error", "unknown", type(e).__name__)
        finally:
            self._active.pop(me, None)

    # -- claim --------------------------------------------------------------------

    def _special_movable(self, cand: Candidate, target: Target) -> bool:
        try:
            qdev = target.quarantine.stat().st_dev
        except OSError:
            return False
        return cand.dev == self.spool.dev == qdev

    def _claim(self, work: _Work) -> Job | None:
        cand, target = work.cand, work.target
        refused: tuple[int, int] | None = None
        try:
            if self._paused_dev(target.outbound) is not None:
                self._pause(target.outbound, 0, work)
                return None  # parked with the watcher's in-flight mark kept
            if not cand.regular and not self._special_movable(cand, target):
                raise NotMovable()
            sidecar = cand.sidecar if cand.orphan else self._late_sidecar(cand)
            expect = (cand.dev, cand.ino, cand.size, cand.mtime_ns)
            job = self.spool.claim(cand.rel, target, cand.regular, sidecar, expect)
        except InputChanged:
            # Not the file that settled (grown, truncated, replaced, touched),
            # or a sidecar joined it just now: it settles again.
            self.log.info("job.input_changed", stage="claim", size=cand.size)
            work.watcher.release(cand.key, retrack=True)
            return None
        except NotMovable:
            # Never read, never followed; it stays where it is, said once.
            refused = (cand.dev, cand.ino)
            self.log.warning(
                "job.refused", job=log.new_job_id(), reason="not_regular_file", action="left"
            )
            work.watcher.release(cand.key, refused)
            return None
        except OSError as e:
            # The input is untouched in inbound; the next rescan offers it again.
            self.log.warning("job.claim_failed", errno=errname(e), size=cand.size)
            work.watcher.release(cand.key)
            return None
        work.watcher.release(cand.key)
        if job is None:
            return None  # taken by another instance or removed: not ours
        self.log.info(
            "job.claimed",
            job=job.id,
            watch=cand.watch,
            size=job.size,
            regular=cand.regular,
            depth=len(cand.rel) - 1,
            sidecar=job.sidecar is not None,
            sidecar_alone=cand.orphan,
        )
        return job

    def _late_sidecar(self, cand: Candidate) -> str | None:
        """The input's sidecar as it is now: one that arrived while the input
        waited in the queue is claimed with it. ``InputChanged`` when it is
        too young (or open for writing) to be complete."""
        if cand.sidecar is not None:
            return cand.sidecar
        side = sidecar_path(cand.path)
        try:
            st = os.lstat(side)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return side.name  # claimed as named; the job fails closed as invalid_sidecar
        # ctime too: a copy that kept an old mtime (cp -p, rsync) is still new.
        changed = max(st.st_mtime, st.st_ctime)
        young = time.time() - changed < self.cfg.service.settle_seconds
        if young or writer_active(side):
            raise InputChanged()
        return side.name

    # -- one job --------------------------------------------------------------------

    def _advance(self, job: Job, runner: JobRunner) -> None:
        # A claim cut short (crash, full disk mid copy): finish it or put the
        # original back in inbound. Never left hidden, never looped.
        if job.state == "claiming" and not self._resume_claim(job):
            return
        if job.timed_out:
            self._quarantine(job, "job_timeout", "process")
            return
        if job.state == "quarantining":
            self._quarantine(job, "", "")
            return
        if job.state == "delivering":
            self._deliver(job, None, 0.0)
            return
        if is_sidecar_name(job.name):
            # A sidecar claimed alone: its input never came. Never media.
            self._quarantine(job, "sidecar_without_input", "sidecar")
            return
        svc = self.cfg.service
        if job.attempts >= svc.max_attempts:
            # Every earlier attempt ended without an answer (the process died).
            self._quarantine(job, "too_many_attempts", "process", last_error="interrupted")
            return
        outbound = job.target.outbound
        if self._paused_dev(outbound) is not None:
            self._pause(outbound, 0, job)
            return
        try:
            if free_bytes(outbound) < svc.min_free_bytes:
                self._pause(outbound, svc.min_free_bytes, job)
                return
        except OSError as e:
            self._transient(job, f"outbound_{errname(e).lower()}", "deliver")
            return
        t0 = time.perf_counter()
        counted = False  # whether this attempt is counted yet
        try:
            try:
                if self.spool.input_changed(job):
                    raise InputChanged()
                st = self.spool.preflight(job, self.cfg.limits.max_file_bytes)
            except (TransientError, PermanentInputError):
                # It was looked at: that is an attempt (and an unreadable file
                # must run out of attempts).
                with contextlib.suppress(OSError):
                    self.spool.count_attempt(job)
                raise
            instructions = self._instructions(job)
            try:
                # Profile resolved and file sniffed once, for the whole job.
                plan = runner.plan(job.src, job.name, job.target.profile, instructions)
            except (TransientError, PermanentInputError):
                with contextlib.suppress(OSError):
                    self.spool.count_attempt(job)  # as if the pipeline had refused it
                raise
            # The record is off by default: hashing reads input and output once more.
            digest_in = (
                FileDigest(self.spool.input_sha256(job), st.st_size)
                if plan.profile.record.enabled
                else None
            )
            tmp = self.spool.begin_attempt(job, plan.output_name)
            counted = True
            try:
                done = runner.run(
                    job.id,
                    plan,
                    job.src,
                    tmp,
                    self._progress_of(threading.get_ident()),
                    input_digest=digest_in,
                )
            except OSError as e:
                if e.errno in _DISK_FULL_ERRNOS:
                    raise _DiskFull() from e
                raise  # any other raw OSError from the pipeline is a bug: catch-all
            result, record = done.result, done.record
            if self.spool.input_changed(job):
                # Written to after the claim (an open handle on a share): this
                # output is of content that was not final. Never published.
                raise InputChanged()
            if plan.profile.record.enabled:
                self.spool.stage_record(job, record.to_bytes())
        except InputChanged:
            self._resettle(job, counted)
            return
        except PermanentInputError as e:
            if self._changed_quiet(job):
                # The verdict was about content that is still changing.
                self._resettle(job)
                return
            self._quarantine(job, e.reason, e.stage or "process", e.detail)
            return
        except (TransientError, _DiskFull) as e:
            if isinstance(e, _DiskFull) or _is_disk_full(e):
                self._disk_full(job)
                return
            assert isinstance(e, TransientError)
            self._transient(job, e.reason, "process")
            return
        except ModelError as e:
            self.log.error("service.model_failed", error=log.scrub(str(e))[:300])
            self.spool.undo_attempt(job)
            with self._cond:
                self._jobs.appendleft(job)
            self.request_stop(ExitCode.CONFIG)
            return
        except OSError as e:  # from our own preflight / work-area steps
            if e.errno in _DISK_FULL_ERRNOS:
                self._disk_full(job, work_area=self._work_full(), counted=counted)
            else:
                # Every failure counts (a missing or unreadable original must
                # run out of attempts and be dealt with, never loop).
                if not counted:
                    with contextlib.suppress(OSError):
                        self.spool.count_attempt(job)
                self._transient(job, errname(e).lower(), "spool")
            return
        self._deliver(job, result, t0, record)

    def _changed_quiet(self, job: Job) -> bool:
        try:
            return self.spool.input_changed(job)
        except OSError:
            return False

    def _resettle(self, job: Job, counted: bool = True) -> None:
        """The claimed original changed since its snapshot: drop this attempt
        (not counted: the input was not final) and look again after a quiet
        ``settle_seconds``; it is processed once it stopped changing."""
        with contextlib.suppress(OSError):
            if counted:
                self.spool.undo_attempt(job)
            else:
                self.spool.discard_output(job)
        self.log.info("job.input_changed", job=job.id, stage="process", size=job.size)
        if job.claim is not None:
            # Across filesystems the work area holds a copy of what it was:
            # it is dropped and copied again once the original is quiet
            # (state ``claiming``; still changing then: put back in inbound).
            try:
                self.spool.recopy(job)
            except OSError as e:
                self.log.warning("job.recopy_failed", job=job.id, errno=errname(e))
        self._later(job, max(self.cfg.service.settle_seconds, _TICK))

    def _resume_claim(self, job: Job) -> bool:
        """True when the job holds its input; else it was put back or is
        retried later (each failure counted, so it cannot loop forever)."""
        try:
            return self.spool.resume_claim(job)
        except OSError as e:
            job.attempts += 1
            with contextlib.suppress(OSError):
                self.spool.save(job)
            if job.attempts >= self.cfg.service.max_attempts:
                self.log.error("job.stuck", job=job.id, errno=errname(e), stage="claim")
                return False  # left in the work area, recorded: the next start tries again
            self.log.warning(
                "job.retry",
                job=job.id,
                reason=errname(e).lower(),
                stage="claim",
                attempts=job.attempts,
            )
            self._later(job, min(self.cfg.service.retry_max_seconds, 2.0**job.attempts))
            return False

    def _work_full(self) -> bool:
        """Whether the work area (not the outbound folder) is what is full."""
        try:
            return free_bytes(self.spool.dir) < (1 << 20)
        except OSError:
            return False

    def _instructions(self, job: Job) -> Instructions | None:
        """The job's sidecar, read and validated; None when it came without one.

        Raises ``PermanentInputError``: ``instructions_disabled`` when the
        profile takes none (fail closed: the operator asked for something we
        will not do), ``invalid_sidecar`` naming the field. Either way the
        input and its sidecar go to quarantine together.
        """
        policy = self.cfg.profile(job.target.profile).instructions
        # A sidecar in the operator's trusted folder counts as one too.
        if job.sidecar is None and sidecar_source(policy, job.rel) is None:
            return None
        if not policy.enabled:
            raise PermanentInputError(
                "instructions_disabled", "profile instructions.enabled is false", "sidecar"
            )
        if job.sidecar is not None and (
            not job.sidecar_src.is_file() or job.sidecar_src.is_symlink()
        ):
            # It could not be claimed (not a regular file) or was removed.
            raise PermanentInputError("invalid_sidecar", "not a regular file", "sidecar")
        inbound = job.sidecar_src if job.sidecar is not None else None
        # Trust rules (trusted_dir / hmac_key_file): sidecar_untrusted otherwise.
        return load_instructions(policy, inbound, job.rel)

    def _deliver(
        self, job: Job, result: JobResult | None, t0: float, record: JobRecord | None = None
    ) -> None:
        try:
            self.spool.deliver(job)
        except PermanentInputError as e:
            self._quarantine(job, e.reason, e.stage or "deliver", e.detail)
            return
        except OSError as e:
            if e.errno in _DISK_FULL_ERRNOS and self._work_full():
                self._pause(self.spool.dir, self._needed(job, self.spool.dir), job)
            elif e.errno in _DISK_FULL_ERRNOS:
                self._pause(job.target.outbound, self._needed(job), job)
            else:
                self._transient(job, errname(e).lower(), "deliver")
            return
        with self._cond:
            self.done += 1
        self.metrics.job_done(result, time.perf_counter() - t0)
        if result is None:
            self.log.info("job.done", job=job.id, attempts=job.attempts, resumed=True)
            return
        # The record's own fields (minus the input's sha256) override the
        # pipeline's flat ones where both speak, so log and record agree.
        fields: dict[str, object] = {"job": job.id, **result.log_fields()}
        if record is not None:
            fields.update(record.log_fields())
        fields["attempts"] = job.attempts
        fields["total_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        fields["queued_s"] = round(max(0.0, time.time() - job.claimed_at), 3)
        self.log.info("job.done", **fields)

    def _needed(self, job: Job, folder: Path | None = None) -> int:
        # Resume only when there is clearly room for this result again (twice
        # the input), but never ask for more than half of the filesystem.
        want = 2 * job.size + (64 << 10)
        try:
            st = os.statvfs(folder or job.target.outbound)
            want = min(want, st.f_blocks * st.f_frsize // 2)
        except OSError:
            pass
        return want if folder is not None else max(self.cfg.service.min_free_bytes, want)

    def _disk_full(self, job: Job, work_area: bool = False, counted: bool = True) -> None:
        # The disk, not the input, failed: do not count it. If the work area is
        # full too, the count is corrected in memory only.
        with contextlib.suppress(OSError):
            if counted:
                self.spool.undo_attempt(job)
            else:
                self.spool.discard_output(job)
        if work_area:
            # Pausing the outbound folder would resume at once (it has room)
            # and loop; wait for the work area to have room instead.
            self._pause(self.spool.dir, self._needed(job, self.spool.dir), job)
            return
        self._pause(job.target.outbound, self._needed(job), job)

    def _transient(self, job: Job, reason: str, stage: str) -> None:
        svc = self.cfg.service
        self.spool.discard_output(job)
        if job.attempts >= svc.max_attempts and not self._published(job):
            final = reason if reason in REASONS else "too_many_attempts"
            self._quarantine(job, final, stage, last_error=reason)
            return
        delay = min(svc.retry_max_seconds, svc.retry_base_seconds * 2 ** max(0, job.attempts - 1))
        delay *= random.uniform(0.8, 1.2)  # spread retries of many jobs
        with self._cond:
            self.retries += 1
        self.metrics.job_retried(reason)
        self.log.warning(
            "job.retry",
            job=job.id,
            reason=reason,
            stage=stage,
            attempts=job.attempts,
            delay_s=round(delay, 2),
        )
        self._later(job, delay)

    def _published(self, job: Job) -> bool:
        """A delivered job whose clean-up failed (EIO removing the original)
        is retried, never quarantined: its original is gone from the work
        area or about to be, and the output is out."""
        try:
            return self.spool.published(job)
        except OSError:
            return "out" in job.places  # cannot tell: retrying is the safe side

    def _later(self, job: Job, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._delayed, (self.clock() + delay, next(self._seq), job))

    def _quarantine(
        self, job: Job, reason: str, stage: str, detail: str = "", last_error: str = ""
    ) -> None:
        """Move the job's original to quarantine; on I/O failure try again later."""
        try:
            if job.state != "quarantining":
                self.spool.start_quarantine(job, reason, stage, detail, last_error)
            self.spool.quarantine(job)
        except OSError as e:
            job.q_fails += 1
            fails = job.q_fails
            if fails > self.cfg.service.max_attempts:
                # Left claimed in the work area; the next start tries again.
                self.log.error("job.stuck", job=job.id, errno=errname(e), stage="quarantine")
                return
            self.log.warning("job.retry", job=job.id, reason=errname(e).lower(), stage="quarantine")
            self._later(job, min(self.cfg.service.retry_max_seconds, 2.0**fails))
            return
        with self._cond:
            self.quarantined += 1
        r = job.reason or {}
        self.metrics.job_quarantined(str(r.get("reason", reason)))
        self.log.warning(
            "job.quarantined",
            job=job.id,
            reason=r.get("reason", reason),
            stage=r.get("stage", stage),
            attempts=job.attempts,
            size=job.size,
        )
