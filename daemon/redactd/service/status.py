"""What the service says about itself: ``STATUS=``, the status file, metrics.

:class:`Status` is a snapshot of counts (never a path or a name); the
:class:`StatusPublisher` sends it to the service manager as ``STATUS=`` (at
most once a second), writes it as JSON to the status file (on change, else
every 10 s) and renders the Prometheus text file next to it. It is separate
from the main loop because it is read by others too: ``redactd status``
reads ``STATUS_FILE``, and both the loop and a pausing worker publish.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redactd.core import log
from redactd.core.config import ServiceConfig
from redactd.core.fsutil import errname
from redactd.service.metrics import Metrics
from redactd.service.notify import Notifier

#: The status snapshot in the work area when ``service.status_file`` is unset.
STATUS_FILE = "status.json"


@dataclass(frozen=True)
class Status:
    """A snapshot for STATUS= and the status file (counts only)."""

    state: str
    queued: int
    settling: int
    active: int
    retrying: int
    done: int
    quarantined: int
    paused_folders: int
    #: Per active video job: frames done and total (None when unknown).
    progress: tuple[tuple[int, int | None], ...] = ()

    def text(self) -> str:
        s = (
            f"{self.state}: {self.queued} queued, {self.active} active, "
            f"{self.done} done, {self.quarantined} quarantined"
        )
        if self.retrying:
            s += f", {self.retrying} retrying"
        if self.paused_folders:
            s += f"; paused: {self.paused_folders} outbound folder(s) full"
        for done, total in self.progress:
            s += f"; video {done}/{total} frames" if total else f"; video {done} frames"
        return s


class StatusPublisher:
    """Publishes snapshots taken by ``snapshot(state)``; thread-safe."""

    def __init__(
        self,
        notifier: Notifier,
        metrics: Metrics,
        snapshot: Callable[[str | None], Status],
        service: Callable[[], ServiceConfig],
    ) -> None:
        self.notifier = notifier
        self.metrics = metrics
        self._snapshot = snapshot
        self._service = service  # read at each write: a reload may move the files
        self.log = log.get("redactd.service")
        self._last_status: Status | None = None
        self._last_status_write = 0.0
        self._last_notify = float("-inf")
        self._lock = threading.Lock()

    def publish(self, now: float, force: bool = False, state: str | None = None) -> None:
        with self._lock:
            self._publish_locked(now, force, state)

    def _publish_locked(self, now: float, force: bool, state: str | None) -> None:
        st = self._snapshot(state)
        # STATUS= at most once a second
        if (force or now - self._last_notify >= 1.0) and self.notifier.status(st.text()):
            self._last_notify = now
        if st == self._last_status and not force and now - self._last_status_write < 10.0:
            return
        self._last_status = st
        self._last_status_write = now
        svc = self._service()
        status_file = svc.status_file or svc.work_dir / STATUS_FILE
        body = {
            "time": time.time(),
            "text": st.text(),
            **st.__dict__,
            "metrics": self.metrics.snapshot(),
        }
        self._write_small(status_file, json.dumps(body) + "\n")
        if svc.metrics_file is not None:
            self._write_small(svc.metrics_file, self.metrics_text(st))

    def metrics_text(self, st: Status) -> str:
        """The Prometheus text: the job counters and these gauges."""
        return self.metrics.render(
            {
                "redactd_queue_depth": ("Files waiting (claimed or ready).", st.queued),
                "redactd_settling": ("Files seen, waiting to be complete.", st.settling),
                "redactd_active_jobs": ("Jobs being processed.", st.active),
                "redactd_retrying": ("Jobs waiting for a retry.", st.retrying),
                "redactd_paused": ("Outbound folders paused for lack of space.", st.paused_folders),
            }
        )

    def _write_small(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError as e:
            self.log.warning("service.status_write_failed", errno=errname(e))
