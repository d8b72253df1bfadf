"""The model manifest: what each supported model is and how to trust it.

``models/manifest.toml`` (packaged as ``redactd/data/manifest.toml``) pins,
for every model, its files with their sha256, its licence, where to obtain it
(a wheel on the package registry, upstream URLs, a mirror directory) and the
recipe its adapter needs (input name, layout, colour order, decoder name).

Installed layout: ``<models.dir>/<model name>/<file>`` for every file listed.
A model is *usable* only when every file's sha256 matches; the runtime checks
this at load and refuses to start otherwise.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from redactd.errors import ModelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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
    decoder: str  # adapter name in redactd.detect
    licence: str
    main: str  # the file given to OpenVINO's read_model
    files: dict[str, str]  # relative file -> sha256
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    pypi: PypiSource | None = None
    urls: dict[str, str] = field(default_factory=dict)
    mirror_dir: str = ""  # folder name inside a --from mirror (default: the model name)
    description: str = ""

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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        return ModelSpec(
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
        )
    except KeyError as e:
        raise ModelError(f"manifest entry {name!r} lacks key {e.args[0]!r}") from e


def parse(data: dict[str, Any]) -> Manifest:
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
