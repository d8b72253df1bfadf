"""``redactd check-config``: validate the config as ``run`` would (exit 0 or 78)."""

from __future__ import annotations

import argparse

from redactd.cli.common import config_path, err, print_config_error, with_config
from redactd.core.config import default_config, load, world_writable
from redactd.core.errors import ConfigError, ExitCode, ModelError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = with_config(sub.add_parser("check-config", help="validate the config (exit 0 or 78)"))
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from redactd.stages.detect import registry

    path = config_path(args.config)
    try:
        cfg = load(path) if path is not None else default_config()
    except ConfigError as e:
        print_config_error(e)
        return ExitCode.CONFIG
    problems = registry.check_profiles(cfg)
    if path is not None and world_writable(path):
        problems.append(ConfigError("", "the config file is world-writable; refuse to use it"))
    if problems:
        for p in problems:
            err(f"config error: {p}")
        return ExitCode.CONFIG
    try:
        missing = registry.check_derived(cfg)  # INT8 models made by `models quantize`
    except ModelError as e:
        missing = [e]
    if missing:
        for m in missing:
            err(f"model error: {m}")
        return ExitCode.CONFIG
    from redactd.service.daemon import check_validation

    # The same records `redactd run` demands at start-up (docs/VALIDATION.md):
    # a config that check-config passes must not then refuse to start on them.
    unvalidated = check_validation(cfg)
    if unvalidated:
        for p in unvalidated:
            err(f"config error: {p}")
        return ExitCode.CONFIG
    err(f"config OK: {len(cfg.watch)} watched folder(s), {len(cfg.profiles)} profile(s)")
    return ExitCode.OK
