"""Quarantine: the original (and its sidecar) moved beside a reason file.

Separate from delivery because its staging differs: the original is placed
in the quarantine folder by a hard link on the same filesystem, else through
a durable copy that gets the quarantine mode; then a ``<name>.reason.json``
is placed beside it. The reason file holds a reason code, stage, attempts,
time, version and the opaque job id: no names. Both input and sidecar sit
side by side under their original names; when the input's name is taken,
``name (1).ext`` and ``name (1).ext.redact.json`` are used, chosen together
(a free name for both) and published sidecar first, so a crash never leaves
them apart.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from redactd import __version__
from redactd.core import fsutil, log
from redactd.core.errors import REASONS
from redactd.service.spool import nofollow
from redactd.service.spool.claim import Claimer
from redactd.service.spool.delivery import Delivery
from redactd.service.spool.job import Job, JobState, JobStore, Kind
from redactd.service.spool.names import name_max, reason_name, tmp_for
from redactd.service.spool.nofollow import ensure_dirs, lexists, unlink_quiet, write_new
from redactd.service.spool.placement import Placer
from redactd.stages.instructions.parse import SIDECAR_SUFFIX


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Quarantine:
    """Quarantines jobs; ``mode`` is the mode of quarantined originals."""

    def __init__(
        self, store: JobStore, placer: Placer, claimer: Claimer, delivery: Delivery, mode: int
    ) -> None:
        self._store = store
        self._placer = placer
        self._claimer = claimer
        self._delivery = delivery
        self.mode = mode
        self._log = log.get("redactd.spool")

    def start(
        self, job: Job, reason: str, stage: str, detail: str = "", last_error: str = ""
    ) -> None:
        """Record the decision; :meth:`quarantine` carries it out (resumable)."""
        if reason not in REASONS:
            reason = "internal_error"
        self._delivery.discard_output(job)
        job.state = JobState.QUARANTINING
        job.reason = {
            "reason": reason,
            "description": REASONS[reason],
            "stage": stage,
            "detail": log.scrub(detail)[:200],
            "last_error": last_error,
        }
        self._store.save(job)

    def quarantine(self, job: Job) -> Path:
        """Move the original (and its sidecar, beside it) into quarantine,
        keeping its sub-folder, with a reason file. Returns the quarantined
        path (MUST NOT be logged)."""
        assert job.reason is not None
        qdir = ensure_dirs(job.target.quarantine, job.rel[:-1])
        staged = self._stage(job, Kind.ORIG, job.src, qdir)
        if staged is None:
            raise FileNotFoundError(errno.ENOENT, "the claimed original is missing")
        side: Path | None = None
        if job.sidecar is not None or Kind.QSIDE in job.places:
            side = self._stage(job, Kind.QSIDE, job.sidecar_src, qdir)
        if side is not None:
            final = self._placer.place_pair(
                job,
                Kind.ORIG,
                staged,
                Kind.QSIDE,
                side,
                qdir,
                job.name,
                SIDECAR_SUFFIX,
                required=False,
            )
        else:
            final = self._placer.place(job, Kind.ORIG, staged, qdir, job.name)
        unlink_quiet(job.src)
        unlink_quiet(job.sidecar_src)
        self.write_reason(job, qdir, final)
        self._claimer.release(job)
        return final

    def _stage(self, job: Job, kind: Kind, src: Path, qdir: Path) -> Path | None:
        """What to link into ``qdir`` for ``src``: ``src`` itself when a hard
        link from it into ``qdir`` works, else a durable copy (recorded in
        ``job.temps[kind]``). ``st_dev`` is not asked: bind mounts of one
        filesystem share it, yet refuse links between them (EXDEV), as do
        filesystems without hard links; so a link is tried (to a temporary
        name, removed at once). Resumes an earlier staging; None when there
        is nothing to stage."""
        rec = job.places.get(kind)
        if rec is not None:
            if self._placer.placed(rec) is not None or lexists(Path(rec.staged)):
                return Path(rec.staged)
            job.places.pop(kind)
        if not lexists(src):
            return None
        tmp = tmp_for(qdir, job.name)
        unlink_quiet(job.temps.get(kind))
        job.temps[kind] = str(tmp)
        self._store.save(job)
        try:
            os.link(src, tmp, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.EXDEV and e.errno not in fsutil.NO_LINK_ERRNOS:
                raise
            nofollow.copy_nofollow(src, tmp, mode=self.mode)
            return tmp
        if not self._ready(src, qdir):
            self._copy_instead(src, tmp)
            return tmp
        unlink_quiet(tmp)  # links work here: place the original itself
        job.temps.pop(kind, None)
        return src

    def _copy_instead(self, src: Path, tmp: Path) -> None:
        """Replace the link ``tmp`` to ``src`` by a copy with the quarantine mode."""
        # The producer's file keeps its owner, group and mode through a
        # link; the service cannot chown it to the admins' group (not its
        # group; unmapped under PrivateUsers). A copy it creates takes the
        # set-group-ID folder's group and gets the quarantine mode.
        unlink_quiet(tmp)
        try:
            nofollow.copy_nofollow(src, tmp, mode=self.mode)
        except PermissionError:
            # Unreadable to the service (mode 000, say): nobody else can
            # read it through its mode either; quarantine it as it is
            # rather than leave it stuck in the work area.
            self._log.warning("quarantine.mode_kept", reason="unreadable")
            os.link(src, tmp, follow_symlinks=False)

    def _ready(self, src: Path, qdir: Path) -> bool:
        """Whether ``src`` may be linked into ``qdir`` as it is: owned by the
        service, in the folder's group, with the quarantine mode."""
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode):
            return True  # a symlink is quarantined as the link itself: no content to read
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != self.mode:
            # Ours (a cross-mount claim's copy, or the service wrote it):
            # set the mode on the file itself, no copy needed for that.
            src.chmod(self.mode)  # a regular file (checked above)
            st = os.lstat(src)
        return (
            st.st_uid == os.geteuid()
            and st.st_gid == os.lstat(qdir).st_gid
            and stat.S_IMODE(st.st_mode) == self.mode
        )

    def write_reason(self, job: Job, qdir: Path, final: Path) -> None:
        """Place ``<final>.reason.json`` beside the quarantined file (resumable)."""
        rec = job.places.get(Kind.REASON)
        if rec is not None and self._placer.placed(rec) is not None:
            self._placer.drop_staged(rec)
            return
        if rec is None or not lexists(Path(rec.staged)):
            job.places.pop(Kind.REASON, None)
            unlink_quiet(job.temps.get(Kind.REASON))
            tmp = fsutil.tmp_name(qdir / "x.json")
            job.temps[Kind.REASON] = str(tmp)
            self._store.save(job)
            data = (json.dumps(self._reason_body(job), indent=2) + "\n").encode()
            write_new(tmp, data, create_mode=0o640)
        self._placer.place(
            job,
            Kind.REASON,
            Path(job.temps.get(Kind.REASON) or ""),
            qdir,
            reason_name(final.name, name_max(qdir)),
        )

    @staticmethod
    def _reason_body(job: Job) -> dict[str, Any]:
        assert job.reason is not None
        return {
            "reason": job.reason["reason"],
            "description": job.reason["description"],
            "stage": job.reason["stage"],
            "detail": job.reason.get("detail", ""),
            "last_error": job.reason.get("last_error", ""),
            "attempts": job.attempts,
            "time": _now_iso(),
            "job": job.id,
            "redactd_version": __version__,
        }
