"""Service metrics without personal data: counters, histograms, last success.

Rendered as Prometheus text for node_exporter's textfile collector (no
listening port: the service runs with ``PrivateNetwork=yes``) and as a JSON
snapshot in the status file that ``redactd status`` reads. Everything here is
a count, a duration or a reason code; there is no place for a name or path.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from redactd.core.types import JobResult

#: Upper bounds (seconds) of the stage-latency histogram buckets.
BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
)
STAGES: tuple[str, ...] = ("decode", "detect", "mask", "encode", "total")


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1


class Metrics:
    """Thread-safe aggregate of what the service did since it started."""

    def __init__(self, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.started = clock()
        self.outcomes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.masked: Counter[str] = Counter()
        self.frames = 0
        self.input_bytes = 0
        self.hist = {s: _Histogram() for s in STAGES}
        self.last_success: float | None = None
        self.last_errors: deque[tuple[float, str]] = deque(maxlen=20)
        self._recent_done: deque[float] = deque(maxlen=10000)

    def job_done(self, result: JobResult | None, total_s: float) -> None:
        now = self._clock()
        with self._lock:
            self.outcomes["done"] += 1
            self.last_success = now
            self._recent_done.append(now)
            self.hist["total"].observe(total_s)
            if result is None:  # a result delivered after a restart: no counts known
                return
            for cls, n in result.counts.items():
                self.masked[cls] += n
            self.frames += result.frames
            self.input_bytes += result.input_bytes
            t = result.timings
            for stage, ms in (
                ("decode", t.decode_ms),
                ("detect", t.detect_ms),
                ("mask", t.mask_ms),
                ("encode", t.encode_ms),
            ):
                self.hist[stage].observe(ms / 1000.0)

    def job_quarantined(self, reason: str) -> None:
        with self._lock:
            self.outcomes["quarantined"] += 1
            self.reasons[reason] += 1
            self.last_errors.append((self._clock(), reason))

    def job_retried(self, reason: str) -> None:
        with self._lock:
            self.outcomes["retried"] += 1
            self.last_errors.append((self._clock(), reason))

    def throughput_per_minute(self, window_s: float = 600.0) -> float:
        now = self._clock()
        with self._lock:
            n = sum(1 for t in self._recent_done if now - t <= window_s)
        span = min(window_s, max(1.0, now - self.started))
        return n * 60.0 / span

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able summary (for the status file)."""
        per_min = self.throughput_per_minute()
        with self._lock:
            return {
                "started": self.started,
                "outcomes": dict(self.outcomes),
                "quarantine_reasons": dict(self.reasons),
                "masked": dict(self.masked),
                "frames": self.frames,
                "input_bytes": self.input_bytes,
                "last_success": self.last_success,
                "last_errors": [{"time": t, "reason": r} for t, r in self.last_errors],
                "jobs_per_minute": round(per_min, 2),
                "mean_seconds": {
                    s: (round(h.sum / h.total, 4) if h.total else None)
                    for s, h in self.hist.items()
                },
            }

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """Prometheus text exposition format; ``gauges`` adds name -> (help, value)."""
        out: list[str] = []

        def metric(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            metric("redactd_jobs_total", "counter", "Jobs by outcome.")
            for outcome in ("done", "quarantined", "retried"):
                out.append(f'redactd_jobs_total{{outcome="{outcome}"}} {self.outcomes[outcome]}')
            metric("redactd_quarantined_total", "counter", "Quarantined jobs by reason code.")
            for reason, n in sorted(self.reasons.items()):
                out.append(f'redactd_quarantined_total{{reason="{reason}"}} {n}')
            metric("redactd_objects_masked_total", "counter", "Objects masked, by class.")
            for cls in ("face", "plate"):
                out.append(f'redactd_objects_masked_total{{class="{cls}"}} {self.masked[cls]}')
            metric("redactd_frames_total", "counter", "Images and video frames processed.")
            out.append(f"redactd_frames_total {self.frames}")
            metric("redactd_stage_seconds", "histogram", "Time per job and stage.")
            for stage, h in self.hist.items():
                for bound, n in zip(BUCKETS, h.counts, strict=True):
                    out.append(f'redactd_stage_seconds_bucket{{stage="{stage}",le="{bound}"}} {n}')
                out.append(f'redactd_stage_seconds_bucket{{stage="{stage}",le="+Inf"}} {h.total}')
                out.append(f'redactd_stage_seconds_sum{{stage="{stage}"}} {h.sum:.6f}')
                out.append(f'redactd_stage_seconds_count{{stage="{stage}"}} {h.total}')
            metric("redactd_last_success_timestamp_seconds", "gauge", "Time of the last delivery.")
            out.append(f"redactd_last_success_timestamp_seconds {self.last_success or 0}")
            metric("redactd_start_time_seconds", "gauge", "Time the service started.")
            out.append(f"redactd_start_time_seconds {self.started}")
        for name, (help_, value) in gauges.items():
            metric(name, "gauge", help_)
            out.append(f"{name} {value}")
        return "\n".join(out) + "\n"
