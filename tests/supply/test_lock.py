"""The hashed locks: in step with pyproject.toml, exact pins with hashes, installable."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("lock", REPO / "requirements" / "lock.py")
assert _spec and _spec.loader
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", path.read_text(), re.M):
        out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def _copy(tmp_path: Path) -> Path:
    (tmp_path / "requirements").mkdir()
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for t in lock.TARGETS:
        shutil.copy(lock.lock_path(t), lock.lock_path(t, tmp_path))
    return tmp_path


def test_locks_match_pyproject() -> None:
    assert lock.problems() == []


def test_changed_dependency_without_make_lock_is_reported(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    py = root / "pyproject.toml"
    py.write_text(py.read_text().replace('"watchdog>=4.0"', '"watchdog>=5.0"'))
    found = lock.problems(root)
    # Every target includes the main dependencies: all three are stale.
    assert sorted(found) == sorted(
        f"{t}.txt: compiled from another pyproject.toml (run make lock)" for t in lock.TARGETS
    )


def test_pin_without_hash_is_reported(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    p = lock.lock_path("service", root)
    p.write_text(p.read_text() + "tqdm==4.66.0\n")
    assert lock.problems(root) == ["service.txt: tqdm has no --hash"]


def test_every_direct_dependency_is_pinned_within_its_bounds() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for target, extra in lock.TARGETS.items():
        pins = _pins(lock.lock_path(target))
        reqs = list(project["dependencies"])
        if extra:
            reqs += project["optional-dependencies"][extra]
        for line in reqs:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"python_version": "3.11"}):
                continue
            name = req.name.lower().replace("_", "-")
            assert name in pins, f"{target}: {name} is not in the lock"
            assert req.specifier.contains(pins[name]), f"{target}: {name}=={pins[name]}"


@pytest.mark.slow
def test_service_lock_installs_in_a_fresh_venv_with_require_hashes(tmp_path: Path) -> None:
    """What deploy/install.sh does: the service lock alone, then the project
    without dependencies; the result imports and runs ``redactd --version``."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [*pip, "--require-hashes", "-r", str(lock.lock_path("service"))], check=True, env=env
    )
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, env=env)
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    installed = {
        ln.split("==")[0].lower().replace("_", "-"): ln.split("==")[1]
        for ln in freeze.splitlines()
        if "==" in ln
    }
    installed.pop("redactd", None)  # `redactd @ file:...`, not a pin
    assert installed == _pins(lock.lock_path("service"))
    out = subprocess.run(
        [str(venv / "bin" / "redactd"), "--version"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert out.startswith("redactd 0.")


def test_a_lock_with_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    """--require-hashes refuses a wheel whose digest is not in the lock, before
    installing anything."""
    p = tmp_path / "req.txt"
    text = lock.lock_path("service").read_text()
    m = re.search(r"^cycler==\S+ \\\n((?:\s+--hash=sha256:[0-9a-f]+ ?\\?\n)+)", text, re.M)
    assert m
    pin = m.group(0).split()[0]
    p.write_text(f"{pin} --hash=sha256:{'0' * 64}\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--require-hashes",
            "--target",
            str(tmp_path / "t"),
            "-r",
            str(p),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in r.stderr
    assert not (tmp_path / "t" / "cycler").exists()
