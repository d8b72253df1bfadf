"""Claims across mounts: a claim name in inbound as the lock, a copy in the work area.

Separate from the same-filesystem claim because it is a protocol of its own.
When the work area is on another mount (EXDEV; bind mounts of one
filesystem included, so ``st_dev`` is never trusted) the file is first
renamed to ``.redactd-claim-<random>`` beside itself (the lock; the name is
not derivable from the job id in the logs), copied and fsynced into the
work area, and the claim name is looked at again: changed, the copy is
dropped and the file put back under its name (``rename_noreplace``, never
over a newer file). The claim name is kept (hidden) until the job ends, as
the inode a remote writer may still append to; it is removed with the
original. A claim that cannot be finished (disk full during recovery) is
put back the same way, never left hidden. A sidecar across filesystems is
renamed to a claim name and copied the same way, that name kept until the
job ends, like the input's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from redactd.core import fsutil, log
from redactd.core.errors import PermanentInputError
from redactd.core.fsutil import errname
from redactd.service.names import CLAIM_PREFIX
from redactd.service.spool import nofollow
from redactd.service.spool.errors import InputChanged
from redactd.service.spool.job import (
    SIDECAR,
    SRC,
    Job,
    JobState,
    JobStore,
    Snapshot,
    matches,
    snap_of,
)
from redactd.service.spool.names import numbered
from redactd.service.spool.nofollow import lexists, unlink_quiet

#: Suffix of a sidecar's cross-filesystem claim name (after CLAIM_PREFIX + job id).
SIDECAR_CLAIM_SUFFIX = ".sidecar"


def claim_name() -> str:
    """A fresh claim name for inbound: random, never derived from the job id."""
    return CLAIM_PREFIX + secrets.token_hex(8)


class CrossMountClaim:
    """Claim names in inbound and the copies behind them."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._log = log.get("redactd.spool")

    def claim_by_copy(
        self, job: Job, dfd: int, name: str, expect: Snapshot | None = None
    ) -> Job | None:
        """Claim ``name`` (in the folder ``dfd``) for ``job`` whose rename into
        the work area failed with EXDEV: None when the file is gone."""
        job.claim = claim_name()
        try:
            self._store.save(job)
        except OSError:
            self._store.drop(job)  # nothing moved yet: the input is untouched in inbound
            raise
        try:
            # The lock: atomic within the inbound folder.
            os.rename(name, job.claim, src_dir_fd=dfd, dst_dir_fd=dfd)
        except FileNotFoundError:
            self._store.drop(job)
            return None
        with contextlib.suppress(OSError):
            # Not raised: the file is hidden under its claim name now, and the
            # job must go on (or put it back) rather than leave it there. A
            # rename lost to a crash leaves it in inbound (it is atomic).
            os.fsync(dfd)
        try:
            st = os.lstat(job.claim, dir_fd=dfd)
            if not matches(st, expect):
                raise InputChanged()
            job.snap = snap_of(st)  # of the inbound inode: compared again after the copy
            self._store.save(job)
            self.copy_claim(job, dfd)
        except FileNotFoundError:
            self._store.drop(job)
            return None
        except Exception:
            # Put the original back under its name (never over a newer file),
            # so a failed copy leaves inbound as it was.
            try:
                self.put_back(job, dfd)
            except OSError:
                # Left as a half-claimed job (state ``claiming``): the
                # supervisor resumes or puts it back (``resume_claim``).
                self._log.error("job.claim_parked", job=job.id)
                raise
            self._store.drop(job)
            raise
        return job

    def copy_claim(self, job: Job, dfd: int) -> None:
        """Copy the claim name into the work area; remove it only when it did
        not change meanwhile (else ``InputChanged``, the copy dropped)."""
        assert job.claim is not None
        partial = job.dir / (SRC + ".partial")
        unlink_quiet(partial)
        h = hashlib.sha256()
        nofollow.copy_nofollow(Path(job.claim), partial, src_dir_fd=dfd, digest=h)
        st = os.lstat(job.claim, dir_fd=dfd)
        if job.snap is not None and snap_of(st) != job.snap:
            unlink_quiet(partial)  # a copy of content that was still changing
            raise InputChanged()
        partial.rename(job.src)
        fsutil.fsync_dir(job.dir)
        job.size = os.lstat(job.src).st_size
        job.input_sha256 = h.hexdigest()
        job.state = JobState.CLAIMED
        # The claim name stays (hidden) until the job is finished: a writer on
        # a share may still append to that inode, and ``input_changed`` looks
        # at it before a result is published. ``job.snap`` stays its snapshot.
        self._store.save(job)

    def put_back(self, job: Job, dfd: int) -> None:
        """Give the claim name (and a sidecar's) back its original name in
        inbound, never over a file that took the name meanwhile (then
        ``name (1).ext``). Raises OSError when it cannot."""
        if job.sidecar_claim is not None and job.sidecar is not None:
            _give_back(dfd, job.sidecar_claim, job.sidecar)
            job.sidecar_claim = None
        if job.claim is not None:
            _give_back(dfd, job.claim, job.name)
            job.claim = None
        self._log.info("job.put_back", job=job.id)

    def resume_claim(self, job: Job) -> bool:
        """Finish a claim left in state ``claiming`` (a crash or a failure mid
        copy): True when the job now holds its input. When the copy cannot be
        done (disk full, the input changed) the original is put back in
        inbound and the job dropped (False). Raises OSError only when even
        that fails (tried again later)."""
        if lexists(job.src):
            job.state = JobState.CLAIMED
            self._store.save(job)
            return True
        dfd = nofollow.open_dir_nofollow(job.target.inbound, job.rel[:-1])
        try:
            try:
                os.lstat(job.claim or "", dir_fd=dfd)
            except FileNotFoundError:
                self._store.drop(job)  # neither here nor there: the rename never happened
                return False
            try:
                self.copy_claim(job, dfd)
                return True
            except (OSError, InputChanged, PermanentInputError) as e:
                reason = errname(e) if isinstance(e, OSError) else type(e).__name__
                self._log.warning("job.claim_unfinished", job=job.id, error=reason)
            self.put_back(job, dfd)
            self._store.drop(job)
            return False
        finally:
            os.close(dfd)

    def copy_sidecar(self, job: Job, dfd: int) -> None:
        """Take the sidecar across filesystems: renamed to a claim name (the
        lock, as for the input; kept until the job ends), then copied into
        the job folder. Resumable from either step."""
        assert job.sidecar is not None
        if job.sidecar_claim is None:
            job.sidecar_claim = claim_name() + SIDECAR_CLAIM_SUFFIX
            self._store.save(job)
            try:
                os.rename(job.sidecar, job.sidecar_claim, src_dir_fd=dfd, dst_dir_fd=dfd)
            except FileNotFoundError:
                job.sidecar = job.sidecar_claim = None
                return
            os.fsync(dfd)
        partial = job.dir / (SIDECAR + ".partial")
        unlink_quiet(partial)
        try:
            nofollow.copy_nofollow(Path(job.sidecar_claim), partial, src_dir_fd=dfd)
        except FileNotFoundError:
            job.sidecar = job.sidecar_claim = None
            return
        partial.rename(job.sidecar_src)
        fsutil.fsync_dir(job.dir)
        self._store.save(job)  # its claim name stays with the input's until the job ends

    def drop_claim(self, job: Job, dfd: int | None = None) -> OSError | None:
        """Remove the inbound claim names (input and sidecar) of a
        cross-filesystem claim, if any. The error when they could not be
        removed (or their removal not made durable)."""
        if job.claim is None and job.sidecar_claim is None:
            return None
        own = dfd is None
        try:
            if dfd is None:
                dfd = nofollow.open_dir_nofollow(job.target.inbound, job.rel[:-1])
            for name in (job.sidecar_claim, job.claim):
                if name is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dfd)
            os.fsync(dfd)
        except FileNotFoundError:
            pass  # the folder is gone, and the names with it
        except OSError as e:
            # Unsafe folder, or EIO: the name is left (a dotfile, ignored).
            self._log.warning("job.claim_not_dropped", job=job.id, errno=errname(e))
            return e
        finally:
            if own and dfd is not None:
                os.close(dfd)
        job.claim = job.sidecar_claim = None
        return None

    def claim_stat(self, job: Job) -> os.stat_result | None:
        """The inbound claim name's inode, None when there is none (or no
        safe folder to look in)."""
        if job.claim is None:
            return None
        try:
            dfd = nofollow.open_dir_nofollow(job.target.inbound, job.rel[:-1])
        except OSError:
            return None
        try:
            return os.lstat(job.claim, dir_fd=dfd)
        except FileNotFoundError:
            return None
        finally:
            os.close(dfd)


def _give_back(dfd: int, claim: str, orig: str) -> None:
    """Rename ``claim`` to ``orig`` (or ``orig (1).ext``...) in the folder
    ``dfd``, never replacing a file; nothing when the claim name is gone."""
    try:
        os.lstat(claim, dir_fd=dfd)
    except FileNotFoundError:
        return
    limit = 255
    with contextlib.suppress(OSError):
        limit = int(os.fpathconf(dfd, "PC_NAME_MAX"))
    for i in range(10000):
        try:
            fsutil.rename_noreplace(claim, numbered(orig, i, limit), src_dir_fd=dfd, dst_dir_fd=dfd)
        except FileExistsError:
            continue
        break
    os.fsync(dfd)
