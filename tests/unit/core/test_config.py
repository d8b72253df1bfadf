"""Config validation: every problem named by key path, defaults documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from redactd.core.config import Config, check_folders, load, parse
from redactd.core.errors import ConfigError, ConfigErrors
from tests.conftest import REPO


def _errors(data: dict, base: Path = Path("/tmp")) -> list[str]:
    with pytest.raises(ConfigErrors) as ei:
        parse(data, base)
    return [str(e) for e in ei.value.errors]


def test_documented_default_config_is_valid_and_matches_builtin_defaults() -> None:
    cfg = load(REPO / "config" / "redactd.toml")
    builtin = parse({}, REPO / "config")
    # Every value the documented file states equals the built-in default,
    # except the watches it adds: the file documents the defaults truthfully.
    assert cfg.profiles["default"] == builtin.profiles["default"]
    assert cfg.limits == builtin.limits
    assert cfg.logging == builtin.logging
    assert cfg.runtime.device == builtin.runtime.device
    assert len(cfg.watch) == 1
    assert cfg.watch[0].inbound == (REPO / "var" / "inbound").resolve()
    assert cfg.models.dir == (REPO / "models").resolve()


def test_unknown_keys_are_rejected_with_their_path() -> None:
    errs = _errors(
        {"service": {"wrokers": 2}, "profiles": {"p": {"face": {"mask": {"colour": 1}}}}}
    )
    assert "service.wrokers: unknown key" in errs
    assert "profiles.p.face.mask.colour: unknown key" in errs


def test_bad_values_name_key_and_reason() -> None:
    errs = _errors(
        {
            "service": {"workers": 0, "settle_seconds": "soon"},
            "runtime": {"performance_hint": "FAST"},
            "profiles": {"p": {"face": {"threshold": 1.5, "mask": {"method": "swirl"}}}},
        }
    )
    assert "service.workers: must be >= 1, got 0" in errs
    assert any(e.startswith("service.settle_seconds: must be a number") for e in errs)
    assert any(e.startswith("runtime.performance_hint: must be one of") for e in errs)
    assert "profiles.p.face.threshold: must be <= 1.0, got 1.5" in errs
    assert any(e.startswith("profiles.p.face.mask.method: must be one of") for e in errs)


def test_all_errors_are_reported_at_once() -> None:
    errs = _errors({"service": {"workers": -1, "max_attempts": 0}, "limits": {"max_pixels": 0}})
    assert len(errs) == 3


def test_watch_needs_folders_and_a_known_profile() -> None:
    errs = _errors({"watch": [{"inbound": "in", "profile": "missing"}]})
    assert "watch[0].outbound: is required" in errs
    assert "watch[0].quarantine: is required" in errs
    errs = _errors(
        {"watch": [{"inbound": "i", "outbound": "o", "quarantine": "q", "profile": "x"}]}
    )
    assert "watch[0].profile: no profile named 'x'" in errs


def test_profile_overrides_start_from_defaults() -> None:
    cfg = parse({"profiles": {"strict": {"face": {"threshold": 0.2}}}}, Path("/tmp"))
    strict = cfg.profile("strict")
    assert strict.face.threshold == 0.2
    assert strict.face.detectors == cfg.profile("default").face.detectors
    assert strict.face.mask == cfg.profile("default").face.mask


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    cfg_file = tmp_path / "etc" / "r.toml"
    cfg_file.write_text(
        '[service]\nwork_dir = "../work"\n'
        '[[watch]]\ninbound = "../in"\noutbound = "../out"\nquarantine = "../q"\n'
    )
    cfg = load(cfg_file)
    assert cfg.service.work_dir == tmp_path / "work"
    assert cfg.watch[0].inbound == tmp_path / "in"
    assert cfg.models.dir == tmp_path / "etc" / "models"


@pytest.mark.parametrize(
    ("outbound", "work"),
    [("in/out", "work"), ("out", "in/work"), ("in", "work")],
)
def test_overlapping_folders_are_refused(outbound: str, work: str) -> None:
    with pytest.raises(ConfigErrors) as ei:
        parse(
            {
                "service": {"work_dir": work},
                "watch": [{"inbound": "in", "outbound": outbound, "quarantine": "q"}],
            },
            Path("/tmp/base"),
        )
    assert any("overlaps" in str(e) for e in ei.value.errors)


def test_separate_folders_pass_the_overlap_check() -> None:
    cfg = parse(
        {"watch": [{"inbound": "in", "outbound": "out", "quarantine": "q"}]}, Path("/tmp/b")
    )
    assert check_folders(cfg) == []
    assert isinstance(cfg, Config)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[service\nworkers = 2\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(f)


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_exits_0_on_the_default_config() -> None:
    r = _check_config(REPO / "config" / "redactd.toml")
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stderr


def test_check_config_exits_78_and_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[profiles.default.face]\nthreshold = 2\n")
    r = _check_config(f)
    assert r.returncode == 78
    assert "profiles.default.face.threshold: must be <= 1.0" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_rejects_unknown_detector(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[profiles.default.face]\ndetectors = ["nosuch"]\n')
    r = _check_config(f)
    assert r.returncode == 78
    assert "profiles.default.face.detectors[0]" in r.stderr


def test_check_config_refuses_a_world_writable_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("")
    f.chmod(0o666)
    r = _check_config(f)
    assert r.returncode == 78
    assert "world-writable" in r.stderr


def _documented_keys_missing(cls: type, doc: dict, prefix: str) -> list[str]:
    import dataclasses
    from typing import get_type_hints

    missing = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        if f.name not in doc:
            missing.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]) and isinstance(doc[f.name], dict):
            missing += _documented_keys_missing(hints[f.name], doc[f.name], f"{prefix}{f.name}.")
    return missing


def test_documented_config_shows_every_key() -> None:
    from typing import get_type_hints

    from redactd.core.config import (
        Profile,
        WatchConfig,
        tomllib,  # tomli on Python 3.10
    )

    doc = tomllib.loads((REPO / "config" / "redactd.toml").read_text())
    hints = get_type_hints(Config)
    missing: list[str] = []
    for section in ("service", "runtime", "models", "limits", "logging", "validation"):
        missing += _documented_keys_missing(hints[section], doc[section], f"{section}.")
    missing += _documented_keys_missing(Profile, doc["profiles"]["default"], "profiles.default.")
    missing += _documented_keys_missing(WatchConfig, doc["watch"][0], "watch.")
    assert missing == []


def test_fast_is_built_in_and_a_profile_can_start_from_it() -> None:
    cfg = parse(
        {
            "profiles": {
                "quick": {"base": "fast", "plate": {"enabled": False}},
                "fast": {"video": {"detect_every": 2}},  # a table named fast starts from fast
                "mine": {"face": {"threshold": 0.3}},  # no base: starts from default
            }
        },
        Path("/tmp"),
    )
    fast = parse({}, Path("/tmp")).profiles["fast"]
    assert fast.face.threshold == 0.05
    assert (fast.face.tiling.enabled, fast.face.tiling.max_side) == (False, 512)
    assert (fast.plate.tiling.enabled, fast.plate.tiling.max_side) == (False, 960)
    assert fast.video.detect_every == 3
    quick = cfg.profiles["quick"]
    assert quick.face == fast.face and not quick.plate.enabled
    assert cfg.profiles["fast"].face == fast.face
    assert cfg.profiles["fast"].video.detect_every == 2
    mine = cfg.profiles["mine"]
    assert mine.face.threshold == 0.3 and mine.face.tiling.enabled  # default's tiling


def test_unknown_base_profile_is_named() -> None:
    errs = _errors({"profiles": {"p": {"base": "turbo"}}})
    assert any(e.startswith("profiles.p.base: must be one of the built-in profiles") for e in errs)
