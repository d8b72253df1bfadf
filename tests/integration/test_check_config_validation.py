"""`redactd check-config` runs the start-up check of `require_validation` that `redactd run` does.

A config that check-config passes must not then refuse to start: with
``require_validation = true`` and no passing record for the profile's
models, check-config exits 78 naming the model and what is missing. The
records here are minimal hand-written ones naming the models' real digests
(``models validate`` writing real ones is tested in test_models_validate).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from redactd.core.config import load
from redactd.models import validation
from redactd.stages.detect import registry

REPO = Path(__file__).resolve().parents[2]


def _check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", "check-config", "--config", str(cfg)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def _config(tmp: Path, models_dir: Path, require: bool) -> Path:
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[models]\ndir = "{models_dir}"\n'
        f'[validation]\ndir = "{tmp / "records"}"\n'
        f"[profiles.default]\nrequire_validation = {'true' if require else 'false'}\n"
    )
    return cfg


def _record(tmp: Path, cfg: Path, passed: bool, name: str) -> None:
    specs = registry.profile_models(load(cfg), "default")
    rec = {
        "schema_version": validation.SCHEMA_VERSION,
        "candidate": {
            "profile": "default",
            "models": [{"name": s.name, "sha256": validation.model_digest(s)} for s in specs],
        },
        "passed": passed,
    }
    (tmp / "records").mkdir(exist_ok=True)
    (tmp / "records" / f"{name}{validation.SUFFIX}").write_text(json.dumps(rec))


def test_check_config_refuses_models_without_a_passing_validation_record(
    tmp_path: Path, models_dir: Path
) -> None:
    # without require_validation no record is needed
    r = _check(_config(tmp_path, models_dir, require=False))
    assert r.returncode == 0, r.stderr
    cfg = _config(tmp_path, models_dir, require=True)
    # no record at all: 78, naming the key, the model and the missing record
    r = _check(cfg)
    assert r.returncode == 78, r.stderr
    assert "profiles.default.require_validation" in r.stderr
    assert "model 'centerface'" in r.stderr and "has no validation record" in r.stderr
    assert "config OK" not in r.stderr
    # only a failed record: still 78, naming the record
    _record(tmp_path, cfg, passed=False, name="2026-12-01T000000Z-default-00000001")
    r = _check(cfg)
    assert r.returncode == 78, r.stderr
    assert "failed validation (record 2026-12-01T000000Z-default-00000001" in r.stderr
    # a passing record of these exact models: the check is satisfied
    _record(tmp_path, cfg, passed=True, name="2026-12-02T000000Z-default-00000002")
    r = _check(cfg)
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stderr
