"""A claimed job's persistent state and its manifest, ``job.json``.

Separate from the steps that change it (claim, placement, quarantine,
recovery) because it is the one thing they share, and because its on-disk
form must stay readable by every later version: a ``job.json`` written by
an older version is recovered as it is.

The manifest (mode 0600, in a 0700 directory) is private state, not a log:
it holds the relative path of the input so that the result can be put in
the same sub-folder. Names are kept as Python strings with
``surrogateescape`` (JSON ``\\udcXX`` escapes), so non-UTF-8 names survive.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from redactd.core import fsutil

MANIFEST = "job.json"
SRC = "src"
SIDECAR = "sidecar.json"


class _StrEnum(str, Enum):
    """A str enum that prints as its value (``enum.StrEnum`` is Python 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class JobState(_StrEnum):
    """Where a job is in ``claiming -> claimed -> delivering | quarantining``
    (then gone). The values are the strings ``job.json`` holds."""

    CLAIMING = "claiming"
    CLAIMED = "claimed"
    DELIVERING = "delivering"
    QUARANTINING = "quarantining"


class Kind(_StrEnum):
    """What a staged file of a job is. The value is its key in ``places``
    (``"out" in job.places`` works with plain strings); :attr:`tmp_key` is
    the manifest key of its temporary."""

    OUT = "out"  # the pipeline's output, in outbound
    RECORD = "record"  # the job record beside it
    ORIG = "orig"  # the quarantined original
    QSIDE = "qside"  # its sidecar, beside it in quarantine
    REASON = "reason"  # the quarantine reason file

    @property
    def tmp_key(self) -> str:
        return _TMP_KEYS[self]


_TMP_KEYS = {
    Kind.OUT: "out_tmp",
    Kind.RECORD: "rec_tmp",
    Kind.ORIG: "q_tmp",
    Kind.QSIDE: "qs_tmp",
    Kind.REASON: "r_tmp",
}

#: What a watcher saw when a file settled: (dev, inode, size, mtime_ns).
Snapshot = tuple[int, int, int, int]


def snap_of(st: os.stat_result) -> dict[str, int]:
    """The fields of a claimed file compared by ``Spool.input_changed``."""
    return {
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def matches(st: os.stat_result, expect: Snapshot | None) -> bool:
    """Whether ``st`` is the settled snapshot ``expect`` (dev aside)."""
    if expect is None:
        return True
    return (st.st_ino, st.st_size, st.st_mtime_ns) == expect[1:]


@dataclass(frozen=True)
class Placement:
    """What a placement records of its staged file before linking it, and
    the final name chosen (``cand``) before that name can exist.

    ``size``/``mtime_ns`` are None in records of older versions (inode
    only); ``linked`` is set once the link and the fsync of its folder
    succeeded, so a file a consumer took since is known as published.
    """

    staged: str
    dev: int
    ino: int
    size: int | None = None
    mtime_ns: int | None = None
    cand: str | None = None
    linked: bool = False

    @classmethod
    def of(cls, staged: Path) -> Placement:
        st = os.lstat(staged)
        return cls(str(staged), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def is_file(self, st: os.stat_result) -> bool:
        """Whether ``st`` is the recorded file: the same inode and size; or, on
        mounts whose inode numbers do not survive a remount (CIFS
        ``noserverino``, some FUSE), the same size and mtime to the nanosecond
        (a link keeps both). Records of older versions hold the inode only."""
        size_ok = self.size is None or st.st_size == self.size
        if (st.st_dev, st.st_ino) == (self.dev, self.ino):
            return size_ok
        return self.mtime_ns is not None and size_ok and st.st_mtime_ns == self.mtime_ns

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"staged": self.staged, "dev": self.dev, "ino": self.ino}
        if self.size is not None:
            d["size"] = self.size
        if self.mtime_ns is not None:
            d["mtime_ns"] = self.mtime_ns
        d["cand"] = self.cand
        if self.linked:
            d["linked"] = True
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Placement:
        size, mtime = d.get("size"), d.get("mtime_ns")
        return cls(
            staged=str(d["staged"]),
            dev=int(d["dev"]),
            ino=int(d["ino"]),
            size=None if size is None else int(size),
            mtime_ns=None if mtime is None else int(mtime),
            cand=None if d.get("cand") is None else str(d["cand"]),
            linked=bool(d.get("linked", False)),
        )


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
    state: JobState = JobState.CLAIMING
    attempts: int = 0
    size: int = 0
    claimed_at: float = 0.0
    claim: str | None = None  # cross-filesystem claim name, in the input's inbound folder
    # Output name when the pipeline changes the container (e.g. .avi -> .mp4).
    out_name: str | None = None
    # The sidecar's name in the inbound folder. Once the claim is complete,
    # set means "this job has instructions" (``sidecar_src``); a sidecar that
    # could not be claimed (not a regular file) leaves it set with no file.
    sidecar: str | None = None
    sidecar_claim: str | None = None  # cross-filesystem claim name of the sidecar
    input_sha256: str | None = None  # computed once (while copying, or before processing)
    # The claimed original as last seen unchanged (``snap_of``); None for jobs
    # of older versions (first look renews it).
    snap: dict[str, int] | None = None
    # Temporaries, recorded before they exist (so that recovery removes them):
    # the output and record in outbound, quarantine copies and the reason file.
    temps: dict[Kind, str] = field(default_factory=dict)
    places: dict[Kind, Placement] = field(default_factory=dict)
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

    @property
    def out_tmp(self) -> str | None:
        return self.temps.get(Kind.OUT)

    @property
    def rec_tmp(self) -> str | None:
        return self.temps.get(Kind.RECORD)

    def temporaries(self) -> set[str]:
        """Every temporary this job recorded (never strays)."""
        names = set(self.temps.values())
        names.update(p.staged for p in self.places.values())
        return {n for n in names if n}

    def to_json(self) -> dict[str, Any]:
        t = self.temps.get
        return {
            "v": 1,
            "id": self.id,
            "state": JobState(self.state).value,  # (a plain string assigned is accepted)
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
            "out_tmp": t(Kind.OUT),
            "out_name": self.out_name,
            "q_tmp": t(Kind.ORIG),
            "r_tmp": t(Kind.REASON),
            "sidecar": self.sidecar,
            "sidecar_claim": self.sidecar_claim,
            "qs_tmp": t(Kind.QSIDE),
            "rec_tmp": t(Kind.RECORD),
            "input_sha256": self.input_sha256,
            "snap": self.snap,
            "places": {k.value: p.to_json() for k, p in self.places.items()},
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
            state=JobState(d["state"]),
            attempts=int(d.get("attempts", 0)),
            size=int(d.get("size", 0)),
            claimed_at=float(d.get("claimed_at", 0.0)),
            claim=d.get("claim"),
            out_name=d.get("out_name"),
            sidecar=plain_name(d.get("sidecar")),
            sidecar_claim=plain_name(d.get("sidecar_claim")),
            input_sha256=d.get("input_sha256"),
            snap=_snap_field(d.get("snap")),
            temps={k: str(d[k.tmp_key]) for k in Kind if d.get(k.tmp_key)},
            places={Kind(k): Placement.from_json(p) for k, p in (d.get("places") or {}).items()},
            reason=d.get("reason"),
            timed_out=bool(d.get("timed_out", False)),
        )


def _snap_field(v: object) -> dict[str, int] | None:
    if not isinstance(v, dict):
        return None
    return {str(k): int(x) for k, x in v.items()}


def plain_name(v: object) -> str | None:
    """A manifest's file name: one plain path component, or None."""
    if v is None:
        return None
    s = str(v)
    if s in ("", ".", "..") or "/" in s or "\0" in s:
        raise ValueError("invalid file name in manifest")
    return s


class JobStore:
    """The job folders of the work area: one ``job.json`` each."""

    def __init__(self, work_dir: Path) -> None:
        self.dir = work_dir

    def save(self, job: Job) -> None:
        """Write ``job.json`` atomically and durably (tmp, fsync, rename, fsync dir)."""
        with job.lock:
            data = json.dumps(job.to_json(), ensure_ascii=True, separators=(",", ":")).encode()
            tmp = job.dir / (MANIFEST + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                fsutil.write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.rename(job.dir / MANIFEST)
            fsutil.fsync_dir(job.dir)

    def load(self, job_dir: Path) -> Job:
        with open(job_dir / MANIFEST, "rb") as f:
            return Job.from_json(json.loads(f.read()), job_dir)

    def drop(self, job: Job) -> None:
        shutil.rmtree(job.dir, ignore_errors=True)
