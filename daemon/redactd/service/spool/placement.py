"""Placements: giving a staged file its final name exactly once, by inode.

Shared by delivery (output and record in outbound) and quarantine (original,
sidecar and reason file): the manifest records the staged file's inode and
the final name about to be used, then the file is hard-linked to that name
(``fsutil.link_noreplace``: never replaces) and the staged name dropped.
Recovery recognises a finished placement by the recorded name carrying the
recorded inode, so a file is never published twice.

Pairs (a main file with a companion named ``<final name><suffix>``: an
output and its ``.redactd.json`` record, a quarantined input and its
``.redact.json`` sidecar) get a name free for both, the companion published
first, so whoever sees the main file finds its companion, and a crash never
leaves them apart.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import replace
from pathlib import Path

from redactd.core import fsutil
from redactd.core.errors import PermanentInputError
from redactd.core.fsutil import errname
from redactd.service.spool.job import Job, JobStore, Kind, Placement
from redactd.service.spool.names import blen, name_max, numbered
from redactd.service.spool.nofollow import lexists


def _raise_bad_name(e: OSError) -> None:
    if e.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
        raise PermanentInputError(
            "bad_name", f"the target folder refuses the name ({errname(e)})", "deliver"
        ) from e


class Placer:
    """Places staged files of jobs; remembers, in memory, links whose folder
    fsync failed (see ``_unsynced``)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        # Placements this process linked whose folder fsync then failed:
        # (final name, inode). Kept in memory only: an entry not yet durable
        # must not be recorded as published (a power loss may take it back).
        self._unsynced: set[tuple[str, int]] = set()

    # -- what a placement's record says ---------------------------------------

    def placed(self, rec: Placement | None) -> Path | None:
        """The final name when it holds the recorded file, else None."""
        if rec is None or not rec.cand:
            return None
        try:
            st = os.lstat(rec.cand)
        except FileNotFoundError:
            return None
        if rec.is_file(st):
            return Path(rec.cand)
        return None

    def taken(self, rec: Placement) -> Path | None:
        """The final name of a placement this spool linked whose file has
        since left the folder: a consumer took it (or an operator removed
        it). It was published; linking it again would publish it twice.

        Known two ways: ``rec.linked``, recorded once the link and the
        fsync of its folder succeeded (so it survives a restart); or, for a
        link whose folder fsync failed, this process's memory of it. Either
        way the folder is fsynced again before the original is removed."""
        cand = rec.cand
        if cand and (rec.linked or (cand, rec.ino) in self._unsynced):
            # (the name may hold another file by now: ours was still taken)
            return Path(cand)
        return None

    def published(self, job: Job, kind: Kind) -> bool:
        """Whether that placement is out: under its name, or linked by this
        spool and since taken by a consumer (never to be linked again)."""
        rec = job.places.get(kind)
        return rec is not None and (self.placed(rec) is not None or self.taken(rec) is not None)

    def record_ready(self, job: Job) -> bool:
        """The job's record (if it has one) is staged or published."""
        side = job.places.get(Kind.RECORD)
        if side is not None:
            return self.placed(side) is not None or lexists(Path(side.staged))
        rec_tmp = job.temps.get(Kind.RECORD)
        return rec_tmp is None or lexists(Path(rec_tmp))

    # -- undoing ---------------------------------------------------------------

    def drop_staged(self, rec: Placement) -> None:
        staged = Path(rec.staged)
        try:
            st = os.lstat(staged)
        except FileNotFoundError:
            return
        if rec.is_file(st):
            staged.unlink()
            with contextlib.suppress(OSError):
                fsutil.fsync_dir(staged.parent)

    def withdraw(self, rec: Placement) -> None:
        """Unpublish a companion whose main file will not be published (ours:
        the recorded inode), and drop its temporary."""
        done = self.placed(rec)
        if done is not None:
            done.unlink()
            with contextlib.suppress(OSError):
                fsutil.fsync_dir(done.parent)
        self.drop_staged(rec)

    # -- placing ---------------------------------------------------------------

    def place(self, job: Job, kind: Kind, staged: Path, folder: Path, name: str) -> Path:
        """Give ``staged`` (same filesystem as ``folder``) a free name in
        ``folder`` without ever replacing a file, exactly once across crashes."""
        rec = self._begin(job, kind, staged)
        done = self._found_done(rec, None)
        if done is not None:
            return done
        if not lexists(Path(rec.staged)):
            raise FileNotFoundError(errno.ENOENT, "staged file vanished")
        limit = name_max(folder)
        i = 0
        while True:
            cand = folder / numbered(name, i, limit)
            i += 1
            if lexists(cand):
                continue
            rec = job.places[kind] = replace(rec, cand=str(cand))
            self._store.save(job)  # the name is recorded before it can exist
            if self._link(job, kind, None, None):
                return cand

    def place_pair(
        self,
        job: Job,
        kind: Kind,
        staged: Path,
        ckind: Kind,
        cstaged: Path,
        folder: Path,
        name: str,
        suffix: str,
        required: bool = True,
    ) -> Path:
        """Like :meth:`place`, with a companion named ``<final name><suffix>``.

        The name is chosen free for both; the companion is published first,
        so whoever sees the main file finds its companion. A companion that
        was published beside a name that is taken by the time the main file
        is linked (a crash in between, then a new file) moves along with it.
        A companion that is gone (its temporary removed by someone) raises
        FileNotFoundError when ``required`` (a record: never an output
        without it), else the main file is placed alone.
        """
        rec = self._begin(job, kind, staged)
        crec = job.places.get(ckind)
        if crec is None and required and not lexists(cstaged):
            raise FileNotFoundError(errno.ENOENT, "staged companion vanished")
        if crec is None and lexists(cstaged):
            crec = self._begin(job, ckind, cstaged)
        done = self._found_done(rec, crec)
        if done is not None:
            return done
        if not lexists(Path(rec.staged)):
            raise FileNotFoundError(errno.ENOENT, "staged file vanished")
        limit = name_max(folder) - blen(suffix)
        i = 0
        while True:
            cand = folder / numbered(name, i, limit)
            i += 1
            if self._try_pair(job, kind, ckind, cand, folder / (cand.name + suffix), required):
                return cand

    def _try_pair(
        self, job: Job, kind: Kind, ckind: Kind, cand: Path, ccand: Path, required: bool
    ) -> bool:
        """One name for a pair: True when both are linked (False: taken, try the next)."""
        crec = job.places.get(ckind)
        at = self.placed(crec) if crec is not None else None
        if crec is not None and at is None and not lexists(Path(crec.staged)):
            if required:
                raise FileNotFoundError(errno.ENOENT, "staged companion vanished")
            job.places.pop(ckind, None)  # the companion is gone: place the main file alone
            crec = None
        move = crec is not None and at != ccand
        if lexists(cand) or (move and lexists(ccand)):
            return False
        job.places[kind] = replace(job.places[kind], cand=str(cand))
        if crec is not None and move:
            # published beside an older choice: move it
            staged = str(at) if at is not None else crec.staged
            job.places[ckind] = replace(crec, staged=staged, cand=str(ccand))
        self._store.save(job)  # both names are recorded before either can exist
        return self._link(job, kind, ckind if move else None, ccand)

    def _begin(self, job: Job, kind: Kind, staged: Path) -> Placement:
        rec = job.places.get(kind)
        if rec is None:
            rec = job.places[kind] = Placement.of(staged)
        return rec

    def _found_done(self, rec: Placement, crec: Placement | None) -> Path | None:
        """A placement found done (a retry, a recovery): made durable, its
        staged names dropped."""
        done = self.placed(rec) or self.taken(rec)
        if done is None:
            return None
        self._durable(done)
        self.drop_staged(rec)
        if crec is not None:
            self.drop_staged(crec)
        return done

    def _link(self, job: Job, kind: Kind, ckind: Kind | None, ccand: Path | None) -> bool:
        """Link the recorded names (the companion's first): True when done,
        False when a name was taken meanwhile."""
        rec = job.places[kind]
        assert rec.cand is not None
        if ckind is not None and ccand is not None and not self._link_one(job.places[ckind]):
            return False
        if not self._link_one(rec):
            return False
        self._linked(job, kind)
        return True

    def _link_one(self, rec: Placement) -> bool:
        """Link ``rec``'s staged file to its recorded name: False when the name
        was taken meanwhile; a name that exists after a failure is remembered
        as linked (``_unsynced``) before the error goes up."""
        assert rec.cand is not None
        try:
            fsutil.link_noreplace(Path(rec.staged), Path(rec.cand))
        except FileExistsError:
            return False
        except fsutil.NotDurable:
            # Linked, then its folder fsync failed: visible, and a consumer
            # may take it before anyone looks again (so never judge this by
            # whether the name is still there).
            self._unsynced.add((rec.cand, rec.ino))
            raise
        except OSError as e:
            self._link_failed(rec)
            _raise_bad_name(e)
            raise
        return True

    def _linked(self, job: Job, kind: Kind) -> None:
        """Record a placement whose link and folder fsync succeeded."""
        rec = job.places[kind] = replace(job.places[kind], linked=True)
        assert rec.cand is not None
        self._unsynced.discard((rec.cand, rec.ino))
        self._store.save(job)

    def _link_failed(self, rec: Placement) -> None:
        """After a failed link: if the name exists (the fsync after the
        link is what failed), remember it, in memory only (see ``_unsynced``)."""
        if rec.cand is not None and self.placed(rec) is not None:
            self._unsynced.add((rec.cand, rec.ino))

    @staticmethod
    def _durable(done: Path) -> None:
        """Make a placement found done (a retry, a recovery) durable before
        the original it replaces is removed: the fsync of its folder after
        the link may be what failed (EIO). A failed fsync is never taken as
        done; this is a fresh one of the folder on a new descriptor (a
        folder's entries are journalled metadata: a filesystem that lost
        them fails every later fsync too, it does not report success)."""
        fsutil.fsync_dir(done.parent)
