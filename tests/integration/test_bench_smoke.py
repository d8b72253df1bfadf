"""`benchmarks/run_all.py --quick` runs end to end and writes its JSON and Markdown.

A smoke test of the benchmark plumbing on two images and a few frames: the
real `redactd process` subprocesses, the floor, the clip makers and the
report. deface takes part only when its venv is already cached (the test
never installs it). No timing is asserted: speed is the benchmark's output,
not a test's pass mark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def test_quick_benchmark_writes_results_json_and_markdown(
    tmp_path: Path, eval_dir: Path, models_dir: Path
) -> None:
    out = tmp_path / "bench"
    cmd = [sys.executable, "benchmarks/run_all.py", "--quick", "--deface", "cached"]
    cmd += ["--repeat", "2"]  # the images section's interleaved rounds
    r = subprocess.run(
        [*cmd, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    md = (out / "RESULTS.md").read_text()

    assert res["mode"] == "quick"
    assert res["machine"]["cpu"] and res["machine"]["detectors"]
    assert "Machine:" in md and "python benchmarks/run_all.py --quick" in md

    images = res["images"]
    assert images["images"] == 2
    red = images["redactd"]
    assert red["returncode"] == 0 and red["jobs"] == 2
    assert red["images_per_s"] > 0
    assert images["rounds"] == 2 and len(red["wall_s_rounds"]) == 2
    assert red["masked_recall"] is not None and red["boxes"] > 0
    assert "### Images" in md

    video = res["video"]
    assert video["floor_native"]["frames"] == video["frames"] > 0
    assert video["floor_ndarray"]["fps"] > 0
    if res["video_available"]:
        assert video["redactd"]["available"] and video["redactd"]["frames"] == video["frames"]
        assert video["redactd"]["masked_recall"] is not None
    else:
        assert video["redactd"]["note"] == "video not available"
    assert "480p" in res["resolution"]["rows"] and "1" in res["faces"]["rows"]
    assert "### Frames/s by resolution" in md and "### Frames/s by number of faces" in md
    scaling = res["scaling"]  # the real daemon: 1 and 2 workers, two instances
    assert set(scaling["rows"]) == {"w1", "w2", "i2"}
    for row in scaling["rows"].values():
        assert row["exit_codes"] == [0] * row["instances"], row
        assert row["images"]["exactly_once"] and row["images"]["files_per_s"] > 0, row
    assert len(scaling["rows"]["i2"]["images"]["jobs_per_instance"]) == 2
    assert "### Throughput of the daemon: workers and instances" in md
    if res["deface"] != "not run":
        assert images["deface"]["ok"] and images["deface"]["masked_recall"] is not None
        assert len(images["deface"]["wall_s_rounds"]) == 2
