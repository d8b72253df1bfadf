"""What every command shares: finding and loading the config, messages on
stderr, and the exit code of a start-up failure.

Human messages go to stderr and name inputs only by a job id, unless the
operator asks for names with ``--show-names`` on their own terminal; logs
(JSON on stdout, or stderr for commands whose stdout is data) never do.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from redactd.core import log
from redactd.core.config import Config, default_config, load
from redactd.core.errors import ConfigError, ConfigErrors, ExitCode, ModelError

DEFAULT_CONFIG_PATHS = (Path("/etc/redactd/redactd.toml"),)


def err(msg: str) -> None:
    """One line for the operator on stderr."""
    print(msg, file=sys.stderr)


def config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    env = os.environ.get("REDACTD_CONFIG")
    if env:
        return Path(env)
    for p in DEFAULT_CONFIG_PATHS:
        if p.is_file():
            return p
    return None


def load_config(arg: str | None, log_to_stderr: bool = False) -> Config:
    path = config_path(arg)
    cfg = load(path) if path is not None else default_config()
    # Commands whose stdout is data (detect --json, models, status) log to stderr.
    log.configure(cfg.logging.level, cfg.logging.format, sys.stderr if log_to_stderr else None)
    return cfg


def print_config_error(e: ConfigError) -> None:
    errors = e.errors if isinstance(e, ConfigErrors) else [e]
    for one in errors:
        err(f"config error: {one}")


def startup_failed(e: ConfigError | ModelError) -> int:
    """Report a bad config or model found before any work and give the exit
    code for it (78: systemd does not restart on it)."""
    if isinstance(e, ConfigError):
        print_config_error(e)
    else:
        err(f"model error: {e}")
    return ExitCode.CONFIG


def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give a sub-command the ``--config FILE`` option."""
    sp.add_argument(
        "--config", help="config file (default: $REDACTD_CONFIG, /etc/redactd/redactd.toml)"
    )
    return sp
