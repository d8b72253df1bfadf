"""``redactd detect``: the detections of one image, as text or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from redactd.cli.common import err, load_config, startup_failed, with_config
from redactd.core.errors import REASONS, ConfigError, ExitCode, ModelError, PermanentInputError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = with_config(sub.add_parser("detect", help="print detections of one image"))
    sp.add_argument("image")
    sp.add_argument("--profile", default="default")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from redactd.pipeline.process import Pipeline

    try:
        cfg = load_config(args.config, log_to_stderr=True)
        pipeline = Pipeline.load(cfg, [args.profile])
    except (ConfigError, ModelError) as e:
        return startup_failed(e)
    try:
        dets = pipeline.detect_file(Path(args.image), args.profile)
    except PermanentInputError as e:
        err(f"error: {e.reason}: {REASONS.get(e.reason, '')}")
        return ExitCode.DATAERR
    finally:
        pipeline.close()
    out = [
        {
            "cls": d.cls,
            "box": [round(d.box.x1, 1), round(d.box.y1, 1), round(d.box.x2, 1), round(d.box.y2, 1)],
            "score": round(d.score, 4),
            "detector": d.detector,
        }
        for d in dets
    ]
    if args.json:
        print(json.dumps(out))
    else:
        for o in out:
            print(f"{o['cls']}\t{o['score']:.3f}\t{o['box']}\t{o['detector']}")
    return ExitCode.OK
