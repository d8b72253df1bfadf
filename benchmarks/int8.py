"""INT8 CenterFace (NNCF): the accuracy change by `redactd eval` and the per-pass speed.

For each quantization variant (nncf preset x output heads in float or INT8):

1. quantize ``centerface`` on the ``--calibration`` folders (images and
   videos) with the code behind `redactd models quantize`
   (``redactd.pipeline.calibration`` + ``redactd.models.quantize``) into a private
   model store under ``--work``;
2. run `redactd eval` on every ``--eval`` set with a profile using
   ``centerface`` (f32) and one using ``centerface-int8``; plates are off in
   both, so only the face detector differs; everything else is the default
   profile;
3. (``--process N``) time whole images through the pipeline
   (``Pipeline.process``: decode, both passes, mask, encode) on N images of
   the first eval set, f32 and the first variant alternating image by image;
4. time single inferences with the LATENCY hint at 640x384, 1280x736 and
   1536x1056 (one static compilation per size, as the runtime serves a
   repeated size), f32 and every variant interleaved in one loop, so the
   load of the shared machine hits all of them alike; the median of
   ``--repeats`` runs and the ratio f32 / INT8.

Calibration and evaluation never share a picture: a calibration folder
inside an eval set (or the reverse) is refused, and so is any file whose
sha256 appears on both sides.

    python benchmarks/int8.py --calibration ../shared/eval/video ../shared/eval/faces_mask_kaggle \\
        --eval ../shared/eval/faces_wider_val
    python benchmarks/int8.py --calibration ... --eval ... --variants performance:float --no-eval

Prints a markdown summary; everything measured goes to ``<work>/int8.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from redactd.core.config import ClassConfig, Profile, RuntimeConfig, TilingConfig  # noqa: E402
from redactd.models import derived, manifest, quantize  # noqa: E402
from redactd.pipeline import calibration  # noqa: E402
from redactd.stages.detect import centerface  # noqa: E402
from redactd.stages.detect.runtime import Network, Runtime  # noqa: E402

SIZES = ((640, 384), (1280, 736), (1536, 1056))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merged_calibration(dirs: list[Path], evals: list[Path], work: Path) -> Path:
    """One folder holding the calibration files (hard links, or copies); refuses overlaps."""
    for c in dirs:
        for e in evals:
            c_r, e_r = c.resolve(), e.resolve()
            if c_r == e_r or c_r in e_r.parents or e_r in c_r.parents:
                sys.exit(f"refused: calibration folder {c} overlaps eval set {e}")
    eval_hashes = {_sha(p) for e in evals for p in _files(e)}
    key = hashlib.sha256("\n".join(str(d.resolve()) for d in dirs).encode()).hexdigest()[:12]
    out = work / f"calibration-{key}"
    if out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for i, d in enumerate(dirs):
        for p in _files(d):
            if _sha(p) in eval_hashes:
                sys.exit("refused: a calibration file is also in an eval set")
            dst = out / f"{i}" / p.relative_to(d)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, dst)
            except OSError:
                shutil.copyfile(p, dst)
    return out


def make_store(models: Path, store: Path) -> None:
    spec = manifest.load().get("centerface")
    target = spec.dir(store)
    target.mkdir(parents=True, exist_ok=True)
    for rel in spec.files:
        if not (target / rel).is_file():
            shutil.copyfile(spec.dir(models) / rel, target / rel)
    spec.verify(store)


def quantize_variant(
    cal_dir: Path, store: Path, preset: str, heads: str, samples: int, seed: int,
    tiling: TilingConfig,
) -> dict[str, Any]:
    spec = manifest.load().get("centerface")
    cal = calibration.collect(cal_dir, "centerface", samples=samples, seed=seed, tiling=tiling)
    opts = quantize.QuantizeOptions(preset=preset, heads=heads)  # type: ignore[arg-type]
    res = quantize.quantize(
        spec, store, cal, seed=seed, options=opts,
        tiling=dataclasses.asdict(tiling),
    )
    p = res.provenance
    return {
        "seconds": round(res.seconds, 1),
        "samples": p.samples,
        "frames": p.frames,
        "files": cal.files,
        "calibration_digest": p.calibration_digest,
        "sha256": p.files,
    }


def write_config(path: Path, store: Path, face: ClassConfig) -> None:
    """Profiles ``f32`` and ``int8``: faces only, the default face settings written out.

    The defaults are pinned at the start of the run, so every eval of one run
    uses the same threshold and tiling even if the package changes meanwhile.
    """
    tiling = "".join(f"{k} = {_toml(v)}\n" for k, v in dataclasses.asdict(face.tiling).items())
    text = f'[models]\ndir = "{store}"\n'
    for prof, det in (("f32", "centerface"), ("int8", "centerface-int8")):
        text += (
            f'\n[profiles.{prof}.face]\ndetectors = ["{det}"]\nthreshold = {face.threshold}\n'
            f"nms_iou = {face.nms_iou}\n[profiles.{prof}.face.tiling]\n{tiling}"
            f"[profiles.{prof}.plate]\nenabled = false\n"
        )
    path.write_text(text, encoding="utf-8")


def _toml(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def run_eval(config: Path, profile: str, dataset: Path, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    cmd = [
        sys.executable, "-m", "redactd.cli", "eval", str(dataset),
        "--config", str(config), "--profile", profile, "--out", str(out),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = json.loads((out / "report.json").read_text())
    s = report["sets"][0]
    face = next(c for c in s["classes"] if c["cls"] == "face")
    return {
        "set": s["name"],
        "images": s["images"],
        "masked_recall": face["masked"]["masked_recall"],
        "small_masked_recall": face["masked"]["small_masked_recall"],
        "strict_recall": face["masked"]["strict_recall"],
        "box_recall": face["box"].get("recall"),
        "precision": face["box"].get("precision"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def speed(models: dict[str, tuple[Path, Any]], repeats: int) -> list[dict[str, Any]]:
    """Median ms per inference per (model, size), all models interleaved in one loop."""
    rt = Runtime(RuntimeConfig(performance_hint="LATENCY", precision="auto", cache_dir=None))
    nets: dict[str, Network] = {}
    for name, (path, spec) in models.items():
        nets[name] = rt.load(
            path, centerface.network_io(spec), name=name, policy="dynamic", static_after=1,
            static_budget_px=10_000_000,
        )
    rng = np.random.default_rng(0)
    rows = []
    for w, h in SIZES:
        picture = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        blob = cv2.dnn.blobFromImage(picture, 1.0, (w, h), swapRB=True, crop=False)
        times: dict[str, list[float]] = {n: [] for n in nets}
        for net in nets.values():
            for _ in range(3):  # compile this size, warm up
                net.infer(blob)
        for _ in range(repeats):
            for n, net in nets.items():
                t0 = time.perf_counter()
                net.infer(blob)
                times[n].append(time.perf_counter() - t0)
        med = {n: statistics.median(v) * 1000 for n, v in times.items()}
        for n in nets:
            rows.append({
                "model": n, "size": f"{w}x{h}", "ms": round(med[n], 2),
                "speedup_vs_f32": round(med["f32"] / med[n], 2),
                "precision": nets[n].execution.precision,
            })
    for net in nets.values():
        net.close()
    return rows


def pipeline_speed(config: Path, dataset: Path, n: int, rounds: int = 2) -> dict[str, Any]:
    """Images/s of ``Pipeline.process`` for profiles f32 and int8, alternating per image."""
    import tempfile

    from redactd.core.config import load
    from redactd.pipeline.process import Pipeline

    labels = [json.loads(x) for x in (dataset / "labels.jsonl").read_text().splitlines() if x]
    step = max(1, len(labels) // n)
    images = [dataset / d["image"] for d in labels[::step][:n]]
    cfg = load(config)
    pipe = Pipeline.load(cfg, ["f32", "int8"])
    spent = {"f32": 0.0, "int8": 0.0}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                for i, src in enumerate(images):
                    order = ("f32", "int8") if (i + r) % 2 == 0 else ("int8", "f32")
                    for prof in order:
                        dst = Path(tmp) / f"{prof}-{i}{src.suffix}"
                        t0 = time.perf_counter()
                        pipe.process(src, dst, prof)
                        spent[prof] += time.perf_counter() - t0
                        dst.unlink()
    finally:
        pipe.close()
    done = len(images) * rounds
    return {
        "set": dataset.name, "images": len(images), "rounds": rounds,
        "f32_images_per_s": round(done / spent["f32"], 3),
        "int8_images_per_s": round(done / spent["int8"], 3),
        "ratio": round(spent["f32"] / spent["int8"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calibration", type=Path, nargs="+", required=True)
    ap.add_argument("--eval", type=Path, nargs="+", required=True)
    ap.add_argument(
        "--variants",
        default="performance:float,performance:int8,mixed:float,mixed:int8",
        help="comma-separated preset:heads",
    )
    ap.add_argument("--samples", type=int, default=calibration.DEFAULT_SAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--work", type=Path, default=Path("/tmp/redactd-int8"))
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--process", type=int, default=0, metavar="N",
                    help="also time N images through the whole pipeline")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cal_dir = merged_calibration(args.calibration, args.eval, args.work)
    face = Profile().face  # the default face settings, pinned for the whole run
    result: dict[str, Any] = {
        "calibration": [str(c) for c in args.calibration],
        "eval": [str(e) for e in args.eval],
        "face_threshold": face.threshold,
        "face_tiling": dataclasses.asdict(face.tiling),
        "samples": args.samples, "seed": args.seed, "variants": {}, "eval_f32": [], "speed": [],
    }
    variants = [tuple(v.split(":")) for v in args.variants.split(",") if v]
    stores: dict[str, Path] = {}
    for preset, heads in variants:
        name = f"{preset}-{heads}"
        store = args.work / f"store-{name}"
        make_store(args.models, store)
        print(f"quantizing {name} ...", file=sys.stderr, flush=True)
        result["variants"][name] = {"quantize": quantize_variant(
            cal_dir, store, preset, heads, args.samples, args.seed, face.tiling), "eval": []}
        stores[name] = store
        write_config(args.work / f"config-{name}.toml", store, face)
    if not args.no_eval:
        for ds in args.eval:
            first = next(iter(stores))
            print(f"eval f32 on {ds.name} ...", file=sys.stderr, flush=True)
            result["eval_f32"].append(run_eval(
                args.work / f"config-{first}.toml", "f32", ds, args.work / f"eval-f32-{ds.name}"))
            for name in stores:
                print(f"eval {name} on {ds.name} ...", file=sys.stderr, flush=True)
                result["variants"][name]["eval"].append(run_eval(
                    args.work / f"config-{name}.toml", "int8", ds,
                    args.work / f"eval-{name}-{ds.name}"))
    if args.process:
        first = next(iter(stores))
        print(f"pipeline f32 vs {first} on {args.eval[0].name} ...", file=sys.stderr, flush=True)
        result["pipeline"] = pipeline_speed(
            args.work / f"config-{first}.toml", args.eval[0], args.process)
        result["pipeline"]["variant"] = first
    if not args.no_speed:
        man = manifest.load()
        models = {"f32": (man.get("centerface").main_path(args.models), man.get("centerface"))}
        for name, store in stores.items():
            spec = derived.spec(man, "centerface-int8", store)
            models[name] = (spec.main_path(store), spec)
        result["speed"] = speed(models, args.repeats)
    (args.work / "int8.json").write_text(json.dumps(result, indent=1) + "\n")
    print_summary(result)


def print_summary(r: dict[str, Any]) -> None:
    print(f"calibration: {', '.join(r['calibration'])}; {r['samples']} samples, seed {r['seed']}")
    print(f"face threshold {r['face_threshold']}, tiling {r['face_tiling']}")
    for name, v in r["variants"].items():
        q = v["quantize"]
        print(f"- {name}: {q['samples']} samples from {q['frames']} frames of {q['files']} files, "
              f"{q['seconds']} s, calibration digest {q['calibration_digest'][:16]}")
    if r["eval_f32"]:
        print("\n| set | model | masked recall | Δ pp | small masked | strict (≥90%) | box recall "
              "| precision | eval s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for i, base in enumerate(r["eval_f32"]):
            rows = [("f32", base)] + [(n, v["eval"][i]) for n, v in r["variants"].items()]
            for n, e in rows:
                delta = (e["masked_recall"] - base["masked_recall"]) * 100
                print(f"| {e['set']} ({e['images']}) | {n} | {e['masked_recall']:.4f} | "
                      f"{delta:+.2f} | {e['small_masked_recall']:.4f} | {e['strict_recall']:.4f} | "
                      f"{_num(e['box_recall'])} | {_num(e['precision'])} | {e['seconds']} |")
    if r.get("pipeline"):
        p = r["pipeline"]
        print(f"\nwhole pipeline, {p['images']} images of {p['set']} x {p['rounds']} rounds "
              f"(alternating): f32 {p['f32_images_per_s']} images/s, {p['variant']} "
              f"{p['int8_images_per_s']} images/s, ratio {p['ratio']}")
    if r["speed"]:
        print("\n| size | model | ms/inference (median) | f32 / model |")
        print("|---|---|---:|---:|")
        for s in r["speed"]:
            print(f"| {s['size']} | {s['model']} ({s['precision']}) | {s['ms']} | "
                  f"{s['speedup_vs_f32']} |")


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


if __name__ == "__main__":
    main()
