"""The error hierarchy every stage raises into.

Three kinds, because the service treats them differently:

* ``ConfigError`` -- the operator's configuration is wrong. The process exits 78
  (EX_CONFIG) so systemd's ``RestartPreventExitStatus=78`` stops a restart loop.
* ``TransientError`` -- may clear by itself (disk full, permission flapping,
  device busy, file still being written). The job is retried with back-off and
  never quarantined at once.
* ``PermanentInputError`` -- this input can never be processed (corrupt,
  unsupported, over a limit, detector failure on it). The original goes to
  quarantine with a reason file.

Messages MUST NOT contain file names, paths or metadata values of an input:
they end up in logs and reason files. Name the limit, key or reason instead.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    """Every exit status of ``redactd`` (sysexits.h numbers), in one place."""

    OK = 0
    USAGE = 64  # a bad command line, sidecar or ``--mask`` / ``--keep`` spec
    DATAERR = 65  # ``process``: some inputs could not be processed
    SOFTWARE = 70  # the main loop itself failed (a bug); systemd restarts
    TEMPFAIL = 75  # a job hung past its timeout: restart me (see service.timeouts)
    CONFIG = 78  # bad configuration or models: systemd's RestartPreventExitStatus=78


class RedactdError(Exception):
    """Base of every error redactd raises on purpose."""


class ConfigError(RedactdError):
    """Invalid configuration; ``key`` is the dotted key path that is wrong."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


class ConfigErrors(ConfigError):
    """Several configuration problems found in one pass (all are reported)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("", "; ".join(str(e) for e in errors))


class ModelError(RedactdError):
    """A model is missing, fails verification or does not match its recipe.

    The daemon refuses to start on it (exit 78): running with an unverified
    or wrong detector could silently miss faces.
    """


class TransientReason(str, Enum):
    """The kinds of ``TransientError`` the stages and the spool raise.

    The value is the reason string logged (``job.retry reason=``) and counted
    in the metrics, byte for byte. The service also retries on reasons that
    are not listed here: errno names of its own steps (``eio``,
    ``outbound_eacces``, ...).
    """

    #: The output's filesystem is full (ENOSPC/EDQUOT): the folder is paused.
    DISK_FULL = "disk_full"
    OUTPUT_UNAVAILABLE = "output_unavailable"
    WRITE_FAILED = "write_failed"
    READ_FAILED = "read_failed"
    OUT_OF_MEMORY = "out_of_memory"
    #: Also a permanent code (``REASONS``): quarantined under it once the
    #: attempts run out.
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value


class TransientError(RedactdError):
    """A condition that may clear: retry later with back-off.

    ``reason`` stays a plain string (one of ``TransientReason`` for the
    known kinds); ``kind`` is the typed view of it.
    """

    def __init__(self, reason: str | TransientReason, detail: str = "") -> None:
        reason = str(reason)
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @property
    def kind(self) -> TransientReason | None:
        """The known kind of this reason, None for another string."""
        try:
            return TransientReason(self.reason)
        except ValueError:
            return None


class PermanentInputError(RedactdError):
    """This input cannot be processed; quarantine it.

    ``reason`` is a stable machine-readable code (see ``REASONS``), ``stage``
    where it failed, ``detail`` a short text without personal data.
    """

    def __init__(self, reason: str, detail: str = "", stage: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.stage = stage


#: Stable reason codes written to ``<name>.reason.json`` and logs.
REASONS: dict[str, str] = {
    "empty_file": "the file has zero bytes",
    "unsupported_type": "the content is not an image or video type redactd handles",
    "corrupt": "the content could not be decoded completely",
    "truncated": "the file ends before its content does",
    "too_many_pixels": "the image or frame is larger than limits.max_pixels",
    "too_many_pages": "the image has more pages or frames than limits.max_pages",
    "too_many_total_pixels": (
        "the pages or frames of the image decode to more than limits.max_total_pixels"
    ),
    "undecodable_stream": (
        "a video stream cannot be decoded (it may show people; it is not dropped)"
    ),
    "too_large": "the file is larger than limits.max_file_bytes",
    "too_long": "the video is longer than limits.max_video_seconds",
    "not_regular_file": "not a regular file (symlink, directory, device, FIFO or socket)",
    "unreadable": "the file cannot be read (permissions)",
    "detector_failed": "a detector failed on this input; no output is produced (fail closed)",
    "encode_failed": "the masked result could not be encoded",
    "unprocessed_frames": "some video frames could not be decoded and checked",
    "bad_name": "the file name cannot be represented safely in the outbound folder",
    "sidecar_without_input": "the sidecar's input never arrived (watch.sidecar_orphan_seconds)",
    "instructions_disabled": "a sidecar came with an input whose profile has instructions disabled",
    "invalid_sidecar": "the per-file instructions (sidecar or command line) are invalid",
    "instruction_not_allowed": "the per-file instructions ask for what the profile does not allow",
    "keep_limit_exceeded": (
        "a keep instruction exceeds instructions.keep_max_regions or keep_max_share"
    ),
    "sidecar_untrusted": (
        "the sidecar is not from instructions.trusted_dir or lacks a valid HMAC "
        "(instructions.hmac_key_file)"
    ),
    "too_many_attempts": "the job failed transiently more often than service.max_attempts",
    "job_timeout": "processing took longer than service.job_timeout_seconds",
    "internal_error": "an unexpected error; the job is kept for inspection",
}
