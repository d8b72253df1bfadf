"""The waits of a quiet pair before hand-out (service.pairs), without a filesystem."""

from __future__ import annotations

import os
import stat

from redactd.core.errors import TransientError, TransientReason
from redactd.service.pairs import PairWaits


def _st(size: int) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | 0o644, 1, 1, 1, 0, 0, size, 0, 0, 0))


def test_an_input_without_sidecar_waits_then_goes() -> None:
    w = PairWaits(empty_grace=0.0, sidecar_wait=2.0, orphan_after=10.0)
    assert w.until("k", _st(5), None, now=100.0) == 102.0
    assert w.until("k", _st(5), None, now=101.0) == 102.0  # measured from the first look
    assert w.until("k", _st(5), None, now=102.0) is None
    assert w.until("j", _st(5), _st(1), now=100.0) is None  # with its sidecar: at once


def test_an_empty_input_waits_its_grace_and_a_change_restarts_it() -> None:
    w = PairWaits(empty_grace=5.0, sidecar_wait=0.0, orphan_after=10.0)
    assert w.until("k", _st(0), None, now=0.0) == 5.0
    w.changed("k")
    assert w.until("k", _st(0), None, now=3.0) == 8.0
    assert w.until("k", _st(0), None, now=8.0) is None


def test_a_sidecar_alone_waits_for_its_input() -> None:
    w = PairWaits(empty_grace=0.0, sidecar_wait=0.0, orphan_after=10.0)
    assert w.until("k", None, _st(1), now=0.0) == 10.0
    assert w.until("k", None, _st(1), now=10.0) is None
    w.forget("k")
    assert w.until("k", None, _st(1), now=11.0) == 21.0


def test_transient_reasons_stay_plain_strings() -> None:
    e = TransientError(TransientReason.DISK_FULL, "ENOSPC")
    assert type(e.reason) is str and e.reason == "disk_full"
    assert str(e) == "disk_full: ENOSPC"
    assert e.kind is TransientReason.DISK_FULL
    assert TransientError("outbound_eacces").kind is None
    assert TransientError("read_failed").kind is TransientReason.READ_FAILED
