"""Finding files in inbound folders that are complete and ready to claim.

Events from watchdog are only *hints* that something changed at a path: every
decision is taken on our own ``lstat`` of that path (never following links),
so a lost, merged or reordered event can delay a file but never make us take
a half-written one. A full scan at start and every ``service.rescan_seconds``
catches what events missed (inotify queue overflow, writes made by another
host on a network share); the walk itself, spread over ticks, is ``scan``.

A file is ready when the pure :class:`StabilityTracker` says so: its size,
mtime and inode stayed the same for ``settle_seconds`` with no event in that
time, and (inotify only) it was closed after its last write; an empty file
waits ``service.empty_file_grace_seconds`` more (a writer that created it
may not have written yet). Ready files are handed out once: they stay in an
in-flight set until the worker releases them. A candidate carries the
snapshot it settled with (dev, inode, size, mtime); the claim checks it, and
a file that changed since is released with ``retrack`` to settle again.

Sidecars: ``NAME.EXT.redact.json`` (``redactd.stages.instructions``) carries the
instructions for ``NAME.EXT`` and is never handed out as media. An input and
its sidecar are one *pair*, tracked under the input's path: an event on
either is an event of the pair, and the pair is quiet only when both files
are. A settled input without a sidecar waits ``sidecar_wait_seconds`` more
(a sidecar that appears meanwhile joins it); a sidecar alone waits for its
input and is handed out as an orphan (to be quarantined) after
``sidecar_orphan_seconds`` (these waits: ``pairs``).

Paths and names never reach a log line here; only watch indexes, counts and
errno names do.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from redactd.core import log
from redactd.core.config import DEFAULT_IGNORE, WatchConfig
from redactd.core.fsutil import errname
from redactd.service.mounts import ResolvedMode, resolve_mode
from redactd.service.names import is_ignored, is_sidecar_name, relative_parts
from redactd.service.pairs import PairWaits
from redactd.service.scan import Rescan
from redactd.service.stability import (
    EventKind,
    FileState,
    PairState,
    StabilityTracker,
    writer_active,
)
from redactd.stages.instructions.parse import media_name_of, sidecar_path

#: Entries a rescan reads per tick of the main loop (at 4 ticks a second,
#: 20,000 a second): a share with a million files is rescanned in under a
#: minute without ever holding the loop (and its watchdog pings) for long.
SCAN_ENTRIES_PER_TICK = 5000


# --------------------------------------------------------------------------- the watcher


@dataclass(frozen=True)
class Candidate:
    """A complete inbound entry handed to a worker (paths only, no content).

    ``sidecar`` is the name of the input's settled sidecar (same folder), to
    be claimed together with it. ``orphan`` marks a sidecar whose input never
    came (``path`` and ``rel`` then name the sidecar): it is to be quarantined.
    """

    watch: int
    path: Path
    rel: tuple[str, ...]
    regular: bool
    size: int
    dev: int
    ino: int
    sidecar: str | None = None
    #: With dev, ino and size: the settle snapshot the claim verifies.
    mtime_ns: int = 0
    orphan: bool = False
    pair: str = ""  # the watcher's key (the input's path) when it is not ``path``

    @property
    def key(self) -> str:
        """What :meth:`FolderWatcher.release` takes back."""
        return self.pair or str(self.path)


class Hints(FileSystemEventHandler):
    """Collects watchdog events into a thread-safe deque; nothing else."""

    def __init__(self) -> None:
        # (path, kind, is_dir)
        self.events: deque[tuple[str, EventKind, bool]] = deque()

    def on_any_event(self, event: FileSystemEvent) -> None:
        add = self.events.append
        if isinstance(event, DirMovedEvent):
            add((os.fsdecode(event.dest_path), "other", True))
        elif isinstance(event, DirCreatedEvent):
            add((os.fsdecode(event.src_path), "other", True))
        elif isinstance(event, FileMovedEvent):
            add((os.fsdecode(event.dest_path), "other", False))
        elif isinstance(event, FileOpenedEvent):
            add((os.fsdecode(event.src_path), "open", False))
        elif isinstance(event, (FileClosedEvent, FileClosedNoWriteEvent)):
            add((os.fsdecode(event.src_path), "close", False))
        elif isinstance(event, FileModifiedEvent):
            add((os.fsdecode(event.src_path), "write", False))
        elif isinstance(event, (FileCreatedEvent, FileDeletedEvent)):
            add((os.fsdecode(event.src_path), "other", False))


class FolderWatcher:
    """One ``[[watch]]`` entry: observer, scans, stability and in-flight set.

    Thread model: watchdog's thread only appends to a deque; :meth:`tick` is
    called from the supervisor's main loop; :meth:`release` may be called
    from worker threads.
    """

    def __init__(
        self,
        index: int,
        cfg: WatchConfig,
        settle_seconds: float,
        rescan_seconds: float,
        mountinfo: str | None = None,
        empty_grace_seconds: float = 0.0,
    ) -> None:
        self.index = index
        self.cfg = cfg
        self.root = cfg.inbound
        self.patterns = tuple(DEFAULT_IGNORE) + tuple(cfg.ignore)
        self.mode: ResolvedMode = resolve_mode(cfg, mountinfo)
        self.rescan_seconds = rescan_seconds
        self.tracker = StabilityTracker(settle_seconds)
        wait = cfg.sidecar_wait_seconds
        # An empty file is often a writer that created it and has not written
        # yet (a scanner, an NVR export): judged only after its quiet time.
        self.waits = PairWaits(
            empty_grace_seconds,
            settle_seconds if wait is None else wait,
            cfg.sidecar_orphan_seconds,
        )
        self.hints = Hints()
        self._observer: BaseObserver | None = None
        self._inflight: set[str] = set()
        self._refused: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._next_rescan = 0.0
        self.rescan = Rescan(self.root, index)
        self._stopped = True
        self._log = log.get("redactd.watch")

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start watching. Never raises for the folder itself: when the observer
        cannot start (folder missing, share down), rescans keep serving and
        each rescan tries to watch again."""
        self._stopped = False
        try:
            self._start_observer()
        except OSError as e:
            self._observer = None
            self._log.warning("watch.observer_failed", watch=self.index, errno=errname(e))

    def _start_observer(self) -> None:
        """Start the observer (falls back to polling when inotify limits are hit)."""
        self._observer = self._make_observer(self.mode)
        try:
            self._observer.start()
        except OSError as e:
            if self.mode != "inotify" or e.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            # watchdog turns inotify's ENOSPC/EMFILE into "limit reached": say
            # which sysctl to raise and keep serving by polling.
            self._log.warning(
                "watch.inotify_limit",
                watch=self.index,
                errno=errname(e),
                advice="raise fs.inotify.max_user_watches / max_user_instances; polling meanwhile",
            )
            self.mode = "poll"
            self._observer = self._make_observer("poll")
            self._observer.start()
        self._log.info(
            "watch.started", watch=self.index, mode=self.mode, recursive=self.cfg.recursive
        )

    def _make_observer(self, mode: ResolvedMode) -> BaseObserver:
        obs: BaseObserver
        if mode == "poll":
            # lstat, so the snapshot never follows a symlink out of inbound.
            obs = PollingObserverVFS(os.lstat, os.scandir, polling_interval=self.cfg.poll_interval)
        else:
            from watchdog.observers.inotify import InotifyObserver

            obs = InotifyObserver()
        obs.daemon = True
        obs.schedule(
            self.hints, str(self.root), recursive=self.cfg.recursive, follow_symlink=False
        )
        return obs

    def stop(self) -> None:
        self._stopped = True
        self.rescan.close()
        obs, self._observer = self._observer, None
        if obs is not None:
            obs.stop()
            obs.join(timeout=10)

    # -- hand-out bookkeeping ---------------------------------------------

    def release(
        self, key: str, refused: tuple[int, int] | None = None, retrack: bool = False
    ) -> None:
        """A worker is done with a candidate. ``refused`` = (dev, ino) of an
        entry left in place on purpose (not to be handed out again);
        ``retrack``: it was not taken because it changed since it settled (or
        was put back), so it is watched again at once, not at the next rescan."""
        with self._lock:
            self._inflight.discard(key)
            if refused is not None:
                self._refused[key] = refused
        if retrack:
            self.hints.events.append((key, "other", False))  # deque: thread-safe

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def pending(self) -> int:
        """Files seen and waiting to settle."""
        return len(self.tracker)

    def force_rescan(self) -> None:
        self._next_rescan = 0.0

    # -- the periodic step ------------------------------------------------

    def tick(self, now: float) -> list[Candidate]:
        """Drain events, rescan when due, return the entries that became ready."""
        self._drain(now)
        if now >= self._next_rescan:
            self._next_rescan = now + self.rescan_seconds
            self.rescan.restart()
            self._revive_observer()
        self.rescan.step(SCAN_ENTRIES_PER_TICK, lambda entry: self._scan_entry(entry, now))
        ready: list[Candidate] = []
        for key in self.tracker.due(now):
            cand = self._look(key, now)
            if cand is not None:
                ready.append(cand)
        return ready

    def _revive_observer(self) -> None:
        # watchdog stops watching when the folder vanished (an unmounted
        # share); once a rescan can read it again, watch it again.
        if self._stopped or (self._observer is not None and self._observer.is_alive()):
            return
        self._log.warning("watch.observer_restarted", watch=self.index)
        self._observer = None
        try:
            self._start_observer()
        except OSError as e:
            self._observer = None
            self._log.warning("watch.observer_failed", watch=self.index, errno=errname(e))

    def _drain(self, now: float) -> None:
        events = self.hints.events
        while events:
            path_s, kind, is_dir = events.popleft()
            path = Path(path_s)
            rel = relative_parts(self.root, path, recursive=True)
            if rel is None or is_ignored(rel, self.patterns):
                continue
            if is_dir:
                if self.cfg.recursive:
                    self.rescan.add_dir(path)  # a moved-in tree brings no file events
                continue
            if not self.cfg.recursive and len(rel) != 1:
                continue
            pair = _pair_key(path)
            if pair is None:
                continue
            key = str(pair)  # a sidecar's events are its input's
            with self._lock:
                if key in self._inflight:
                    continue
            if self.mode == "poll":
                # A polled "modified" is an mtime change, not a write by an
                # opener we could later see close: never count it as an open.
                kind = "other"
            self.tracker.event(key, now, kind)

    def _scan_entry(self, entry: os.DirEntry[str], now: float) -> None:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            return
        path = Path(entry.path)
        rel = relative_parts(self.root, path, recursive=True)
        if rel is None or is_ignored(rel, self.patterns):
            return
        if is_dir:
            if self.cfg.recursive:
                self.rescan.push(path)
            return
        if not self.cfg.recursive and len(rel) != 1:
            return
        pair = _pair_key(path)
        if pair is None:
            return
        key = str(pair)
        if key in self.tracker:
            return
        with self._lock:
            if key in self._inflight:
                return
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        if pair == path and self._is_refused(key, st):
            return
        self.tracker.event(key, now)

    def _is_refused(self, key: str, st: os.stat_result) -> bool:
        with self._lock:
            ref = self._refused.get(key)
            if ref is None:
                return False
            if ref == (st.st_dev, st.st_ino):
                return True
            del self._refused[key]  # something new under the old name
            return False

    # -- pairs ---------------------------------------------------------------

    def _media_name_ok(self, name: str) -> bool:
        """Whether a file of this name may be processed as an input."""
        if is_sidecar_name(name):
            return False  # a sidecar (of a sidecar) is never media
        return not is_ignored((name,), self.patterns)

    def _drop(self, key: str) -> None:
        self.tracker.forget(key)
        self.waits.forget(key)

    def _look(self, key: str, now: float) -> Candidate | None:
        media = Path(key)
        side = sidecar_path(media)
        m_st = _lstat_file(media) if self._media_name_ok(media.name) else None
        s_st = _lstat_file(side)
        if m_st is None and s_st is None:
            self._drop(key)
            return None
        ref = m_st if m_st is not None else s_st
        assert ref is not None
        if self._is_refused(key, ref):
            self._drop(key)
            return None
        state = PairState(
            FileState.of(m_st) if m_st is not None else None,
            FileState.of(s_st) if s_st is not None else None,
        )
        if not self.tracker.observe(key, state, now):
            self.waits.changed(key)  # something changed: a new wait when quiet again
            return None
        until = self.waits.until(key, m_st, s_st, now)
        if until is not None:
            self.tracker.recheck(key, until)
            return None
        path, st = (side, s_st) if m_st is None else (media, m_st)
        assert st is not None
        for p, pst in ((media, m_st), (side, s_st)):
            if pst is not None and stat.S_ISREG(pst.st_mode) and writer_active(p):
                # Still open for writing (an open we did not see: it happened
                # before the folder was watched). Look again after another quiet period.
                self.tracker.event(key, now)
                return None
        rel = relative_parts(self.root, path, self.cfg.recursive)
        self._drop(key)
        if rel is None:
            return None
        with self._lock:
            if key in self._inflight:
                return None
            self._inflight.add(key)
        return Candidate(
            watch=self.index,
            path=path,
            rel=rel,
            regular=stat.S_ISREG(st.st_mode),
            size=st.st_size,
            dev=st.st_dev,
            ino=st.st_ino,
            mtime_ns=st.st_mtime_ns,
            sidecar=side.name if m_st is not None and s_st is not None else None,
            orphan=m_st is None,
            pair=key if path != media else "",
        )


def _pair_key(path: Path) -> Path | None:
    """The path an entry is tracked under: its own, or its input's for a
    sidecar (None for a sidecar name without an input name)."""
    if not is_sidecar_name(path.name):
        return path
    media = media_name_of(path.name)
    return path.with_name(media) if media else None


def _lstat_file(path: Path) -> os.stat_result | None:
    """``lstat`` of a non-directory entry, or None (absent, unreadable, a folder)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return None if stat.S_ISDIR(st.st_mode) else st
