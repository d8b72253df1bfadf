"""deface 1.5.0 in its own virtual environment, run as a subprocess on the benchmark's inputs.

deface is the peer the benchmarks compare against (issue: speed and recall
side by side, same inputs, same session). It is never imported into
redactd's environment: ``ensure()`` creates a separate venv under the
benchmark cache (``$REDACTD_BENCH_CACHE`` or ``~/.cache/redactd-bench``)
with ``deface==1.5.0`` and ``onnxruntime`` from the package registry (deface
uses onnxruntime when present, its fastest CPU backend), and the runs below
call its ``deface`` command line with its default settings (threshold 0.2,
blur, mask scale 1.3) unless told otherwise.

    python benchmarks/deface_env.py            # create (or check) the venv, print its version
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

DEFACE_VERSION = "1.5.0"
PACKAGES = (f"deface=={DEFACE_VERSION}", "onnxruntime")


def cache_dir() -> Path:
    env = os.environ.get("REDACTD_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "redactd-bench"


def venv_dir() -> Path:
    return cache_dir() / "deface-venv"


def deface_bin() -> Path:
    return venv_dir() / "bin" / "deface"


def installed() -> str | None:
    """The installed deface version in the cached venv, or None."""
    exe = deface_bin()
    if not exe.is_file():
        return None
    py = venv_dir() / "bin" / "python"
    r = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('deface'))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r.stdout.strip() if r.returncode == 0 else None


def ensure(create: bool = True) -> Path | None:
    """The deface executable (version pinned); created when missing and ``create``.

    Returns None when it is absent and ``create`` is false, or when the
    install fails (the reason is printed to stderr).
    """
    if installed() == DEFACE_VERSION:
        return deface_bin()
    if not create:
        return None
    target = venv_dir()
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    r = subprocess.run([*pip, *PACKAGES], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0 or installed() != DEFACE_VERSION:
        print(f"deface venv: install failed:\n{r.stderr[-2000:]}", file=sys.stderr)
        return None
    return deface_bin()


@dataclass(frozen=True)
class Run:
    """One deface invocation: wall time and whether it exited cleanly."""

    seconds: float
    ok: bool
    error: str = ""


def _run(args: list[str], timeout: float) -> Run:
    t0 = time.perf_counter()
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Run(time.perf_counter() - t0, False, "timeout")
    dt = time.perf_counter() - t0
    # deface prints "Skipping" for inputs it could not handle and still exits 0.
    bad = r.returncode != 0 or "Skipping" in r.stdout
    return Run(dt, not bad, (r.stderr or r.stdout)[-500:] if bad else "")


def run_folder(exe: Path, folder: Path, timeout: float = 3600.0) -> Run:
    """Anonymize every image in ``folder``; outputs land beside them as ``<stem>_anonymized<ext>``.

    (deface writes next to its inputs when given a folder; the caller passes
    a private copy.)
    """
    return _run([str(exe), str(folder)], timeout)


def output_for(image: Path) -> Path:
    return image.with_name(f"{image.stem}_anonymized{image.suffix}")


def run_video(
    exe: Path, src: Path, dst: Path, preset: str, crf: int, timeout: float = 3600.0
) -> Run:
    """Anonymize one video with libx264 at the same preset and CRF as redactd's profile."""
    ffmpeg = {
        "codec": "libx264",
        "quality": None,
        "ffmpeg_params": ["-preset", preset, "-crf", str(crf)],
    }
    return _run(
        [str(exe), str(src), "-o", str(dst), "--ffmpeg-config", json.dumps(ffmpeg)], timeout
    )


if __name__ == "__main__":
    exe = ensure(create=True)
    if exe is None:
        sys.exit(1)
    print(f"deface {installed()} at {exe}")
