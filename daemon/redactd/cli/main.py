"""The ``redactd`` command line: the parser of every sub-command and ``main``.

Sub-commands, one module each: ``run`` (the daemon), ``status``, ``process``
(the daemon's job runner once), ``detect`` (detections as text or JSON),
``eval``, ``check-config``, ``models list|fetch|verify|quantize|validate``.
What they share (config, messages, start-up errors) is in ``cli.common``.

Logs (JSON on stdout) never carry file names or paths. Human messages go to
stderr and name inputs only by a job id, unless the operator asks for names
with ``--show-names`` on their own terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from redactd.cli import check_config, detect, models, process, run, status
from redactd.cli import eval as eval_cmd
from redactd.cli.common import config_path
from redactd.core.config import default_config, load
from redactd.core.errors import ConfigError

#: In the order ``redactd --help`` lists them.
COMMANDS = (run, status, process, detect, eval_cmd, check_config, models)


def versions_lines(config_arg: str | None) -> list[str]:
    from redactd.cli import versions

    try:
        path = config_path(config_arg)
        cfg = load(path) if path is not None else default_config()
        store = cfg.models.dir
    except (ConfigError, OSError):  # unreadable for this user: the default store
        store = default_config().models.dir
    return versions.collect(store).lines()


class _VersionAction(argparse.Action):
    """``redactd [--config FILE] --version``: what is installed and which models."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print("\n".join(versions_lines(getattr(namespace, "version_config", None))))
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redactd", description="Anonymize faces and licence plates.")
    p.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        help="print the versions of redactd, OpenVINO, PyAV/FFmpeg, OpenCV and the models",
    )
    p.add_argument("--config", dest="version_config", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
