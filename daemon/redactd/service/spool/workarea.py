"""``Spool``: the service's private work area, as the supervisor sees it.

A thin front over the parts that do the work (:mod:`.claim`,
:mod:`.crossmount`, :mod:`.delivery`, :mod:`.quarantine`, :mod:`.recover`,
sharing one :class:`~.job.JobStore` and one :class:`~.placement.Placer`),
plus what concerns the work area as a whole (its lock) or the claimed input
as the pipeline reads it (preflight, input changed, sha256).

Input changed: the claimed original's (inode, size, mtime, ctime) is kept
in the manifest (``snap``); the supervisor compares it before processing,
before a quarantine verdict and before publishing (:meth:`Spool.input_changed`):
content appended through a writer's open handle after the claim discards the
output and the job settles again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from redactd.core import fsutil
from redactd.core.errors import PermanentInputError, TransientError
from redactd.service.spool.claim import Claimer
from redactd.service.spool.crossmount import CrossMountClaim
from redactd.service.spool.delivery import Delivery
from redactd.service.spool.errors import SpoolBusy
from redactd.service.spool.job import Job, JobState, JobStore, Snapshot, Target, snap_of
from redactd.service.spool.nofollow import unlink_quiet
from redactd.service.spool.placement import Placer
from redactd.service.spool.quarantine import Quarantine
from redactd.service.spool.recover import Recovery
from redactd.service.stability import writer_active

LOCK = ".lock"


def free_bytes(folder: Path) -> int:
    """Bytes available to an unprivileged writer in ``folder``'s filesystem."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class Spool:
    """The work area ``work_dir`` (mode 0700), one sub-folder per claimed job.

    Thread-safe for different jobs (each job touches only its own folder and
    its own, uniquely named temporaries); one job is handled by one thread.
    The collaborators are public attributes: a test can replace one step.
    """

    def __init__(self, work_dir: Path, quarantine_mode: int = 0o640) -> None:
        self.dir = work_dir
        # Mode of quarantined originals (service.quarantine_file_mode): a
        # producer's own mode (0644 seen) must not let others read them.
        self.quarantine_mode = quarantine_mode
        self._lock_fd: int | None = None
        work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(work_dir)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "service.work_dir is not a folder")
        if stat.S_IMODE(st.st_mode) != 0o700:
            work_dir.chmod(0o700)  # unmasked originals live here
        self.store = JobStore(work_dir)
        self.placer = Placer(self.store)
        self.cross = CrossMountClaim(self.store)
        self.claimer = Claimer(self.store, self.cross)
        self.delivery = Delivery(self.store, self.placer, self.claimer)
        self.quarantiner = Quarantine(
            self.store, self.placer, self.claimer, self.delivery, quarantine_mode
        )
        self.recovery = Recovery(self.store, self.claimer, self.cross, self.placer)

    # -- exclusive use ------------------------------------------------------

    def lock(self) -> None:
        """Hold an exclusive lock on the work area; ``SpoolBusy`` if taken.

        Two processes recovering each other's jobs would process files twice.
        """
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise SpoolBusy("service.work_dir is used by another redactd process") from e
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def dev(self) -> int:
        return self.dir.stat().st_dev

    def save(self, job: Job) -> None:
        """Write ``job.json`` atomically and durably."""
        self.store.save(job)

    # -- claim ----------------------------------------------------------------

    def claim(
        self,
        rel: tuple[str, ...],
        target: Target,
        regular: bool,
        sidecar: str | None = None,
        expect: Snapshot | None = None,
    ) -> Job | None:
        """See :meth:`Claimer.claim`."""
        return self.claimer.claim(rel, target, regular, sidecar, expect)

    def resume_claim(self, job: Job) -> bool:
        """See :meth:`CrossMountClaim.resume_claim`."""
        return self.cross.resume_claim(job)

    def recopy(self, job: Job) -> None:
        """A cross-filesystem job whose inbound original changed after the
        claim: drop the outputs and the stale copy; the job goes back to
        state ``claiming`` and :meth:`resume_claim` copies it again (or puts
        it back in inbound when it changed again meanwhile)."""
        self.delivery.discard_output(job)
        unlink_quiet(job.src)
        job.input_sha256 = None
        job.state = JobState.CLAIMING
        self.store.save(job)

    # -- the claimed input ------------------------------------------------------

    def input_changed(self, job: Job) -> bool:
        """Whether the claimed original changed since its snapshot (size,
        mtime, ctime, inode): content appended through a writer's open handle
        after the claim. The snapshot is renewed, so a second call after a
        quiet period says whether it settled again. A local writer still
        holding it open counts as a change. Across filesystems the inode
        looked at is the inbound claim name (the copy is never written to);
        a claim name someone removed is no change (the copy is complete)."""
        if job.claim is not None:
            cst = self.cross.claim_stat(job)
            if cst is not None and job.snap is not None and snap_of(cst) != job.snap:
                job.snap = snap_of(cst)
                self.store.save(job)
                return True
            return False
        st = os.lstat(job.src)
        now = snap_of(st)
        if job.snap is None:
            job.snap = now  # a job of an older version: nothing to compare with
            self.store.save(job)
            return False
        if now == job.snap and not (stat.S_ISREG(st.st_mode) and writer_active(job.src)):
            return False
        job.snap = now
        job.size = st.st_size
        self.store.save(job)
        return True

    def preflight(self, job: Job, max_bytes: int) -> os.stat_result:
        """Check the claimed source without following or blocking on it.

        Raises ``PermanentInputError`` (not_regular_file, empty_file,
        too_large) or ``TransientError`` (unreadable: permissions may change).
        """
        # lstat first: opening a device can have side effects (a tape rewinds).
        if not stat.S_ISREG(os.lstat(job.src).st_mode):
            raise PermanentInputError("not_regular_file", stage="preflight")
        try:
            fd = os.open(job.src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP, errno.ENODEV):
                raise PermanentInputError("not_regular_file", stage="preflight") from e
            if e.errno in (errno.EACCES, errno.EPERM):
                raise TransientError("unreadable", "permission denied") from e
            raise
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermanentInputError("not_regular_file", stage="preflight")
        if st.st_size == 0:
            raise PermanentInputError("empty_file", stage="preflight")
        if st.st_size > max_bytes:
            raise PermanentInputError("too_large", "over limits.max_file_bytes", stage="preflight")
        return st

    def input_sha256(self, job: Job) -> str:
        """The claimed input's sha256, read once per job (kept in the manifest)."""
        if job.input_sha256 is None:
            job.input_sha256 = fsutil.digest(job.src, follow=False)[0]
            self.store.save(job)
        return job.input_sha256

    # -- attempts and delivery ----------------------------------------------------

    def out_dir(self, job: Job) -> Path:
        return self.delivery.out_dir(job)

    def begin_attempt(self, job: Job, out_name: str | None = None) -> Path:
        """See :meth:`Delivery.begin_attempt`."""
        return self.delivery.begin_attempt(job, out_name)

    def count_attempt(self, job: Job) -> None:
        """Count an attempt that failed before any output was started."""
        job.attempts += 1
        self.store.save(job)

    def undo_attempt(self, job: Job) -> None:
        """Do not count the last attempt (it was stopped by a full disk, not the input)."""
        job.attempts = max(0, job.attempts - 1)
        self.delivery.discard_output(job)
        self.store.save(job)

    def discard_output(self, job: Job) -> None:
        """See :meth:`Delivery.discard_output`."""
        self.delivery.discard_output(job)

    def stage_record(self, job: Job, data: bytes) -> None:
        """See :meth:`Delivery.stage_record`."""
        self.delivery.stage_record(job, data)

    def deliver(self, job: Job) -> Path:
        """See :meth:`Delivery.deliver` (the path returned MUST NOT be logged)."""
        return self.delivery.deliver(job)

    def published(self, job: Job) -> bool:
        """See :meth:`Delivery.published`."""
        return self.delivery.published(job)

    # -- quarantine and recovery ----------------------------------------------------

    def start_quarantine(
        self, job: Job, reason: str, stage: str, detail: str = "", last_error: str = ""
    ) -> None:
        """See :meth:`Quarantine.start`."""
        self.quarantiner.start(job, reason, stage, detail, last_error)

    def quarantine(self, job: Job) -> Path:
        """See :meth:`Quarantine.quarantine` (the path returned MUST NOT be logged)."""
        return self.quarantiner.quarantine(job)

    def recover(self) -> list[Job]:
        """See :meth:`Recovery.recover`."""
        return self.recovery.recover()

    def sweep_strays(self, folders: list[Path], now: float | None = None) -> int:
        """See :meth:`Recovery.sweep_strays`."""
        return self.recovery.sweep_strays(folders, now)
