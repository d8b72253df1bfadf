"""Sidecar files and the daemon that reads them, for the sidecar tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tests.helpers.service import (
    Daemon,
    Folders,
    write_config,
)

SIDE = ".redact.json"


# A corner the fake detector's face (the centre half) never touches.
CORNER = {"mask": [{"box": [0, 0, 12, 12]}]}


def noisy_png(path: Path, seed: int, size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 230, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    path.write_bytes(buf.tobytes())


def sidecar(media: Path, doc: object) -> Path:
    p = media.with_name(media.name + SIDE)
    drop(p, json.dumps(doc).encode())
    return p


def corner_is_solid(out: Path) -> bool:
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None
    corner = img[:12, :12].reshape(-1, 3)
    return bool((corner == corner[0]).all())


def daemon_for(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    extra: str = "",
    **watch: object,
) -> tuple[Folders, Daemon]:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml", f, models_dir, detectors=("fake",), watch=dict(watch)
    )
    if extra:
        cfg.write_text(cfg.read_text() + "\n" + extra + "\n")
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    return f, d


def deep(n: int) -> bytes:
    return b'{"mask": ' + b"[" * n + b"]" * n + b"}"


HOSTILE: dict[str, bytes] = {
    "int_400_digits": b'{"mask": [{"box": [0, 0, 1' + b"0" * 400 + b", 5]}]}",
    "int_5000_digits": b'{"mask": [{"box": [0, 0, 1' + b"0" * 5000 + b", 5]}]}",
    "time_400_digits": b'{"mask": [{"box": [0, 0, 5, 5], "time": [0, 1' + b"0" * 400 + b"]}]}",
    "frame_1e300": b'{"keep": [{"box": [0, 0, 5, 5], "frame": 1e300}]}',
    "nan": b'{"mask": [{"box": [0, 0, NaN, 5]}]}',
    "infinity": b'{"mask": [{"box": [0, 0, Infinity, 5]}]}',
    "minus_infinity": b'{"mask": [{"box": [-Infinity, 0, 5, 5]}]}',
    "float_1e309": b'{"mask": [{"box": [0, 0, 1e309, 5]}]}',
    "deep_lists": deep(200_000),
    "deep_objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "huge_region_list": b'{"mask": [' + b",".join([b'{"box":[0,0,1,1]}'] * 50_000) + b"]}",
    "huge_box_array": b'{"mask": [{"box": [' + b"0," * 400_000 + b"0]}]}",
    "polygon_1e6_points": b'{"mask": [{"polygon": [' + b"[0,0]," * 1_000_000 + b"[1,1]]}]}",
    "polygon_2000_points": b'{"mask": [{"polygon": [' + b"[0,0]," * 2000 + b"[1,1]]}]}",
    "not_utf8": b'{"mask": []}\xff\xfe',
    "utf16_bom": '{"mask": []}'.encode("utf-16"),
    "duplicate_keys": b'{"mask": [], "mask": []}',
    "negative_size_box": b'{"mask": [{"box": [10, 10, -5, -5]}]}',
    "negative_frames": b'{"mask": [{"box": [0, 0, 5, 5], "frames": [-1, 5]}]}',
    "top_level_array": b"[1, 2, 3]",
    "empty_file": b"",
}


def drop(path: Path, data: bytes) -> None:
    """Write under a dotfile name, then rename in: how a careful writer drops a file."""
    tmp = path.with_name("." + path.name + ".incoming")
    tmp.write_bytes(data)
    tmp.rename(path)
