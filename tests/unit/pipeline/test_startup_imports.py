"""What `redactd process` loads at start-up for photos.

PyAV (FFmpeg's libraries) costs ~60 ms of a ~1 s start-up and is only needed
for video: the pipeline imports ``media.video`` where a video is handled.
Each check is a fresh interpreter, as a real start is.
"""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(code: str, module: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print({module!r} in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1] == "True"


def test_image_pipeline_does_not_load_pyav() -> None:
    assert not _loaded_after("import redactd.cli.main, redactd.pipeline.process", "av")


def test_video_pipeline_loads_pyav_where_used() -> None:
    code = (
        "from redactd.pipeline import plan\n"
        "from redactd.stages.media.sniff import MediaType\n"
        "assert plan.output_suffix(MediaType('video', 'webm'), '.webm') == '.mkv'"
    )
    assert _loaded_after(code, "av")
