"""The "auto" performance hint: LATENCY for one job, THROUGHPUT for several;
an explicit hint is kept whatever the concurrency."""

from __future__ import annotations

import pytest

from redactd.core.config import RuntimeConfig
from redactd.stages.detect.runtime import Runtime


@pytest.mark.parametrize(
    ("hint", "concurrency", "expected"),
    [
        ("auto", 1, "LATENCY"),
        ("auto", 2, "THROUGHPUT"),
        ("auto", 8, "THROUGHPUT"),
        ("LATENCY", 4, "LATENCY"),
        ("THROUGHPUT", 1, "THROUGHPUT"),
    ],
)
def test_hint_given_to_every_compilation(hint: str, concurrency: int, expected: str) -> None:
    rt = Runtime(RuntimeConfig(performance_hint=hint, cache_dir=None), concurrency)  # type: ignore[arg-type]
    assert rt.hint == expected
    assert rt.compile_config()["PERFORMANCE_HINT"] == expected


def test_auto_is_the_default() -> None:
    assert RuntimeConfig().performance_hint == "auto"
