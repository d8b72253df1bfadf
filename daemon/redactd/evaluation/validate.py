"""``redactd models validate``: a candidate profile against a baseline on the operator's data.

Both profiles run through the real pipeline on the same labelled sets (video
sets as ``redactd eval`` scores them, image sets likewise, without attacks).
Per set and labelled class the strict masked recall of the candidate may
drop by at most ``[validation] max_recall_drop`` below the baseline's, and
per set over-masking may grow by at most ``max_overmask_increase``. The
record (``schemas/validation-record.schema.json``, docs/VALIDATION.md) names
models by name and sha256, the config and the data by sha256 only, and is
written into ``[validation] dir``; with ``hmac_key_file`` it is signed.
``redactd run`` reads it back with ``redactd.models.validation``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from redactd import __version__
from redactd.core.config import Config
from redactd.core.fsutil import sha256_file
from redactd.evaluation import dataset, runner, video_labels, video_runner
from redactd.models import validation
from redactd.pipeline.process import Pipeline
from redactd.stages.detect import registry

#: Comparisons within this of the limit pass (float noise of pooled shares).
EPS = 1e-9


class ValidationDataError(ValueError):
    """The data folder holds no labelled set (reason given, no names)."""


@dataclass(frozen=True)
class Data:
    """The labelled sets a validation runs on, and their digest."""

    video_sets: tuple[video_labels.VideoSet, ...]
    image_sets: tuple[dataset.LabelledSet, ...]
    digest: str
    videos: int
    images: int


def _image_set_digest(s: dataset.LabelledSet) -> str:
    h = hashlib.sha256()
    for im in s.images:
        boxes = [(b.cls, b.box.x1, b.box.y1, b.box.x2, b.box.y2, b.ignore) for b in im.boxes]
        h.update(sha256_file(im.path).encode())
        h.update(json.dumps([im.width, im.height, im.labels_complete, boxes]).encode())
    return h.hexdigest()


def load_data(path: Path, limit: int | None = None) -> Data:
    """Video sets (MOT / COCO-video labels) or image sets at ``path``."""
    try:
        if video_labels.is_video_set(path):
            vs = video_labels.load_sets(path, limit=limit)
            return Data(
                tuple(vs), (), video_labels.data_digest(vs), sum(len(s.videos) for s in vs), 0
            )
        sets = dataset.load(path, limit=limit)
    except (video_labels.VideoLabelError, dataset.DatasetError) as e:
        raise ValidationDataError(str(e)) from e
    h = hashlib.sha256("".join(_image_set_digest(s) for s in sets).encode())
    return Data((), tuple(sets), h.hexdigest(), 0, sum(len(s.images) for s in sets))


def profile_digest(cfg: Config, name: str) -> str:
    """sha256 of a profile's every setting (what decides its masks), as JSON."""
    body = json.dumps(dataclasses.asdict(cfg.profile(name)), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def config_digest(cfg: Config) -> str:
    """sha256 of the config file's bytes (``"built-in"`` hashed when there is none)."""
    if cfg.source is not None and cfg.source.is_file():
        return hashlib.sha256(cfg.source.read_bytes()).hexdigest()
    return hashlib.sha256(b"built-in").hexdigest()


def measure(pipeline: Pipeline, cfg: Config, profile: str, data: Data, work: Path) -> list[dict]:
    """Per set: strict masked recall per labelled class and over-masking."""
    out: list[dict[str, Any]] = []
    if data.video_sets:
        rep = video_runner.evaluate(pipeline, profile, data.video_sets, work, with_hardware=False)
        for s in rep.sets:
            out.append(
                {
                    "set": s.index + 1,
                    "kind": "video",
                    "recall": {c.cls: c.recall for c in s.classes()},
                    "overmask": s.overmask,
                }
            )
    if data.image_sets:
        irep = runner.evaluate(pipeline, cfg, profile, data.image_sets, work)
        for i, ir in enumerate(irep.sets):
            out.append(
                {
                    "set": len(data.video_sets) + i + 1,
                    "kind": "image",
                    "recall": {c.metrics.cls: c.pixels.detail_recall for c in ir.classes},
                    "overmask": ir.overmask,
                }
            )
    return out


def compare(
    base: Sequence[dict], cand: Sequence[dict], max_drop: float, max_increase: float
) -> list[dict[str, Any]]:
    """One check per set and class (recall) and per set (over-masking)."""
    checks: list[dict[str, Any]] = []
    for b, c in zip(base, cand, strict=True):
        for cls, bv in sorted(b["recall"].items()):
            cv = c["recall"].get(cls)
            if bv is None:
                continue
            ok = cv is not None and bv - cv <= max_drop + EPS
            checks.append(
                {"set": b["set"], "measure": f"masked_recall_strict.{cls}", "baseline": bv,
                 "candidate": cv, "delta": None if cv is None else cv - bv,
                 "limit": -max_drop, "passed": ok}
            )  # fmt: skip
        bo, co = b["overmask"], c["overmask"]
        if bo is not None:
            ok = co is not None and co - bo <= max_increase + EPS
            checks.append(
                {"set": b["set"], "measure": "overmask", "baseline": bo, "candidate": co,
                 "delta": None if co is None else co - bo, "limit": max_increase,
                 "passed": ok}
            )  # fmt: skip
    return checks


def _side(cfg: Config, profile: str) -> dict[str, Any]:
    return {
        "profile": profile,
        "profile_sha256": profile_digest(cfg, profile),
        "models": [
            {"name": s.name, "sha256": validation.model_digest(s)}
            for s in registry.profile_models(cfg, profile)
        ],
    }


def validate(
    cfg: Config,
    candidate: str,
    baseline: str,
    data: Data,
    work: Path,
    *,
    operator: str,
    comment: str = "",
) -> dict[str, Any]:
    """Run both profiles and build the record (not yet written; see ``write``)."""
    pipeline = Pipeline.load(cfg, sorted({candidate, baseline}))
    try:
        base = measure(pipeline, cfg, baseline, data, work)
        cand = measure(pipeline, cfg, candidate, data, work)
        hw = runner.hardware(pipeline)
    finally:
        pipeline.close()
    v = cfg.validation
    checks = compare(base, cand, v.max_recall_drop, v.max_overmask_increase)
    record: dict[str, Any] = {
        "schema_version": validation.SCHEMA_VERSION,
        "kind": "redactd-validation",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "redactd_version": __version__,
        "operator": operator,
        "comment": comment,
        "candidate": _side(cfg, candidate),
        "baseline": _side(cfg, baseline),
        "config_sha256": config_digest(cfg),
        "data": {
            "sha256": data.digest,
            "video_sets": len(data.video_sets),
            "videos": data.videos,
            "image_sets": len(data.image_sets),
            "images": data.images,
        },
        "hardware": {"cpu": hw.cpu, "openvino": hw.openvino},
        "thresholds": {
            "max_recall_drop": v.max_recall_drop,
            "max_overmask_increase": v.max_overmask_increase,
        },
        "metrics": {"baseline": base, "candidate": cand},
        "checks": checks,
        "passed": bool(checks) and all(c["passed"] for c in checks),
    }
    key = validation.read_key(v.hmac_key_file)
    if key is not None:
        record["hmac"] = validation.sign(record, key)
    return record


def write(record: dict[str, Any], folder: Path) -> Path:
    """Write ``record`` atomically into ``folder`` (created 0700); returns its path."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = record["created_utc"].replace(":", "").replace("-", "")
    short = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", record["candidate"]["profile"])[:40]
    path = folder / f"{stamp}-{safe}-{short}{validation.SUFFIX}"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".validation-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    Path(tmp).replace(path)
    return path
