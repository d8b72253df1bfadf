"""Delivery: the attempt's outbound temporaries, the job record, publishing.

Separate from the placement mechanics (:mod:`.placement`) it uses: this is
the outbound side of a job's life. The pipeline writes a temporary name in
the outbound folder (recorded in the manifest before it exists). Job records
(``redactd.pipeline.record``) are written to a temporary in the outbound
folder before delivery; delivery chooses a name free for both the output
and ``<output>.redactd.json``, publishes the record first and then the
output (a consumer that sees an output can read its record), recording both
names and inodes so that recovery finishes the pair exactly once. Only then
is the original in the work area removed.
"""

from __future__ import annotations

from pathlib import Path

from redactd.core import fsutil
from redactd.pipeline.record import RECORD_SUFFIX
from redactd.service.spool.claim import Claimer
from redactd.service.spool.job import Job, JobState, JobStore, Kind
from redactd.service.spool.names import tmp_for
from redactd.service.spool.nofollow import ensure_dirs, unlink_quiet, write_new
from redactd.service.spool.placement import Placer


class Delivery:
    """A job's attempts and their publication in outbound."""

    def __init__(self, store: JobStore, placer: Placer, claimer: Claimer) -> None:
        self._store = store
        self._placer = placer
        self._claimer = claimer

    def out_dir(self, job: Job) -> Path:
        return ensure_dirs(job.target.outbound, job.rel[:-1])

    def begin_attempt(self, job: Job, out_name: str | None = None) -> Path:
        """Count an attempt and choose the outbound temporary the pipeline writes.

        The attempt is counted before the work, so a file that crashes the
        process every time still ends in quarantine after ``max_attempts``.
        """
        folder = self.out_dir(job)
        if out_name is not None and out_name != job.name:
            job.out_name = out_name
        tmp = tmp_for(folder, job.out_name or job.name)
        job.attempts += 1
        job.temps[Kind.OUT] = str(tmp)
        job.state = JobState.CLAIMED
        self._store.save(job)
        return tmp

    def discard_output(self, job: Job) -> None:
        """Remove the temporaries of a failed attempt (the pipeline usually did).

        A result already published under its final name stays (it is durable
        and complete); only unpublished temporaries go, and a record already
        published for an output that was not is withdrawn.
        """
        rec = job.places.get(Kind.OUT)
        if rec is not None:
            if self._placer.published(job, Kind.OUT):
                # Out already, even when a consumer took it at once: the
                # retry finishes the delivery, it never processes again.
                return
            job.places.pop(Kind.OUT)
        side = job.places.pop(Kind.RECORD, None)
        if side is not None:
            self._placer.withdraw(side)
        unlink_quiet(job.temps.pop(Kind.OUT, None))
        unlink_quiet(job.temps.pop(Kind.RECORD, None))
        if job.state == JobState.DELIVERING:
            job.state = JobState.CLAIMED  # nothing left to publish: the next attempt runs it again

    def published(self, job: Job) -> bool:
        """Whether the job's output is under its final name already (only the
        removal of the original and the job folder is left)."""
        return self._placer.published(job, Kind.OUT)

    def stage_record(self, job: Job, data: bytes) -> None:
        """Write the job record to a durable temporary in the outbound folder;
        :meth:`deliver` publishes it (before the output, beside it)."""
        side = job.places.pop(Kind.RECORD, None)
        if side is not None:
            self._placer.withdraw(side)
        unlink_quiet(job.temps.get(Kind.RECORD))
        tmp = fsutil.tmp_name(self.out_dir(job) / "x.json")
        job.temps[Kind.RECORD] = str(tmp)
        self._store.save(job)  # recorded before it exists: recovery removes it
        write_new(tmp, data, mode=job.target.file_mode)

    def deliver(self, job: Job) -> Path:
        """Publish the finished temporary under the input's name (its record
        first, when there is one), then remove the original and its sidecar.
        Returns the final path (callers MUST NOT log it)."""
        if Kind.OUT not in job.places:
            out_tmp = job.temps.get(Kind.OUT)
            assert out_tmp is not None
            Path(out_tmp).chmod(job.target.file_mode)
            job.state = JobState.DELIVERING
        folder = self.out_dir(job)
        name = job.out_name or job.name
        staged = Path(job.temps.get(Kind.OUT) or "")
        rec_tmp = job.temps.get(Kind.RECORD)
        if rec_tmp is not None or Kind.RECORD in job.places:
            final = self._placer.place_pair(
                job, Kind.OUT, staged, Kind.RECORD, Path(rec_tmp or ""), folder, name, RECORD_SUFFIX
            )
        else:
            final = self._placer.place(job, Kind.OUT, staged, folder, name)
        self._claimer.release(job)
        return final
