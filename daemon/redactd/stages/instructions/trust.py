"""Whether a sidecar may be used: the trusted folder and the HMAC.

With ``instructions.trusted_dir`` or ``instructions.hmac_key_file``
configured, a sidecar is used only from the trusted folder or with a valid
``"hmac"`` (HMAC-SHA256 of ``canonical(doc)``); else ``sidecar_untrusted``.
Separate from the parser because it is a security rule with its own key file
and its own error, applied to a document before its content is read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redactd.core.config import InstructionsConfig
from redactd.core.errors import PermanentInputError


def _untrusted(detail: str) -> PermanentInputError:
    return PermanentInputError("sidecar_untrusted", detail, stage="sidecar")


@dataclass(frozen=True)
class Trust:
    """What is known about one sidecar's origin (``trust_for``).

    ``required``: the profile names ``trusted_dir`` or ``hmac_key_file``;
    ``in_trusted_dir``: the file lies in ``trusted_dir``; ``key``: the HMAC
    key (``None``: no key configured).
    """

    required: bool = False
    in_trusted_dir: bool = False
    key: bytes | None = None

    def check(self, doc: Any) -> None:
        """Raise ``sidecar_untrusted`` unless the document may be used.

        A document with an ``"hmac"`` is checked against the key (a wrong
        one is refused wherever the file lies); one without is used only
        from the trusted folder, or when no trust is configured.
        """
        mac = doc.get("hmac") if isinstance(doc, dict) else None
        if self.key is not None and mac is not None:
            if not isinstance(mac, str) or not hmac.compare_digest(
                mac.lower(), sidecar_hmac(doc, self.key)
            ):
                raise _untrusted("hmac: does not match the document")
            return
        if self.required and not self.in_trusted_dir:
            raise _untrusted("not from instructions.trusted_dir and no valid hmac")


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes an HMAC covers: the document without ``"hmac"``, keys
    sorted, no whitespace, UTF-8 (``json.dumps(..., sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)``)."""
    body = {k: v for k, v in doc.items() if k != "hmac"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def sidecar_hmac(doc: dict[str, Any], key: bytes) -> str:
    """The hex HMAC-SHA256 of ``canonical(doc)`` (what ``"hmac"`` must hold)."""
    return hmac.new(key, canonical(doc), hashlib.sha256).hexdigest()


def read_hmac_key(path: Path) -> bytes:
    """The HMAC key file's bytes (surrounding whitespace stripped). It must be a
    regular file readable by its owner only: else ``sidecar_untrusted``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise _untrusted("instructions.hmac_key_file: cannot be read") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise _untrusted("instructions.hmac_key_file: must be a file of mode 0600 or stricter")
        key = os.read(fd, 4096).strip()
    except OSError:
        raise _untrusted("instructions.hmac_key_file: cannot be read") from None
    finally:
        os.close(fd)
    if len(key) < 16:
        raise _untrusted("instructions.hmac_key_file: key shorter than 16 bytes")
    return key


def _inside(a: Path, b: Path) -> bool:
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def trust_for(cfg: InstructionsConfig, path: Path) -> Trust:
    """The ``Trust`` of the sidecar file ``path`` under a profile's settings."""
    required = cfg.trusted_dir is not None or cfg.hmac_key_file is not None
    if not required:
        return Trust()
    in_dir = False
    if cfg.trusted_dir is not None:
        with_links = path.parent.resolve()  # a symlinked folder is judged by its target
        in_dir = _inside(with_links, cfg.trusted_dir.resolve())
    key = read_hmac_key(cfg.hmac_key_file) if cfg.hmac_key_file is not None else None
    return Trust(True, in_dir, key)
