"""The service's private work area: claim, deliver, quarantine, recover.

Every move here is ordered so that a crash (``kill -9``, power loss) at any
instant leaves each input in exactly one place, and recovery can tell which:

* **claim**: a small manifest is written first (state ``claiming``), then the
  inbound file is renamed into ``work_dir/<job>/`` (atomic; the rename is the
  lock between two instances watching one folder: the loser gets ENOENT).
  The watcher's settle snapshot (dev, inode, size, mtime) comes with the
  request and is checked before and after the rename: a file that changed
  since it settled is not taken (``InputChanged``; it settles again).
  When the work area is on another mount (EXDEV; bind mounts of one
  filesystem included, so ``st_dev`` is never trusted) the file is first
  renamed to ``.redactd-claim-<random>`` beside itself (the lock; the name is
  not derivable from the job id in the logs), copied and fsynced into the
  work area, and the claim name is looked at again: changed, the copy is
  dropped and the file put back under its name (``rename_noreplace``, never
  over a newer file). The claim name is kept (hidden) until the job ends, as
  the inode a remote writer may still append to; it is removed with the
  original. A claim that cannot be finished (disk full during recovery) is
  put back the same way, never left hidden.
* **input changed**: the claimed original's (inode, size, mtime, ctime) is
  kept in the manifest (``snap``); the supervisor compares it before
  processing, before a quarantine verdict and before publishing
  (:meth:`Spool.input_changed`): content appended through a writer's open
  handle after the claim discards the output and the job settles again.
* **deliver**: the pipeline writes a temporary name in the outbound folder
  (recorded in the manifest before it exists). The manifest records the
  temporary's inode and the final name about to be used, then the temporary
  is hard-linked to that name (``fsutil.link_noreplace``: never replaces) and
  unlinked. Only then is the original in the work area removed. Recovery
  recognises a finished placement by the recorded name carrying the recorded
  inode, so a result is never published twice.
* **quarantine**: the original is placed the same way in the quarantine
  folder (hard link on the same filesystem, else a durable copy), then a
  ``<name>.reason.json`` is placed beside it. The reason file holds a reason
  code, stage, attempts, time, version and the opaque job id: no names.
* **recover**: at start every job directory is examined; unfinished jobs are
  returned for another run, recorded temporaries that never became results
  are removed.

Pairs (an input with its instruction sidecar, ``NAME.EXT.redact.json``):

* the sidecar's name is recorded in the manifest before the claim; the input
  is renamed first (it stays the lock), then the sidecar into
  ``work_dir/<job>/sidecar.json`` (across filesystems: renamed to a claim
  name, copied, that name kept until the job ends, like the input). A crash between the two is
  finished by recovery; a sidecar that vanished meanwhile leaves the job
  without instructions, as if it had come too late;
* a sidecar is never delivered: it is removed with the original. In
  quarantine both sit side by side under their original names; when the
  input's name is taken, ``name (1).ext`` and ``name (1).ext.redact.json``
  are used, chosen together (a free name for both) and published sidecar
  first, so a crash never leaves them apart.

Job records (``redactd.pipeline.record``): the record is written to a temporary in
the outbound folder before delivery; delivery chooses a name free for both
the output and ``<output>.redactd.json``, publishes the record first and then
the output (a consumer that sees an output can read its record), recording
both names and inodes so that recovery finishes the pair exactly once.

The manifest (``job.json``, mode 0600, in a 0700 directory) is private state,
not a log: it holds the relative path of the input so that the result can be
put in the same sub-folder. Names are kept as Python strings with
``surrogateescape`` (JSON ``\\udcXX`` escapes), so non-UTF-8 names survive.

Long names: outbound and quarantine keep the input's name. A numbered
variant (``name (1).jpg``) or ``<name>.reason.json`` that would exceed the
folder's NAME_MAX is shortened at a UTF-8 boundary and given ``~`` plus 12
hex digits of the SHA-256 of the full name, so it stays unique and can be
matched by whoever holds the original name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from redactd import __version__
from redactd.core import fsutil, log
from redactd.core.errors import REASONS, PermanentInputError, TransientError
from redactd.core.fsutil import errname
from redactd.pipeline.record import RECORD_SUFFIX
from redactd.service.names import CLAIM_PREFIX
from redactd.service.stability import writer_active
from redactd.stages.instructions.parse import SIDECAR_SUFFIX

MANIFEST = "job.json"
SRC = "src"
SIDECAR = "sidecar.json"
#: Suffix of a sidecar's cross-filesystem claim name (after CLAIM_PREFIX + job id).
SIDECAR_CLAIM_SUFFIX = ".sidecar"
LOCK = ".lock"
#: Temporaries older than this that no job of ours recorded are removed at
#: start. Younger ones may belong to a second instance sharing the folder.
STRAY_MIN_AGE_SECONDS = 600.0
_MAX_SUFFIX_BYTES = 16
_DIR_MODE = 0o750

JobState = Literal["claiming", "claimed", "delivering", "quarantining"]


class SpoolBusy(Exception):
    """Another process holds the work area."""


class NotMovable(Exception):
    """A special file that cannot be moved into the work area (other filesystem)."""


class InputChanged(Exception):
    """The inbound file is not the one that settled (it grew, shrank, was
    replaced or touched): it was left (or put back) in inbound to settle again."""


#: What a watcher saw when a file settled: (dev, inode, size, mtime_ns).
Snapshot = tuple[int, int, int, int]


def snap_of(st: os.stat_result) -> dict[str, int]:
    """The fields of a claimed file compared by :meth:`Spool.input_changed`."""
    return {
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _matches(st: os.stat_result, expect: Snapshot | None) -> bool:
    if expect is None:
        return True
    return (st.st_ino, st.st_size, st.st_mtime_ns) == expect[1:]


def claim_name() -> str:
    """A fresh claim name for inbound: random, never derived from the job id."""
    return CLAIM_PREFIX + secrets.token_hex(8)


@dataclass(frozen=True)
class Target:
    """Where a job's input came from and where its results go."""

    inbound: Path
    outbound: Path
    quarantine: Path
    profile: str
    file_mode: int = 0o640


@dataclass
class Job:
    """One claimed input and its persisted progress.

    Mutable on purpose: it *is* the state machine that ``job.json`` mirrors;
    only the spool changes it, and it never crosses into the pipeline.
    """

    id: str
    dir: Path
    target: Target
    rel: tuple[str, ...]
    state: JobState = "claiming"
    attempts: int = 0
    size: int = 0
    claimed_at: float = 0.0
    claim: str | None = None  # cross-filesystem claim name, in the input's inbound folder
    out_tmp: str | None = None
    # Output name when the pipeline changes the container (e.g. .avi -> .mp4).
    out_name: str | None = None
    q_tmp: str | None = None
    r_tmp: str | None = None
    # The sidecar's name in the inbound folder. Once the claim is complete,
    # set means "this job has instructions" (``sidecar_src``); a sidecar that
    # could not be claimed (not a regular file) leaves it set with no file.
    sidecar: str | None = None
    sidecar_claim: str | None = None  # cross-filesystem claim name of the sidecar
    qs_tmp: str | None = None  # the sidecar's quarantine temporary (cross-filesystem)
    rec_tmp: str | None = None  # the job record's outbound temporary
    input_sha256: str | None = None  # computed once (while copying, or before processing)
    # The claimed original as last seen unchanged (``snap_of``); None for jobs
    # of older versions (first look renews it).
    snap: dict[str, int] | None = None
    places: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: dict[str, Any] | None = None
    timed_out: bool = False
    q_fails: int = 0  # in memory only: failed quarantine moves in this run
    # The supervisor may mark a hung job timed out while its worker holds it.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def src(self) -> Path:
        return self.dir / SRC

    @property
    def sidecar_src(self) -> Path:
        return self.dir / SIDECAR

    @property
    def name(self) -> str:
        return self.rel[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "id": self.id,
            "state": self.state,
            "attempts": self.attempts,
            "size": self.size,
            "claimed_at": self.claimed_at,
            "target": {
                "inbound": str(self.target.inbound),
                "outbound": str(self.target.outbound),
                "quarantine": str(self.target.quarantine),
                "profile": self.target.profile,
                "file_mode": self.target.file_mode,
            },
            "rel": list(self.rel),
            "claim": self.claim,
            "out_tmp": self.out_tmp,
            "out_name": self.out_name,
            "q_tmp": self.q_tmp,
            "r_tmp": self.r_tmp,
            "sidecar": self.sidecar,
            "sidecar_claim": self.sidecar_claim,
            "qs_tmp": self.qs_tmp,
            "rec_tmp": self.rec_tmp,
            "input_sha256": self.input_sha256,
            "snap": self.snap,
            "places": self.places,
            "reason": self.reason,
            "timed_out": self.timed_out,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], job_dir: Path) -> Job:
        t = d["target"]
        rel = tuple(str(p) for p in d["rel"])
        if not rel or any(p in ("", ".", "..") or "/" in p or "\0" in p for p in rel):
            raise ValueError("invalid relative path in manifest")
        return cls(
            id=str(d["id"]),
            dir=job_dir,
            target=Target(
                Path(t["inbound"]),
                Path(t["outbound"]),
                Path(t["quarantine"]),
                str(t["profile"]),
                int(t.get("file_mode", 0o640)),
            ),
            rel=rel,
            state=d["state"],
            attempts=int(d.get("attempts", 0)),
            size=int(d.get("size", 0)),
            claimed_at=float(d.get("claimed_at", 0.0)),
            claim=d.get("claim"),
            out_tmp=d.get("out_tmp"),
            out_name=d.get("out_name"),
            q_tmp=d.get("q_tmp"),
            r_tmp=d.get("r_tmp"),
            sidecar=_plain_name(d.get("sidecar")),
            sidecar_claim=_plain_name(d.get("sidecar_claim")),
            qs_tmp=d.get("qs_tmp"),
            rec_tmp=d.get("rec_tmp"),
            input_sha256=d.get("input_sha256"),
            snap=_snap_field(d.get("snap")),
            places=dict(d.get("places") or {}),
            reason=d.get("reason"),
            timed_out=bool(d.get("timed_out", False)),
        )


def _snap_field(v: object) -> dict[str, int] | None:
    if not isinstance(v, dict):
        return None
    return {str(k): int(x) for k, x in v.items()}


def _plain_name(v: object) -> str | None:
    """A manifest's file name: one plain path component, or None."""
    if v is None:
        return None
    s = str(v)
    if s in ("", ".", "..") or "/" in s or "\0" in s:
        raise ValueError("invalid file name in manifest")
    return s


# --------------------------------------------------------------------------- names


def name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _blen(s: str) -> int:
    return len(os.fsencode(s))


def truncate_name(s: str, max_bytes: int) -> str:
    """``s`` cut to at most ``max_bytes`` encoded bytes, never inside a UTF-8 sequence."""
    b = os.fsencode(s)
    if len(b) <= max_bytes:
        return s
    cut = max(0, max_bytes)
    while cut > 0 and (b[cut] & 0xC0) == 0x80:  # continuation byte: back off
        cut -= 1
    return os.fsdecode(b[:cut])


def _name_hash(s: str) -> str:
    return hashlib.sha256(os.fsencode(s)).hexdigest()[:12]


def split_suffix(name: str) -> tuple[str, str]:
    """(stem, suffix) where the suffix is kept only when short (a real extension)."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    suffix = name[dot:]
    if _blen(suffix) > _MAX_SUFFIX_BYTES:
        return name, ""
    return name[:dot], suffix


def numbered(name: str, i: int, limit: int = 255) -> str:
    """``name`` for i == 0, else ``stem (i).ext``, shortened to fit ``limit`` bytes."""
    if i == 0:
        return name
    stem, suffix = split_suffix(name)
    tail = f" ({i}){suffix}"
    cand = stem + tail
    if _blen(cand) <= limit:
        return cand
    mark = "~" + _name_hash(name)
    return truncate_name(stem, limit - _blen(tail) - _blen(mark)) + mark + tail


def reason_name(qname: str, limit: int = 255) -> str:
    """``<qname>.reason.json``, or a shortened ``<prefix>~<hash>.reason.json``."""
    ext = ".reason.json"
    cand = qname + ext
    if _blen(cand) <= limit:
        return cand
    mark = "~" + _name_hash(qname)
    return truncate_name(qname, limit - _blen(ext) - _blen(mark)) + mark + ext


def tmp_for(folder: Path, name: str) -> Path:
    """A fresh temporary beside ``folder/name`` that keeps a short suffix."""
    _stem, suffix = split_suffix(name)
    return fsutil.tmp_name(folder / ("x" + suffix))


# --------------------------------------------------------------------------- small I/O helpers


def free_bytes(folder: Path) -> int:
    """Bytes available to an unprivileged writer in ``folder``'s filesystem."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _lexists(p: Path) -> bool:
    try:
        os.lstat(p)
        return True
    except FileNotFoundError:
        return False


def _unlink_quiet(p: Path | str | None) -> None:
    if p is None:
        return
    with contextlib.suppress(FileNotFoundError):
        Path(p).unlink()


def ensure_dirs(base: Path, parts: tuple[str, ...]) -> Path:
    """``base/parts...`` as real directories (created 0750 when missing).

    A component that exists as anything but a directory (a file, a symlink
    someone planted) makes the name unusable: ``bad_name``.
    """
    cur = base
    for part in parts:
        cur = cur / part
        with contextlib.suppress(FileExistsError):
            cur.mkdir(_DIR_MODE)
        st = os.lstat(cur)
        if not stat.S_ISDIR(st.st_mode):
            raise PermanentInputError("bad_name", "a folder of the relative path is not a folder")
    return cur


def open_dir_nofollow(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of ``root/parts...``, refusing any component that is a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_nofollow(
    src: Path,
    dst: Path,
    src_dir_fd: int | None = None,
    digest: Any = None,
    mode: int | None = None,
) -> None:
    """Durable exclusive copy of a regular file, refusing anything else.

    ``digest`` (a hashlib object) is fed the bytes on the way: the copy is the
    one read of the input a job needs for its sha256. ``mode``: the copy's
    final mode, set before it is fsynced (it is created 0600).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd_in = os.open(src, flags, dir_fd=src_dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd_in).st_mode):
            raise PermanentInputError("not_regular_file", stage="claim")
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while True:
                b = os.read(fd_in, 1 << 20)
                if not b:
                    break
                if digest is not None:
                    digest.update(b)
                view = memoryview(b)
                while view:
                    n = os.write(fd_out, view)
                    view = view[n:]
            if mode is not None:
                os.fchmod(fd_out, mode)
            os.fsync(fd_out)
        except BaseException:
            os.close(fd_out)
            _unlink_quiet(dst)
            raise
        os.close(fd_out)
    finally:
        os.close(fd_in)


def _temporaries_of(job: Job) -> set[str]:
    names = {job.out_tmp, job.rec_tmp, job.q_tmp, job.qs_tmp, job.r_tmp}
    names.update(str(rec.get("staged")) for rec in job.places.values())
    return {n for n in names if n}


def _place_rec(staged: Path) -> dict[str, Any]:
    """What a placement records of its file before linking it (see ``_is_rec``)."""
    st = os.lstat(staged)
    return {
        "staged": str(staged),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "cand": None,
    }


def _is_rec(st: os.stat_result, rec: dict[str, Any]) -> bool:
    """Whether ``st`` is the file a placement recorded: the same inode and
    size; or, on mounts whose inode numbers do not survive a remount (CIFS
    ``noserverino``, some FUSE), the same size and mtime to the nanosecond
    (a link keeps both). Records of older versions hold the inode only."""
    size_ok = "size" not in rec or st.st_size == rec["size"]
    if (st.st_dev, st.st_ino) == (rec["dev"], rec["ino"]):
        return size_ok
    return "mtime_ns" in rec and size_ok and st.st_mtime_ns == rec["mtime_ns"]


def _raise_bad_name(e: OSError) -> None:
    if e.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
        raise PermanentInputError(
            "bad_name", f"the target folder refuses the name ({errname(e)})", "deliver"
        ) from e


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the spool


class Spool:
    """The work area ``work_dir`` (mode 0700), one sub-folder per claimed job.

    Thread-safe for different jobs (each job touches only its own folder and
    its own, uniquely named temporaries); one job is handled by one thread.
    """

    def __init__(self, work_dir: Path, quarantine_mode: int = 0o640) -> None:
        self.dir = work_dir
        # Mode of quarantined originals (service.quarantine_file_mode): a
        # producer's own mode (0644 seen) must not let others read them.
        self.quarantine_mode = quarantine_mode
        self._lock_fd: int | None = None
        # Temporaries named by the jobs ``recover`` kept: never strays.
        self._recorded: set[str] = set()
        # Placements this process linked whose folder fsync then failed:
        # (final name, inode). Kept in memory only: an entry not yet durable
        # must not be recorded as published (a power loss may take it back).
        self._unsynced: set[tuple[str, int]] = set()
        self._log = log.get("redactd.spool")
        work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(work_dir)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "service.work_dir is not a folder")
        if stat.S_IMODE(st.st_mode) != 0o700:
            work_dir.chmod(0o700)  # unmasked originals live here

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

    # -- manifest -----------------------------------------------------------

    def save(self, job: Job) -> None:
        """Write ``job.json`` atomically and durably (tmp, fsync, rename, fsync dir)."""
        with job.lock:
            data = json.dumps(job.to_json(), ensure_ascii=True, separators=(",", ":")).encode()
            tmp = job.dir / (MANIFEST + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.rename(job.dir / MANIFEST)
            fsutil.fsync_dir(job.dir)

    def _load(self, job_dir: Path) -> Job:
        with open(job_dir / MANIFEST, "rb") as f:
            return Job.from_json(json.loads(f.read()), job_dir)

    def _drop(self, job: Job) -> None:
        shutil.rmtree(job.dir, ignore_errors=True)

    # -- claim ----------------------------------------------------------------

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
            dfd = open_dir_nofollow(target.inbound, rel[:-1])
        except FileNotFoundError:
            return None
        try:
            if expect is not None:
                try:
                    st = os.lstat(name, dir_fd=dfd)
                except FileNotFoundError:
                    return None
                if not _matches(st, expect) or st.st_dev != expect[0]:
                    raise InputChanged()
            job = self._claim_in(dfd, name, rel, target, regular, sidecar, expect)
            if job is not None and job.sidecar is not None:
                self._claim_sidecar(job, dfd)
                self.save(job)
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
        job_dir = self.dir / job_id
        job_dir.mkdir(0o700)
        job = Job(
            id=job_id,
            dir=job_dir,
            target=target,
            rel=rel,
            claimed_at=time.time(),
            sidecar=_plain_name(sidecar),
        )
        try:
            self.save(job)
            fsutil.fsync_dir(self.dir)
            os.rename(name, job.src, src_dir_fd=dfd)
        except FileNotFoundError:
            self._drop(job)
            return None
        except OSError as e:
            if e.errno != errno.EXDEV or not regular:
                self._drop(job)  # the rename failed: the input is untouched
                if e.errno == errno.EXDEV:
                    raise NotMovable() from e
                raise
            return self._claim_by_copy(job, dfd, name, expect)
        except BaseException:
            if not _lexists(job.src):
                self._drop(job)
            raise
        with contextlib.suppress(OSError):
            os.fsync(dfd)
        try:
            fsutil.fsync_dir(job_dir)
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
        if not _matches(st, expect):
            # Written to between our look and the rename: it is ours now, but
            # it has not settled; the first check sees a change and waits.
            job.snap["mtime_ns"] = -1
        job.state = "claimed"
        return job

    def _claim_by_copy(
        self, job: Job, dfd: int, name: str, expect: Snapshot | None = None
    ) -> Job | None:
        claim = claim_name()
        job.claim = claim
        try:
            self.save(job)
        except OSError:
            self._drop(job)  # nothing moved yet: the input is untouched in inbound
            raise
        try:
            # The lock: atomic within the inbound folder.
            os.rename(name, claim, src_dir_fd=dfd, dst_dir_fd=dfd)
        except FileNotFoundError:
            self._drop(job)
            return None
        with contextlib.suppress(OSError):
            # Not raised: the file is hidden under its claim name now, and the
            # job must go on (or put it back) rather than leave it there. A
            # rename lost to a crash leaves it in inbound (it is atomic).
            os.fsync(dfd)
        try:
            st = os.lstat(claim, dir_fd=dfd)
            if not _matches(st, expect):
                raise InputChanged()
            job.snap = snap_of(st)  # of the inbound inode: compared again after the copy
            self.save(job)
            self._copy_claim(job, dfd)
        except FileNotFoundError:
            self._drop(job)
            return None
        except Exception:
            # Put the original back under its name (never over a newer file),
            # so a failed copy leaves inbound as it was.
            try:
                self._put_back(job, dfd)
            except OSError:
                # Left as a half-claimed job (state ``claiming``): the
                # supervisor resumes or puts it back (``resume_claim``).
                self._log.error("job.claim_parked", job=job.id)
                raise
            self._drop(job)
            raise
        return job

    def _copy_claim(self, job: Job, dfd: int) -> None:
        """Copy the claim name into the work area; remove it only when it did
        not change meanwhile (else ``InputChanged``, the copy dropped)."""
        assert job.claim is not None
        partial = job.dir / (SRC + ".partial")
        _unlink_quiet(partial)
        h = hashlib.sha256()
        _copy_nofollow(Path(job.claim), partial, src_dir_fd=dfd, digest=h)
        st = os.lstat(job.claim, dir_fd=dfd)
        if job.snap is not None and snap_of(st) != job.snap:
            _unlink_quiet(partial)  # a copy of content that was still changing
            raise InputChanged()
        partial.rename(job.src)
        fsutil.fsync_dir(job.dir)
        job.size = os.lstat(job.src).st_size
        job.input_sha256 = h.hexdigest()
        job.state = "claimed"
        # The claim name stays (hidden) until the job is finished: a writer on
        # a share may still append to that inode, and ``input_changed`` looks
        # at it before a result is published. ``job.snap`` stays its snapshot.
        self.save(job)

    def recopy(self, job: Job) -> None:
        """A cross-filesystem job whose inbound original changed after the
        claim: drop the outputs and the stale copy; the job goes back to
        state ``claiming`` and :meth:`resume_claim` copies it again (or puts
        it back in inbound when it changed again meanwhile)."""
        self.discard_output(job)
        _unlink_quiet(job.src)
        job.input_sha256 = None
        job.state = "claiming"
        self.save(job)

    def _put_back(self, job: Job, dfd: int) -> None:
        """Give the claim name (and a sidecar's) back its original name in
        inbound, never over a file that took the name meanwhile (then
        ``name (1).ext``). Raises OSError when it cannot."""
        for attr, orig in (("sidecar_claim", job.sidecar), ("claim", job.name)):
            claim = getattr(job, attr)
            if claim is None or orig is None:
                continue
            try:
                os.lstat(claim, dir_fd=dfd)
            except FileNotFoundError:
                setattr(job, attr, None)
                continue
            limit = 255
            with contextlib.suppress(OSError):
                limit = int(os.fpathconf(dfd, "PC_NAME_MAX"))
            for i in range(10000):
                try:
                    fsutil.rename_noreplace(
                        claim, numbered(orig, i, limit), src_dir_fd=dfd, dst_dir_fd=dfd
                    )
                except FileExistsError:
                    continue
                break
            os.fsync(dfd)
            setattr(job, attr, None)
        self._log.info("job.put_back", job=job.id)

    def resume_claim(self, job: Job) -> bool:
        """Finish a claim left in state ``claiming`` (a crash or a failure mid
        copy): True when the job now holds its input. When the copy cannot be
        done (disk full, the input changed) the original is put back in
        inbound and the job dropped (False). Raises OSError only when even
        that fails (tried again later)."""
        if _lexists(job.src):
            job.state = "claimed"
            self.save(job)
            return True
        dfd = open_dir_nofollow(job.target.inbound, job.rel[:-1])
        try:
            try:
                os.lstat(job.claim or "", dir_fd=dfd)
            except FileNotFoundError:
                self._drop(job)  # neither here nor there: the rename never happened
                return False
            try:
                self._copy_claim(job, dfd)
                return True
            except (OSError, InputChanged, PermanentInputError) as e:
                reason = errname(e) if isinstance(e, OSError) else type(e).__name__
                self._log.warning("job.claim_unfinished", job=job.id, error=reason)
            self._put_back(job, dfd)
            self._drop(job)
            return False
        finally:
            os.close(dfd)

    def _claim_sidecar(self, job: Job, dfd: int) -> None:
        """Move the recorded sidecar into the job folder (after the input, whose
        rename is the lock between instances). Resumable: recovery calls it again.

        A sidecar that vanished meanwhile is forgotten (the job runs without
        instructions, as if the sidecar had come too late); one that is not a
        regular file is left where it is and the job, still naming it, fails
        as ``invalid_sidecar`` (fail closed: instructions were asked for).
        """
        assert job.sidecar is not None
        dst = job.sidecar_src
        try:
            if _lexists(dst):
                return
            if job.sidecar_claim is None:
                try:
                    st = os.lstat(job.sidecar, dir_fd=dfd)
                except FileNotFoundError:
                    job.sidecar = None
                    return
                if not stat.S_ISREG(st.st_mode):
                    return
                try:
                    os.rename(job.sidecar, dst, src_dir_fd=dfd)
                except FileNotFoundError:
                    job.sidecar = None
                    return
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                else:
                    with contextlib.suppress(OSError):
                        os.fsync(dfd)
                    fsutil.fsync_dir(job.dir)
                    return
                # Across filesystems: the claim name is the lock, as for the input.
                job.sidecar_claim = claim_name() + SIDECAR_CLAIM_SUFFIX
                self.save(job)
                try:
                    os.rename(job.sidecar, job.sidecar_claim, src_dir_fd=dfd, dst_dir_fd=dfd)
                except FileNotFoundError:
                    job.sidecar = job.sidecar_claim = None
                    return
                os.fsync(dfd)
            partial = job.dir / (SIDECAR + ".partial")
            _unlink_quiet(partial)
            try:
                _copy_nofollow(Path(job.sidecar_claim), partial, src_dir_fd=dfd)
            except FileNotFoundError:
                job.sidecar = job.sidecar_claim = None
                return
            partial.rename(dst)
            fsutil.fsync_dir(job.dir)
            self.save(job)  # its claim name stays with the input's until the job ends
        except (OSError, PermanentInputError) as e:
            # The input is claimed already; the job, still naming a sidecar it
            # does not hold, fails closed as invalid_sidecar.
            err = errname(e) if isinstance(e, OSError) else e.reason
            self._log.warning("job.sidecar_claim_failed", job=job.id, error=err)

    def _drop_claim(self, job: Job, dfd: int | None = None) -> OSError | None:
        """Remove the inbound claim names (input and sidecar) of a
        cross-filesystem claim, if any. The error when they could not be
        removed (or their removal not made durable)."""
        if job.claim is None and job.sidecar_claim is None:
            return None
        own = dfd is None
        try:
            if dfd is None:
                dfd = open_dir_nofollow(job.target.inbound, job.rel[:-1])
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

    def _claim_exists(self, job: Job) -> bool:
        if job.claim is None:
            return False
        try:
            dfd = open_dir_nofollow(job.target.inbound, job.rel[:-1])
        except OSError:
            return False
        try:
            os.lstat(job.claim, dir_fd=dfd)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(dfd)

    # -- processing -------------------------------------------------------------

    def input_changed(self, job: Job) -> bool:
        """Whether the claimed original changed since its snapshot (size,
        mtime, ctime, inode): content appended through a writer's open handle
        after the claim. The snapshot is renewed, so a second call after a
        quiet period says whether it settled again. A local writer still
        holding it open counts as a change. Across filesystems the inode
        looked at is the inbound claim name (the copy is never written to);
        a claim name someone removed is no change (the copy is complete)."""
        if job.claim is not None:
            try:
                dfd = open_dir_nofollow(job.target.inbound, job.rel[:-1])
            except OSError:
                return False
            try:
                st = os.lstat(job.claim, dir_fd=dfd)
            except FileNotFoundError:
                return False
            finally:
                os.close(dfd)
            if job.snap is not None and snap_of(st) != job.snap:
                job.snap = snap_of(st)
                self.save(job)
                return True
            return False
        st = os.lstat(job.src)
        now = snap_of(st)
        if job.snap is None:
            job.snap = now  # a job of an older version: nothing to compare with
            self.save(job)
            return False
        if now == job.snap and not (stat.S_ISREG(st.st_mode) and writer_active(job.src)):
            return False
        job.snap = now
        job.size = st.st_size
        self.save(job)
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
        job.out_tmp = str(tmp)
        job.state = "claimed"
        self.save(job)
        return tmp

    def count_attempt(self, job: Job) -> None:
        """Count an attempt that failed before any output was started."""
        job.attempts += 1
        self.save(job)

    def discard_output(self, job: Job) -> None:
        """Remove the temporaries of a failed attempt (the pipeline usually did).

        A result already published under its final name stays (it is durable
        and complete); only unpublished temporaries go, and a record already
        published for an output that was not is withdrawn.
        """
        rec = job.places.get("out")
        if rec is not None:
            if self._placed(rec) is not None:
                return
            job.places.pop("out")
        side = job.places.pop("record", None)
        if side is not None:
            self._withdraw(side)
        _unlink_quiet(job.out_tmp)
        job.out_tmp = None
        _unlink_quiet(job.rec_tmp)
        job.rec_tmp = None
        if job.state == "delivering":
            job.state = "claimed"  # nothing left to publish: the next attempt runs it again

    def published(self, job: Job) -> bool:
        """Whether the job's output is under its final name already (only the
        removal of the original and the job folder is left)."""
        rec = job.places.get("out")
        return rec is not None and self._placed(rec) is not None

    def undo_attempt(self, job: Job) -> None:
        """Do not count the last attempt (it was stopped by a full disk, not the input)."""
        job.attempts = max(0, job.attempts - 1)
        self.discard_output(job)
        self.save(job)

    def input_sha256(self, job: Job) -> str:
        """The claimed input's sha256, read once per job (kept in the manifest)."""
        if job.input_sha256 is None:
            fd = os.open(job.src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                h = hashlib.sha256()
                while chunk := os.read(fd, 1 << 20):
                    h.update(chunk)
            finally:
                os.close(fd)
            job.input_sha256 = h.hexdigest()
            self.save(job)
        return job.input_sha256

    def stage_record(self, job: Job, data: bytes) -> None:
        """Write the job record to a durable temporary in the outbound folder;
        :meth:`deliver` publishes it (before the output, beside it)."""
        side = job.places.pop("record", None)
        if side is not None:
            self._withdraw(side)
        _unlink_quiet(job.rec_tmp)
        tmp = fsutil.tmp_name(self.out_dir(job) / "x.json")
        job.rec_tmp = str(tmp)
        self.save(job)  # recorded before it exists: recovery removes it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, job.target.file_mode)
            os.fsync(fd)
        finally:
            os.close(fd)

    def deliver(self, job: Job) -> Path:
        """Publish the finished temporary under the input's name (its record
        first, when there is one), then remove the original and its sidecar.
        Returns the final path (callers MUST NOT log it)."""
        if "out" not in job.places:
            assert job.out_tmp is not None
            Path(job.out_tmp).chmod(job.target.file_mode)
            job.state = "delivering"
        folder = self.out_dir(job)
        name = job.out_name or job.name
        staged = Path(job.out_tmp or "")
        if job.rec_tmp is not None or "record" in job.places:
            final = self._place_pair(
                job, "out", staged, "record", Path(job.rec_tmp or ""), folder, name, RECORD_SUFFIX
            )
        else:
            final = self._place(job, "out", staged, folder, name)
        self._finish(job)
        return final

    # -- placement (shared by deliver and quarantine) -----------------------------

    def _placed(self, rec: dict[str, Any]) -> Path | None:
        cand = rec.get("cand")
        if not cand:
            return None
        try:
            st = os.lstat(cand)
        except FileNotFoundError:
            return None
        if _is_rec(st, rec):
            return Path(cand)
        return None

    def _taken(self, rec: dict[str, Any]) -> Path | None:
        """The final name of a placement this spool linked whose file has
        since left the folder: a consumer took it (or an operator removed
        it). It was published; linking it again would publish it twice.

        Known two ways: ``rec["linked"]``, recorded once the link and the
        fsync of its folder succeeded (so it survives a restart); or, for a
        link whose folder fsync failed, this process's memory of it. Either
        way the folder is fsynced again before the original is removed."""
        cand = rec.get("cand")
        if cand and (rec.get("linked") or (cand, rec["ino"]) in self._unsynced):
            # (the name may hold another file by now: ours was still taken)
            return Path(cand)
        return None

    def _linked(self, job: Job, rec: dict[str, Any]) -> None:
        """Record a placement whose link and folder fsync succeeded."""
        rec["linked"] = True
        self._unsynced.discard((rec["cand"], rec["ino"]))
        self.save(job)

    def _link_failed(self, rec: dict[str, Any]) -> None:
        """After a failed link: if the name exists (the fsync after the
        link is what failed), remember it, in memory only (see ``_unsynced``)."""
        if self._placed(rec) is not None:
            self._unsynced.add((rec["cand"], rec["ino"]))

    @staticmethod
    def _durable(done: Path) -> None:
        """Make a placement found done (a retry, a recovery) durable before
        the original it replaces is removed: the fsync of its folder after
        the link may be what failed (EIO). A failed fsync is never taken as
        done; this is a fresh one of the folder on a new descriptor (a
        folder's entries are journalled metadata: a filesystem that lost
        them fails every later fsync too, it does not report success)."""
        fsutil.fsync_dir(done.parent)

    def _drop_staged(self, rec: dict[str, Any]) -> None:
        staged = Path(rec["staged"])
        try:
            st = os.lstat(staged)
        except FileNotFoundError:
            return
        if _is_rec(st, rec):
            staged.unlink()
            with contextlib.suppress(OSError):
                fsutil.fsync_dir(staged.parent)

    def _record_ready(self, job: Job) -> bool:
        """The job's record (if it has one) is staged or published."""
        side = job.places.get("record")
        if side is not None:
            return self._placed(side) is not None or _lexists(Path(side["staged"]))
        return job.rec_tmp is None or _lexists(Path(job.rec_tmp))

    def _withdraw(self, rec: dict[str, Any]) -> None:
        """Unpublish a companion whose main file will not be published (ours:
        the recorded inode), and drop its temporary."""
        done = self._placed(rec)
        if done is not None:
            done.unlink()
            with contextlib.suppress(OSError):
                fsutil.fsync_dir(done.parent)
        self._drop_staged(rec)

    def _place(self, job: Job, key: str, staged: Path, folder: Path, name: str) -> Path:
        """Give ``staged`` (same filesystem as ``folder``) a free name in
        ``folder`` without ever replacing a file, exactly once across crashes."""
        rec = job.places.get(key)
        if rec is None:
            rec = _place_rec(staged)
            job.places[key] = rec
        done = self._placed(rec) or self._taken(rec)
        if done is not None:
            self._durable(done)
            self._drop_staged(rec)
            return done
        if not _lexists(Path(rec["staged"])):
            raise FileNotFoundError(errno.ENOENT, "staged file vanished")
        limit = name_max(folder)
        i = 0
        while True:
            cand = folder / numbered(name, i, limit)
            i += 1
            if _lexists(cand):
                continue
            rec["cand"] = str(cand)
            self.save(job)  # the name is recorded before it can exist
            try:
                fsutil.link_noreplace(Path(rec["staged"]), cand)
            except FileExistsError:
                continue
            except OSError as e:
                self._link_failed(rec)
                _raise_bad_name(e)
                raise
            self._linked(job, rec)
            return cand

    def _place_pair(
        self,
        job: Job,
        key: str,
        staged: Path,
        ckey: str,
        cstaged: Path,
        folder: Path,
        name: str,
        suffix: str,
        required: bool = True,
    ) -> Path:
        """Like :meth:`_place`, with a companion named ``<final name><suffix>``.

        The name is chosen free for both; the companion is published first,
        so whoever sees the main file finds its companion. A companion that
        was published beside a name that is taken by the time the main file
        is linked (a crash in between, then a new file) moves along with it.
        A companion that is gone (its temporary removed by someone) raises
        FileNotFoundError when ``required`` (a record: never an output
        without it), else the main file is placed alone.
        """
        rec = job.places.get(key)
        if rec is None:
            rec = _place_rec(staged)
            job.places[key] = rec
        crec = job.places.get(ckey)
        if crec is None and required and not _lexists(cstaged):
            raise FileNotFoundError(errno.ENOENT, "staged companion vanished")
        if crec is None and _lexists(cstaged):
            crec = _place_rec(cstaged)
            job.places[ckey] = crec
        done = self._placed(rec) or self._taken(rec)
        if done is not None:
            self._durable(done)
            self._drop_staged(rec)
            if crec is not None:
                self._drop_staged(crec)
            return done
        if not _lexists(Path(rec["staged"])):
            raise FileNotFoundError(errno.ENOENT, "staged file vanished")
        limit = name_max(folder) - _blen(suffix)
        i = 0
        while True:
            cand = folder / numbered(name, i, limit)
            ccand = folder / (cand.name + suffix)
            i += 1
            at = self._placed(crec) if crec is not None else None
            if crec is not None and at is None and not _lexists(Path(crec["staged"])):
                if required:
                    raise FileNotFoundError(errno.ENOENT, "staged companion vanished")
                job.places.pop(ckey, None)  # the companion is gone: place the main file alone
                crec = None
            if _lexists(cand) or (crec is not None and at != ccand and _lexists(ccand)):
                continue
            rec["cand"] = str(cand)
            if crec is not None and at != ccand:
                if at is not None:
                    crec["staged"] = str(at)  # published beside an older choice: move it
                crec["cand"] = str(ccand)
            self.save(job)  # both names are recorded before either can exist
            try:
                if crec is not None and at != ccand:
                    fsutil.link_noreplace(Path(crec["staged"]), ccand)
                fsutil.link_noreplace(Path(rec["staged"]), cand)
            except FileExistsError:
                continue
            except OSError as e:
                self._link_failed(rec)
                _raise_bad_name(e)
                raise
            self._linked(job, rec)
            return cand

    def _finish(self, job: Job) -> None:
        _unlink_quiet(job.src)
        _unlink_quiet(job.sidecar_src)
        err = self._drop_claim(job)
        if err is not None:
            # The hidden original may still be in inbound: the job folder
            # stays, and the error is raised so that the supervisor retries
            # now (the job is placed: only this is left), not at the next start.
            with contextlib.suppress(OSError):
                self.save(job)
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
        if errors and _lexists(job.dir):
            raise errors[0]

    # -- quarantine ---------------------------------------------------------------

    def start_quarantine(
        self, job: Job, reason: str, stage: str, detail: str = "", last_error: str = ""
    ) -> None:
        """Record the decision; :meth:`quarantine` carries it out (resumable)."""
        if reason not in REASONS:
            reason = "internal_error"
        self.discard_output(job)
        job.state = "quarantining"
        job.reason = {
            "reason": reason,
            "description": REASONS[reason],
            "stage": stage,
            "detail": log.scrub(detail)[:200],
            "last_error": last_error,
        }
        self.save(job)

    def quarantine(self, job: Job) -> Path:
        """Move the original (and its sidecar, beside it) into quarantine,
        keeping its sub-folder, with a reason file. Returns the quarantined
        path (MUST NOT be logged)."""
        assert job.reason is not None
        qdir = ensure_dirs(job.target.quarantine, job.rel[:-1])
        staged = self._stage_quarantine(job, "orig", job.src, qdir, "q_tmp")
        if staged is None:
            raise FileNotFoundError(errno.ENOENT, "the claimed original is missing")
        side: Path | None = None
        if job.sidecar is not None or "qside" in job.places:
            side = self._stage_quarantine(job, "qside", job.sidecar_src, qdir, "qs_tmp")
        if side is not None:
            final = self._place_pair(
                job, "orig", staged, "qside", side, qdir, job.name, SIDECAR_SUFFIX, required=False
            )
        else:
            final = self._place(job, "orig", staged, qdir, job.name)
        _unlink_quiet(job.src)
        _unlink_quiet(job.sidecar_src)
        self._write_reason(job, qdir, final)
        self._finish(job)
        return final

    def _stage_quarantine(
        self, job: Job, key: str, src: Path, qdir: Path, tmp_attr: str
    ) -> Path | None:
        """What to link into ``qdir`` for ``src``: ``src`` itself when a hard
        link from it into ``qdir`` works, else a durable copy (recorded in
        ``job.<tmp_attr>``). ``st_dev`` is not asked: bind mounts of one
        filesystem share it, yet refuse links between them (EXDEV), as do
        filesystems without hard links; so a link is tried (to a temporary
        name, removed at once). Resumes an earlier staging; None when there
        is nothing to stage."""
        rec = job.places.get(key)
        if rec is not None:
            if self._placed(rec) is not None or _lexists(Path(rec["staged"])):
                return Path(rec["staged"])
            job.places.pop(key)
        if not _lexists(src):
            return None
        tmp = tmp_for(qdir, job.name)
        _unlink_quiet(getattr(job, tmp_attr))
        setattr(job, tmp_attr, str(tmp))
        self.save(job)
        try:
            os.link(src, tmp, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.EXDEV and e.errno not in fsutil.NO_LINK_ERRNOS:
                raise
            _copy_nofollow(src, tmp, mode=self.quarantine_mode)
            return tmp
        if not self._quarantine_ready(src, qdir):
            # The producer's file keeps its owner, group and mode through a
            # link; the service cannot chown it to the admins' group (not its
            # group; unmapped under PrivateUsers). A copy it creates takes the
            # set-group-ID folder's group and gets the quarantine mode.
            _unlink_quiet(tmp)
            try:
                _copy_nofollow(src, tmp, mode=self.quarantine_mode)
            except PermissionError:
                # Unreadable to the service (mode 000, say): nobody else can
                # read it through its mode either; quarantine it as it is
                # rather than leave it stuck in the work area.
                self._log.warning("quarantine.mode_kept", reason="unreadable")
                os.link(src, tmp, follow_symlinks=False)
            return tmp
        _unlink_quiet(tmp)  # links work here: place the original itself
        setattr(job, tmp_attr, None)
        return src

    def _quarantine_ready(self, src: Path, qdir: Path) -> bool:
        """Whether ``src`` may be linked into ``qdir`` as it is: owned by the
        service, in the folder's group, with the quarantine mode."""
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode):
            return True  # a symlink is quarantined as the link itself: no content to read
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != self.quarantine_mode:
            # Ours (a cross-mount claim's copy, or the service wrote it):
            # set the mode on the file itself, no copy needed for that.
            src.chmod(self.quarantine_mode)  # a regular file (checked above)
            st = os.lstat(src)
        return (
            st.st_uid == os.geteuid()
            and st.st_gid == os.lstat(qdir).st_gid
            and stat.S_IMODE(st.st_mode) == self.quarantine_mode
        )

    def _write_reason(self, job: Job, qdir: Path, final: Path) -> None:
        rec = job.places.get("reason")
        if rec is not None and self._placed(rec) is not None:
            self._drop_staged(rec)
            return
        if rec is None or not _lexists(Path(rec["staged"])):
            job.places.pop("reason", None)
            _unlink_quiet(job.r_tmp)
            tmp = fsutil.tmp_name(qdir / "x.json")
            job.r_tmp = str(tmp)
            self.save(job)
            assert job.reason is not None
            body = {
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
            data = (json.dumps(body, indent=2) + "\n").encode()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._place(
            job, "reason", Path(job.r_tmp or ""), qdir, reason_name(final.name, name_max(qdir))
        )

    # -- recovery -------------------------------------------------------------------

    def recover(self) -> list[Job]:
        """Examine every job folder left by an earlier run.

        Returns the jobs to run again (state ``claimed``, ``delivering`` or
        ``quarantining``); removes recorded temporaries that never became a
        result and job folders whose claim never happened.
        """
        jobs: list[Job] = []
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False):
                continue
            job_dir = Path(entry.path)
            try:
                job = self._load(job_dir)
            except FileNotFoundError:
                # A crash between mkdir and the first manifest: nothing claimed yet.
                if not any(p.name in (SRC, SRC + ".partial") for p in job_dir.iterdir()):
                    self._drop_job_dir(job_dir)
                else:
                    self._log.error("job.orphaned", job=entry.name, problem="no manifest")
                continue
            except (OSError, ValueError, KeyError, TypeError) as e:
                self._log.error("job.orphaned", job=entry.name, problem=type(e).__name__)
                continue
            _unlink_quiet(job_dir / (MANIFEST + ".tmp"))
            try:
                keep = self._recover_one(job)
            except OSError as e:
                self._log.error("job.recover_failed", job=job.id, errno=errname(e))
                keep = True  # left in the work area; tried again as a normal job
            if keep:
                jobs.append(job)
                self._recorded.update(_temporaries_of(job))
        return jobs

    def _drop_job_dir(self, job_dir: Path) -> None:
        shutil.rmtree(job_dir, ignore_errors=True)

    def _recover_one(self, job: Job) -> bool:
        if job.state == "claiming":
            if _lexists(job.src):
                job.state = "claimed"
                _unlink_quiet(job.dir / (SRC + ".partial"))
                job.size = os.lstat(job.src).st_size
            elif self._claim_exists(job):
                # Finish the copy, or put the original back when it cannot be
                # finished (disk full, changed meanwhile): never left hidden.
                if not self.resume_claim(job):
                    return False
            else:
                self._drop(job)  # the rename never happened: the input is still in inbound
                return False
        if (
            job.state == "claimed"
            and job.sidecar is not None
            and (job.sidecar_claim is not None or not _lexists(job.sidecar_src))
        ):
            # The input is ours; finish taking its sidecar (it is taken after it).
            _unlink_quiet(job.dir / (SIDECAR + ".partial"))
            try:
                dfd = open_dir_nofollow(job.target.inbound, job.rel[:-1])
            except OSError:
                pass  # no folder to take it from: the job fails as invalid_sidecar
            else:
                try:
                    self._claim_sidecar(job, dfd)
                finally:
                    os.close(dfd)
        if job.state == "delivering":
            rec = job.places.get("out")
            if rec is not None and self._taken(rec) is not None:
                pass  # published and since taken by a consumer: only the clean-up is left
            elif rec is None or (
                self._placed(rec) is None and not _lexists(Path(rec["staged"]))
            ):
                job.state = "claimed"  # nothing to publish: run it again
            elif self._placed(rec) is None and not self._record_ready(job):
                job.state = "claimed"  # its record is lost: never an output without it
        if job.state == "claimed" and not _lexists(job.src):
            # Someone removed the claimed original from the private work area:
            # nothing left to run. Kept for inspection, not retried forever.
            self._log.error("job.orphaned", job=job.id, problem="source missing")
            return False
        if job.state == "claimed":
            # An attempt was cut short: its temporary is a partial output (and
            # a record, even one published, describes an output that never was).
            _unlink_quiet(job.out_tmp)
            job.out_tmp = None
            job.places.pop("out", None)
            side = job.places.pop("record", None)
            if side is not None:
                self._withdraw(side)
            _unlink_quiet(job.rec_tmp)
            job.rec_tmp = None
        if job.state in ("claimed", "quarantining") and job.q_tmp and "orig" not in job.places:
            _unlink_quiet(job.q_tmp)
            job.q_tmp = None
        if job.state in ("claimed", "quarantining") and job.qs_tmp and "qside" not in job.places:
            _unlink_quiet(job.qs_tmp)
            job.qs_tmp = None
        self.save(job)
        return True

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
                    if not f.startswith(fsutil.TMP_PREFIX):
                        continue
                    p = Path(root) / f
                    if str(p) in self._recorded:
                        continue  # a recovered job's (a staged output or record)
                    try:
                        st = os.lstat(p)
                        if now - st.st_mtime >= STRAY_MIN_AGE_SECONDS:
                            Path(p).unlink()
                            removed += 1
                    except OSError:
                        continue
        return removed
