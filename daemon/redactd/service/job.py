"""One job in a worker's hands: claim it, run one attempt, pick its outcome.

What happens to a job, by what its attempt raised:

* nothing -> delivered, ``job.done``;
* ``PermanentInputError`` -> quarantined with its reason code (unless the
  input is still changing: then it settles again);
* ``TransientError`` -> retried (``outcomes``), a full disk
  (``TransientReason.DISK_FULL``/ENOSPC) pauses the folder (``space``);
* ``InputChanged`` -> the input was written to after its claim: settles again;
* ``ModelError`` -> the job is put back and the service stops with 78
  (a broken model must not be retried file after file);
* anything else is a bug: the one per-job catch-all logs it (scrubbed) and
  quarantines the job as ``internal_error``; the daemon keeps running.

A job recovered in a later state (claim cut short, timed out, being
quarantined or delivered) finishes that step first. Sidecars: a job claimed
with its sidecar runs with its instructions; an invalid sidecar
(``invalid_sidecar``, ``instruction_not_allowed``) or one for a profile
whose instructions are off (``instructions_disabled``) sends the input and
its sidecar to quarantine together; a sidecar claimed alone is quarantined
as ``sidecar_without_input``.

Job records: for a profile with ``record.enabled`` the input's sha256 is
taken once before processing, the output's from the written temporary; the
record is staged in the outbound folder and published before the output
(``spool``). The ``job.done`` event carries the same fields
(``JobRecord.log_fields``), minus the input's sha256. Separate from the main
loop: this is the worker's side.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog

from redactd.core import log
from redactd.core.config import Config
from redactd.core.errors import ExitCode, ModelError, PermanentInputError, TransientError
from redactd.core.fsutil import errname
from redactd.core.types import JobResult
from redactd.pipeline.record import FileDigest, JobRecord
from redactd.service.intake import Intake
from redactd.service.names import is_sidecar_name
from redactd.service.outcomes import Outcomes
from redactd.service.queue import Work, WorkQueue
from redactd.service.space import DISK_FULL_ERRNOS, DiskFull, Space, is_disk_full
from redactd.service.spool.errors import InputChanged
from redactd.service.spool.job import Job
from redactd.service.spool.workarea import Spool, free_bytes
from redactd.service.timeouts import RunningJobs
from redactd.stages.instructions.model import Instructions
from redactd.stages.instructions.parse import load_instructions, sidecar_source

if TYPE_CHECKING:  # the registry pulls in OpenVINO: only the daemon's start loads it
    from redactd.pipeline.job import JobRunner


_T = TypeVar("_T")


@dataclass
class _Attempt:
    #: Whether this attempt is counted in the manifest yet.
    counted: bool = False


#: What an attempt may raise that is not a bug (anything else is: catch-all).
_EXPECTED = (InputChanged, PermanentInputError, TransientError, DiskFull, ModelError, OSError)


class JobHandler:
    """Runs the items a worker takes, one at a time (thread-safe: no state of its own)."""

    def __init__(
        self,
        config: Callable[[], Config],
        spool: Spool,
        queue: WorkQueue,
        space: Space,
        outcomes: Outcomes,
        running: RunningJobs,
        request_stop: Callable[[int], None],
    ) -> None:
        self._config = config
        self.spool = spool
        self.queue = queue
        self.space = space
        self.outcomes = outcomes
        self.running = running
        self.intake = Intake(spool, space, lambda: config().service)
        self._request_stop = request_stop
        self.log = log.get("redactd.service")

    def handle(self, item: Job | Work, runner: JobRunner) -> None:
        job: Job | None = item if isinstance(item, Job) else None
        me = threading.get_ident()
        try:
            if isinstance(item, Work):
                job = self.intake.claim(item)
                if job is None:
                    return
            assert job is not None
            with structlog.contextvars.bound_contextvars(job=job.id):
                self.running.begin(me, job)
                self.advance(job, runner)
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
                self.outcomes.quarantine(job, "internal_error", "unknown", type(e).__name__)
        finally:
            self.running.end(me)

    def advance(self, job: Job, runner: JobRunner) -> None:
        """Take the job one step on: finish an earlier step, or run an attempt."""
        if self._finish_earlier(job) or not self._has_room(job):
            return
        t0 = time.perf_counter()
        attempt = _Attempt()
        try:
            result, record = self._attempt(job, runner, attempt)
        except _EXPECTED as e:
            self._failed(job, e, attempt.counted)
            return
        self.outcomes.deliver(job, result, t0, record)

    def _finish_earlier(self, job: Job) -> bool:
        """True when the job's step this time is not an attempt (done here)."""
        # A claim cut short (crash, full disk mid copy): finish it or put the
        # original back in inbound. Never left hidden, never looped.
        if job.state == "claiming" and not self._resume_claim(job):
            return True
        out = self.outcomes
        if job.timed_out:
            out.quarantine(job, "job_timeout", "process")
        elif job.state == "quarantining":
            out.quarantine(job, "", "")
        elif job.state == "delivering":
            out.deliver(job, None, 0.0)
        elif is_sidecar_name(job.name):
            # A sidecar claimed alone: its input never came. Never media.
            out.quarantine(job, "sidecar_without_input", "sidecar")
        elif job.attempts >= self._config().service.max_attempts:
            # Every earlier attempt ended without an answer (the process died).
            out.quarantine(job, "too_many_attempts", "process", last_error="interrupted")
        else:
            return False
        return True

    def _has_room(self, job: Job) -> bool:
        """False when the job's outbound folder is paused or now too full (parked)."""
        svc = self._config().service
        outbound = job.target.outbound
        if self.space.paused_dev(outbound) is not None:
            self.space.pause(outbound, 0, job)
            return False
        try:
            if free_bytes(outbound) < svc.min_free_bytes:
                self.space.pause(outbound, svc.min_free_bytes, job)
                return False
        except OSError as e:
            self.outcomes.transient(job, f"outbound_{errname(e).lower()}", "deliver")
            return False
        return True

    def _attempt(
        self, job: Job, runner: JobRunner, attempt: _Attempt
    ) -> tuple[JobResult, JobRecord]:
        """Run one counted attempt up to the staged output (and record)."""
        st = self._counted_if_refused(job, lambda: self._preflight(job))
        instructions = self._instructions(job)
        # Profile resolved and file sniffed once, for the whole job (refused:
        # counted as if the pipeline had refused it).
        plan = self._counted_if_refused(
            job, lambda: runner.plan(job.src, job.name, job.target.profile, instructions)
        )
        # The record is off by default: hashing reads input and output once more.
        digest_in = (
            FileDigest(self.spool.input_sha256(job), st.st_size)
            if plan.profile.record.enabled
            else None
        )
        tmp = self.spool.begin_attempt(job, plan.output_name)
        attempt.counted = True
        progress = self.running.progress_of(threading.get_ident())
        try:
            done = runner.run(job.id, plan, job.src, tmp, progress, input_digest=digest_in)
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise DiskFull() from e
            raise  # any other raw OSError: retried as a transient "spool" failure (counted)
        if self.spool.input_changed(job):
            # Written to after the claim (an open handle on a share): this
            # output is of content that was not final. Never published.
            raise InputChanged()
        if plan.profile.record.enabled:
            self.spool.stage_record(job, done.record.to_bytes())
        return done.result, done.record

    def _preflight(self, job: Job) -> os.stat_result:
        if self.spool.input_changed(job):
            raise InputChanged()
        return self.spool.preflight(job, self._config().limits.max_file_bytes)

    def _counted_if_refused(self, job: Job, step: Callable[[], _T]) -> _T:
        """Run ``step``; when it refuses the input, that was an attempt (it was
        looked at, and an unreadable file must run out of attempts)."""
        try:
            return step()
        except (TransientError, PermanentInputError):
            with contextlib.suppress(OSError):
                self.spool.count_attempt(job)
            raise

    def _failed(self, job: Job, e: Exception, counted: bool) -> None:
        """The outcome of an attempt that raised ``e`` (one of ``_EXPECTED``)."""
        out = self.outcomes
        if isinstance(e, InputChanged):
            out.resettle(job, counted)
        elif isinstance(e, PermanentInputError):
            if self._changed_quiet(job):
                # The verdict was about content that is still changing.
                out.resettle(job)
            else:
                out.quarantine(job, e.reason, e.stage or "process", e.detail)
        elif isinstance(e, DiskFull) or (isinstance(e, TransientError) and is_disk_full(e)):
            out.disk_full(job)
        elif isinstance(e, TransientError):
            out.transient(job, e.reason, "process")
        elif isinstance(e, ModelError):
            self.log.error("service.model_failed", error=log.scrub(str(e))[:300])
            self.spool.undo_attempt(job)
            self.queue.put_front(job)
            self._request_stop(ExitCode.CONFIG)
        else:
            assert isinstance(e, OSError)  # from our own preflight / work-area steps
            self._spool_failed(job, e, counted)

    def _spool_failed(self, job: Job, e: OSError, counted: bool) -> None:
        if e.errno in DISK_FULL_ERRNOS:
            self.outcomes.disk_full(job, work_area=self.space.work_full(), counted=counted)
            return
        # Every failure counts (a missing or unreadable original must
        # run out of attempts and be dealt with, never loop).
        if not counted:
            with contextlib.suppress(OSError):
                self.spool.count_attempt(job)
        self.outcomes.transient(job, errname(e).lower(), "spool")

    def _changed_quiet(self, job: Job) -> bool:
        try:
            return self.spool.input_changed(job)
        except OSError:
            return False

    def _resume_claim(self, job: Job) -> bool:
        """True when the job holds its input; else it was put back or is
        retried later (each failure counted, so it cannot loop forever)."""
        try:
            return self.spool.resume_claim(job)
        except OSError as e:
            job.attempts += 1
            with contextlib.suppress(OSError):
                self.spool.save(job)
            svc = self._config().service
            if job.attempts >= svc.max_attempts:
                self.log.error("job.stuck", job=job.id, errno=errname(e), stage="claim")
                return False  # left in the work area, recorded: the next start tries again
            self.log.warning(
                "job.retry",
                job=job.id,
                reason=errname(e).lower(),
                stage="claim",
                attempts=job.attempts,
            )
            self.queue.later(job, min(svc.retry_max_seconds, 2.0**job.attempts))
            return False

    def _instructions(self, job: Job) -> Instructions | None:
        """The job's sidecar, read and validated; None when it came without one.

        Raises ``PermanentInputError``: ``instructions_disabled`` when the
        profile takes none (fail closed: the operator asked for something we
        will not do), ``invalid_sidecar`` naming the field. Either way the
        input and its sidecar go to quarantine together.
        """
        policy = self._config().profile(job.target.profile).instructions
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
