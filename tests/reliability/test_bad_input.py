"""The bad-input corpus: each ends quarantined or refused with its reason code,
and the daemon keeps serving good files after them.

The daemon runs as root *without* CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH
(``setpriv``), as a hardened service would run: then a mode-000 file is
really unreadable. When that is impossible (not root, no setpriv), the
unreadable case is skipped with that reason and the rest still runs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.helpers.media import Labelled, png_header_only
from tests.helpers.service import (
    Daemon,
    Folders,
    files,
    rel_names,
    temporaries,
    wait_until,
    write_config,
)
from tests.reliability.conftest import copy_in

NON_UTF8 = os.fsdecode(b"caf\xe9-\xff-photo.jpg")
LONG_GOOD = "g" * 251 + ".jpg"  # 255 bytes: NAME_MAX
LONG_BAD = "b" * 251 + ".jpg"


def _can_drop_dac() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def test_bad_input_corpus_is_quarantined_with_reasons_and_service_continues(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    ov_cache: Path,
    face_images: list[tuple[Path, Labelled | None]],
) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        cache_dir=ov_cache,
        service={"max_attempts": 3, "retry_base_seconds": 0.1},
    )
    good = face_images[0][0]
    good_bytes = good.read_bytes()
    outside = tmp_path / "outside-secret.txt"
    outside.write_bytes(b"must never be read or moved")

    inb = f.inbound
    (inb / "zero.jpg").write_bytes(b"")
    (inb / "truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 2])
    (inb / "random.jpg").write_bytes(os.urandom(50_000))
    (inb / "text-named.jpg").write_bytes(b"%PDF-1.4 this is not an image at all\n" * 100)
    (inb / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    os.symlink(outside, inb / "link.jpg")
    os.mkfifo(inb / "fifo.jpg")
    (inb / LONG_BAD).write_bytes(os.urandom(1000))
    expected = {
        "zero.jpg": {"empty_file"},
        "truncated.jpg": {"truncated", "corrupt"},
        "random.jpg": {"unsupported_type"},
        "text-named.jpg": {"unsupported_type"},
        "bomb.png": {"too_many_pixels"},
        "link.jpg": {"not_regular_file"},
        "fifo.jpg": {"not_regular_file"},
        LONG_BAD: {"unsupported_type"},
    }
    drop = _can_drop_dac()
    if drop:
        (inb / "unreadable.jpg").write_bytes(good_bytes)
        (inb / "unreadable.jpg").chmod(0)
        expected["unreadable.jpg"] = {"unreadable"}
    # Good files with awkward names are served normally.
    copy_in(good, inb / NON_UTF8)
    copy_in(good, inb / LONG_GOOD)
    copy_in(good, inb / "jpeg-named.png")  # content decides the format, not the name

    d = daemons(cfg, drop_dac=drop).start()
    d.wait_ready()
    wait_until(lambda: len(d.events("job.quarantined")) >= len(expected), 90, "every bad input", d)
    # ... and the daemon still serves the next good file.
    copy_in(good, inb / "after.jpg")
    wait_until(lambda: "after.jpg" in rel_names(f.outbound), 60, "the good file after", d)
    assert d.alive()
    assert d.stop() == 0

    q = f.quarantine
    assert sorted(rel_names(q)) == sorted(expected)
    for name, codes in expected.items():
        reason_file = q / (name + ".reason.json")
        if len(os.fsencode(reason_file.name)) > 255:
            [reason_file] = [
                p
                for p in q.iterdir()
                if p.name.startswith("b" * 200) and p.name.endswith(".reason.json")
            ]
            assert len(os.fsencode(reason_file.name)) <= 255
        body = json.loads(reason_file.read_text())
        assert body["reason"] in codes, (name, body)
        assert body["attempts"] >= 1 and body["redactd_version"]
    assert (q / "link.jpg").is_symlink() and os.readlink(q / "link.jpg") == str(outside)
    assert outside.read_bytes() == b"must never be read or moved"
    assert (q / "fifo.jpg").is_fifo()
    if drop:
        assert json.loads((q / "unreadable.jpg.reason.json").read_text())["attempts"] == 3
        assert (q / "unreadable.jpg").stat().st_size == len(good_bytes)  # moved, not read
    else:
        print("unreadable case skipped: chmod 000 does not stop root and setpriv is unavailable")

    delivered = rel_names(f.outbound)
    assert sorted(delivered) == sorted([NON_UTF8, LONG_GOOD, "jpeg-named.png", "after.jpg"])
    assert os.fsencode(NON_UTF8) in os.listdir(os.fsencode(f.outbound))
    assert temporaries(f.inbound, f.outbound, f.quarantine) == []
    assert files(f.inbound) == []
