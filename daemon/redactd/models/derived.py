"""Derived models: artefacts made on this server from a manifest model.

Two kinds:

* ``int8``: INT8 by quantization. Its bytes depend on the operator's
  calibration footage, so no hash can be pinned in advance. It is made by
  ``redactd models quantize`` (``redactd.models.quantize``).
* ``ir``: an OpenVINO IR converted from a checkpoint the runtime cannot read
  (a PyTorch ``.pt``), by ``redactd.models.convert`` without torch. It is made
  by ``redactd models fetch`` right after its source is fetched (and
  remade when absent, altered or made from another source version). Its
  bytes depend on the OpenVINO version that serialised it, so they are
  hashed when made, not pinned in the manifest; the source checkpoint is.

Both are installed into the model store like a fetched model::

    <store>/<name>/<name>.xml        OpenVINO IR, dynamic H and W
    <store>/<name>/<name>.bin
    <store>/<name>/provenance.json   what was made, from what, how

``provenance.json`` records the sha256 of each artefact file, the source
model's name and file hashes; for ``int8`` also the calibration digest (sha256 over the sorted
per-sample hashes: never file names), the sample and frame counts, the seed,
the quantization settings, the nncf/OpenVINO/redactd versions and the UTC
date; for ``ir`` the converter, what the checkpoint says of itself (classes,
strides, parameter count, trainer version and date) and the OpenVINO/redactd
versions. ``spec`` turns it into a ``ModelSpec`` whose ``files`` are those hashes,
so the runtime checks a derived model exactly like a fetched one, and
refuses it (``ModelError``, exit 78) when a file is missing or altered, or
when it was made from another version of its source model than the manifest
pins now.

What the hashes protect: against corruption, partial writes and edits of the
artefact. The provenance file itself is the reference, so someone who can
write the store can forge both; pin ``ModelInfo.identity`` (logged at start)
if that matters.

This module imports neither nncf nor OpenVINO (the daemon loads derived
models through it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from redactd.core.errors import ModelError
from redactd.core.fsutil import sha256_file
from redactd.models.manifest import NAME_RE, SHA256_RE, Manifest, ModelSpec

PROVENANCE = "provenance.json"
SCHEMA = 1


@dataclass(frozen=True)
class Recipe:
    """A derived model redactd knows how to make: ``name`` from manifest model ``source``."""

    name: str
    source: str
    kind: Literal["int8", "ir"] = "int8"

    @property
    def main(self) -> str:
        return f"{self.name}.xml"

    @property
    def weights(self) -> str:
        return f"{self.name}.bin"

    def hint(self) -> str:
        """What the operator runs to make (or remake) it."""
        if self.kind == "ir":
            return f"redactd models fetch {self.source}"
        return f"redactd models quantize {self.source} --calibration DIR"


#: Derived models by name. The detector registry maps detector names to these.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("centerface-int8", "centerface"),
        Recipe("face_detection_yunet-int8", "face_detection_yunet"),
        # the YOLOv8n plate checkpoint, converted to IR by `models fetch` (models/convert.py)
        Recipe("yolov8n_plate-ir", "yolov8n_plate", "ir"),
    )
}


def recipe(name: str) -> Recipe:
    """The recipe of derived model ``name``; ``ModelError`` when there is none."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ModelError(
            f"unknown derived model {name!r}; known: {', '.join(sorted(RECIPES))}"
        ) from None


def conversion_of(source: str) -> Recipe | None:
    """The IR recipe made from manifest model ``source`` on fetch, if it has one."""
    for r in RECIPES.values():
        if r.source == source and r.kind == "ir":
            return r
    return None


def recipe_for_source(source: str) -> Recipe:
    """The INT8 recipe of manifest model ``source``; ``ModelError`` when it has none."""
    for r in RECIPES.values():
        if r.source == source and r.kind == "int8":
            return r
    known = ", ".join(sorted(r.source for r in RECIPES.values() if r.kind == "int8"))
    raise ModelError(f"model {source!r} cannot be quantized; quantizable: {known}")


@dataclass(frozen=True)
class Provenance:
    """The contents of ``provenance.json`` (see the module doc)."""

    name: str
    source: str
    source_files: dict[str, str]  # source file -> sha256, as the manifest pinned it
    files: dict[str, str]  # artefact file -> sha256
    main: str
    calibration_digest: str
    samples: int  # model inputs the statistics were collected on
    frames: int  # source pictures (images and video frames) they were cut from
    seed: int
    preset: str  # nncf preset: "performance" or "mixed"
    heads: Literal["int8", "float"]  # output heads quantized, or left in float
    fast_bias_correction: bool
    nncf_version: str
    openvino_version: str
    redactd_version: str
    created: str  # UTC, ISO 8601 with "Z"
    tiling: dict[str, Any] = field(default_factory=dict)  # the tiling the inputs were cut with
    kind: Literal["int8", "ir"] = "int8"
    conversion: dict[str, Any] = field(default_factory=dict)  # kind "ir": converter and checkpoint

    def to_json(self) -> str:
        if self.kind == "ir":
            return json.dumps({
                "schema": SCHEMA,
                "kind": "ir",
                "name": self.name,
                "main": self.main,
                "files": dict(sorted(self.files.items())),
                "source": {"name": self.source, "files": dict(sorted(self.source_files.items()))},
                "conversion": self.conversion,
                "tools": {"openvino": self.openvino_version, "redactd": self.redactd_version},
                "created": self.created,
            }, indent=2) + "\n"
        data = {
            "schema": SCHEMA,
            "name": self.name,
            "main": self.main,
            "files": dict(sorted(self.files.items())),
            "source": {"name": self.source, "files": dict(sorted(self.source_files.items()))},
            "calibration": {
                "digest": self.calibration_digest,
                "samples": self.samples,
                "frames": self.frames,
                "seed": self.seed,
                "tiling": self.tiling,
            },
            "quantization": {
                "preset": self.preset,
                "heads": self.heads,
                "fast_bias_correction": self.fast_bias_correction,
            },
            "tools": {
                "nncf": self.nncf_version,
                "openvino": self.openvino_version,
                "redactd": self.redactd_version,
            },
            "created": self.created,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, name: str) -> Provenance:
        """Parse and validate; ``ModelError`` naming the model (never a path) otherwise."""
        bad = ModelError(f"model {name!r}: {PROVENANCE} is unreadable or incomplete")
        try:
            d = json.loads(text)
            if d.get("schema") != SCHEMA or d.get("name") != name:
                raise bad
            if d.get("kind") == "ir":
                return _checked(_ir_provenance(cls, d), bad)
            cal, q, tools = d["calibration"], d["quantization"], d["tools"]
            prov = cls(
                name=str(d["name"]),
                source=str(d["source"]["name"]),
                source_files={str(k): str(v) for k, v in d["source"]["files"].items()},
                files={str(k): str(v) for k, v in d["files"].items()},
                main=str(d["main"]),
                calibration_digest=str(cal["digest"]),
                samples=int(cal["samples"]),
                frames=int(cal["frames"]),
                seed=int(cal["seed"]),
                tiling=dict(cal.get("tiling", {})),
                preset=str(q["preset"]),
                heads="float" if q["heads"] == "float" else "int8",
                fast_bias_correction=bool(q["fast_bias_correction"]),
                nncf_version=str(tools["nncf"]),
                openvino_version=str(tools["openvino"]),
                redactd_version=str(tools["redactd"]),
                created=str(d["created"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise bad from e
        return _checked(prov, bad)

    def summary(self) -> str:
        """One line for ``redactd models list`` and the quantize report (hashes, no names)."""
        src = ", ".join(f"{v[:12]}" for _, v in sorted(self.source_files.items()))
        if self.kind == "ir":
            c = self.conversion
            return (
                f"IR from {self.source} (sha256 {src}) by {c.get('converter', '?')}, "
                f"{c.get('parameters', '?')} parameters, classes {c.get('classes', '?')}, "
                f"openvino {self.openvino_version.split('-')[0]}, {self.created}"
            )
        return (
            f"from {self.source} (sha256 {src}), {self.preset} preset, heads {self.heads}, "
            f"calibration {self.calibration_digest[:16]} ({self.samples} samples from "
            f"{self.frames} frames, seed {self.seed}), nncf {self.nncf_version}, "
            f"openvino {self.openvino_version.split('-')[0]}, {self.created}"
        )


def _ir_provenance(cls: type[Provenance], d: dict[str, Any]) -> Provenance:
    tools = d["tools"]
    return cls(
        name=str(d["name"]),
        source=str(d["source"]["name"]),
        source_files={str(k): str(v) for k, v in d["source"]["files"].items()},
        files={str(k): str(v) for k, v in d["files"].items()},
        main=str(d["main"]),
        calibration_digest="",
        samples=0,
        frames=0,
        seed=0,
        preset="",
        heads="float",
        fast_bias_correction=False,
        nncf_version="",
        openvino_version=str(tools["openvino"]),
        redactd_version=str(tools["redactd"]),
        created=str(d["created"]),
        kind="ir",
        conversion=dict(d.get("conversion", {})),
    )


def _checked(prov: Provenance, bad: ModelError) -> Provenance:
    digests = [*prov.files.values(), *prov.source_files.values()]
    if prov.kind == "int8":
        digests.append(prov.calibration_digest)
    # file names are joined to the model's folder: plain names only
    if (
        not prov.files
        or prov.main not in prov.files
        or not all(NAME_RE.fullmatch(f) and f != PROVENANCE for f in prov.files)
        or not all(SHA256_RE.fullmatch(x) for x in digests)
    ):
        raise bad
    return prov


def model_dir(store: Path, name: str) -> Path:
    return store / name


def read_provenance(store: Path, name: str) -> Provenance:
    """The provenance of derived model ``name`` in ``store``.

    Raises ``ModelError`` telling the operator how to make it when it is absent.
    """
    r = recipe(name)
    path = model_dir(store, name) / PROVENANCE
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        how = "" if r.kind == "ir" else " from a folder of your own images or videos"
        raise ModelError(
            f"model {name!r} has not been made on this server; to make it{how}, "
            f"run: {r.hint()}"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"model {name!r}: {PROVENANCE} cannot be read") from e
    return Provenance.from_json(text, name)


def spec(manifest: Manifest, name: str, store: Path, *, verify: bool = True) -> ModelSpec:
    """The ``ModelSpec`` of derived model ``name`` as installed in ``store``.

    Its recipe (input, outputs, decoder) is the source model's; its files and
    hashes are the provenance's. With ``verify`` every file is hashed first.
    Raises ``ModelError`` when the artefact is absent, altered, or made from a
    source model other than the one the manifest pins now; each message says
    how to make it again (``Recipe.hint``).
    """
    r = recipe(name)
    source = manifest.get(r.source)
    prov = read_provenance(store, name)
    if prov.source != source.name or prov.source_files != source.files:
        raise ModelError(
            f"model {name!r} was made from another version of {source.name!r} than the one "
            f"installed now; to remake it, run: {r.hint()}"
        )
    derived = replace(
        source,
        name=name,
        main=prov.main,
        files=dict(prov.files),
        pypi=None,
        urls={},
        mirror_dir=name,
        sizes={},
        description=(
            f"{'IR' if r.kind == 'ir' else 'INT8'} of {source.name} made on this server: "
            f"{prov.summary()}"
        ),
    )
    if verify:
        bad = derived.missing_or_bad(store)
        if bad:
            raise ModelError(
                f"model {name!r} fails verification: {len(bad)} of {len(derived.files)} files "
                f"missing or altered ({', '.join(bad)}); to remake it, run: {r.hint()}"
            )
    return derived


def resolve(manifest: Manifest, name: str, store: Path) -> ModelSpec:
    """A manifest model, or a derived model checked in ``store`` (for the detector registry)."""
    if name in manifest.models or name not in RECIPES:
        return manifest.get(name)  # unknown names fail here with the manifest's message
    return spec(manifest, name, store)


# --------------------------------------------------------------------------- list / verify


@dataclass(frozen=True)
class DerivedStatus:
    """One derived model as ``redactd models list`` / ``verify`` show it."""

    name: str
    source: str
    task: str
    licence: str
    state: Literal["ok", "missing", "bad"]
    reason: str  # why it is "bad" (no paths)
    bad_files: tuple[str, ...]
    total_files: int
    size_bytes: int | None
    provenance: Provenance | None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def list_line(self) -> str:
        """Same columns as ``ModelStatus.line``, then the provenance on its own line."""
        size = f"{self.size_bytes / (1 << 20):.1f} MiB" if self.size_bytes is not None else "?"
        state = {"ok": "installed", "missing": "-", "bad": "BAD"}[self.state]
        line = (
            f"{self.name:<50} {self.task:<5} {self.licence:<10} {state:<9} "
            f"{size:>9}  {'converted' if recipe(self.name).kind == 'ir' else 'quantize'}"
        )
        if self.provenance is not None:
            line += f"\n    {self.provenance.summary()}"
        elif self.state == "missing":
            line += f"\n    made on this server: {recipe(self.name).hint()}"
        if self.state == "bad":
            line += f"\n    {self.reason}"
        return line

    def verify_line(self) -> str:
        if self.state == "ok":
            return f"{self.name}: ok ({self.total_files} files, sha256 verified)"
        if self.state == "missing":
            return f"{self.name}: not installed; to make it, run: {recipe(self.name).hint()}"
        return f"{self.name}: FAILED, {self.reason}"


def status(manifest: Manifest, name: str, store: Path) -> DerivedStatus:
    """Check derived model ``name`` in ``store``; never raises for a bad or absent artefact."""
    r = recipe(name)
    source = manifest.get(r.source)
    folder = model_dir(store, name)

    def result(
        state: Literal["ok", "missing", "bad"],
        reason: str = "",
        bad: tuple[str, ...] = (),
        prov: Provenance | None = None,
    ) -> DerivedStatus:
        files = prov.files if prov is not None else {}
        sizes = [(folder / f).stat().st_size for f in files if (folder / f).is_file()]
        return DerivedStatus(
            name=name,
            source=r.source,
            task=source.task,
            licence=source.licence,
            state=state,
            reason=reason,
            bad_files=bad,
            total_files=len(files),
            size_bytes=sum(sizes) if files and len(sizes) == len(files) else None,
            provenance=prov,
        )

    if not folder.is_dir():
        return result("missing")
    try:
        prov = read_provenance(store, name)
    except ModelError as e:
        return result("bad", str(e))
    bad = tuple(
        f for f, digest in sorted(prov.files.items())
        if not (folder / f).is_file() or sha256_file(folder / f) != digest
    )
    if bad:
        return result(
            "bad",
            f"{len(bad)} of {len(prov.files)} files missing or altered: {', '.join(bad)}; "
            f"to remake it, run: {r.hint()}",
            bad,
            prov,
        )
    if prov.source_files != source.files:
        return result(
            "bad",
            f"made from another version of {r.source!r}; to remake it, run: {r.hint()}",
            (),
            prov,
        )
    return result("ok", prov=prov)


def installed(store: Path) -> list[str]:
    """Names of the derived models that have a folder in ``store`` (made or half-made)."""
    return [n for n in sorted(RECIPES) if model_dir(store, n).is_dir()]
