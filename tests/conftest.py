"""Shared fixtures: where the repository, ../shared and the model store are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_shared_env = os.environ.get("REDACTD_SHARED")
SHARED: Path | None = Path(_shared_env) if _shared_env else REPO.parent / "shared"
if not (SHARED / "eval").is_dir():
    SHARED = None

#: The model store `make install` fills (default models from the package registry).
MODELS_DIR = Path(os.environ.get("REDACTD_MODELS_DIR", REPO / "models"))

SHARED_REASON = "../shared (evaluation data and model mirror) is not present beside the repository"


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only ../shared folder; skips the test when it is absent."""
    if SHARED is None:
        pytest.skip(SHARED_REASON)
    return SHARED


@pytest.fixture(scope="session")
def eval_dir(shared: Path) -> Path:
    return shared / "eval"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The installed default models (CenterFace ...), verified.

    `make install` fetches them; running the suite without it is a set-up
    error, not a reason to skip quality tests.
    """
    from redactd.models import manifest

    spec = manifest.load().get("centerface")
    if spec.missing_or_bad(MODELS_DIR):
        pytest.fail(
            f"default models are not installed in {MODELS_DIR}: run 'make install' "
            "(or 'redactd models fetch')"
        )
    return MODELS_DIR
