"""The "auto" performance hint: LATENCY for one job, THROUGHPUT for several;
an explicit hint is kept whatever the concurrency."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from redactd.core.config import RuntimeConfig
from redactd.core.config import parse as parse_config
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


def test_auto_is_the_default(tmp_path: Path) -> None:
    """A configuration that names no hint resolves it by concurrency, as "auto" does."""
    cfg = dataclasses.replace(parse_config({}, tmp_path).runtime, cache_dir=None)
    assert Runtime(cfg, 1).compile_config()["PERFORMANCE_HINT"] == "LATENCY"
    assert Runtime(cfg, 2).compile_config()["PERFORMANCE_HINT"] == "THROUGHPUT"
