"""Throughput of the daemon with more workers and more instances (issue "Speed", scaling).

Three variants of the real daemon (`python -m redactd.cli run`, real models
from ``models/``) on the same inputs:

* ``w1``: one daemon, ``[service] workers = 1`` (the baseline);
* ``w2``: one daemon, ``workers = 2`` (worker *threads* in one process, each
  with its own pipeline: detectors are not re-entrant, so memory grows with
  the workers);
* ``i2``: two daemons, ``workers = 1`` each, watching the same inbound,
  outbound and quarantine folders with their own work areas (the claim is an
  atomic rename, so each input goes to exactly one of them).

Each variant gets fresh folders under one temporary root (one filesystem, so
claims are renames) and a config written for the run (``settle_seconds``
0.5). Once every daemon has logged ``service.ready``, the inputs are renamed
from a staging folder into the inbound folder one after another (a few
milliseconds for all of them) and the clock runs from the first rename until
every output is in the outbound folder. Images first (WIDER FACE, from
../shared/eval), then, optionally, short 1280x720 clips made by
``benchmarks/clips.py``. Then SIGTERM, and a check that each input was
delivered exactly once: outbound holds exactly the expected names (a
numbered ``name (1).jpg`` would be a second delivery), quarantine and inbound
are empty, and the daemons' ``job.done`` lines add up to the input count.

Reported per variant: files/s (and frames/s for video), the ratio to ``w1``,
the 1-minute load average when the inputs were dropped, how many jobs each
instance did, and memory of the daemon process trees from /proc (RSS once
ready, peak of the sampled RSS sum while working, and the kernel's high-water
mark VmHWM of each daemon process). The time includes settling (0.5 s) and
the daemon's watch tick (0.25 s), a constant next to the processing time of
dozens of files. On a shared machine the ratios are indicative only.

    python benchmarks/scaling.py [--images N] [--videos V] [--profile P]
    python benchmarks/run_all.py --sections scaling   # as a section of `make bench`
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import clips, deface_env  # noqa: E402

DEFAULT_IMAGES = 60
DEFAULT_VIDEOS = 4
DEFAULT_VIDEO_FRAMES = 50  # 2 s at 25 fps
VIDEO_SIZE = (1280, 720)
SETTLE_SECONDS = 0.5
TITLE = "Throughput of the daemon: workers and instances"


@dataclass(frozen=True)
class Variant:
    """One way of running the daemon: ``instances`` processes of ``workers`` workers."""

    key: str
    label: str
    workers: int
    instances: int
    #: input sets it gets ("images", "videos"); a fresh daemon per variant, so
    #: the video-only one's high-water mark is the peak memory of 720p video
    #: alone (issue "Speed of what users actually run": under 1 GB)
    kinds: tuple[str, ...] = ("images", "videos")


VARIANTS: tuple[Variant, ...] = (
    Variant("w1", "1 daemon, 1 worker", 1, 1),
    Variant("w2", "1 daemon, 2 workers", 2, 1),
    Variant("i2", "2 daemons, 1 worker each", 1, 2),
    Variant("v1", "1 daemon, 1 worker, videos only", 1, 1, ("videos",)),
)


@dataclass(frozen=True)
class Folders:
    """The watched folders shared by every instance of one variant."""

    inbound: Path
    outbound: Path
    quarantine: Path

    @classmethod
    def make(cls, root: Path) -> Folders:
        f = cls(root / "inbound", root / "outbound", root / "quarantine")
        for p in (f.inbound, f.outbound, f.quarantine):
            p.mkdir(parents=True)
        return f


@dataclass(frozen=True)
class Inputs:
    """A staged input set: files in ``staging`` (same filesystem as the inbound folders)."""

    kind: str  # "images" | "videos"
    names: tuple[str, ...]
    frames: int  # total video frames (0 for images)

    @property
    def prefix(self) -> str:
        """What every name of this set (and of its outputs) starts with."""
        return "img-" if self.kind == "images" else "vid-"


# --------------------------------------------------------------------------- config


def _q(v: object) -> str:
    return json.dumps(str(v))


def write_config(
    path: Path,
    work_dir: Path,
    folders: Folders,
    profile: str,
    workers: int,
    precision: str | None = None,
    hint: str | None = None,
) -> Path:
    """A daemon config for one instance: its own work area, the shared folders."""
    lines = [
        "[service]",
        f"work_dir = {_q(work_dir)}",
        f"workers = {workers}",
        f"settle_seconds = {SETTLE_SECONDS}",
        "min_free_bytes = 0",  # a nearly full shared disk must not pause the run
        "[runtime]",
        # The compiled-model cache of the other benchmarks: start-up is not measured.
        f"cache_dir = {_q(deface_env.cache_dir() / 'openvino-cache')}",
        *([f'precision = "{precision}"'] if precision else []),
        *([f'performance_hint = "{hint}"'] if hint else []),
        "[models]",
        f"dir = {_q(REPO / 'models')}",
        # The profiles run_all.py defines, so --profile means the same in both.
        "[profiles.faces-only.plate]",
        "enabled = false",
        "[profiles.fast-faces-only]",
        'base = "fast"',
        "[profiles.fast-faces-only.plate]",
        "enabled = false",
        "[[watch]]",
        f"inbound = {_q(folders.inbound)}",
        f"outbound = {_q(folders.outbound)}",
        f"quarantine = {_q(folders.quarantine)}",
        f"profile = {_q(profile)}",
        'mode = "inotify"',
        "",
    ]
    path.write_text("\n".join(lines))
    path.chmod(0o640)  # the daemon refuses a world-writable config
    return path


# --------------------------------------------------------------------------- /proc


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: fields after its ")" are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc; empty when it is gone)."""
    if not Path(f"/proc/{root}").exists():
        return []
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kb(pids: list[int]) -> int:
    return sum(_status_kb(p, "VmRSS") for p in pids)


# --------------------------------------------------------------------------- one daemon


@dataclass
class Instance:
    """One `redactd run` subprocess with its log file (stdout and stderr)."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    tree: list[int] = field(default_factory=list)

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # not under systemd: readiness from the log
        env["PYTHONUNBUFFERED"] = "1"
        out: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            cmd = [sys.executable, "-m", "redactd.cli", "run", "--config", str(self.config)]
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )
        finally:
            out.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: str) -> list[dict[str, Any]]:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") == name:
                out.append(ev)
        return out

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        """Deadline poll for the ``service.ready`` log line (sent with READY=1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.events("service.ready"):
                self.tree = process_tree(self.pid)
                return
            if not self.alive():
                raise RuntimeError(f"daemon exited before ready:\n{self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready within {timeout:.0f} s:\n{self.tail()}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; killed (and None returned) when it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


# --------------------------------------------------------------------------- inputs


def stage_images(eval_dir: Path, staging: Path, n: int) -> tuple[Inputs, float]:
    """Copy ``n`` WIDER FACE images into ``staging``; returns them and their megapixels."""
    from redactd.evaluation import dataset

    (lset,) = dataset.load(eval_dir / "faces_wider_val", limit=n)
    staging.mkdir(parents=True, exist_ok=True)
    names = []
    for i, im in enumerate(lset.images):
        name = f"img-{i:04d}{im.path.suffix.lower()}"
        shutil.copyfile(im.path, staging / name)
        names.append(name)
    mp = sum(im.width * im.height for im in lset.images) / 1e6
    return Inputs("images", tuple(names), 0), mp


def stage_videos(eval_dir: Path, staging: Path, n: int, frames: int) -> Inputs:
    """``n`` 1280x720 clips of ``frames`` frames with real faces (different face counts)."""
    staging.mkdir(parents=True, exist_ok=True)
    names = []
    total = 0
    for i in range(n):
        name = f"vid-{i:02d}.mp4"
        fc = clips.faces_clip(staging / name, eval_dir, 1 + i % 4, frames, VIDEO_SIZE)
        names.append(name)
        total += fc.frames
    return Inputs("videos", tuple(names), total)


def copy_inputs(inputs: Inputs, src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for name in inputs.names:
        shutil.copyfile(src / name, dst / name)


def _visible(folder: Path, *, reasons: bool = False) -> list[str]:
    """Names of the files in ``folder`` (recursively), without temporaries or reason files."""
    out = []
    for root, _dirs, files in os.walk(folder):
        for f in files:
            if f.startswith(".") or (not reasons and f.endswith(".reason.json")):
                continue
            out.append(str(Path(root, f).relative_to(folder)))
    return sorted(out)


# --------------------------------------------------------------------------- one drop


def drop_and_wait(
    inputs: Inputs, staging: Path, folders: Folders, instances: list[Instance], timeout: float
) -> dict[str, Any]:
    """Rename every staged input into inbound, wait for its output; time, memory, counts."""
    expected = set(inputs.names)
    done_before = [len(i.events("job.done")) for i in instances]
    load1 = os.getloadavg()[0]
    peak_rss = 0
    next_tree = 0.0
    t0 = time.perf_counter()
    for name in inputs.names:
        os.rename(staging / name, folders.inbound / name)
    first: float | None = None
    error = ""
    while True:
        now = time.perf_counter()
        out = set(_visible(folders.outbound)) & expected
        quarantined = [q for q in _visible(folders.quarantine) if q.startswith(inputs.prefix)]
        if first is None and out:
            first = now - t0
        if len(out) + len(quarantined) >= len(expected):
            break
        if now >= next_tree:  # children may come and go (e.g. an encoder helper)
            next_tree = now + 1.0
            for i in instances:
                if i.alive():
                    i.tree = process_tree(i.pid)
        peak_rss = max(peak_rss, sum(rss_kb(i.tree) for i in instances))
        if not all(i.alive() for i in instances):
            error = "a daemon exited"
            break
        if now - t0 > timeout:
            error = f"timed out after {timeout:.0f} s"
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    n = len(inputs.names)
    # `job.done` is logged just after the output is published: wait for the lines
    # (untimed) so that the next set's counts start from the right place.
    deadline = time.monotonic() + 30.0
    while not error and time.monotonic() < deadline:
        if sum(len(i.events("job.done")) for i in instances) >= sum(done_before) + n:
            break
        time.sleep(0.05)
    res: dict[str, Any] = {
        "files": n,
        "wall_s": wall,
        "first_output_s": first,
        "files_per_s": n / wall if wall > 0 and not error else None,
        "load_1min_at_drop": load1,
        "peak_rss_mb": peak_rss / 1024,
        "error": error,
    }
    if inputs.frames:
        res["frames"] = inputs.frames
        res["frames_per_s"] = inputs.frames / wall if wall > 0 and not error else None
    res["_done_before"] = done_before
    return res


def check_delivery(
    drops: list[tuple[Inputs, dict[str, Any]]], folders: Folders, instances: list[Instance]
) -> None:
    """After the daemons stopped: each input delivered exactly once (adds keys to each drop).

    Names start with the set's prefix (``img-``, ``vid-``) and outputs keep
    their input's name, so a second delivery shows as an extra (numbered) name.
    """
    outbound = _visible(folders.outbound)
    quarantine = _visible(folders.quarantine, reasons=True)
    inbound_left = _visible(folders.inbound, reasons=True)
    done = [len(i.events("job.done")) for i in instances]
    for k, (inputs, res) in enumerate(drops):
        start = res.pop("_done_before")
        end = drops[k + 1][1]["_done_before"] if k + 1 < len(drops) else done
        per_instance = [e - s for s, e in zip(start, end, strict=True)]
        prefix = inputs.prefix
        delivered = [o for o in outbound if o.startswith(prefix)]
        res["jobs_per_instance"] = per_instance
        res["outputs"] = len(delivered)
        res["quarantined"] = sum(1 for q in quarantine if q.startswith(prefix))
        res["left_in_inbound"] = sum(1 for x in inbound_left if x.startswith(prefix))
        res["exactly_once"] = (
            delivered == sorted(inputs.names)
            and sum(per_instance) == len(inputs.names)
            and res["quarantined"] == 0
            and res["left_in_inbound"] == 0
        )


# --------------------------------------------------------------------------- variants


def run_variant(
    v: Variant,
    root: Path,
    sets: list[tuple[Inputs, Path]],
    profile: str,
    precision: str | None,
    hint: str | None,
    ready_timeout: float = 600.0,
) -> dict[str, Any]:
    """Start ``v``'s daemons, drop each input set in turn, stop them, check delivery."""
    folders = Folders.make(root)
    instances = []
    for k in range(v.instances):
        cfg = write_config(
            root / f"redactd-{k}.toml",
            root / f"work-{k}",
            folders,
            profile,
            v.workers,
            precision,
            hint,
        )
        instances.append(Instance(cfg, root / f"daemon-{k}.log"))
    res: dict[str, Any] = {"label": v.label, "workers": v.workers, "instances": v.instances}
    drops: list[tuple[Inputs, dict[str, Any]]] = []
    try:
        # One after the other: two compilations writing the same OpenVINO cache
        # entry at once is not worth the risk, and start-up is not measured.
        for inst in instances:
            inst.start()
            inst.wait_ready(ready_timeout)
        res["rss_ready_mb"] = sum(rss_kb(i.tree) for i in instances) / 1024
        for inputs, staging in sets:
            # a loaded 2-core machine runs the default profile at ~1 frame/s
            limit = 120 + 60 * len(inputs.names) + 2 * inputs.frames
            d = drop_and_wait(inputs, staging, folders, instances, limit)
            drops.append((inputs, d))
            res[inputs.kind] = d
            if d["error"]:
                break
        res["vm_hwm_mb"] = sum(_status_kb(i.pid, "VmHWM") for i in instances) / 1024
    except RuntimeError as e:
        res["error"] = str(e)
    finally:
        res["exit_codes"] = [i.stop() for i in instances]
    check_delivery(drops, folders, instances)
    return res


def bench_scaling(
    ctx: dict[str, Any],
    n_images: int = DEFAULT_IMAGES,
    n_videos: int = DEFAULT_VIDEOS,
    video_frames: int = DEFAULT_VIDEO_FRAMES,
    precision: str | None = None,
    hint: str | None = None,
    variants: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Measure the variants (``variants``: their keys, default all) on the same
    inputs. ``ctx`` as in run_all.py: ``eval`` (the ../shared/eval folder),
    ``work`` (a scratch folder, removed by the caller) and ``profile``. Returns a
    JSON-ready dict (``to_markdown`` renders it)."""
    eval_dir: Path = ctx["eval"]
    work: Path = ctx["work"] / "scaling"
    profile: str = ctx.get("profile", "default")
    images, mp = Inputs("images", (), 0), 0.0
    sets_src = []
    if n_images > 0:
        images, mp = stage_images(eval_dir, work / "images", n_images)
        sets_src.append((images, work / "images"))
    videos = None
    if n_videos > 0:
        videos = stage_videos(eval_dir, work / "videos", n_videos, video_frames)
        sets_src.append((videos, work / "videos"))
    out: dict[str, Any] = {
        "profile": profile,
        "images": len(images.names),
        "megapixels": mp,
        "videos": len(videos.names) if videos else 0,
        "video_frames": videos.frames if videos else 0,
        "video_size": f"{VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}",
        "settle_seconds": SETTLE_SECONDS,
        "usable_cpus": len(os.sched_getaffinity(0)),
        "rows": {},
    }
    for v in VARIANTS:
        if variants and v.key not in variants:
            continue
        if not any(inputs.kind in v.kinds for inputs, _src in sets_src):
            continue  # e.g. the video-only variant of a run without videos
        root = work / v.key
        root.mkdir()
        sets = []
        for inputs, src in sets_src:
            if inputs.kind not in v.kinds:
                continue
            copy_inputs(inputs, src, root / f"staging-{inputs.kind}")
            sets.append((inputs, root / f"staging-{inputs.kind}"))
        print(f"bench: scaling {v.key} ({v.label})", file=sys.stderr)
        out["rows"][v.key] = run_variant(v, root, sets, profile, precision, hint)
        shutil.rmtree(root, ignore_errors=True)  # outputs are not scored here
    base = out["rows"].get("w1", {})
    for row in out["rows"].values():
        for kind, key in (("images", "files_per_s"), ("videos", "frames_per_s")):
            d = row.get(kind)
            b = base.get(kind, {}).get(key)
            if d is not None:
                d["ratio_vs_w1"] = d[key] / b if d.get(key) and b else None
    return out


# --------------------------------------------------------------------------- report


def _f(v: Any, d: int = 2) -> str:
    return "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


def to_markdown(sc: dict[str, Any]) -> list[str]:
    """The report's table (lines, for run_all.py's RESULTS.md section)."""
    vids = (
        f" and {sc['videos']} {sc['video_size']} clips ({sc['video_frames']} frames)"
        if sc["videos"]
        else ""
    )
    lines = [
        f"### {TITLE}",
        "",
        f"`redactd run` (profile {sc['profile']}) on {sc['images']} WIDER FACE images "
        f"({sc['megapixels']:.1f} MP){vids}, all renamed into the inbound folder at once; "
        f"time from the drop to the last output (settling {sc['settle_seconds']} s included). "
        "Workers are threads sharing one pipeline in one process; two daemons share the "
        f"inbound, outbound and quarantine folders. {sc['usable_cpus']} usable CPUs.",
        "",
        "| variant | images/s | / 1 worker | video frames/s | / 1 worker | jobs per daemon "
        "| RSS ready (MB) | peak RSS (MB) | high-water mark (MB) | load at drop | exactly once |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in sc["rows"].values():
        im, vi = row.get("images", {}), row.get("videos", {})
        jobs = [
            sum(x)
            for x in zip(
                *(d["jobs_per_instance"] for d in (im, vi) if "jobs_per_instance" in d),
                strict=True,
            )
        ]
        peak = max((d.get("peak_rss_mb", 0.0) for d in (im, vi) if d), default=None)
        once = all(d.get("exactly_once") for d in (im, vi) if d) and not row.get("error")
        err = row.get("error") or im.get("error") or vi.get("error")
        lines.append(
            f"| {row['label']} | {_f(im.get('files_per_s'))} | {_f(im.get('ratio_vs_w1'))} "
            f"| {_f(vi.get('frames_per_s'), 1)} | {_f(vi.get('ratio_vs_w1'))} "
            f"| {' + '.join(map(str, jobs)) or '–'} | {_f(row.get('rss_ready_mb'), 0)} "
            f"| {_f(peak, 0)} | {_f(row.get('vm_hwm_mb'), 0)} "
            f"| {_f((im or vi).get('load_1min_at_drop'), 1)} "
            f"| {'yes' if once else 'NO'}{f' ({err.splitlines()[0]})' if err else ''} |"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    ap.add_argument("--videos", type=int, default=DEFAULT_VIDEOS, help="720p clips (0: none)")
    ap.add_argument("--frames", type=int, default=DEFAULT_VIDEO_FRAMES, help="frames per clip")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--precision", choices=["f32", "bf16", "f16"])
    ap.add_argument("--hint", choices=["LATENCY", "THROUGHPUT"])
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--variants", default="", help="comma-separated variant keys (w1, w2, i2; default all)"
    )
    args = ap.parse_args(argv)

    env = os.environ.get("REDACTD_SHARED")
    ev = (Path(env) if env else REPO.parent / "shared") / "eval"
    if not ev.is_dir():
        print("../shared/eval is not present: nothing to benchmark on", file=sys.stderr)
        return 2
    # Under the system temp folder: inputs, work areas and outputs on one filesystem.
    work = Path(tempfile.mkdtemp(prefix="redactd-scaling-"))
    try:
        ctx = {"eval": ev, "work": work, "profile": args.profile}
        res = bench_scaling(
            ctx,
            args.images,
            args.videos,
            args.frames,
            args.precision,
            args.hint,
            tuple(k for k in args.variants.split(",") if k),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print("\n".join(to_markdown(res)))
    return (
        0
        if all(
            not r.get("error")
            and all(r.get(k, {}).get("exactly_once", True) for k in ("images", "videos"))
            for r in res["rows"].values()
        )
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
