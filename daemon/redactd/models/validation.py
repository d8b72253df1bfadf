"""Validation records: reading them, and whether a model has a passing one.

``redactd models validate`` (``redactd.evaluation.validate``) writes one
JSON record per run into ``[validation] dir``; the format is
``schemas/validation-record.schema.json`` (docs/VALIDATION.md). This module
is the small reader the daemon's start-up check uses: it imports nothing
heavier than the standard library, so ``redactd run`` can refuse an
unvalidated model before any model is loaded.

A model's *digest* is the sha256 over its manifest file list
(``relative path=sha256`` lines in path order): the files the runtime
verifies before loading, so a record names exactly the bytes that run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redactd.models.manifest import ModelSpec

SCHEMA_VERSION = 1
#: The file name suffix of a record inside the records folder.
SUFFIX = ".validation.json"


def model_digest(spec: ModelSpec) -> str:
    """sha256 (64 hex digits) naming the exact files of ``spec``."""
    h = hashlib.sha256()
    for rel in sorted(spec.files):
        h.update(f"{rel}={spec.files[rel]}\n".encode())
    return h.hexdigest()


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes the HMAC covers: the record without its ``hmac``, keys sorted."""
    body = {k: v for k, v in record.items() if k != "hmac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(record: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical(record), hashlib.sha256).hexdigest()


def read_key(path: Path | None) -> bytes | None:
    """The HMAC key (file contents, surrounding white space stripped), ``None`` without one."""
    if path is None:
        return None
    key = path.read_bytes().strip()
    if not key:
        raise ValueError("the validation HMAC key file is empty")
    return key


@dataclass(frozen=True)
class Verdict:
    """What the records say about one model digest."""

    model: str
    digest: str
    passed: bool
    #: "passed", "missing" (no record names the digest), "failed" (records do, none passed)
    #: or "unsigned" (records pass but carry no valid HMAC while a key is configured).
    status: str
    record: str = ""  # file name of the deciding record (the passing or latest one)

    def message(self) -> str:
        short = self.digest[:12]
        if self.status == "missing":
            return f"model {self.model!r} (sha256 {short}) has no validation record"
        if self.status == "failed":
            return f"model {self.model!r} (sha256 {short}) failed validation (record {self.record})"
        if self.status == "unsigned":
            return (
                f"model {self.model!r} (sha256 {short}) has a passing record without a valid "
                f"signature (record {self.record})"
            )
        return f"model {self.model!r} (sha256 {short}) passed validation (record {self.record})"


def load_records(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, record) of every readable record in ``folder``, oldest name first."""
    out: list[tuple[str, dict[str, Any]]] = []
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # an unreadable record proves nothing
        if isinstance(rec, dict) and rec.get("schema_version") == SCHEMA_VERSION:
            out.append((p.name, rec))
    return out


def _candidate_digests(rec: dict[str, Any]) -> set[str]:
    models = rec.get("candidate", {}).get("models", [])
    return {m.get("sha256", "") for m in models if isinstance(m, dict)}


def verdict(
    model: str,
    digest: str,
    records: Iterable[tuple[str, dict[str, Any]]],
    key: bytes | None = None,
) -> Verdict:
    """Whether some record validated the model ``digest`` as a candidate and passed."""
    naming = [(n, r) for n, r in records if digest in _candidate_digests(r)]
    if not naming:
        return Verdict(model, digest, False, "missing")
    passing = [(n, r) for n, r in naming if r.get("passed") is True]
    if not passing:
        return Verdict(model, digest, False, "failed", naming[-1][0])
    if key is not None:
        signed = [
            (n, r)
            for n, r in passing
            if isinstance(r.get("hmac"), str) and hmac.compare_digest(r["hmac"], sign(r, key))
        ]
        if not signed:
            return Verdict(model, digest, False, "unsigned", passing[-1][0])
        passing = signed
    return Verdict(model, digest, True, "passed", passing[-1][0])
