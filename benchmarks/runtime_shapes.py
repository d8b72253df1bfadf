"""How the OpenVINO runtime should serve many input sizes (CenterFace, CPU).

Strategies (``redactd.stages.detect.runtime.Runtime.load``):

* ``dynamic``: one compilation with input ``[1, 3, -1, -1]``, any size at once
  (``static_after=0``);
* ``static``: reshape + compile for every new size, kept in the LRU
  (``static_after=1``), i.e. a compile on first sight of each size;
* ``hybrid``: dynamic first, a static compilation once a size was used
  ``static_after=4`` times (the default).

Workloads: ``photos`` -- the passes of the default multi-scale plan for the
WIDER images' sizes in label order (every photo its own size, some repeat);
``video`` -- the passes for N frames of one 1280x720 video. Prints total
time, mean time per inference and compilations, per strategy and workload::

    python benchmarks/runtime_shapes.py [--models models] [--photos 80] [--frames 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from redactd.core.config import RuntimeConfig, TilingConfig  # noqa: E402
from redactd.models import manifest  # noqa: E402
from redactd.stages.detect import centerface, multiscale  # noqa: E402
from redactd.stages.detect.runtime import Runtime  # noqa: E402

STRATEGIES = {"dynamic": 0, "static": 1, "hybrid": 4}


def pass_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """Network input sizes (W, H) of the default plan's passes for one frame."""
    plan = multiscale.plan(width, height, TilingConfig())
    return [centerface.input_size(t.out_w, t.out_h) for t in plan]


def photo_sizes(eval_dir: Path, n: int) -> list[tuple[int, int]]:
    labels = eval_dir / "faces_wider_val" / "labels.jsonl"
    if labels.is_file():
        rows = [json.loads(line) for line in labels.read_text().splitlines() if line.strip()]
        dims = [(r["width"], r["height"]) for r in rows[:n]]
    else:  # synthetic photo sizes when ../shared is absent
        rng = np.random.default_rng(0)
        dims = [(1024, int(h)) for h in rng.integers(500, 1400, size=n)]
    return [s for w, h in dims for s in pass_sizes(w, h)]


def run(models: Path, sizes: list[tuple[int, int]], static_after: int) -> tuple[float, int]:
    spec = manifest.load().get("centerface")
    with tempfile.TemporaryDirectory() as cache:
        rt = Runtime(RuntimeConfig(cache_dir=Path(cache)))
        net = rt.load(
            spec.main_path(models), centerface.network_io(spec), name="centerface",
            policy="dynamic", static_after=static_after,
        )
        rng = np.random.default_rng(1)
        blobs = {s: rng.random((1, 3, s[1], s[0]), dtype=np.float32) * 255 for s in set(sizes)}
        t0 = time.perf_counter()
        for s in sizes:
            net.infer(blobs[s])
        total = time.perf_counter() - t0
        compiles = net.compiles
        net.close()
    return total, compiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--eval", type=Path, default=REPO.parent / "shared" / "eval")
    ap.add_argument("--photos", type=int, default=80)
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    workloads = {
        "photos": photo_sizes(args.eval, args.photos),
        "video": pass_sizes(1280, 720) * args.frames,
    }
    print("| workload | strategy | inferences | sizes | compiles | total s | ms/inference |")
    print("|---|---|---|---|---|---|---|")
    for wname, sizes in workloads.items():
        for sname, after in STRATEGIES.items():
            total, compiles = run(args.models, sizes, after)
            print(
                f"| {wname} | {sname} | {len(sizes)} | {len(set(sizes))} | {compiles} "
                f"| {total:.1f} | {total / len(sizes) * 1000:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
