"""What an operator reads when the daemon refuses to start, and what it never reads.

redactd's own messages (the missing model's name, the command that fixes it)
must reach the journal intact; text from inputs (file names, paths) never.
Before the fix, ``log.scrub`` turned every quoted token into ``<redacted>``:
``model <redacted> is not installed or fails verification (1 of 1 files);
run <redacted>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from redactd.core import log
from tests.helpers.service import Daemon, Folders, write_config

SECRET = "Kvarnholm-Ostergaard"


@pytest.fixture
def daemon_log(tmp_path: Path) -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.close()


def test_daemon_without_its_models_names_the_model_and_the_fix(
    tmp_path: Path, models_dir: Path, daemon_log: list[Daemon]
) -> None:
    f = Folders.make(tmp_path / SECRET)
    (f.inbound / f"{SECRET}.jpg").write_bytes(b"\xff\xd8\xff not really a photo")
    empty = tmp_path / "empty-models"
    empty.mkdir()
    cfg = write_config(tmp_path / "redactd.toml", f, empty, detectors=("centerface",))
    d = Daemon(config=cfg, log_path=tmp_path / "daemon.log")
    daemon_log.append(d)
    d.start()
    assert d.wait_exit(120) == 78
    errors = d.events("service.model_error")
    assert errors, d.tail()
    message = errors[0]["error"]
    assert "'centerface'" in message, message
    assert "'redactd models fetch'" in message, message
    assert "<redacted>" not in message, message
    # The input's name and the folders' paths appear nowhere.
    assert SECRET not in d.text()
    assert str(tmp_path) not in d.text()
    for line in d.text().splitlines():
        if line.startswith("{"):
            json.loads(line)  # every stdout line is one JSON event


def test_scrub_keeps_only_words_redactd_knows() -> None:
    log.know(["centerface", "centerface.onnx"])
    msg = (
        "model 'centerface' cannot be read by OpenVINO: RuntimeError: cannot open "
        "/var/lib/redactd/models/centerface/centerface.onnx for reading; "
        "run 'redactd models fetch'"
    )
    assert log.scrub(msg) == (
        "model 'centerface' cannot be read by OpenVINO: RuntimeError: cannot open "
        "<redacted> for reading; run 'redactd models fetch'"
    )
    # An input's name, quoted or as a path, is scrubbed as before.
    third_party = f"cannot identify image file '{SECRET}.jpg' in \"{SECRET}\" at /srv/in/{SECRET}"
    assert SECRET not in log.scrub(third_party)
    assert log.scrub(third_party).count("<redacted>") == 3
    # A known word inside a longer quoted token does not let the rest through.
    assert SECRET not in log.scrub(f"'centerface {SECRET}'")
    # Paths are never registered as known words.
    log.know([f"/srv/in/{SECRET}"])
    assert SECRET not in log.scrub(f"'/srv/in/{SECRET}'")
    assert log.scrub("x", keep=["x"]) == "x"
    assert log.scrub(f"'{SECRET}'", keep=[SECRET]) == f"'{SECRET}'"
