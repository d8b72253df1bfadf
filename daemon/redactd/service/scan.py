"""The periodic rescan of an inbound folder, spread over ticks.

A full scan at start and every ``service.rescan_seconds`` catches what
events missed (inotify queue overflow, writes made by another host on a
network share). A rescan of a large share is spread over ticks (the folder
being read is kept open between them), so the main loop keeps its pace and
``WATCHDOG=1`` its schedule however big inbound is. Separate from the
watcher: this is only the walk (which folders are left, which one is open,
how many could not be read); what an entry means is the watcher's.

Paths never reach a log line here; only the watch index and counts do.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from redactd.core import log
from redactd.core.fsutil import errname


class Rescan:
    """The walk state of one watcher's rescans (used from the main loop only)."""

    def __init__(self, root: Path, index: int) -> None:
        self.root = root
        self.index = index
        self._dirs: deque[Path] = deque()  # folders an event said are new
        self._stack: list[Path] = []  # folders the rescan has still to read
        self._iter: os._ScandirIterator[str] | None = None  # the one being read
        self._errors = 0
        self._log = log.get("redactd.watch")

    def restart(self) -> None:
        """A rescan is due: start at the root (unless the last one is still going)."""
        self._dirs.clear()
        if self._iter is None and not self._stack:
            self._stack.append(self.root)

    def add_dir(self, path: Path) -> None:
        """A folder that appeared (moved-in trees bring no file events): read it."""
        self._dirs.append(path)

    def push(self, path: Path) -> None:
        """A subfolder found by the walk itself."""
        self._stack.append(path)

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()
            self._iter = None

    def step(self, budget: int, on_entry: Callable[[os.DirEntry[str]], None]) -> None:
        """Go on with the rescan for at most ``budget`` entries."""
        while self._dirs:
            self._stack.append(self._dirs.popleft())
        seen = 0
        while seen < budget:
            if self._iter is None:
                if not self._stack:
                    break
                d = self._stack.pop()
                try:
                    self._iter = os.scandir(d)
                except OSError as e:
                    self._errors += 1
                    if d == self.root:
                        self._log.warning("watch.scan_failed", watch=self.index, errno=errname(e))
                    continue
            entry = next(self._iter, None)
            if entry is None:
                self._iter.close()
                self._iter = None
                continue
            seen += 1
            on_entry(entry)
        if self._iter is None and not self._stack and self._errors:
            if self._errors > 1:
                self._log.warning("watch.scan_errors", watch=self.index, folders=self._errors)
            self._errors = 0
