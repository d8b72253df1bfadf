"""`make bundle`: a CycloneDX SBOM and SHA256SUMS that install.sh checks first."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from redactd.models import manifest
from tests.conftest import REPO

pytestmark = pytest.mark.slow
BUNDLE_PY = REPO / "deploy" / "bundle.py"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "redactd-bundle"
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    r = subprocess.run(
        [str(REPO / "deploy" / "make-bundle.sh"), str(out), sys.executable],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # The digest make-bundle prints for the operator to pass on.
    assert r.stdout.split()[-1] == hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest()
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    """A hard-linked copy: tampering replaces a file, never edits the original."""
    dst = tmp_path / "b"
    subprocess.run(["cp", "-al", str(bundle), str(dst)], check=True)
    return dst


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def _verify(b: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUNDLE_PY), "verify", str(b), *extra], capture_output=True, text=True
    )


def test_sbom_is_valid_cyclonedx_and_the_validator_catches_a_broken_one(bundle: Path) -> None:
    text = (bundle / "sbom.cdx.json").read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(text) is None
    broken = json.loads(text)
    broken["components"][0]["hashes"][0]["content"] = "not-a-digest"
    assert validator.validate_str(json.dumps(broken)) is not None


def test_sbom_lists_the_locked_packages_and_the_models_with_provenance(bundle: Path) -> None:
    sbom = json.loads((bundle / "sbom.cdx.json").read_text())
    comps = {c["name"]: c for c in sbom["components"]}
    lock = (REPO / "requirements" / "service.txt").read_text().replace("\\\n", " ")
    for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(.*)$", lock, re.M):
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        c = comps[name]
        assert c["version"] == m.group(2)
        assert c["purl"] == f"pkg:pypi/{name}@{m.group(2)}"
        digest = c["hashes"][0]["content"]
        built = {"name": "redactd:built-from", "value": "sdist"} in c["properties"]
        # A wheel from the registry is one the lock names; only a wheel built
        # here from the locked source (systemd-python) has a digest of its own.
        assert (digest in m.group(3)) != built, name
    assert comps["redactd"]["type"] == "application"
    man = manifest.load()
    models = sorted(p.name for p in (bundle / "models").iterdir())
    assert "centerface" in models
    for name in models:
        c = comps[name]
        assert c["type"] == "machine-learning-model"
        if name not in man.models:  # made at bundle time from a manifest model (an IR)
            source = next(
                p["value"] for p in c["properties"] if p["name"] == "redactd:derived-from"
            )
            assert source.removeprefix("model:") in man.models
            continue
        spec = man.get(name)
        assert c["version"] == spec.identity
        assert c["licenses"] == [{"expression": spec.licence}]
        assert {f["name"]: f["hashes"][0]["content"] for f in c["components"]} == spec.files
        if spec.pypi:
            assert c["pedigree"]["ancestors"][0]["hashes"][0]["content"] == spec.pypi.wheel_sha256
    # Only hashed pins install: one line per wheel except redactd itself.
    reqs = (bundle / "requirements.txt").read_text().splitlines()
    libraries = [c for c in comps.values() if c["type"] == "library"]
    assert len(reqs) == len(libraries) and all("--hash=sha256:" in r for r in reqs)


def test_an_untouched_bundle_verifies(bundle: Path) -> None:
    r = _verify(bundle)
    assert r.returncode == 0, r.stderr
    digest = hashlib.sha256((bundle / "SHA256SUMS").read_bytes()).hexdigest()
    assert _verify(bundle, digest).returncode == 0


def test_a_changed_wheel_is_refused(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    whl = next((b / "wheels").glob("structlog-*.whl"))
    _replace(whl, whl.read_bytes() + b"\0")
    r = _verify(b)
    assert r.returncode == 1
    assert f"checksum differs: wheels/{whl.name}" in r.stderr


def test_an_added_wheel_is_refused(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    (b / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    r = _verify(b)
    assert r.returncode == 1
    assert "not in SHA256SUMS: wheels/evil-1.0-py3-none-any.whl" in r.stderr
    assert "not in sbom.cdx.json: wheels/evil-1.0-py3-none-any.whl" in r.stderr


def test_rewritten_checksums_do_not_hide_a_change_from_the_sbom(
    bundle: Path, tmp_path: Path
) -> None:
    """SHA256SUMS regenerated after the change: the SBOM still disagrees; and an
    SBOM rewritten too is caught by the SHA256SUMS digest passed on out of band."""
    good_sums = hashlib.sha256((bundle / "SHA256SUMS").read_bytes()).hexdigest()
    b = _copy(bundle, tmp_path)
    onnx = next((b / "models").rglob("*.onnx"))
    _replace(onnx, onnx.read_bytes()[:-1] + b"\1")
    rel = onnx.relative_to(b).as_posix()

    def resum() -> None:
        _replace(b / "SHA256SUMS", b"")
        lines = [
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(b).as_posix()}\n"
            for p in sorted(b.rglob("*"))
            if p.is_file() and p.name != "SHA256SUMS"
        ]
        (b / "SHA256SUMS").write_text("".join(lines))

    resum()
    r = _verify(b)
    assert r.returncode == 1 and f"sbom.cdx.json digest differs: {rel}" in r.stderr
    sbom = json.loads((b / "sbom.cdx.json").read_text())
    fixed = copy.deepcopy(sbom)
    for c in fixed["components"]:
        for f in c.get("components", []):
            if f["properties"][0]["value"] == rel:
                f["hashes"][0]["content"] = hashlib.sha256(onnx.read_bytes()).hexdigest()
    _replace(b / "sbom.cdx.json", json.dumps(fixed).encode())
    resum()
    assert _verify(b).returncode == 0  # consistent with itself ...
    r = _verify(b, good_sums)
    assert r.returncode == 1 and "SHA256SUMS is not the one expected" in r.stderr


def test_install_refuses_a_tampered_bundle_before_installing_anything(
    bundle: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("install.sh runs as root")
    b = _copy(bundle, tmp_path)
    whl = next((b / "wheels").glob("openvino-*.whl"))
    _replace(whl, whl.read_bytes()[:-1])
    prefix = tmp_path / "opt"
    r = subprocess.run(
        [
            str(b / "deploy" / "install.sh"),
            "--offline",
            str(b),
            "--prefix",
            str(prefix),
            "--no-start",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert f"checksum differs: wheels/{whl.name}" in r.stderr
    assert "nothing was installed" in r.stderr
    assert not prefix.exists()
