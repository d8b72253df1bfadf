"""Describe and check an offline bundle: its SBOM, hashed requirements and SHA256SUMS.

    PYTHON deploy/bundle.py describe BUNDLE LOCK   # make-bundle.sh, in the build venv
    python3 deploy/bundle.py verify BUNDLE [SUMS_SHA256]  # install.sh --offline, first

``describe`` writes
  - ``requirements.txt``: one ``name==version --hash=sha256:...`` per wheel of
    ``wheels/`` (the digests of exactly these files; pip installs them with
    ``--require-hashes``). Every wheel must be a pin of the lock, and its digest
    must be one the lock lists, except for a wheel built here from a source
    distribution the lock lists (systemd-python builds against libsystemd);
  - ``sbom.cdx.json``: a CycloneDX 1.6 SBOM of every wheel (version, package
    URL, sha256, licence from its metadata) and every model (the manifest's
    licence, identity and provenance, each file with its sha256);
  - ``SHA256SUMS`` over every other file of the bundle.

``verify`` (standard library only: it runs before anything is installed)
refuses the bundle unless SHA256SUMS lists exactly the files present with
matching digests, and the SBOM describes exactly the wheels and model files
present with the same digests. With ``SUMS_SHA256`` (printed by ``make bundle``,
passed on out of band) SHA256SUMS itself must have that digest: without it a
tamperer who rewrites all three files is not detected.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

SBOM = "sbom.cdx.json"
SUMS = "SHA256SUMS"
REQS = "requirements.txt"
PATH_PROP = "redactd:bundle-path"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_hashes(lock: Path) -> dict[str, tuple[str, set[str]]]:
    """``name -> (version, {sha256})`` of a pip-compile/uv lock."""
    out: dict[str, tuple[str, set[str]]] = {}
    for block in lock.read_text().replace("\\\n", " ").splitlines():
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if m:
            out[norm(m.group(1))] = (m.group(2), set(re.findall(r"sha256:([0-9a-f]{64})", block)))
    return out


def _wheel_meta(path: Path) -> tuple[str, str, Any]:
    """(name, version, licences) from a wheel's METADATA."""
    with zipfile.ZipFile(path) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(meta_name).decode("utf-8", "replace"))
    licences: list[dict[str, Any]] = []
    if meta.get("License-Expression"):
        licences = [{"expression": meta["License-Expression"].strip()}]
    else:
        names = [
            c.split("::")[-1].strip()
            for c in meta.get_all("Classifier") or []
            if c.startswith("License ::")
        ]
        text = (meta.get("License") or "").strip()
        if not names and text and "\n" not in text and len(text) < 80:
            names = [text]
        licences = [{"license": {"name": n}} for n in names]
    return norm(meta["Name"]), meta["Version"], licences


def _prop(path: str) -> list[dict[str, str]]:
    return [{"name": PATH_PROP, "value": path}]


def describe(bundle: Path, lock: Path) -> None:
    from redactd import __version__
    from redactd.models import derived, manifest

    locked = lock_hashes(lock)
    components: list[dict[str, Any]] = []
    reqs: list[str] = []
    for whl in sorted((bundle / "wheels").glob("*.whl")):
        name, version, licences = _wheel_meta(whl)
        digest = sha256(whl)
        rel = f"wheels/{whl.name}"
        comp: dict[str, Any] = {
            "type": "library",
            "bom-ref": f"pypi:{name}@{version}",
            "name": name,
            "version": version,
            "purl": f"pkg:pypi/{name}@{version}",
            "hashes": [{"alg": "SHA-256", "content": digest}],
            "properties": _prop(rel),
        }
        if licences:
            comp["licenses"] = licences
        if name == "redactd":
            comp["type"] = "application"
        else:
            if name not in locked or locked[name][0] != version:
                raise SystemExit(f"bundle: {whl.name} is not a pin of {lock.name}")
            if digest not in locked[name][1]:
                # Built here from the locked (hash-checked) source distribution.
                comp["properties"] = [
                    *comp["properties"],
                    {"name": "redactd:built-from", "value": "sdist"},
                ]
            reqs.append(f"{name}=={version} --hash=sha256:{digest}")
        components.append(comp)
    missing = set(locked) - {c["name"] for c in components}
    if missing:
        raise SystemExit(f"bundle: no wheel for {', '.join(sorted(missing))}")

    man = manifest.load()
    store = bundle / "models"
    for name in sorted(p.name for p in store.iterdir() if p.is_dir()):
        derived_from = ""
        if name in man.models:
            spec = man.get(name)
        else:  # made on the build machine from a manifest model (an IR): its provenance
            spec = derived.spec(man, name, store)
            derived_from = derived.recipe(name).source
        files = []
        on_disk = sorted(
            f.relative_to(store / name).as_posix() for f in (store / name).rglob("*") if f.is_file()
        )
        for rel in on_disk:
            path = f"models/{name}/{rel}"
            digest = sha256(bundle / path)
            if rel in spec.files and digest != spec.files[rel]:
                raise SystemExit(f"bundle: {path} does not match the manifest")
            if rel not in spec.files and not (derived_from and rel == "provenance.json"):
                raise SystemExit(f"bundle: {path} is not a file of the model")
            files.append(
                {
                    "type": "file",
                    "bom-ref": f"model:{name}:{rel}",
                    "name": rel,
                    "hashes": [{"alg": "SHA-256", "content": digest}],
                    "properties": _prop(path),
                }
            )
        if set(spec.files) - set(on_disk):
            raise SystemExit(f"bundle: model {name} is incomplete")
        refs = [
            {"type": "distribution", "url": u, "comment": f} for f, u in sorted(spec.urls.items())
        ]
        props = [
            {"name": "redactd:task", "value": spec.task},
            {"name": "redactd:decoder", "value": spec.decoder},
        ]
        if derived_from:
            props.append({"name": "redactd:derived-from", "value": f"model:{derived_from}"})
        comp = {
            "type": "machine-learning-model",
            "bom-ref": f"model:{name}",
            "name": name,
            "version": spec.identity,
            "description": spec.description.strip()[:2000],
            "licenses": [{"expression": spec.licence}],
            "properties": props,
            "components": files,
        }
        if spec.pypi is not None:
            p = spec.pypi
            comp["purl"] = f"pkg:pypi/{norm(p.package)}@{p.version}"
            comp["pedigree"] = {
                "ancestors": [
                    {
                        "type": "library",
                        "bom-ref": f"model-source:{name}",
                        "name": norm(p.package),
                        "version": p.version,
                        "purl": f"pkg:pypi/{norm(p.package)}@{p.version}",
                        "hashes": [{"alg": "SHA-256", "content": p.wheel_sha256}],
                    }
                ]
            }
        if refs:
            comp["externalReferences"] = refs
        components.append(comp)

    (bundle / REQS).write_text("".join(r + "\n" for r in reqs))
    # Reproducible: the same inputs give the same SBOM (time from SOURCE_DATE_EPOCH).
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    stamp = __import__("datetime").datetime.fromtimestamp(
        epoch, __import__("datetime").timezone.utc
    )
    body = json.dumps(components, sort_keys=True).encode()
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(body).hexdigest())}",  # noqa: E501
        "version": 1,
        "metadata": {
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "component": {
                "type": "application",
                "bom-ref": "bundle",
                "name": "redactd-bundle",
                "version": __version__,
            },
            "properties": [{"name": "redactd:lock-sha256", "value": sha256(lock)}],
        },
        "components": components,
    }
    (bundle / SBOM).write_text(json.dumps(sbom, indent=1) + "\n")
    lines = [
        f"{sha256(p)}  ./{p.relative_to(bundle).as_posix()}\n"
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name != SUMS
    ]
    (bundle / SUMS).write_text("".join(lines))


def _sbom_paths(components: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in components:
        for p in c.get("properties", []):
            if p.get("name") == PATH_PROP:
                hashes = {h["alg"]: h["content"] for h in c.get("hashes", [])}
                out[p["value"]] = hashes.get("SHA-256", "")
        out.update(_sbom_paths(c.get("components", [])))
    return out


def problems(bundle: Path, sums_sha256: str = "") -> list[str]:
    sums = bundle / SUMS
    if not sums.is_file():
        return [f"{SUMS} is missing"]
    if sums_sha256 and sha256(sums) != sums_sha256.lower():
        return [f"{SUMS} is not the one expected (its sha256 differs)"]
    listed: dict[str, str] = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name.removeprefix("./")] = digest
    present = {
        p.relative_to(bundle).as_posix(): p
        for p in bundle.rglob("*")
        if p.is_file() and p.name != SUMS
    }
    out = [f"not in {SUMS}: {n}" for n in sorted(set(present) - set(listed))]
    out += [f"missing: {n}" for n in sorted(set(listed) - set(present))]
    out += [
        f"checksum differs: {n}"
        for n in sorted(set(listed) & set(present))
        if sha256(present[n]) != listed[n]
    ]
    try:
        sbom = json.loads((bundle / SBOM).read_text())
        described = _sbom_paths(sbom["components"])
    except (OSError, ValueError, KeyError, TypeError):
        return [*out, f"{SBOM} is missing or unreadable"]
    shipped = {n for n in present if n.startswith(("wheels/", "models/"))}
    out += [f"not in {SBOM}: {n}" for n in sorted(shipped - set(described))]
    out += [f"in {SBOM} but absent: {n}" for n in sorted(set(described) - shipped)]
    out += [
        f"{SBOM} digest differs: {n}"
        for n in sorted(set(described) & shipped)
        if described[n] != sha256(present[n])
    ]
    return out


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "describe":
        describe(Path(argv[2]), Path(argv[3]))
        return 0
    if len(argv) in (3, 4) and argv[1] == "verify":
        found = problems(Path(argv[2]), argv[3] if len(argv) == 4 else "")
        for p in found:
            print(f"bundle refused: {p}", file=sys.stderr)  # noqa: T201
        return 1 if found else 0
    print(__doc__, file=sys.stderr)  # noqa: T201
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
