"""What is running: versions of redactd, its runtimes and the models' digests.

``redactd --version`` and ``redactd status`` print this so an operator can
tell two installs apart (change control: the lock pins the Python packages,
the manifest pins the models). Package versions come from the installed
distributions' metadata (no OpenVINO import, so no telemetry and no delay);
FFmpeg's versions are the libraries PyAV was built with. Model digests are
those of the manifest, and each installed model is checked against them
(the daemon refuses to start on a mismatch, so "verified" is what it runs).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from redactd import __version__

#: label -> distribution name
PACKAGES: tuple[tuple[str, str], ...] = (
    ("openvino", "openvino"),
    ("pyav", "av"),
    ("opencv", "opencv-python-headless"),
    ("numpy", "numpy"),
    ("pillow", "pillow"),
    ("systemd-python", "systemd-python"),
)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    identity: str  # hash over all file hashes (ModelSpec.identity)
    files: dict[str, str]  # file -> sha256 pinned by the manifest
    state: str  # "verified", "mismatch" or "not installed"


@dataclass(frozen=True)
class Versions:
    redactd: str
    python: str
    packages: dict[str, str]  # label -> version ("absent" when not installed)
    ffmpeg: str  # FFmpeg release and libav* versions PyAV links, or "absent"
    models_dir: str
    models: tuple[ModelVersion, ...]

    def lines(self) -> list[str]:
        out = [f"redactd {self.redactd}", f"python {self.python}"]
        out += [f"{k} {v}" for k, v in self.packages.items()]
        out.append(f"ffmpeg {self.ffmpeg}")
        out.append(f"models in {self.models_dir}:")
        if not self.models:
            out.append("  (none installed)")
        for m in self.models:
            out.append(f"  {m.name} {m.identity} {m.state}")
            out += [f"    {rel} sha256:{digest}" for rel, digest in sorted(m.files.items())]
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "redactd": self.redactd,
            "python": self.python,
            "packages": self.packages,
            "ffmpeg": self.ffmpeg,
            "models_dir": self.models_dir,
            "models": [
                {"name": m.name, "identity": m.identity, "state": m.state, "files": m.files}
                for m in self.models
            ],
        }


def _dist(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _ffmpeg() -> str:
    try:
        import av
    except ImportError:
        return "absent"
    libs = getattr(av, "library_versions", {})
    parts = [
        f"{k} {'.'.join(map(str, v))}"
        for k, v in sorted(libs.items())
        if k in ("libavcodec", "libavformat", "libavutil")
    ]
    release = str(getattr(av, "ffmpeg_version_info", "") or "?")
    return f"{release} ({', '.join(parts)})" if parts else release


def collect(models_dir: Path) -> Versions:
    """Versions of this install; models: those present in ``models_dir``."""
    from redactd.core.errors import ModelError
    from redactd.models import derived, manifest

    man = manifest.load()
    models = []
    for name in sorted(man.models):
        spec = man.models[name]
        if not spec.dir(models_dir).is_dir():
            continue
        state = "mismatch" if spec.missing_or_bad(models_dir) else "verified"
        models.append(ModelVersion(name, spec.identity, dict(spec.files), state))
    for name in derived.installed(models_dir):  # made on this server (IR, INT8)
        try:
            spec = derived.spec(man, name, models_dir, verify=False)
        except ModelError:  # no readable provenance, or made from another source
            models.append(ModelVersion(name, "-", {}, "mismatch"))
            continue
        state = "mismatch" if spec.missing_or_bad(models_dir) else "verified"
        models.append(ModelVersion(name, spec.identity, dict(spec.files), state))
    models.sort(key=lambda m: m.name)
    return Versions(
        redactd=__version__,
        python=platform.python_version(),
        packages={label: _dist(dist) for label, dist in PACKAGES},
        ffmpeg=_ffmpeg(),
        models_dir=str(models_dir),
        models=tuple(models),
    )
