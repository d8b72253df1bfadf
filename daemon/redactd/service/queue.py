"""The work waiting for a worker: claimed jobs, fresh candidates, retries.

Memory stays bounded by the number of waiting *paths* (a candidate is a
path, a relative name and a few integers; an image is only ever decoded by
the worker running it), so 10,000 waiting files cost a few megabytes.

Jobs (recovered, resumed, due retries) go before fresh candidates; a retry
waits in a heap until its time. One condition guards it all; the disk-full
pause (``space``) parks items under the same lock, so a job is always
counted once, waiting or parked. Separate from the main loop because the
loop, the workers and the pause all put work in and take it out.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redactd.service.spool.job import Job, Target
from redactd.service.watch import Candidate, FolderWatcher


@dataclass(frozen=True)
class Work:
    """A candidate from a watcher, with the watcher that must release it."""

    cand: Candidate
    watcher: FolderWatcher
    target: Target


class WorkQueue:
    """Thread-safe; ``lock`` is a re-entrant condition others may hold."""

    def __init__(self, recovered: Iterable[Job], clock: Callable[[], float]) -> None:
        self.lock = threading.Condition()  # an RLock inside: re-entrant
        self._jobs: deque[Job] = deque(recovered)
        self._cands: deque[Work] = deque()
        self._delayed: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._clock = clock

    def offer(self, fresh: list[Work], now: float) -> None:
        """Add fresh candidates and move the retries that are due."""
        with self.lock:
            self._cands.extend(fresh)
            while self._delayed and self._delayed[0][0] <= now:
                _, _, job = heapq.heappop(self._delayed)
                self._jobs.append(job)
            if fresh or self._jobs:
                self.lock.notify_all()

    def put(self, items: Iterable[Job | Work]) -> None:
        """Put back items (parked during a pause) in their order."""
        with self.lock:
            for item in items:
                if isinstance(item, Job):
                    self._jobs.append(item)
                else:
                    self._cands.append(item)
            self.lock.notify_all()

    def put_front(self, job: Job) -> None:
        """The next job to take (a job put back when the service stops)."""
        with self.lock:
            self._jobs.appendleft(job)

    def later(self, job: Job, delay: float) -> None:
        with self.lock:
            heapq.heappush(self._delayed, (self._clock() + delay, next(self._seq), job))

    def take(self, stopping: threading.Event) -> Job | Work | None:
        """The next item; None once ``stopping`` is set."""
        with self.lock:
            while not stopping.is_set():
                if self._jobs:
                    return self._jobs.popleft()
                if self._cands:
                    return self._cands.popleft()
                self.lock.wait(0.5)
        return None

    def wake(self) -> None:
        with self.lock:
            self.lock.notify_all()

    def waiting(self) -> int:
        with self.lock:
            return len(self._jobs) + len(self._cands)

    def jobs(self) -> int:
        """Claimed jobs waiting (recovered ones at the start)."""
        with self.lock:
            return len(self._jobs)

    def retrying(self) -> int:
        with self.lock:
            return len(self._delayed)
