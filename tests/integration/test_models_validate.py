"""Change control: `redactd models validate` records, and the daemon refusing unvalidated models.

One small labelled synthetic clip (real faces from ../shared/eval); the
candidate profiles run through the real pipeline against ``default``:
``same`` (identical settings) must pass, ``weak`` (face threshold 0.95)
must fail; a profile with ``require_validation = true`` then starts only
when its models' digests have a passing record.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from redactd.core.config import load
from redactd.models import validation
from redactd.service.daemon import check_validation
from tests.helpers.synthvideo import labelled_clip

pytestmark = [pytest.mark.shared, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redactd.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip


def _config(tmp: Path, models_dir: Path, extra: str = "") -> Path:
    for d in ("in", "out", "quarantine"):
        (tmp / d).mkdir(exist_ok=True)
    cfg = tmp / "redactd.toml"
    cfg.write_text(
        f'[service]\nwork_dir = "{tmp / "work"}"\n'
        f'[runtime]\ncache_dir = "{tmp / "ovcache"}"\n'
        f'[models]\ndir = "{models_dir}"\n'
        f'[validation]\ndir = "{tmp / "records"}"\n'
        "[profiles.same]\n"
        "[profiles.weak.face]\nthreshold = 0.95\n"
        f"{extra}"
        f'[[watch]]\ninbound = "{tmp / "in"}"\noutbound = "{tmp / "out"}"\n'
        f'quarantine = "{tmp / "quarantine"}"\n'
    )
    return cfg


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory, eval_dir: Path, models_dir: Path):
    tmp = tmp_path_factory.mktemp("validate")
    labelled_clip(tmp / "data", eval_dir, frames=16)
    cfg = _config(tmp, models_dir)
    runs = {
        name: _cli("models", "validate", name, "--against", "default", "--data",
                   str(tmp / "data"), "--operator", "A. Operator", "--comment", "test",
                   "--config", str(cfg))
        for name in ("same", "weak")
    }  # fmt: skip
    return tmp, cfg, runs


def _records(tmp: Path) -> dict[str, dict]:
    return {r["candidate"]["profile"]: r for _, r in validation.load_records(tmp / "records")}


def test_identical_profile_passes_and_weakened_fails(validated) -> None:
    tmp, _, runs = validated
    assert runs["same"].returncode == 0, runs["same"].stdout + runs["same"].stderr
    assert runs["weak"].returncode == 1, runs["weak"].stdout + runs["weak"].stderr
    assert "PASSED" in runs["same"].stdout and "FAILED" in runs["weak"].stdout
    recs = _records(tmp)
    schema = json.loads((REPO / "schemas" / "validation-record.schema.json").read_text())
    for r in recs.values():
        jsonschema.validate(r, schema)
        assert r["operator"] == "A. Operator" and len(r["data"]["sha256"]) == 64
        assert {m["name"] for m in r["candidate"]["models"]} >= {"centerface"}
        assert "Quillomar" not in json.dumps(r)  # the clip's name is nowhere
    same, weak = recs["same"], recs["weak"]
    assert same["passed"] is True and all(c["passed"] for c in same["checks"])
    (face,) = [c for c in same["checks"] if c["measure"] == "masked_recall_strict.face"]
    assert face["candidate"] == pytest.approx(face["baseline"], abs=0.005)
    assert weak["passed"] is False
    (wface,) = [c for c in weak["checks"] if c["measure"] == "masked_recall_strict.face"]
    assert wface["passed"] is False and wface["delta"] < -0.005
    assert same["data"]["sha256"] == weak["data"]["sha256"]


def test_daemon_refuses_a_profile_whose_models_have_no_passing_record(
    tmp_path: Path, validated, models_dir: Path
) -> None:
    tmp, _, _ = validated
    # no records at all: exit 78 naming the model and the missing record
    cfg = _config(tmp_path, models_dir, "[profiles.default]\nrequire_validation = true\n")
    r = _cli("run", "--config", str(cfg), timeout=120)
    assert r.returncode == 78, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "centerface" in out and "no validation record" in out
    assert "profiles.default.require_validation" in out
    # only a failed record for these models: still refused, now "failed validation"
    recs = tmp_path / "records"
    recs.mkdir()
    weak = next(p for p in (tmp / "records").iterdir() if "-weak-" in p.name)
    (recs / weak.name).write_bytes(weak.read_bytes())
    problems = check_validation(load(cfg))
    assert problems and all("failed validation" in p.reason for p in problems)
    # the passing record of identical models: the start-up check is satisfied
    same = next(p for p in (tmp / "records").iterdir() if "-same-" in p.name)
    (recs / same.name).write_bytes(same.read_bytes())
    assert check_validation(load(cfg)) == []
    # with an HMAC key configured, the unsigned records no longer count
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    keyed = _config(
        tmp_path, models_dir,
        '[profiles.default]\nrequire_validation = true\n',
    )  # fmt: skip
    text = keyed.read_text().replace("[profiles.same]", f'hmac_key_file = "{key}"\n[profiles.same]')
    keyed.write_text(text)
    problems = check_validation(load(keyed))
    assert problems and all("signature" in p.reason for p in problems)
    rec = json.loads((recs / same.name).read_text())
    rec["hmac"] = validation.sign(rec, b"s3cret")
    (recs / same.name).write_text(json.dumps(rec))
    assert check_validation(load(keyed)) == []
    rec["passed"] = True
    rec["metrics"]["candidate"][0]["overmask"] = 0.5  # altered after signing
    (recs / same.name).write_text(json.dumps(rec))
    assert check_validation(load(keyed))
