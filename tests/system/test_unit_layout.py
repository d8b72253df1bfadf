"""The shipped unit, tmpfiles snippet and packaged config agree (no container needed).

The container test (test_systemd_install.py) proves the behaviour; this one
catches an edit that breaks the layout at once: a work area on another
``ReadWritePaths=`` mount than the folders (EXDEV on every quarantine), a
writable model store, a compiled-model cache, a folder with the wrong group.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from redactd.core.config import Config, load
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def _directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).extend(value.split())
    return out


def _under(path: Path, root: str) -> bool:
    return path == Path(root) or Path(root) in path.parents


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load(DEPLOY / "redactd.toml")


def test_work_area_and_folders_share_one_writable_mount(cfg: Config) -> None:
    rw = [p.lstrip("-") for p in _directives("redactd.service")["ReadWritePaths"]]
    w = cfg.watch[0]
    folders = [cfg.service.work_dir, w.inbound, w.outbound, w.quarantine]
    mounts = {next((r for r in rw if _under(f, r)), None) for f in folders}
    assert len(mounts) == 1 and None not in mounts, (folders, rw)


def test_models_and_cache_are_not_writable_by_the_service(cfg: Config) -> None:
    unit = _directives("redactd.service")
    assert unit["ProtectSystem"] == ["strict"]
    writable = [p.lstrip("-") for p in unit["ReadWritePaths"]] + ["/var/lib/redactd"]
    assert not any(_under(cfg.models.dir, r) for r in writable), cfg.models.dir
    assert cfg.runtime.cache_dir is None
    read_only = [p.lstrip("-") for p in unit["ReadOnlyPaths"]]
    assert "/var/lib/redactd/models" in read_only
    assert "/var/lib/redactd/cache/openvino" in read_only


def test_metrics_file_is_outside_the_private_state_directory(cfg: Config) -> None:
    unit = _directives("redactd.service")
    assert unit["StateDirectoryMode"] == ["0700"]
    metrics = cfg.service.metrics_file
    assert metrics is not None and not _under(metrics, "/var/lib/redactd")
    assert any(_under(metrics, p.lstrip("-")) for p in unit["ReadWritePaths"])


def test_each_folder_has_its_audience_group(cfg: Config) -> None:
    lines = {}
    for line in (DEPLOY / "tmpfiles.d-redactd.conf").read_text().splitlines():
        if line.startswith("d "):
            _d, path, mode, user, group, _age = line.split()
            lines[path] = (mode, user, group)
    w = cfg.watch[0]
    assert lines[str(w.inbound)] == ("2770", "redactd", "redactd-in")
    assert lines[str(w.outbound)] == ("2750", "redactd", "redactd-out")
    assert lines[str(w.quarantine)] == ("2750", "redactd", "redactd-admin")
    assert lines[str(cfg.service.work_dir)] == ("0700", "redactd", "redactd")
    assert cfg.service.metrics_file is not None
    assert lines[str(cfg.service.metrics_file.parent)] == ("2750", "redactd", "redactd-metrics")


def test_instance_unit_matches_the_main_one() -> None:
    main, inst = _directives("redactd.service"), _directives("redactd@.service")
    for key in ("ReadWritePaths", "ReadOnlyPaths"):
        assert [p.replace("/%i", "") for p in inst[key]] == main[key]
    for key in ("MemoryHigh", "MemoryMax", "TasksMax", "SupplementaryGroups", "UMask"):
        assert inst[key] == main[key], key
