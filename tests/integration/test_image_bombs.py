"""Multi-page and animated decompression bombs are refused before they take memory.

A 0.9 MB TIFF of 40 deflated 4000x4000 pages decodes to 640 million pixels:
``redactd process`` used to peak at 5.3 GB RSS on it (every page is held
decoded, with a masked copy). ``limits.max_total_pixels`` budgets the pixels
of all pages together, from the headers. Peak memory is measured on a real
``redactd process`` subprocess, run under a fresh intermediate process so
``RUSAGE_CHILDREN`` holds that run alone.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from redactd.core.config import LimitsConfig
from redactd.core.errors import PermanentInputError
from redactd.stages.media import image as image_io
from tests.conftest import REPO

#: Peak RSS a refused bomb may cost: the CLI with its models loaded takes
#: ~200 MB on a 64x64 PNG; decoding the bombs would take gigabytes.
MAX_RSS_MB = 400


def tiff_bomb(path: Path, pages: int = 40, side: int = 4000) -> Path:
    im = Image.new("L", (side, side), 200)  # one page object, appended again and again
    im.save(path, save_all=True, append_images=[im] * (pages - 1), compression="tiff_deflate")
    return path


def webp_bomb(path: Path, frames: int = 120, side: int = 1500) -> Path:
    """An animated WebP of ``frames`` frames: two encoded frames, their ANMF
    chunks repeated (Pillow merges identical frames when it writes one)."""
    a = Image.new("RGB", (side, side), (120, 130, 140))
    b = a.copy()
    ImageDraw.Draw(b).rectangle((0, 0, 16, 16), fill=(255, 0, 0))
    buf = io.BytesIO()
    a.save(buf, "WEBP", save_all=True, append_images=[b], quality=10, method=0, duration=40)
    data = buf.getvalue()
    pos, head, anmf = 12, b"", []
    while pos < len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunk = data[pos : pos + 8 + size + (size & 1)]
        if tag == b"ANMF":
            anmf.append(chunk)
        else:
            head += chunk
        pos += len(chunk)
    body = head + b"".join(anmf[i % 2] for i in range(frames))
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body)
    with Image.open(path) as im:
        assert im.n_frames == frames
    return path


def _measured_process(cfg: Path, src: Path, out: Path) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in MB) of ``redactd process`` on ``src``."""
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024\n"
        "print(json.dumps({'rc': r.returncode, 'stderr': r.stderr, 'mb': peak}))\n"
    )
    cmd = [sys.executable, "-m", "redactd.cli", "process", "--config", str(cfg)]
    r = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd, str(src), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    res = json.loads(r.stdout)
    return int(res["rc"]), str(res["stderr"]), int(res["mb"])


@pytest.fixture
def cfg(tmp_path: Path, models_dir: Path) -> Path:
    p = tmp_path / "redactd.toml"
    p.write_text(
        f'[service]\nwork_dir = "{tmp_path / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp_path / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
    )
    return p


@pytest.mark.parametrize("kind", ["tiff", "webp"])
def test_bomb_refused_with_the_limit_named_and_memory_bounded(
    cfg: Path, tmp_path: Path, kind: str
) -> None:
    src = tiff_bomb(tmp_path / "pages.tif") if kind == "tiff" else webp_bomb(tmp_path / "a.webp")
    assert src.stat().st_size < 1_000_000
    out = tmp_path / "out"
    rc, stderr, mb = _measured_process(cfg, src, out)
    print(f"\n{kind} bomb: exit {rc}, peak RSS {mb} MB")
    assert rc == 65, stderr
    assert "too_many_total_pixels" in stderr and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())
    assert mb < MAX_RSS_MB


def test_probe_budgets_pixels_over_all_pages(tmp_path: Path) -> None:
    """From the headers alone: the per-page limit passes, the sum does not."""
    src = tiff_bomb(tmp_path / "pages.tif", pages=6, side=2000)  # 24 M pixels
    assert image_io.probe(src, LimitsConfig())[2] == 6
    small = LimitsConfig(max_total_pixels=20_000_000)
    with pytest.raises(PermanentInputError) as ei:
        image_io.probe(src, small)
    assert ei.value.reason == "too_many_total_pixels"
    assert "limits.max_total_pixels" in ei.value.detail
    webp = webp_bomb(tmp_path / "a.webp", frames=10, side=1500)  # 22.5 M pixels
    with pytest.raises(PermanentInputError) as ei:
        image_io.decode(webp, small)
    assert ei.value.reason == "too_many_total_pixels"
