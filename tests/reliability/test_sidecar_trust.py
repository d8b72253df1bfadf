"""Keep from the inbound folder in the real daemon: refused by default, bounded
when allowed, and accepted only from the trusted folder or signed when the
operator asks for that.

The reviewer's attack: anyone who can write to an inbound folder dropped
``{"keep": [{"box": [0, 0, 1, 1], "units": "rel", "classes": ["face", "plate"]}]}``
beside an input and got it delivered with nobody masked. Plumbing runs use
the scripted fake detector (one face over the image's centre half).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from pathlib import Path

from tests.helpers.service import Daemon, rel_names, wait_until
from tests.helpers.sidecars import CORNER, SIDE, corner_is_solid, daemon_for, noisy_png

EVERYONE = {"keep": [{"box": [0, 0, 1, 1], "units": "rel", "classes": ["face", "plate"]}]}


def _quarantined_with(f: object, name: str, d: Daemon) -> dict[str, object]:
    q = f.quarantine  # type: ignore[attr-defined]
    wait_until(lambda: len(rel_names(q)) == 2, 30, "quarantine", d)
    # the reason file is published after the two files
    wait_until(lambda: (q / (name + ".reason.json")).exists(), 30, "reason file", d)
    assert rel_names(q) == [name, name + SIDE]
    assert name not in rel_names(f.outbound)  # type: ignore[attr-defined]
    reason: dict[str, object] = json.loads((q / (name + ".reason.json")).read_text())
    return reason


def _pair(media: Path, doc: object, seed: int) -> None:
    media.with_name(media.name + SIDE).write_text(json.dumps(doc))
    noisy_png(media, seed)


def test_keep_everyone_from_the_inbound_is_refused_by_default(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(tmp_path, daemons, models_dir)
    _pair(f.inbound / "a.png", EVERYONE, 1)
    reason = _quarantined_with(f, "a.png", d)
    assert reason["reason"] == "instruction_not_allowed"
    assert d.stop() == 0


def test_keep_everyone_is_refused_by_the_share_limit_when_keep_is_allowed(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    f, d = daemon_for(
        tmp_path, daemons, models_dir, extra="[profiles.default.instructions]\nallow_keep = true"
    )
    _pair(f.inbound / "a.png", EVERYONE, 2)
    reason = _quarantined_with(f, "a.png", d)
    assert reason["reason"] == "keep_limit_exceeded"
    assert "keep_max_share" in str(reason["detail"])
    assert d.stop() == 0


def test_with_a_trusted_folder_inbound_sidecars_are_refused_and_trusted_ones_used(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    trusted = tmp_path / "trusted"
    (trusted / "cam").mkdir(parents=True)
    f, d = daemon_for(
        tmp_path,
        daemons,
        models_dir,
        extra=f'[profiles.default.instructions]\nallow_keep = true\ntrusted_dir = "{trusted}"',
    )
    # from the inbound folder (anyone): refused, even a harmless one
    _pair(f.inbound / "a.png", CORNER, 3)
    reason = _quarantined_with(f, "a.png", d)
    assert reason["reason"] == "sidecar_untrusted"
    # from the trusted folder, for cam/b.png: used (its corner is masked)
    (trusted / "cam" / ("b.png" + SIDE)).write_text(json.dumps(CORNER))
    noisy_png(f.inbound / "cam" / "b.png", 4)
    wait_until(lambda: rel_names(f.outbound) == ["cam/b.png"], 30, "delivery", d)
    assert corner_is_solid(f.outbound / "cam" / "b.png")
    # The output is published before its job's clean-up logs job.done.
    wait_until(lambda: len(d.events("job.done")) == 1, 10, "job.done", d)
    [ev] = d.events("job.done")
    assert ev["extra_regions"] == 1
    assert d.stop() == 0


def test_with_an_hmac_key_only_signed_sidecars_are_used(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    key_file = tmp_path / "sidecar.key"
    key_file.write_bytes(b"0123456789abcdef-operator-secret\n")
    os.chmod(key_file, 0o600)
    f, d = daemon_for(
        tmp_path,
        daemons,
        models_dir,
        extra=f'[profiles.default.instructions]\nhmac_key_file = "{key_file}"',
    )
    body = json.dumps(CORNER, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    mac = hmac.new(b"0123456789abcdef-operator-secret", body.encode(), hashlib.sha256)
    _pair(f.inbound / "good.png", {**CORNER, "hmac": mac.hexdigest()}, 5)
    wait_until(lambda: rel_names(f.outbound) == ["good.png"], 30, "delivery", d)
    assert corner_is_solid(f.outbound / "good.png")
    # the same signature on another document: refused
    _pair(f.inbound / "forged.png", {**EVERYONE, "hmac": mac.hexdigest()}, 6)
    reason = _quarantined_with(f, "forged.png", d)
    assert reason["reason"] == "sidecar_untrusted"
    assert d.stop() == 0


def test_hostile_sidecars_quarantine_their_inputs_and_the_daemon_lives_on(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    from tests.helpers.sidecars import HOSTILE

    f, d = daemon_for(tmp_path, daemons, models_dir)
    names = ["int_400_digits", "int_5000_digits", "deep_objects", "not_utf8", "float_1e309"]
    for i, name in enumerate(names):
        media = f.inbound / f"{name}.png"
        media.with_name(media.name + SIDE).write_bytes(HOSTILE[name])
        noisy_png(media, 10 + i)
    q = f.quarantine
    wait_until(lambda: len(rel_names(q)) == 2 * len(names), 60, "quarantine", d)
    wait_until(
        lambda: len([p for p in q.iterdir() if p.name.endswith(".reason.json")]) == len(names),
        30,
        "reasons",
        d,
    )
    for name in names:
        reason = json.loads((q / f"{name}.png.reason.json").read_text())
        assert reason["reason"] == "invalid_sidecar", (name, reason)
    assert "Traceback" not in d.text() and "internal_error" not in d.text()
    noisy_png(f.inbound / "after.png", 20)
    wait_until(lambda: rel_names(f.outbound) == ["after.png"], 30, "delivery", d)
    assert d.stop() == 0
