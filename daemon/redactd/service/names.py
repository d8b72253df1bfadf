"""Names in inbound folders: which are ours (temporaries, claims), ignored, or sidecars.

Shared by the watcher (what to hand out), the spool (what a claim is called)
and the job runner, ``service.job`` (what a claimed name means).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from redactd.core.fsutil import TMP_PREFIX
from redactd.stages.instructions.parse import SIDECAR_SUFFIX, media_name_of

#: Prefix of the name a cross-filesystem claim gives the inbound file while it
#: is copied into the work area (see ``service.spool.crossmount``); always ignored.
CLAIM_PREFIX = ".redactd-claim-"

# --------------------------------------------------------------------------- names


def is_sidecar_name(name: str) -> bool:
    """True for an instruction sidecar's name (``NAME.EXT.redact.json``): never media."""
    return name.endswith(SIDECAR_SUFFIX) or media_name_of(name) is not None


def is_ignored(parts: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    """True when any path component matches an ignore glob or is ours."""
    for part in parts:
        if part.startswith((TMP_PREFIX, CLAIM_PREFIX)):
            return True
        for pat in patterns:
            if fnmatch.fnmatchcase(part, pat):
                return True
    return False


def relative_parts(root: Path, path: Path, recursive: bool) -> tuple[str, ...] | None:
    """Validated components of ``path`` below ``root``, or None when outside.

    Every component is a plain name (no ``..``, ``.``, empty or ``/``), so an
    output path built from them can never leave the target folder.
    """
    rp, pp = root.parts, path.parts
    if len(pp) <= len(rp) or pp[: len(rp)] != rp:
        return None
    rel = tuple(pp[len(rp) :])
    if not recursive and len(rel) != 1:
        return None
    for part in rel:
        if part in ("", ".", "..") or "/" in part or "\0" in part:
            return None
    return rel
