"""One job, as ``redactd process`` and the daemon both run it.

``JobRunner.plan`` resolves the profile with the job's instructions and
sniffs the file, once (``pipeline.plan.make_plan``); the caller then makes
the temporary the result is written to (the CLI beside its final name, the
daemon in its spool) under ``plan.output_name``; ``JobRunner.run`` processes
into it, hashes the output when the profile keeps records, and builds the
job record. Publishing stays with the caller: the CLI renames into its
output folder, the daemon's spool places result and record exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from redactd.core.types import JobResult
from redactd.pipeline.plan import JobPlan, ProgressFn, make_plan
from redactd.pipeline.process import Pipeline
from redactd.pipeline.record import FileDigest, JobRecord, digest_file
from redactd.stages.instructions.model import Instructions


@dataclass(frozen=True)
class JobOutcome:
    """A processed job: its result (written to the temporary) and its record."""

    result: JobResult
    record: JobRecord


class JobRunner:
    """Runs jobs on one loaded pipeline (thread-safe, like the pipeline)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def plan(
        self, src: Path, name: str, profile: str, instructions: Instructions | None = None
    ) -> JobPlan:
        """Decide the job before anything is written (raises what
        ``make_plan`` raises)."""
        return make_plan(self.pipeline.cfg, src, name, profile, instructions)

    def run(
        self,
        job: str,
        plan: JobPlan,
        src: Path,
        tmp: Path,
        progress: ProgressFn | None = None,
        *,
        input_digest: FileDigest | None = None,
    ) -> JobOutcome:
        """Process ``src`` into the new file ``tmp``; with records on, the
        output is hashed from the written file before anyone publishes it,
        and the input's digest is ``input_digest`` (the daemon hashed it while
        claiming) or read here."""
        started = datetime.now(timezone.utc)
        result = self.pipeline.run(src, tmp, plan, progress)
        keep = plan.profile.record.enabled  # hashing reads input and output once more
        if keep and input_digest is None:
            input_digest = digest_file(src)
        record = JobRecord.of_job(
            job,
            plan,
            result,
            self.pipeline.describe(),
            started,
            input=input_digest if keep else None,
            output=digest_file(tmp) if keep else None,
        )
        return JobOutcome(result, record)
