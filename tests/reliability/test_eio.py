"""EIO at each file-handling step of a real ``redactd run`` (fake detector).

``strace`` is attached to the running daemon after READY and makes the n-th
call of one syscall family fail with EIO, in every thread (injection is
counted per syscall and per thread; the worker does the job's file work, the
main thread writes the status file, the poller opens folders). Families:
read (of the input, the manifest, the copies), write (outputs, records,
manifests, reason files), fsync/fdatasync, rename/renameat/renameat2 (claims,
manifest saves), link/linkat (placements), openat (inputs, temporaries,
manifests, folders) and unlink/unlinkat (temporaries, originals). For each n
up to what one clean run makes, one good image and one bad file are dropped;
the daemon may retry, quarantine or exit (then it is restarted without
injection, as systemd would). The cross-filesystem variant puts the work
area on a tmpfs, so claims go through the claim name and a durable copy.
Afterwards:

* the good file is in outbound exactly once, byte-identical to the result of
  a run without injection, and the bad one in quarantine with its reason;
* nothing is left in inbound, in the work area or as a temporary;
* no log line holds a file name, a traceback or an ``internal_error``;
* an exit is one of the documented codes (70 the main loop failed);
* the fsync rule, read from the order of the calls: a file whose fsync
  failed is never linked or renamed into place (it is rewritten), and no
  original leaves the work area while the fsync of the folder its result
  was linked into has failed.

strace's injection leaves the data intact on disk; what is tested is the
daemon's reaction to the error reported, which is all it can see.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.filesystems import small_filesystem
from tests.helpers.service import (
    Daemon,
    Folders,
    files,
    reason_of,
    rel_names,
    sha256,
    temporaries,
    write_config,
)
from tests.reliability.conftest import coloured_jpeg

GOOD = "eio-good-q7.png"
BAD = "eio-bad-q7.jpg"
#: family -> (syscalls, step between injection points). Every point of the
#: steps that move or make durable; read and openat are many (the poller
#: and the manifest loads), every other one there.
FAMILIES: dict[str, tuple[str, int]] = {
    "fsync": ("fsync,fdatasync", 1),
    "rename": ("rename,renameat,renameat2", 1),
    "link": ("link,linkat", 1),
    "unlink": ("unlink,unlinkat", 1),
    "write": ("write,pwrite64", 1),
    "read": ("read,pread64", 2),
    "openat": ("openat", 3),
}
MOVES = "link,linkat,rename,renameat,renameat2,unlink,unlinkat"
MAX_POINTS = 80
DOCUMENTED_EXITS = (0, 70, 75)


def _strace(
    pid: int, out: Path, syscalls: str, n: int | None, path: Path | None = None
) -> subprocess.Popen[bytes]:
    # -y names each fd's file; links, renames and unlinks are traced too (not
    # injected) for the order of the calls. With ``path`` only the calls on
    # that path are traced, and counted for the injection.
    trace = f"{syscalls},{MOVES}"
    cmd = ["strace", "-f", "-qq", "-y", "-o", str(out), "-p", str(pid), "-e", f"trace={trace}"]
    if path is not None:
        cmd += ["-P", os.path.realpath(path)]
    if n is not None:
        cmd += ["-e", f"inject={syscalls}:error=EIO:when={n}"]
    st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Wait until every thread is traced: injection counts start then.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tracers = set()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    m = re.search(r"^TracerPid:\s*(\d+)", f.read(), re.M)
                tracers.add(int(m.group(1)) if m else 0)
        if tracers == {st.pid}:
            return st
        time.sleep(0.02)
    st.kill()
    st.wait()
    raise AssertionError("strace did not attach")


def _calls(text: str) -> list[tuple[str, str]]:
    """(thread, call) of an ``strace -f`` log, an unfinished call joined to its rest."""
    pending: dict[str, str] = {}
    out = []
    for line in text.splitlines():
        tid, _, rest = line.partition(" ")
        if rest.endswith("<unfinished ...>"):
            pending[tid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        m = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
        if m:
            rest = pending.pop(tid, "") + m.group(1)
        out.append((tid, rest))
    return out


def _fsync_rule(calls: list[tuple[str, str]], work: Path) -> list[str]:
    """The fsync rule, from the order of the calls (``strace -y`` names fds):
    a file whose fsync failed is never linked or renamed into place unless a
    fresh fsync of it succeeded (it was rewritten); and a job's original is
    never removed from the work area while the last fsync of the folder its
    result was linked into failed."""
    failed: set[str] = set()
    wdir = os.path.realpath(work) + "/"
    job_of: dict[str, str] = {}  # thread -> the job whose folder it touched last
    placed_in: dict[str, str] = {}  # job -> folder its last link went into
    wrong = []
    for tid, call in calls:
        m = re.match(r"f(?:data)?sync\(\d+<([^>]*)>\)\s*= (-?\d+)", call)
        if m:
            (failed.add if m.group(2) != "0" else failed.discard)(m.group(1))
            continue
        paths = [os.path.realpath(p) for p in re.findall(r'"(/[^"]*)"', call)]
        for p in paths:
            if p.startswith(wdir):
                job_of[tid] = p[len(wdir) :].split("/")[0]
        if "= 0" not in call or not paths:
            continue
        if re.match(r"(link|rename)(at2?)?\(", call):
            if paths[0] in failed:
                wrong.append(f"moved into place after its fsync failed: {call[:160]}")
            if len(paths) > 1 and not paths[-1].startswith(wdir) and tid in job_of:
                placed_in[job_of[tid]] = os.path.dirname(paths[-1])
        elif call.startswith("unlink(") and paths[0].startswith(wdir) and paths[0].endswith("/src"):
            job = paths[0][len(wdir) :].split("/")[0]
            if placed_in.get(job) in failed:
                wrong.append("an original removed while its result's folder fsync had failed")
    return wrong


def _detach(st: subprocess.Popen[bytes]) -> None:
    st.send_signal(signal.SIGINT)  # strace detaches, the daemon runs on
    try:
        st.wait(10)
    except subprocess.TimeoutExpired:
        st.kill()
        st.wait()


def _need_strace_injection() -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    probe = subprocess.run(
        ["strace", "-qq", "-o", "/dev/null", "-e", "inject=getpid:error=EIO", "true"],
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("ptrace or strace fault injection is not allowed here")


def _settled(f: Folders) -> bool:
    return (
        rel_names(f.inbound) == []
        and rel_names(f.outbound) == [GOOD]
        and rel_names(f.quarantine) == [BAD]
        and (f.quarantine / (BAD + ".reason.json")).exists()
        and not [p for p in f.work.iterdir() if p.is_dir()]
    )


def _wait(cond: Callable[[], bool], d: Daemon, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.drain()
        if cond():
            return True
        if not d.alive():
            return cond()
        time.sleep(0.05)
    return cond()


def _drop(f: Folders) -> None:
    coloured_jpeg(f.inbound / GOOD, (10, 20, 30))
    (f.inbound / BAD).write_bytes(b"\xff\xd8 this is text, not a jpeg " * 8)


def _clear(f: Folders) -> None:
    for p in files(f.outbound) + files(f.quarantine):
        p.unlink()


@pytest.mark.parametrize(
    ("family", "layout"),
    [(fam, "same_fs") for fam in FAMILIES] + [("fsync", "cross_fs"), ("read", "cross_fs")],
)
def test_eio_at_each_step_loses_nothing_publishes_once_and_never_crashes(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path, family: str, layout: str
) -> None:
    _need_strace_injection()
    syscalls, step = FAMILIES[family]
    with contextlib.ExitStack() as stack:
        work = tmp_path / "svc" / "work"
        if layout == "cross_fs":
            work = stack.enter_context(small_filesystem(tmp_path / "work_fs", 1024)) / "work"
        _run(tmp_path, daemons, models_dir, family, syscalls, step, work)


def _run(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    family: str,
    syscalls: str,
    step: int,
    work: Path,
) -> None:
    f = Folders.make(tmp_path / "svc", work=work)
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        detectors=("fake",),
        mode="poll",  # no inotify read in the count: the poller opens folders
        service={"settle_seconds": 0.1, "max_attempts": 4, "retry_max_seconds": 0.5},
    )
    d = daemons(cfg, fake="default").start()
    d.wait_ready()

    # The reference: a clean run, then a second one traced to learn how many
    # calls a run makes (the first also reads the modules it imports lazily).
    _drop(f)
    assert _wait(lambda: _settled(f), d, 30), d.tail()
    _clear(f)
    trace = tmp_path / "clean.strace"
    st = _strace(d.proc.pid, trace, syscalls, None)  # type: ignore[union-attr]
    _drop(f)
    assert _wait(lambda: _settled(f), d, 30), d.tail()
    _detach(st)
    want = sha256(f.outbound / GOOD)
    want_reason = reason_of(f.quarantine / BAD)["reason"]
    mine = set(syscalls.split(","))
    per_thread = Counter(
        (line.split()[0], line.split()[1].split("(")[0])
        for line in trace.read_text().splitlines()
        if "(" in line and line.split()[1].split("(")[0] in mine
    )
    calls = max(per_thread.values(), default=0)
    assert calls > 0, "the clean run made none of these calls"
    _clear(f)

    problems: list[str] = []
    exits: list[int] = []
    injected = 0
    points = list(range(1, min(calls, MAX_POINTS) + 1, step))
    for n in points:
        out = tmp_path / f"n{n}.strace"
        assert d.proc is not None
        st = _strace(d.proc.pid, out, syscalls, n)
        _drop(f)
        _wait(lambda: _settled(f), d, 8)
        _detach(st)
        log = out.read_text()
        injected += log.count("(INJECTED)")
        problems += [f"n={n}: {w}" for w in _fsync_rule(_calls(log), f.work)]
        if not d.alive():
            assert d.proc is not None
            exits.append(d.proc.returncode)
            if d.proc.returncode not in DOCUMENTED_EXITS:
                problems.append(f"n={n}: exit code {d.proc.returncode}")
            d.start()  # as systemd's Restart= would
        if not _wait(lambda: _settled(f), d, 15):
            # Stuck while running: a clean restart must finish it.
            problems.append(
                f"n={n}: not settled while running: in={rel_names(f.inbound)} "
                f"out={rel_names(f.outbound)} q={rel_names(f.quarantine, reasons=True)} "
                f"jobs={len([p for p in f.work.iterdir() if p.is_dir()])}"
            )
            if d.alive():
                rc = d.stop()
                if rc != 0:
                    problems.append(f"n={n}: stop gave {rc}")
            d.start()
            if not _wait(lambda: _settled(f), d, 20):
                problems.append(f"n={n}: not settled after a restart")
                break
        if sha256(f.outbound / GOOD) != want:
            problems.append(f"n={n}: the output differs from the clean run's")
        got = reason_of(f.quarantine / BAD)["reason"]
        if got != want_reason:
            problems.append(f"n={n}: bad file quarantined as {got}, not {want_reason}")
        left = temporaries(f.inbound, f.outbound, f.quarantine)
        if left:
            problems.append(f"n={n}: temporaries left: {len(left)}")
            for p in left:
                p.unlink()
        stray = [p.name for p in files(f.work) if p.name != ".lock"]
        if stray:
            problems.append(f"n={n}: left in the work area: {stray}")
        _clear(f)

    assert d.proc is not None
    if d.alive():
        assert d.stop() == 0
    text = d.text()
    for needle in ("eio-good", "eio-bad", "Traceback", "internal_error"):
        if needle in text:
            lines = [ln[:300] for ln in text.splitlines() if needle in ln][:3]
            problems.append(f"log holds {needle!r}: {lines}")
    print(
        f"eio {family}: {len(points)} points of {calls} calls, {injected} injected, "
        f"exits {exits}, {d.starts} starts"
    )
    assert injected >= len(points), "some points were never reached"
    assert not problems, "\n".join(problems)


def _jobs(f: Folders) -> list[Path]:
    return [p for p in f.work.iterdir() if p.is_dir()] if f.work.exists() else []


def _consume(outbound: Path, into: Path, stop: threading.Event) -> None:
    """A consumer of outbound: moves every finished file away as soon as it appears."""
    n = 0
    while not stop.is_set():
        for p in files(outbound):
            if not p.name.startswith(".") and not p.name.endswith(".redactd.json"):
                with contextlib.suppress(FileNotFoundError):
                    p.rename(into / f"{n}-{p.name}")
                    n += 1
        time.sleep(0.002)


def test_a_consumer_taking_the_result_during_an_eio_back_off_gets_it_exactly_once(
    tmp_path: Path, daemons: Callable[..., Daemon], models_dir: Path
) -> None:
    """EIO from the fsync of outbound right after the result was linked: the
    job backs off with its result visible, a consumer takes it, and the retry
    must neither publish it again nor drop the original before a fresh fsync
    of the folder succeeded. Every fsync of the outbound folder is tried."""
    _need_strace_injection()
    f = Folders.make(tmp_path / "svc")
    taken = tmp_path / "taken"
    taken.mkdir()
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        detectors=("fake",),
        mode="poll",
        service={
            "settle_seconds": 0.1,
            "max_attempts": 4,
            "retry_base_seconds": 0.5,
            "retry_max_seconds": 0.5,
        },
    )
    d = daemons(cfg, fake="default").start()
    d.wait_ready()
    stop = threading.Event()
    consumer = threading.Thread(target=_consume, args=(f.outbound, taken, stop), daemon=True)
    consumer.start()
    try:
        coloured_jpeg(f.inbound / GOOD, (10, 20, 30))
        assert _wait(lambda: len(list(taken.iterdir())) == 1 and not _jobs(f), d, 30)
        want = sha256(next(taken.iterdir()))
        injected = 0
        for n in range(1, 5):
            for p in taken.iterdir():
                p.unlink()
            out = tmp_path / f"n{n}.strace"
            assert d.proc is not None
            st = _strace(d.proc.pid, out, "fsync", n, path=f.outbound)
            coloured_jpeg(f.inbound / GOOD, (10, 20, 30))
            settled = _wait(
                lambda: rel_names(f.inbound) == [] and not _jobs(f) and any(taken.iterdir()),
                d,
                20,
            )
            time.sleep(1.2)  # a second publication would come after the back-off
            _detach(st)
            log = out.read_text()
            injected += log.count("(INJECTED)")
            got = sorted(taken.iterdir())
            assert settled, f"n={n}: not settled: {d.tail()}"
            assert len(got) == 1, f"n={n}: the consumer got {len(got)} copies"
            assert sha256(got[0]) == want, f"n={n}: the copy differs from the clean run's"
            assert rel_names(f.outbound) == [], f"n={n}: left in outbound"
            assert d.alive() or d.proc.returncode in DOCUMENTED_EXITS
            if not d.alive():
                d.start()
                d.wait_ready()
        assert injected >= 1, "no fsync of outbound was ever failed"
    finally:
        stop.set()
        consumer.join(5)
    if d.alive():
        assert d.stop() == 0
    text = d.text()
    assert "eio-good" not in text and "Traceback" not in text
