"""kill -9 at random moments, restart, repeat: nothing lost, nothing twice."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SHARED
from tests.helpers.media import Labelled
from tests.helpers.service import (
    Daemon,
    Folders,
    files,
    rel_names,
    sha256,
    temporaries,
    wait_until,
    write_config,
)
from tests.reliability.conftest import changed_boxes, copy_in

ROUNDS = 6


def test_kill9_chaos_loses_nothing_and_delivers_each_file_once(
    tmp_path: Path,
    daemons: Callable[..., Daemon],
    models_dir: Path,
    ov_cache: Path,
    face_images: list[tuple[Path, Labelled | None]],
) -> None:
    seed = int(os.environ.get("REDACTD_CHAOS_SEED", str(random.randrange(1 << 30))))
    print(f"chaos seed {seed} (REDACTD_CHAOS_SEED to replay)")
    rng = random.Random(seed)
    f = Folders.make(tmp_path / "svc")
    cfg = write_config(
        tmp_path / "redactd.toml",
        f,
        models_dir,
        cache_dir=ov_cache,
        service={"max_attempts": 20, "settle_seconds": 0.2},
    )
    originals: dict[str, str] = {}
    labels: dict[str, Labelled | None] = {}
    batches: list[list[tuple[str, Path]]] = [[], [], []]
    for i, (src, lab) in enumerate(face_images):
        rel = f"cam{i % 3}/{src.name}" if i % 2 else src.name
        originals[rel] = sha256(src)
        labels[rel] = lab
        batches[i % 3].append((rel, src))
    # Videos too: a real one when ../shared is there, and one made here.
    from tests.helpers.synthvideo import write_clip

    videos = [tmp_path / "made.mp4"]
    write_clip(videos[0], frames=30, audio="aac")
    if SHARED is not None:
        videos.append(SHARED / "eval" / "video" / "face-demographics-walking.mp4")
    for j, src in enumerate(videos):
        rel = f"cam{j}/video{j}.mp4"
        originals[rel] = sha256(src)
        labels[rel] = None
        batches[j % 3].append((rel, src))

    d = daemons(cfg)
    kills = 0
    for r in range(ROUNDS):
        if r < len(batches):
            for rel, src in batches[r]:  # new files keep arriving between crashes
                copy_in(src, f.inbound / rel)
        d.start()
        if rng.random() < 0.5:
            # kill mid-job: right after a claim, at a random point of the job
            claimed_before = len(d.events("job.claimed"))
            try:
                wait_until(
                    lambda n=claimed_before: len(d.events("job.claimed")) > n, 60, "a claim", d
                )
            except AssertionError:
                if not d.alive():
                    raise
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            time.sleep(rng.uniform(0.2, 4.0))  # anywhere: loading, recovering, working
        if d.alive():
            d.kill9()
            kills += 1
    assert kills >= ROUNDS - 1

    # Final run: let it finish everything.
    d.start()
    d.wait_ready()

    def settled() -> bool:
        return not rel_names(f.inbound) and not [p for p in f.work.iterdir() if p.is_dir()]

    wait_until(settled, 180, "every input processed", d)
    assert d.stop() == 0

    # Nothing lost, nothing twice, nothing half-written.
    assert temporaries(f.inbound, f.outbound, f.quarantine) == []
    out = rel_names(f.outbound)
    quarantined = rel_names(f.quarantine)
    assert sorted(out + quarantined) == sorted(originals), "each input in exactly one place"
    for rel in quarantined:
        assert sha256(f.quarantine / rel) == originals[rel]
        # real images only end in quarantine when killed mid-job every time
        reason = (f.quarantine / (rel + ".reason.json")).read_text()
        assert '"too_many_attempts"' in reason
    assert len(out) >= len(originals) - 2
    masked = total = 0
    import av

    for rel in out:
        assert sha256(f.outbound / rel) != originals[rel], "an original was delivered unmasked"
        if rel.endswith(".mp4"):
            src = next(v for j, v in enumerate(videos) if rel == f"cam{j}/video{j}.mp4")
            with av.open(str(src)) as a, av.open(str(f.outbound / rel)) as b:
                n_in = sum(1 for _ in a.decode(video=0))
                n_out = sum(1 for _ in b.decode(video=0))
            assert n_out == n_in, "a delivered video lost frames"
        lab = labels[rel]
        if lab is not None:
            m, t = changed_boxes(lab.path, f.outbound / rel, lab.faces)
            assert t == 0 or m > 0, f"no labelled face masked in an output ({m}/{t})"
            masked, total = masked + m, total + t
    print(
        f"chaos: {kills} kills, {len(out)} delivered, {len(quarantined)} quarantined, "
        f"big faces masked {masked}/{total}"
    )
    # Every run checks faces: the shared set's, else the packaged portrait's.
    assert total > 0, "no labelled face was delivered: the masking check checked nothing"
    assert masked / total >= 0.8
    assert [p.name for p in files(f.work)] == [".lock"]
    recovered = d.events("job.recovered")
    print(f"chaos: {len(recovered)} job recoveries over {d.starts} starts")
