"""``redactd models list|fetch|verify|quantize|validate``: the detector models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, cast

from redactd.cli.common import err, load_config, print_config_error, startup_failed, with_config
from redactd.core.config import Config
from redactd.core.errors import ConfigError, ExitCode, ModelError

if TYPE_CHECKING:
    from redactd.core.types import ObjectClass
    from redactd.models.manifest import Manifest


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = with_config(
        sub.add_parser("models", help="list, fetch, verify or quantize detector models")
    )
    sp.add_argument("action", choices=["list", "fetch", "verify", "quantize", "validate"])
    sp.add_argument("names", nargs="*", help="model names (default: the default models)")
    sp.add_argument("--all", action="store_true", help="every model in the manifest")
    sp.add_argument("--from", dest="from_dir", metavar="DIR", help="local mirror directory")
    sp.add_argument("--store", metavar="DIR", help="model store (default: the config's models.dir)")
    q = sp.add_argument_group("quantize (INT8 with NNCF; needs 'pip install redactd[quantize]')")
    q.add_argument(
        "--calibration", metavar="DIR", help="folder of your images and/or videos to calibrate on"
    )
    q.add_argument("--samples", type=int, default=300, help="model inputs to calibrate on")
    q.add_argument("--seed", type=int, default=0, help="seed of the sample choice")
    q.add_argument(
        "--profile", default="default", help="profile whose tiling cuts the inputs"
    )
    q.add_argument("--preset", choices=["performance", "mixed"], default="performance")
    q.add_argument(
        "--heads", choices=["float", "int8"], default="float", help="quantize the output heads?"
    )
    v = sp.add_argument_group(
        "validate (a candidate profile against a baseline on your labelled data; "
        "docs/VALIDATION.md)"
    )
    v.add_argument("--against", metavar="PROFILE", help="the baseline profile")
    v.add_argument("--data", metavar="DIR", help="labelled video or image sets")
    v.add_argument("--operator", metavar="NAME", help="who signs the record off")
    v.add_argument("--comment", metavar="TEXT", help="why (kept in the record)")
    v.add_argument("--limit", type=int, metavar="N", help="at most N videos/images per set")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from redactd.models import derived
    from redactd.models import fetch as fetch_mod
    from redactd.models import manifest as manifest_mod

    try:
        cfg = load_config(args.config, log_to_stderr=True)
    except ConfigError as e:
        return startup_failed(e)
    store = Path(args.store) if args.store else cfg.models.dir
    try:
        man = manifest_mod.load()
        if args.action == "list":
            for st in fetch_mod.status(man, store):
                print(st.line())
            for name in sorted(derived.RECIPES):
                print(derived.status(man, name, store).list_line())
            return ExitCode.OK
        if args.action == "quantize":
            return _quantize(args, cfg, man, store)
        if args.action == "validate":
            return _validate(args, cfg)
        default = list(man.models) if args.all else list(fetch_mod.DEFAULT_MODELS)
        names = [n for n in args.names if n not in derived.RECIPES]
        # models made on this server: named, or (by default) every one present
        made = [n for n in args.names if n in derived.RECIPES]
        if not args.names:
            names, made = default, derived.installed(store)
        if args.action == "fetch":
            if made and args.names:
                raise ModelError(
                    f"model {made[0]!r} is made on this server, not fetched; to make it, "
                    f"run: {derived.recipe(made[0]).hint()}"
                )
            store.mkdir(parents=True, exist_ok=True)
            mirror = Path(args.from_dir) if args.from_dir else None
            for res in fetch_mod.fetch(man, names, store, mirror=mirror):
                print(res.line())
            return ExitCode.OK
        bad = 0
        for v in fetch_mod.verify(man, names, store):
            print(v.line())
            bad += 0 if v.ok else 1
        for n in made:
            ds = derived.status(man, n, store)
            print(ds.verify_line())
            bad += 0 if ds.ok else 1
        return ExitCode.OK if bad == 0 else ExitCode.CONFIG
    except ModelError as e:
        err(f"model error: {e}")
        return ExitCode.CONFIG


def _quantize(args: argparse.Namespace, cfg: Config, man: Manifest, store: Path) -> int:
    """``redactd models quantize MODEL --calibration DIR``: one line per outcome, no names."""
    from dataclasses import asdict

    from redactd.models import derived, quantize
    from redactd.pipeline import calibration

    if len(args.names) != 1:
        err("error: name one model, e.g. 'redactd models quantize centerface --calibration DIR'")
        return ExitCode.USAGE
    if not args.calibration:
        err("error: --calibration DIR is required (a folder of your images and/or videos)")
        return ExitCode.USAGE
    if args.samples < 1:
        err("error: --samples must be at least 1")
        return ExitCode.USAGE
    source = man.get(args.names[0])
    derived.recipe_for_source(source.name)
    quantize.require_nncf()
    try:
        tiling = cfg.profile(args.profile).of(cast("ObjectClass", source.task)).tiling
    except ConfigError as e:
        print_config_error(e)
        return ExitCode.CONFIG
    try:
        cal = calibration.collect(
            Path(args.calibration),
            source.decoder,
            samples=args.samples,
            seed=args.seed,
            tiling=tiling,
            limits=cfg.limits,
        )
    except calibration.CalibrationError as e:
        err(f"calibration error: {e}")
        return ExitCode.DATAERR
    err(
        f"calibrating {source.name} on {len(cal)} samples from {cal.frames} frames of "
        f"{cal.files} files ({cal.skipped} files skipped), seed {args.seed}"
    )
    opts = quantize.QuantizeOptions(preset=args.preset, heads=args.heads)
    res = quantize.quantize(
        source, store, cal, seed=args.seed, options=opts, tiling=asdict(tiling)
    )
    if cal.failed:
        err(f"warning: {cal.failed} pictures could not be decoded and were left out")
    for line in res.lines():
        print(line)
    return ExitCode.OK


def _validate(args: argparse.Namespace, cfg: Config) -> int:
    """``redactd models validate CANDIDATE --against BASELINE --data DIR --operator NAME``.

    Exit 0 when the candidate passed, 1 when it failed (the record is written
    either way), 64 usage, 65 data unreadable, 78 config or model problem.
    """
    import shutil
    import tempfile

    from redactd.evaluation import validate

    if len(args.names) != 1 or not args.against or not args.data or not args.operator:
        err(
            "error: usage: redactd models validate CANDIDATE_PROFILE --against BASELINE_PROFILE "
            "--data DIR --operator NAME [--comment TEXT]"
        )
        return ExitCode.USAGE
    if args.limit is not None and args.limit < 1:
        err("error: --limit must be at least 1")
        return ExitCode.USAGE
    try:
        cfg.profile(args.names[0])
        cfg.profile(args.against)
        data = validate.load_data(Path(args.data), limit=args.limit)
    except ConfigError as e:
        print_config_error(e)
        return ExitCode.CONFIG
    except validate.ValidationDataError as e:
        err(f"dataset error: {e}")
        return ExitCode.DATAERR
    work = Path(tempfile.mkdtemp(prefix=".redactd-validate-"))
    try:
        record = validate.validate(
            cfg, args.names[0], args.against, data, work,
            operator=args.operator, comment=args.comment or "",
        )  # fmt: skip
    except (OSError, ValueError) as e:
        err(f"error: validation failed to run ({type(e).__name__})")
        return ExitCode.CONFIG
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = validate.write(record, cfg.validation.dir)
    for c in record["checks"]:
        delta = "–" if c["delta"] is None else f"{100 * c['delta']:+.2f} points"
        print(
            f"set {c['set']} {c['measure']}: {c['baseline']:.4f} -> "
            f"{'–' if c['candidate'] is None else format(c['candidate'], '.4f')} ({delta}) "
            f"{'ok' if c['passed'] else 'FAIL'}"
        )
    print(f"{'PASSED' if record['passed'] else 'FAILED'}: record {path.name}")
    return ExitCode.OK if record["passed"] else 1
