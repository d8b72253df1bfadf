"""The job record: what was done to one file, without personal data (GDPR art. 5(2)).

When a profile enables ``[profiles.NAME.record]``, ``<output name>.redactd.json``
is published beside each output, *before* the output, so a consumer that
sees an output can read its record. The format is versioned
(``schemas/job-record.schema.json``, described in ``docs/JOB-RECORD.md``).

What a record holds: redactd's version, an opaque random job id, the profile
name, the models that ran (with the sha256 of each file, device, precision
and OpenVINO version), counts per class (detected, tracked, masked, kept),
extra regions and unmatched keep regions, the instructions used (counts and
override key names only), frames, size, media type, stage timings, the input
and output sha256 and sizes, and start/finish times. What it never holds:
names, paths, boxes, image content, metadata values.

One function (:meth:`JobRecord.fields`) builds both the record and the
``job.done`` log fields (the latter without the input's sha256), so logs and
records cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redactd import __version__
from redactd.core import fsutil
from redactd.core.config import Profile
from redactd.core.types import CLASSES, JobResult
from redactd.stages.instructions.model import Instructions

if TYPE_CHECKING:  # the registry pulls in OpenVINO; the service imports this module early
    from redactd.pipeline.plan import JobPlan
    from redactd.stages.detect.registry import ModelInfo

#: The ``schema`` value of every record of this format, and the ``$id`` of
#: ``schemas/job-record.schema.json``. A new field that old readers may ignore
#: keeps it (docs/JOB-RECORD.md lists it); an incompatible change takes /2.
SCHEMA_ID = "https://redactd.example/schemas/job-record/1"

#: A record's name is its output's name plus this suffix.
RECORD_SUFFIX = ".redactd.json"


@dataclass(frozen=True)
class ModelUsed:
    """One detector that ran on the file and the exact model behind it."""

    detector: str
    model: str
    files_sha256: tuple[str, ...]
    device: str
    precision: str
    openvino: str

    @classmethod
    def of(cls, info: ModelInfo) -> ModelUsed:
        return cls(
            info.detector,
            info.model,
            tuple(info.files_sha256),
            info.device,
            info.precision,
            info.openvino,
        )


@dataclass(frozen=True)
class InstructionsUsed:
    """The instructions a file came with, reduced to counts and key names."""

    mask_regions: int
    keep_regions: int
    overrides: tuple[str, ...]  # sidecar key paths, e.g. "profile.face.mask.method"

    @classmethod
    def of(cls, instr: Instructions | None) -> InstructionsUsed | None:
        """None when there were no instructions (or only empty ones)."""
        if instr is None or instr.is_empty:
            return None
        keys: list[str] = []
        for c in CLASSES:
            o = instr.overrides.get(c)
            if o.enabled is not None:
                keys.append(f"profile.{c}.enabled")
            if o.mask_method is not None:
                keys.append(f"profile.{c}.mask.method")
        return cls(len(instr.mask), len(instr.keep), tuple(keys))


@dataclass(frozen=True)
class FileDigest:
    """sha256 and size of one file, taken from its bytes."""

    sha256: str
    size: int


def digest_file(path: Path) -> FileDigest:
    """Read ``path`` once (never following a symlink) for its sha256 and size."""
    sha256, size = fsutil.digest(path, follow=False)
    return FileDigest(sha256, size)


def models_used(models: Sequence[ModelInfo], profile: Profile) -> tuple[ModelUsed, ...]:
    """The models of the detectors ``profile`` (as applied: overrides included) runs."""
    wanted: set[str] = set()
    for c in CLASSES:
        cc = profile.of(c)
        if cc.enabled:
            wanted.update(cc.detectors)
    return tuple(ModelUsed.of(m) for m in models if m.detector in wanted)


def _utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _per_class(counts: dict[str, int]) -> dict[str, int]:
    return {c: int(counts.get(c, 0)) for c in CLASSES}


@dataclass(frozen=True)
class JobRecord:
    """Everything a record says about one job (see the module docstring).

    ``input``/``output`` are None when they were not hashed (the record is
    off: the log then carries sizes from the pipeline and no output sha256).
    """

    job: str
    profile: str
    result: JobResult
    models: tuple[ModelUsed, ...]
    instructions: InstructionsUsed | None
    started: datetime
    finished: datetime
    input: FileDigest | None = None
    output: FileDigest | None = None

    @classmethod
    def of_job(
        cls,
        job: str,
        plan: JobPlan,
        result: JobResult,
        models: Sequence[ModelInfo],
        started: datetime,
        *,
        input: FileDigest | None = None,
        output: FileDigest | None = None,
    ) -> JobRecord:
        """The record of a job that just finished (``pipeline.job`` builds it
        for the CLI and the daemon alike); ``plan.profile`` is already resolved."""
        return cls(
            job=job,
            profile=plan.profile_name,
            result=result,
            models=models_used(models, plan.profile),
            instructions=InstructionsUsed.of(plan.instructions),
            started=started,
            finished=datetime.now(timezone.utc),
            input=input,
            output=output,
        )

    def fields(self, *, with_input_sha256: bool = True) -> dict[str, Any]:
        """The record as a JSON-able dict; also the ``job.done`` log fields
        (``with_input_sha256=False``). The one place that decides the fields."""
        r = self.result
        t = r.timings
        out: dict[str, Any] = {
            "schema": SCHEMA_ID,
            "redactd_version": __version__,
            "job": self.job,
            "profile": self.profile,
            "started": _utc(self.started),
            "finished": _utc(self.finished),
            "kind": r.kind,
            "media_type": r.media_type,
            "frames": r.frames,
            "width": r.width,
            "height": r.height,
            "input_bytes": self.input.size if self.input is not None else r.input_bytes,
            "output_bytes": self.output.size if self.output is not None else r.output_bytes,
        }
        if with_input_sha256 and self.input is not None:
            out["input_sha256"] = self.input.sha256
        if self.output is not None:
            out["output_sha256"] = self.output.sha256
        out["models"] = [
            {
                "detector": m.detector,
                "model": m.model,
                "files_sha256": list(m.files_sha256),
                "device": m.device,
                "precision": m.precision,
                "openvino": m.openvino,
            }
            for m in self.models
        ]
        out["detected"] = _per_class(r.detected)
        out["tracked"] = _per_class(r.tracked)
        out["masked"] = _per_class(r.masked)
        out["kept"] = _per_class(r.kept)
        out["extra_regions"] = r.extra_regions
        out["keep_unmatched"] = r.keep_unmatched
        i = self.instructions
        out["instructions"] = (
            None
            if i is None
            else {
                "mask_regions": i.mask_regions,
                "keep_regions": i.keep_regions,
                "overrides": list(i.overrides),
            }
        )
        out["timings_ms"] = {
            "decode": round(t.decode_ms, 1),
            "detect": round(t.detect_ms, 1),
            "track": round(t.track_ms, 1),
            "mask": round(t.mask_ms, 1),
            "encode": round(t.encode_ms, 1),
        }
        return out

    def log_fields(self) -> dict[str, Any]:
        """The record's fields for the ``job.done`` event: all but the input's sha256."""
        return self.fields(with_input_sha256=False)

    def to_bytes(self) -> bytes:
        """The record file's content (UTF-8 JSON, ASCII-only, newline-terminated)."""
        return (json.dumps(self.fields(), indent=2, ensure_ascii=True) + "\n").encode()


def record_path(output: Path) -> Path:
    """``<output>.redactd.json`` beside ``output``."""
    return output.with_name(output.name + RECORD_SUFFIX)


def write_temporary(folder: Path, data: bytes, mode: int) -> Path:
    """A durable new temporary in ``folder`` holding ``data`` (mode ``mode``)."""
    tmp = fsutil.tmp_name(folder / "x.json")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fsutil.write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.close(fd)
    return tmp


def _lexists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def publish_with_record(tmp: Path, final: Path, data: bytes, mode: int) -> Path:
    """``fsutil.publish`` for one-shot runs (``redactd process``) with a record.

    Chooses a name free for both the output and its record (``final``, else
    ``stem (1).ext`` ...), publishes the record first, then the output; never
    replaces a file. Returns the output's name. Not crash-resumable (the
    daemon's spool is): a crash between the two links leaves a record whose
    output is missing, never an output without its record.
    """
    tmp.chmod(mode)
    fsutil.fsync_file(tmp)
    rec_tmp = write_temporary(final.parent, data, mode)
    try:
        for i in range(100000):
            target = final if i == 0 else final.with_name(f"{final.stem} ({i}){final.suffix}")
            rec = record_path(target)
            if _lexists(target) or _lexists(rec):
                continue
            try:
                fsutil.link_noreplace(rec_tmp, rec)
            except FileExistsError:
                continue
            try:
                fsutil.link_noreplace(tmp, target)
            except FileExistsError:
                rec.rename(rec_tmp)  # taken meanwhile: the record goes back, next name
                continue
            return target
        raise FileExistsError("no free name for the output and its record")
    finally:
        with contextlib.suppress(FileNotFoundError):
            rec_tmp.unlink()


__all__ = [
    "RECORD_SUFFIX",
    "SCHEMA_ID",
    "FileDigest",
    "InstructionsUsed",
    "JobRecord",
    "ModelUsed",
    "digest_file",
    "models_used",
    "publish_with_record",
    "record_path",
    "write_temporary",
]
