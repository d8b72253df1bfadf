"""METRICS.md section 4: the default profile on a labelled synthetic video set.

    python benchmarks/video_metrics.py [--eval ../shared/eval] [--videos 4] [--frames 100]
                                       [--profile default] [--out docs/metrics/video]

Makes the set with the product's generator (``python -m
redactd.evaluation.synthvideo``, faces and backgrounds of
``faces_wider_val``, seed 0) in a temporary folder, runs ``redactd eval
--attack`` on it and prints the report's tables (``video-report.md``); the
report (``video-report.json`` and the plots) is kept in ``--out``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--eval", type=Path, default=REPO.parent / "shared" / "eval")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--size", default="640x360")
    p.add_argument("--profile", default="default")
    p.add_argument("--config", help="redactd config (default: the built-in one)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "metrics" / "video")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="redactd-video-metrics-") as tmp:
        data = Path(tmp) / "synthetic"
        subprocess.run(
            [sys.executable, "-m", "redactd.evaluation.synthvideo",
             str(a.eval / "faces_wider_val"), str(data), "--videos", str(a.videos),
             "--frames", str(a.frames), "--size", a.size, "--seed", "0"],
            check=True,
        )  # fmt: skip
        cmd = [sys.executable, "-m", "redactd.cli", "eval", str(data), "--profile", a.profile,
               "--out", str(a.out), "--attack"]  # fmt: skip
        if a.config:
            cmd += ["--config", a.config]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print((a.out / "video-report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
