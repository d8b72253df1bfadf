"""``redactd run``: the daemon on the configured watched folders."""

from __future__ import annotations

import argparse

from redactd.cli.common import config_path, err, with_config
from redactd.core.errors import ExitCode


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = with_config(sub.add_parser("run", help="run the daemon on the configured watched folders"))
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from redactd.service import daemon

    path = config_path(args.config)
    if path is None:
        err("config error: no config file; give --config or set REDACTD_CONFIG")
        return ExitCode.CONFIG
    return daemon.run(path)
