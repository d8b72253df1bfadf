"""``redactd status``: the daemon's own snapshot (counts only; the daemon writes it)."""

from __future__ import annotations

import argparse
import json
import time

from redactd.cli.common import err, load_config, startup_failed, with_config
from redactd.core.errors import ConfigError, ExitCode


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = with_config(sub.add_parser("status", help="show the daemon's queue, counts and errors"))
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the daemon's own snapshot (counts only; the daemon writes it)."""
    from redactd.service.status import STATUS_FILE

    try:
        cfg = load_config(args.config, log_to_stderr=True)
    except ConfigError as e:
        return startup_failed(e)
    path = cfg.service.status_file or cfg.service.work_dir / STATUS_FILE
    try:
        snap = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        err("no status yet: the daemon has not run with this config")
        return 3  # LSB: program is not running
    except (OSError, ValueError) as e:
        err(f"cannot read the status file: {type(e).__name__}")
        return 4
    if args.json:
        print(json.dumps(snap, indent=2))
        return ExitCode.OK
    age = time.time() - float(snap.get("time", 0))
    m = snap.get("metrics", {})
    print(snap.get("text", "?"))
    print(f"snapshot age: {age:.0f} s" + ("  (stale: is the daemon running?)" if age > 120 else ""))
    print(f"settling: {snap.get('settling', 0)}, retrying: {snap.get('retrying', 0)}")
    print(f"throughput: {m.get('jobs_per_minute', 0)} jobs/min (last 10 min)")
    masked = m.get("masked", {})
    print(f"masked: {masked.get('face', 0)} faces, {masked.get('plate', 0)} plates")
    last = m.get("last_success")
    if last:
        print(f"last success: {time.time() - float(last):.0f} s ago")
    reasons = m.get("quarantine_reasons", {})
    if reasons:
        print("quarantined by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    for last_error in m.get("last_errors", [])[-5:]:
        ago = time.time() - float(last_error["time"])
        print(f"  {ago:.0f} s ago: {last_error['reason']}")
    from redactd.cli import versions

    print("installed:")
    print("\n".join("  " + ln for ln in versions.collect(cfg.models.dir).lines()))
    return ExitCode.OK
