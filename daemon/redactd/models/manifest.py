"""The model manifest: what each supported model is and how to trust it.

``models/manifest.toml`` (packaged as ``redactd/data/manifest.toml``) pins,
for every model, its files with their sha256, its licence, where to obtain it
(a wheel on the package registry, upstream URLs, a mirror directory) and the
recipe its adapter needs (input name, layout, colour order, decoder name).

Installed layout: ``<models.dir>/<model name>/<file>`` for every file listed.
A model is *usable* only when every file's sha256 matches; the runtime checks
this at load and refuses to start otherwise.

``parse`` validates what the fetcher relies on for safety: model names and
mirror folders are plain folder names, file names are relative paths that
cannot leave the model's folder, every digest is 64 lowercase hex digits, and
every source covers every file. A manifest that breaks one of these is
refused as a whole (a typo must not turn into a silently skipped check).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from redactd.core.errors import ModelError
from redactd.core.fsutil import sha256_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Tasks a model can serve; the same names as ``redactd.core.types.ObjectClass``.
TASKS: tuple[str, ...] = ("face", "plate")

SHA256_RE = re.compile(r"[0-9a-f]{64}")
# A model name or mirror folder becomes one path component: no separators, no
# leading dot (that would hide it, or collide with the store's temporaries).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class PypiSource:
    """A wheel on the package registry whose members are the model files."""

    package: str
    version: str
    wheel_sha256: str
    members: dict[str, str]  # model file -> path inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    """One model of the manifest."""

    name: str
    task: str  # "face" or "plate"
    decoder: str  # adapter name in redactd.stages.detect
    licence: str
    main: str  # the file given to OpenVINO's read_model
    files: dict[str, str]  # relative file -> sha256
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    pypi: PypiSource | None = None
    urls: dict[str, str] = field(default_factory=dict)
    mirror_dir: str = ""  # folder name inside a --from mirror (default: the model name)
    description: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # relative file -> bytes (optional)

    def dir(self, store: Path) -> Path:
        return store / self.name

    def main_path(self, store: Path) -> Path:
        return self.dir(store) / self.main

    def missing_or_bad(self, store: Path) -> list[str]:
        """Files that are absent or whose sha256 differs (empty = usable)."""
        bad = []
        for rel, digest in self.files.items():
            p = self.dir(store) / rel
            if not p.is_file() or sha256_file(p) != digest:
                bad.append(rel)
        return bad

    def verify(self, store: Path) -> None:
        """Raise ``ModelError`` unless every file is present and matches its sha256."""
        bad = self.missing_or_bad(store)
        if bad:
            raise ModelError(
                f"model {self.name!r} is not installed or fails verification "
                f"({len(bad)} of {len(self.files)} files); run 'redactd models fetch'"
            )

    @property
    def identity(self) -> str:
        """A short hash over all file hashes: names this exact model version."""
        h = hashlib.sha256()
        for rel in sorted(self.files):
            h.update(f"{rel}={self.files[rel]}\n".encode())
        return h.hexdigest()[:16]

    @property
    def size_bytes(self) -> int | None:
        """Total size of the model's files, when the manifest declares every one."""
        if set(self.sizes) != set(self.files):
            return None
        return sum(self.sizes.values())


@dataclass(frozen=True)
class Manifest:
    """All models redactd knows."""

    models: dict[str, ModelSpec]

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise ModelError(
                f"unknown model {name!r}; known: {', '.join(sorted(self.models))}"
            ) from None




def _bad(name: str, reason: str) -> ModelError:
    return ModelError(f"manifest entry {name!r}: {reason}")


def _check_rel(name: str, rel: str) -> None:
    """A file name must stay inside the model's folder wherever it is joined."""
    p = PurePosixPath(rel)
    if (
        not rel
        or "\\" in rel
        or p.is_absolute()
        or any(part in ("", ".", "..") for part in rel.split("/"))
    ):
        raise _bad(name, f"file name {rel!r} is not a plain relative path")


def _check_digest(name: str, what: str, digest: object) -> None:
    if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
        raise _bad(name, f"{what}: sha256 must be 64 lowercase hex digits")


def _validate(spec: ModelSpec) -> None:
    n = spec.name
    if not NAME_RE.fullmatch(n):
        raise _bad(n, "model name must be a plain folder name")
    if spec.task not in TASKS:
        raise _bad(n, f"task must be one of {', '.join(TASKS)}")
    if not spec.decoder:
        raise _bad(n, "decoder is empty")
    if not spec.files:
        raise _bad(n, "no files")
    for rel, digest in spec.files.items():
        _check_rel(n, rel)
        _check_digest(n, f"file {rel!r}", digest)
    if spec.main not in spec.files:
        raise _bad(n, "main is not one of the files")
    if not NAME_RE.fullmatch(spec.mirror_dir):
        raise _bad(n, "source.mirror_dir must be a plain folder name")
    for rel, size in spec.sizes.items():
        if rel not in spec.files:
            raise _bad(n, f"sizes names {rel!r}, which is not one of the files")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise _bad(n, f"size of {rel!r} must be a positive integer")
    for rel, url in spec.urls.items():
        if rel not in spec.files:
            raise _bad(n, f"source.urls names {rel!r}, which is not one of the files")
        if not url.startswith(("https://", "http://")):
            raise _bad(n, f"source.urls[{rel!r}] must be an http(s) URL")
    if spec.urls and set(spec.urls) != set(spec.files):
        raise _bad(n, "source.urls must give a URL for every file, or none")
    if spec.pypi is not None:
        _check_digest(n, "source.pypi.wheel_sha256", spec.pypi.wheel_sha256)
        if set(spec.pypi.members) != set(spec.files):
            raise _bad(n, "source.pypi.members must name a wheel member for every file")
        if not spec.pypi.package or not spec.pypi.version:
            raise _bad(n, "source.pypi needs package and version")


def _spec(name: str, d: dict[str, Any]) -> ModelSpec:
    try:
        src = d.get("source", {})
        pypi = None
        if "pypi" in src:
            p = src["pypi"]
            pypi = PypiSource(
                package=p["package"],
                version=p["version"],
                wheel_sha256=p["wheel_sha256"],
                members=dict(p["members"]),
            )
        spec = ModelSpec(
            name=name,
            task=d["task"],
            decoder=d["decoder"],
            licence=d["licence"],
            main=d["main"],
            files=dict(d["files"]),
            input=dict(d.get("input", {})),
            output=dict(d.get("output", {})),
            pypi=pypi,
            urls=dict(src.get("urls", {})),
            mirror_dir=src.get("mirror_dir", name),
            description=d.get("description", ""),
            sizes=dict(d.get("sizes", {})),
        )
    except KeyError as e:
        raise ModelError(f"manifest entry {name!r} lacks key {e.args[0]!r}") from e
    except (TypeError, ValueError) as e:
        raise _bad(name, "a table has the wrong type") from e
    _validate(spec)
    return spec


def parse(data: dict[str, Any]) -> Manifest:
    """Validate a decoded manifest; raise ``ModelError`` naming the bad entry."""
    if data.get("schema") != 1:
        raise ModelError("model manifest: unsupported schema (expected schema = 1)")
    return Manifest({n: _spec(n, d) for n, d in data.get("models", {}).items()})


def load(path: Path | None = None) -> Manifest:
    """Load the given manifest, or the one packaged with redactd."""
    if path is None:
        text = resources.files("redactd").joinpath("data/manifest.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    try:
        return parse(tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"model manifest is not valid TOML: {e}") from e
