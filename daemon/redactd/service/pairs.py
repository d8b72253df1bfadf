"""The waits of a settled pair (an input and its sidecar) before hand-out.

The stability rule (``stability``) says when a pair is quiet; these are the
extra waits after that, each measured from when the pair was first found
quiet in that shape (and started again when it changes):

* an empty input waits ``service.empty_file_grace_seconds`` (a writer that
  created it may not have written yet: a scanner, an NVR export);
* an input without a sidecar waits ``sidecar_wait_seconds`` (a sidecar that
  appears meanwhile joins it);
* a sidecar alone waits ``sidecar_orphan_seconds`` for its input, then is
  handed out as an orphan (to be quarantined).

Separate from the watcher: pure bookkeeping over stat results and times,
no filesystem access.
"""

from __future__ import annotations

import os
import stat


class PairWaits:
    """When each waiting pair (by the watcher's key) was first found quiet."""

    def __init__(self, empty_grace: float, sidecar_wait: float, orphan_after: float) -> None:
        self.empty_grace = max(0.0, empty_grace)
        self.sidecar_wait = sidecar_wait
        self.orphan_after = orphan_after
        self._empty: dict[str, float] = {}
        # pair key -> when it was first found settled without its sidecar / input
        self._alone: dict[str, float] = {}
        self._orphans: dict[str, float] = {}

    def waiting_for_sidecar(self, key: str) -> bool:
        """Whether the settled input ``key`` waits for a sidecar to come."""
        return key in self._alone

    def forget(self, key: str) -> None:
        self._alone.pop(key, None)
        self._orphans.pop(key, None)
        self._empty.pop(key, None)

    def changed(self, key: str) -> None:
        """Something changed: a new wait when quiet again."""
        self._alone.pop(key, None)
        self._empty.pop(key, None)

    def until(
        self, key: str, media: os.stat_result | None, side: os.stat_result | None, now: float
    ) -> float | None:
        """When to look again if the quiet pair must still wait, else None."""
        if media is not None and media.st_size == 0 and stat.S_ISREG(media.st_mode):
            since = self._empty.setdefault(key, now)
            if now - since < self.empty_grace:
                return since + self.empty_grace
        if media is None:
            # A sidecar alone: its input may still come.
            since = self._orphans.setdefault(key, now)
            if now - since < self.orphan_after:
                return since + self.orphan_after
            return None
        self._orphans.pop(key, None)
        if side is None and self.sidecar_wait > 0:
            # Settled without a sidecar: give the sidecar its chance to come.
            since = self._alone.setdefault(key, now)
            if now - since < self.sidecar_wait:
                return since + self.sidecar_wait
        return None
