"""Claim: taking an inbound file (and its sidecar) into the work area, and
releasing it when its job is done.

A small manifest is written first (state ``claiming``), then the inbound
file is renamed into ``work_dir/<job>/`` (atomic; the rename is the lock
between two instances watching one folder: the loser gets ENOENT). The
watcher's settle snapshot (dev, inode, size, mtime) comes with the request
and is checked before and after the rename: a file that changed since it
settled is not taken (``InputChanged``; it settles again). Across mounts
the claim goes through :mod:`.crossmount`.

Pairs (an input with its instruction sidecar, ``NAME.EXT.redact.json``): the
sidecar's name is recorded in the manifest before the claim; the input is
renamed first (it stays the lock), then the sidecar into
``work_dir/<job>/sidecar.json``. A crash between the two is finished by
recovery; a sidecar that vanished meanwhile leaves the job without
instructions, as if it had come too late. A sidecar is never delivered: it
is removed with the original (:meth:`Claimer.release`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
from typing import Any

from redactd.core import fsutil, log
from redactd.core.errors import PermanentInputError
from redactd.core.fsutil import errname
from redactd.service.spool import nofollow
from redactd.service.spool.crossmount import CrossMountClaim
from redactd.service.spool.errors import InputChanged, NotMovable
from redactd.service.spool.job import (
    Job,
    JobState,
    JobStore,
    Snapshot,
    Target,
    matches,
    plain_name,
    snap_of,
)
from redactd.service.spool.nofollow import lexists, unlink_quiet


class Claimer:
    """Claims inbound files into ``store``'s work area; releases them."""

    def __init__(self, store: JobStore, cross: CrossMountClaim) -> None:
        self._store = store
        self._cross = cross
        self._log = log.get("redactd.spool")

    def claim(
        self,
        rel: tuple[str, ...],
        target: Target,
        regular: bool,
        sidecar: str | None = None,
        expect: Snapshot | None = None,
    ) -> Job | None:
        """Take ``target.inbound/rel`` (and its sidecar ``sidecar``, a name in
        the same folder) into the work area.

        The inbound sub-folders are walked with ``O_NOFOLLOW`` directory
        descriptors and the rename is relative to the last one, so a folder
        swapped for a symlink after the scan cannot make us move a file from
        outside inbound. Returns None when the file is gone (another instance
        took it, or it was removed). Raises ``InputChanged`` when the file is
        not the settled snapshot ``expect`` (dev, inode, size, mtime_ns) any
        more, ``NotMovable`` for a special file on another filesystem,
        ``OSError`` for anything else (the file then stays where it was).
        """
        name = rel[-1]
        try:
            dfd = nofollow.open_dir_nofollow(target.inbound, rel[:-1])
        except FileNotFoundError:
            return None
        try:
            if expect is not None:
                try:
                    st = os.lstat(name, dir_fd=dfd)
                except FileNotFoundError:
                    return None
                if not matches(st, expect) or st.st_dev != expect[0]:
                    raise InputChanged()
            job = self._claim_in(dfd, name, rel, target, regular, sidecar, expect)
            if job is not None and job.sidecar is not None:
                self.claim_sidecar(job, dfd)
                self._store.save(job)
            return job
        finally:
            os.close(dfd)

    def _claim_in(
        self,
        dfd: int,
        name: str,
        rel: tuple[str, ...],
        target: Target,
        regular: bool,
        sidecar: str | None,
        expect: Snapshot | None = None,
    ) -> Job | None:
        job_id = log.new_job_id()
        job_dir = self._store.dir / job_id
        job_dir.mkdir(0o700)
        job = Job(
            id=job_id,
            dir=job_dir,
            target=target,
            rel=rel,
            claimed_at=time.time(),
            sidecar=plain_name(sidecar),
        )
        try:
            self._store.save(job)
            fsutil.fsync_dir(self._store.dir)
            os.rename(name, job.src, src_dir_fd=dfd)
        except FileNotFoundError:
            self._store.drop(job)
            return None
        except OSError as e:
            if e.errno != errno.EXDEV or not regular:
                self._store.drop(job)  # the rename failed: the input is untouched
                if e.errno == errno.EXDEV:
                    raise NotMovable() from e
                raise
            return self._cross.claim_by_copy(job, dfd, name, expect)
        except BaseException:
            if not lexists(job.src):
                self._store.drop(job)
            raise
        self._renamed(job, dfd, expect)
        return job

    def _renamed(self, job: Job, dfd: int, expect: Snapshot | None) -> None:
        """The input was renamed into the job folder: make it durable, take its snapshot."""
        with contextlib.suppress(OSError):
            os.fsync(dfd)
        try:
            fsutil.fsync_dir(job.dir)
        except OSError as e:
            # The rename happened: the input is ours and must stay tracked (an
            # error here left it unseen in the work area until the next start,
            # with "claim failed, left in inbound" in the log). Nothing is at
            # risk: a rename lost to a crash leaves the input in inbound (it
            # is atomic), and the original is only removed after its result
            # is durable.
            self._log.warning("job.claim_fsync_failed", job=job.id, errno=errname(e))
        st = os.lstat(job.src)
        job.size = st.st_size
        job.snap = snap_of(st)
        if not matches(st, expect):
            # Written to between our look and the rename: it is ours now, but
            # it has not settled; the first check sees a change and waits.
            job.snap["mtime_ns"] = -1
        job.state = JobState.CLAIMED

    def claim_sidecar(self, job: Job, dfd: int) -> None:
        """Move the recorded sidecar into the job folder (after the input, whose
        rename is the lock between instances). Resumable: recovery calls it again.

        A sidecar that vanished meanwhile is forgotten (the job runs without
        instructions, as if the sidecar had come too late); one that is not a
        regular file is left where it is and the job, still naming it, fails
        as ``invalid_sidecar`` (fail closed: instructions were asked for).
        """
        assert job.sidecar is not None
        try:
            if lexists(job.sidecar_src):
                return
            if job.sidecar_claim is None and not self._sidecar_across(job, dfd):
                return
            self._cross.copy_sidecar(job, dfd)
        except (OSError, PermanentInputError) as e:
            # The input is claimed already; the job, still naming a sidecar it
            # does not hold, fails closed as invalid_sidecar.
            err = errname(e) if isinstance(e, OSError) else e.reason
            self._log.warning("job.sidecar_claim_failed", job=job.id, error=err)

    def _sidecar_across(self, job: Job, dfd: int) -> bool:
        """Rename the sidecar into the job folder: True when it is on another
        filesystem (EXDEV: it must be copied), False when done or not to take."""
        assert job.sidecar is not None
        try:
            st = os.lstat(job.sidecar, dir_fd=dfd)
        except FileNotFoundError:
            job.sidecar = None
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        try:
            os.rename(job.sidecar, job.sidecar_src, src_dir_fd=dfd)
        except FileNotFoundError:
            job.sidecar = None
            return False
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            return True
        with contextlib.suppress(OSError):
            os.fsync(dfd)
        fsutil.fsync_dir(job.dir)
        return False

    def release(self, job: Job) -> None:
        """The end of a placed job: remove the original, its sidecar, their
        inbound claim names and the job folder."""
        unlink_quiet(job.src)
        unlink_quiet(job.sidecar_src)
        err = self._cross.drop_claim(job)
        if err is not None:
            # The hidden original may still be in inbound: the job folder
            # stays, and the error is raised so that the supervisor retries
            # now (the job is placed: only this is left), not at the next start.
            with contextlib.suppress(OSError):
                self._store.save(job)
            raise err
        # Not ignore_errors: a folder left by an I/O error (EIO) would hold a
        # finished job nobody looks at until the next start. Raised, the
        # supervisor retries the step; the placement is already done, so the
        # retry only finishes the removal.
        errors: list[OSError] = []

        def failed(_fn: object, _path: str, exc: tuple[Any, BaseException, Any]) -> None:
            if isinstance(exc[1], OSError) and not isinstance(exc[1], FileNotFoundError):
                errors.append(exc[1])

        shutil.rmtree(job.dir, onerror=failed)
        if errors and lexists(job.dir):
            raise errors[0]
