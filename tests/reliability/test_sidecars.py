"""Sidecars in the real daemon: arriving first, late, never, alone, invalid,
refused by the profile, and a kill -9 while a pair is claimed.

Plumbing runs use the scripted fake detector (one face over the image's
centre half); inputs are noisy PNGs, so masked pixels are exact to check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.service import (
    Daemon,
    Folders,
    files,
    rel_names,
    sha256,
    temporaries,
    wait_until,
    write_config,
)
from tests.helpers.sidecars import (
    CORNER,
    SIDE,
    corner_is_solid,
    daemon_for,
    drop,
    noisy_png,
    sidecar,
)
from tests.reliability.conftest import coloured_jpeg

BLUE = (255, 0, 0)  # the fake detector hangs on it (REDACTD_FAKE_SLEEP)












def done_event(d: Daemon) -> dict[str, object]:
    # job.done is logged just after the output is placed (and the work area cleared)
    wait_until(lambda: bool(d.events("job.done")), 10, "job.done", d)
    [ev] = d.events("job.done")
    return ev


def test_a_sidecar_dropped_first_is_used_with_its_input_and_removed_with_it(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(tmp_path, daemons, models_dir, sidecar_wait_seconds=30.0)
    media = f.inbound / "cam" / "first.png"
    media.parent.mkdir()
    sidecar(media, CORNER)
    noisy_png(tmp_path / "first.png", 1)
    drop(media, (tmp_path / "first.png").read_bytes())
    wait_until(lambda: rel_names(f.outbound) == ["cam/first.png"], 30, "delivery", d)
    assert rel_names(f.inbound) == [] and rel_names(f.quarantine) == []
    assert corner_is_solid(f.outbound / "cam" / "first.png")
    ev = done_event(d)
    assert ev["extra_regions"] == 1
    assert ev["instructions"] == {"mask_regions": 1, "keep_regions": 0, "overrides": []}
    [claim] = d.events("job.claimed")
    assert claim["sidecar"] is True
    assert d.stop() == 0
    assert [p.name for p in files(f.work)] == [".lock"]


def test_a_sidecar_arriving_after_its_input_settled_but_within_the_wait_joins_it(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(tmp_path, daemons, models_dir, sidecar_wait_seconds=60.0)
    media = f.inbound / "late.png"
    noisy_png(tmp_path / "late.png", 2)
    drop(media, (tmp_path / "late.png").read_bytes())
    # The scenario: well past the input's settle time (0.3 s), still inside the wait.
    time.sleep(1.5)
    assert d.events("job.claimed") == [], "the settled input waits for its sidecar"
    sidecar(media, CORNER)
    wait_until(lambda: rel_names(f.outbound) == ["late.png"], 30, "delivery", d)
    assert corner_is_solid(f.outbound / "late.png")
    assert done_event(d)["extra_regions"] == 1
    assert rel_names(f.inbound) == [] and rel_names(f.quarantine) == []
    assert d.stop() == 0


def test_an_input_whose_sidecar_never_comes_is_processed_without_after_the_wait(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(tmp_path, daemons, models_dir, sidecar_wait_seconds=2.0)
    noisy_png(f.inbound / "alone.png", 3)
    t0 = time.monotonic()
    wait_until(lambda: rel_names(f.outbound) == ["alone.png"], 30, "delivery", d)
    # a lower bound (never flaky under load): settle 0.3 s + the 2 s wait
    assert time.monotonic() - t0 >= 2.0
    assert not corner_is_solid(f.outbound / "alone.png")
    ev = done_event(d)
    assert ev["instructions"] is None and ev["extra_regions"] == 0
    assert d.stop() == 0


def test_a_sidecar_whose_input_never_comes_is_quarantined_after_the_orphan_time(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(tmp_path, daemons, models_dir, sidecar_orphan_seconds=1.0)
    side = sidecar(f.inbound / "never_came.jpg", CORNER)
    body = side.read_bytes()
    wait_until(lambda: rel_names(f.quarantine) == ["never_came.jpg" + SIDE], 30, "quarantine", d)
    q = f.quarantine / ("never_came.jpg" + SIDE)
    assert q.read_bytes() == body
    reason_text = (f.quarantine / ("never_came.jpg" + SIDE + ".reason.json")).read_text()
    reason = json.loads(reason_text)
    assert reason["reason"] == "sidecar_without_input"
    assert "never_came" not in reason_text
    assert rel_names(f.inbound) == [] and rel_names(f.outbound) == []
    assert d.events("job.done") == []  # never processed as media
    assert d.stop() == 0


def test_an_invalid_sidecar_quarantines_both_files_with_one_reason_naming_the_field(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(tmp_path, daemons, models_dir)
    name = "Jane_Doe_passport_scan.png"
    media = f.inbound / name
    side = sidecar(media, {"mask": [{"box": [40, 10, 20, 30]}]})  # x2 < x1
    noisy_png(media, 4)
    originals = {name: sha256(media), name + SIDE: sha256(side)}
    # (the reason file is placed last)
    wait_until(lambda: len(rel_names(f.quarantine, reasons=True)) == 3, 30, "quarantine", d)
    assert sorted(rel_names(f.quarantine)) == sorted(originals)
    for rel, digest in originals.items():
        assert sha256(f.quarantine / rel) == digest
    reasons = [n for n in rel_names(f.quarantine, reasons=True) if n.endswith(".reason.json")]
    assert reasons == [name + ".reason.json"]
    text = (f.quarantine / reasons[0]).read_text()
    reason = json.loads(text)
    assert reason["reason"] == "invalid_sidecar"
    assert reason["detail"].startswith("mask[0].box")
    for part in ("Jane", "Doe", "passport", "scan", str(tmp_path)):
        assert part not in text
        assert part not in d.text()
    assert rel_names(f.inbound) == [] and rel_names(f.outbound) == []
    assert d.stop() == 0


def test_a_sidecar_for_a_profile_without_instructions_quarantines_the_pair(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(
        tmp_path,
        daemons,
        models_dir,
        extra="[profiles.default.instructions]\nenabled = false",
    )
    media = f.inbound / "x.png"
    sidecar(media, CORNER)
    noisy_png(media, 5)
    # (the reason file is placed last)
    wait_until(lambda: len(rel_names(f.quarantine, reasons=True)) == 3, 30, "quarantine", d)
    assert rel_names(f.quarantine) == ["x.png", "x.png" + SIDE]
    assert json.loads((f.quarantine / "x.png.reason.json").read_text())["reason"] == (
        "instructions_disabled"
    )
    # an input without a sidecar is still processed on that watch
    noisy_png(f.inbound / "y.png", 6)
    wait_until(lambda: rel_names(f.outbound) == ["y.png"], 30, "delivery", d)
    assert d.stop() == 0


def test_kill9_while_a_pair_is_claimed_delivers_it_once_after_restart(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(tmp_path / "redactd.toml", f, models_dir, detectors=("fake",))
    d = daemons(cfg, fake="default", env={"REDACTD_FAKE_SLEEP": "3600"}).start()
    d.wait_ready()
    media = f.inbound / "held.png"
    sidecar(media, CORNER)
    coloured_jpeg(media, BLUE, size=64)  # the fake detector hangs on it
    wait_until(lambda: bool(d.events("job.claimed")), 30, "the claim", d)
    d.kill9()
    assert rel_names(f.inbound) == []
    [job_dir] = [p for p in f.work.iterdir() if p.is_dir()]
    assert sorted(p.name for p in job_dir.iterdir()) == ["job.json", "sidecar.json", "src"]
    d.env["REDACTD_FAKE_SLEEP"] = "0"
    d.start()
    wait_until(lambda: rel_names(f.outbound) == ["held.png"], 60, "delivery after restart", d)
    assert d.events("job.recovered")
    assert corner_is_solid(f.outbound / "held.png")
    assert d.stop() == 0
    assert rel_names(f.inbound) == [] and rel_names(f.quarantine) == []
    assert rel_names(f.outbound) == ["held.png"]  # once, and no sidecar or record
    assert temporaries(f.inbound, f.outbound, f.quarantine) == []
    assert [p.name for p in files(f.work)] == [".lock"]
