"""What a profile allows of per-file instructions, and the profile they yield.

``check_allowed`` refuses (``instruction_not_allowed``, ``keep_limit_exceeded``)
what ``[profiles.NAME.instructions]`` does not permit; ``resolve`` applies the
permitted overrides. Separate from parsing: a valid document can still be
refused by one profile and accepted by another.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from redactd.core.config import Profile
from redactd.core.errors import PermanentInputError
from redactd.core.types import CLASSES
from redactd.stages.instructions.model import Instructions


def _not_allowed(detail: str) -> PermanentInputError:
    return PermanentInputError("instruction_not_allowed", detail, stage="sidecar")


def check_allowed(instr: Instructions, profile: Profile) -> None:
    """Raise ``instruction_not_allowed`` for anything the profile does not allow."""
    if instr.is_empty:
        return
    cfg = profile.instructions
    if not cfg.enabled:
        raise _not_allowed("instructions: not accepted by this profile")
    if instr.keep and not cfg.allow_keep:
        raise _not_allowed("keep: not allowed by this profile")
    if len(instr.keep) > cfg.keep_max_regions:
        raise PermanentInputError(
            "keep_limit_exceeded",
            f"keep: {len(instr.keep)} regions, over instructions.keep_max_regions "
            f"({cfg.keep_max_regions})",
            stage="sidecar",
        )
    for cls in CLASSES:
        o = instr.overrides.get(cls)
        if o.mask_method is not None and "mask_method" not in cfg.allow_overrides:
            raise _not_allowed(f"profile.{cls}.mask.method: not allowed by this profile")
        if o.enabled is not None:
            if "classes" not in cfg.allow_overrides:
                raise _not_allowed(f"profile.{cls}.enabled: not allowed by this profile")
            if o.enabled and not profile.of(cls).enabled:
                # Its detectors are not loaded: enabling it here cannot work.
                raise _not_allowed(f"profile.{cls}.enabled: this profile does not detect {cls}s")


def resolve(instr: Instructions | None, profile: Profile) -> Profile:
    """The profile to process with: ``profile`` with the allowed overrides of
    ``instr`` applied. Raises ``instruction_not_allowed`` (see ``check_allowed``)."""
    if instr is None or instr.is_empty:
        return profile
    check_allowed(instr, profile)
    changes: dict[str, Any] = {}
    for cls in CLASSES:
        o = instr.overrides.get(cls)
        cc = profile.of(cls)
        if o.enabled is not None:
            cc = dataclasses.replace(cc, enabled=o.enabled)
        if o.mask_method is not None:
            cc = dataclasses.replace(cc, mask=dataclasses.replace(cc.mask, method=o.mask_method))
        changes[cls] = cc
    return dataclasses.replace(profile, **changes)
