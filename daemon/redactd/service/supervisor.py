"""The main loop: watchers feed a queue of paths, workers run jobs.

The supervisor wires the parts of the service together and runs the loop;
what happens inside a job is ``job`` (one attempt) and ``outcomes``
(deliver, quarantine, retry), the queue is ``queue``, the disk-full pause
``space``, hung jobs ``timeouts``, ``STATUS=`` and the status file
``status``. Each loop tick: the watchers' ready candidates join the queue,
due retries move to it, paused folders are checked for room (once a
second), hung jobs are looked for, the status is published and
``WATCHDOG=1`` sent while healthy.

A job hung past ``service.job_timeout_seconds`` stops the ``WATCHDOG=1``
pings and the loop shuts down with exit code 75 (ExitCode.TEMPFAIL); a
``ModelError`` in a job stops it with 78 (``job``).

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
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redactd.core import config as config_mod
from redactd.core import log
from redactd.core.config import Config
from redactd.core.errors import ConfigError, ExitCode
from redactd.core.fsutil import errname
from redactd.service.job import JobHandler
from redactd.service.metrics import Metrics
from redactd.service.notify import Notifier
from redactd.service.outcomes import Outcomes
from redactd.service.queue import Work, WorkQueue
from redactd.service.space import Space
from redactd.service.spool.job import Job, Target
from redactd.service.spool.workarea import Spool
from redactd.service.status import Status, StatusPublisher
from redactd.service.timeouts import RunningJobs
from redactd.service.watch import FolderWatcher

if TYPE_CHECKING:  # the registry pulls in OpenVINO: only the daemon's start loads it
    from redactd.pipeline.job import JobRunner


_TICK = 0.25
_SPACE_CHECK = 1.0


def make_target(cfg: Config, index: int) -> Target:
    w = cfg.watch[index]
    return Target(
        inbound=w.inbound,
        outbound=w.outbound,
        quarantine=w.quarantine,
        profile=w.profile,
        file_mode=cfg.profile(w.profile).output.file_mode,
    )


def restart_needed(old: Config, new: Config) -> list[str]:
    """The changed config keys a reload cannot apply (a restart must)."""
    needs: list[str] = []
    for key in ("profiles", "runtime", "models", "limits"):
        if getattr(new, key) != getattr(old, key):
            needs.append(key)
    for key in ("workers", "work_dir"):
        if getattr(new.service, key) != getattr(old.service, key):
            needs.append(f"service.{key}")
    if not {w.profile for w in new.watch} <= {w.profile for w in old.watch}:
        needs.append("watch.profile")
    return needs


class Supervisor:
    """Owns the watchers, the worker threads and the main loop."""

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
        self._stopping = threading.Event()
        # Plain flags, not Events: signal handlers run in the main thread
        # between bytecodes, possibly while the main thread holds an Event's
        # internal lock (Event.set() from a handler then deadlocks).
        self._stop_requested = False
        self._reload_requested = False
        self._exit_code: int = ExitCode.OK
        self._healthy = True
        self._threads: list[threading.Thread] = []
        self.metrics = Metrics()
        service = self._service
        self.queue = WorkQueue(recovered or [], clock)
        self.publisher = StatusPublisher(notifier, self.metrics, self.status, service)
        self.space = Space(spool, self.queue, service, clock, self._publish_now)
        self.running = RunningJobs(spool, clock)
        self.outcomes = Outcomes(spool, self.space, self.queue, self.metrics, service)
        self.jobs = JobHandler(
            lambda: self.cfg,
            spool,
            self.queue,
            self.space,
            self.outcomes,
            self.running,
            self.request_stop,
        )

    def _service(self) -> config_mod.ServiceConfig:
        return self.cfg.service  # the current one: a reload replaces self.cfg

    def _publish_now(self) -> None:
        self.publisher.publish(self.clock(), force=True)

    @property
    def done(self) -> int:
        return self.outcomes.done

    @property
    def quarantined(self) -> int:
        return self.outcomes.quarantined

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
        self.queue.wake()
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
            recovered=self.queue.jobs(),
        )
        next_ping = now
        next_space = now
        while not self._stop_requested:
            now = self.clock()
            self.tick(now)
            if now >= next_space:
                next_space = now + _SPACE_CHECK
                self.space.check(now)
            self._check_timeouts(now)
            self.publisher.publish(now)
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
        fresh: list[Work] = []
        for w in self.watchers:
            for cand in w.tick(now):
                fresh.append(Work(cand, w, make_target(self.cfg, w.index)))
        self.queue.offer(fresh, now)

    def _check_timeouts(self, now: float) -> None:
        if self.running.time_out(now, self.cfg.service.job_timeout_seconds):
            self._healthy = False  # no more WATCHDOG=1: a hung pipeline gets restarted
            self.request_stop(ExitCode.TEMPFAIL)

    def shutdown(self) -> int:
        """Stop taking work, let running jobs finish within the stop timeout."""
        self.log.info("service.stopping", active=len(self.running))
        self.notifier.stopping(f"stopping: {len(self.running)} active")
        self._stopping.set()
        self.queue.wake()
        for w in self.watchers:
            w.stop()
        deadline = time.monotonic() + self.cfg.service.stop_timeout_seconds
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        left = self.running.ids()
        if left:
            # Still claimed in the work area: the next start runs them again.
            self.log.warning("service.stop_timeout", jobs=len(left), requeued=left)
        else:
            pipelines = {id(r.pipeline): r.pipeline for r in self.runners}  # workers share one
            for p in pipelines.values():
                with contextlib.suppress(Exception):
                    p.close()
        self.publisher.publish(self.clock(), force=True, state="stopped")
        self.log.info(
            "service.stopped", done=self.done, quarantined=self.quarantined, code=self._exit_code
        )
        return self._exit_code

    # ------------------------------------------------------------------ status

    def status(self, state: str | None = None) -> Status:
        with self.queue.lock:  # one consistent count of waiting and parked
            paused, parked = self.space.counts()
            queued = self.queue.waiting() + parked
            retrying = self.queue.retrying()
            active = len(self.running)
            progress = self.running.progress()
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
        needs = restart_needed(self.cfg, new)
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

    def _worker(self, runner: JobRunner) -> None:
        while not self._stopping.is_set():
            item = self.queue.take(self._stopping)
            if item is None:
                return
            self.jobs.handle(item, runner)
