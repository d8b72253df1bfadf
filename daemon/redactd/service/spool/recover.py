"""Recovery at start: every job folder left by an earlier run is examined,
and stray temporaries of lost work areas are swept.

Separate because it is the one place that reads a manifest written by a
process that died at any instant, and decides from the state recorded
(``claiming``, ``claimed``, ``delivering``, ``quarantining``) and what is
on disk which step to finish or undo: unfinished jobs are returned for
another run, recorded temporaries that never became results are removed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from redactd.core import fsutil, log
from redactd.core.fsutil import errname
from redactd.service.spool import nofollow
from redactd.service.spool.claim import Claimer
from redactd.service.spool.crossmount import CrossMountClaim
from redactd.service.spool.job import MANIFEST, SIDECAR, SRC, Job, JobState, JobStore, Kind
from redactd.service.spool.nofollow import lexists, unlink_quiet
from redactd.service.spool.placement import Placer

#: Temporaries older than this that no job of ours recorded are removed at
#: start. Younger ones may belong to a second instance sharing the folder.
STRAY_MIN_AGE_SECONDS = 600.0


class Recovery:
    """Finishes or undoes the jobs of an earlier run; remembers their temporaries."""

    def __init__(
        self, store: JobStore, claimer: Claimer, cross: CrossMountClaim, placer: Placer
    ) -> None:
        self._store = store
        self._claimer = claimer
        self._cross = cross
        self._placer = placer
        # Temporaries named by the jobs ``recover`` kept: never strays.
        self._recorded: set[str] = set()
        self._log = log.get("redactd.spool")

    def recover(self) -> list[Job]:
        """Examine every job folder left by an earlier run.

        Returns the jobs to run again (state ``claimed``, ``delivering`` or
        ``quarantining``); removes recorded temporaries that never became a
        result and job folders whose claim never happened.
        """
        jobs: list[Job] = []
        for entry in sorted(os.scandir(self._store.dir), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False):
                continue
            job = self._load(Path(entry.path))
            if job is None:
                continue
            _unlink_manifest_tmp(job.dir)
            try:
                keep = self._recover_one(job)
            except OSError as e:
                self._log.error("job.recover_failed", job=job.id, errno=errname(e))
                keep = True  # left in the work area; tried again as a normal job
            if keep:
                jobs.append(job)
                self._recorded.update(job.temporaries())
        return jobs

    def _load(self, job_dir: Path) -> Job | None:
        try:
            return self._store.load(job_dir)
        except FileNotFoundError:
            # A crash between mkdir and the first manifest: nothing claimed yet.
            if not any(p.name in (SRC, SRC + ".partial") for p in job_dir.iterdir()):
                shutil.rmtree(job_dir, ignore_errors=True)
            else:
                self._log.error("job.orphaned", job=job_dir.name, problem="no manifest")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._log.error("job.orphaned", job=job_dir.name, problem=type(e).__name__)
        return None

    def _recover_one(self, job: Job) -> bool:
        if job.state == JobState.CLAIMING and not self._finish_claiming(job):
            return False
        if (
            job.state == JobState.CLAIMED
            and job.sidecar is not None
            and (job.sidecar_claim is not None or not lexists(job.sidecar_src))
        ):
            self._finish_sidecar(job)
        if job.state == JobState.DELIVERING:
            self._check_delivery(job)
        if job.state == JobState.CLAIMED and not lexists(job.src):
            # Someone removed the claimed original from the private work area:
            # nothing left to run. Kept for inspection, not retried forever.
            self._log.error("job.orphaned", job=job.id, problem="source missing")
            return False
        if job.state == JobState.CLAIMED:
            self._drop_attempt(job)
        if job.state in (JobState.CLAIMED, JobState.QUARANTINING):
            for kind in (Kind.ORIG, Kind.QSIDE):
                if job.temps.get(kind) and kind not in job.places:
                    unlink_quiet(job.temps.pop(kind))
        self._store.save(job)
        return True

    def _finish_claiming(self, job: Job) -> bool:
        """A job caught mid claim: False when it is dropped (its input is in inbound)."""
        if lexists(job.src):
            job.state = JobState.CLAIMED
            unlink_quiet(job.dir / (SRC + ".partial"))
            job.size = os.lstat(job.src).st_size
            return True
        if self._cross.claim_stat(job) is not None:
            # Finish the copy, or put the original back when it cannot be
            # finished (disk full, changed meanwhile): never left hidden.
            return self._cross.resume_claim(job)
        self._store.drop(job)  # the rename never happened: the input is still in inbound
        return False

    def _finish_sidecar(self, job: Job) -> None:
        """The input is ours; finish taking its sidecar (it is taken after it)."""
        unlink_quiet(job.dir / (SIDECAR + ".partial"))
        try:
            dfd = nofollow.open_dir_nofollow(job.target.inbound, job.rel[:-1])
        except OSError:
            return  # no folder to take it from: the job fails as invalid_sidecar
        try:
            self._claimer.claim_sidecar(job, dfd)
        finally:
            os.close(dfd)

    def _check_delivery(self, job: Job) -> None:
        """A delivery caught midway: back to ``claimed`` when nothing can be published."""
        rec = job.places.get(Kind.OUT)
        if rec is not None and self._placer.taken(rec) is not None:
            pass  # published and since taken by a consumer: only the clean-up is left
        elif rec is None or (self._placer.placed(rec) is None and not lexists(Path(rec.staged))):
            job.state = JobState.CLAIMED  # nothing to publish: run it again
        elif self._placer.placed(rec) is None and not self._placer.record_ready(job):
            job.state = JobState.CLAIMED  # its record is lost: never an output without it

    def _drop_attempt(self, job: Job) -> None:
        """An attempt was cut short: its temporary is a partial output (and
        a record, even one published, describes an output that never was)."""
        unlink_quiet(job.temps.pop(Kind.OUT, None))
        job.places.pop(Kind.OUT, None)
        side = job.places.pop(Kind.RECORD, None)
        if side is not None:
            self._placer.withdraw(side)
        unlink_quiet(job.temps.pop(Kind.RECORD, None))

    def sweep_strays(self, folders: list[Path], now: float | None = None) -> int:
        """Remove old ``.redactd-tmp-*`` files that no job recorded (recursively).

        Recorded temporaries are handled exactly by :meth:`recover`; these are
        leftovers of lost work areas. Young ones are spared: a second instance
        sharing the folder may be writing them.
        """
        now = time.time() if now is None else now
        removed = 0
        for top in folders:
            for root, dirs, files in os.walk(top, followlinks=False):
                dirs[:] = [d for d in dirs if not d.startswith(fsutil.TMP_PREFIX)]
                for f in files:
                    if f.startswith(fsutil.TMP_PREFIX) and self._sweep(Path(root) / f, now):
                        removed += 1
        return removed

    def _sweep(self, p: Path, now: float) -> bool:
        if str(p) in self._recorded:
            return False  # a recovered job's (a staged output or record)
        try:
            st = os.lstat(p)
            if now - st.st_mtime >= STRAY_MIN_AGE_SECONDS:
                p.unlink()
                return True
        except OSError:
            pass
        return False


def _unlink_manifest_tmp(job_dir: Path) -> None:
    unlink_quiet(job_dir / (MANIFEST + ".tmp"))
