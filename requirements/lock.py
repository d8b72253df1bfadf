"""Stamp and check the hashed lock files against pyproject.toml.

    python requirements/lock.py stamp    # after compiling (``make lock`` does both)
    python requirements/lock.py check    # CI: fails when pyproject.toml and a lock disagree

Each lock file ``requirements/TARGET.txt`` carries the sha256 of the
requirements it was compiled from (``requires-python``, the dependencies and
the target's extra). A changed dependency list without ``make lock`` changes
that digest, and ``check`` says which lock is stale. ``check`` also refuses a
pin without ``--hash`` (pip's ``--require-hashes`` would refuse it later, on a
server). Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
#: install target -> extra of pyproject.toml (None: the service itself).
#: ``redactd eval`` needs nothing beyond the service (matplotlib is a main
#: dependency), so the service lock is the eval lock too.
TARGETS: dict[str, str | None] = {"service": None, "test": "test", "quantize": "quantize"}
STAMP = "# pyproject-sha256: "


def digest(target: str, pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    extra = TARGETS[target]
    doc = {
        "requires-python": project.get("requires-python", ""),
        "dependencies": project.get("dependencies", []),
        "extra": project.get("optional-dependencies", {}).get(extra, []) if extra else [],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def lock_path(target: str, root: Path = ROOT) -> Path:
    return root / "requirements" / f"{target}.txt"


def stamp(root: Path = ROOT) -> None:
    for target in TARGETS:
        path = lock_path(target, root)
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith(STAMP)]
        head = [
            f"# Lock for `{target}` (make lock): every pin with its sha256; install with",
            f"# pip install --require-hashes -r requirements/{target}.txt",
        ]
        lines = [ln for ln in lines if ln not in head]
        stamp_line = STAMP + digest(target, root / "pyproject.toml")
        path.write_text("\n".join([*head, stamp_line, *lines]) + "\n")


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+")


def problems(root: Path = ROOT) -> list[str]:
    out: list[str] = []
    for target in TARGETS:
        path = lock_path(target, root)
        if not path.exists():
            out.append(f"{path.name}: missing (run make lock)")
            continue
        text = path.read_text()
        want = digest(target, root / "pyproject.toml")
        got = next((ln[len(STAMP) :] for ln in text.splitlines() if ln.startswith(STAMP)), "")
        if got != want:
            out.append(f"{path.name}: compiled from another pyproject.toml (run make lock)")
        # A requirement spans continuation lines; each must have a --hash.
        for block in text.replace("\\\n", " ").splitlines():
            m = _PIN.match(block.strip())
            if m and "--hash=sha256:" not in block:
                out.append(f"{path.name}: {m.group(1)} has no --hash")
            elif block.strip() and not block.lstrip().startswith("#") and not m:
                out.append(f"{path.name}: not an exact pin: {block.strip()[:60]}")
    return out


def main(argv: list[str]) -> int:
    if argv[1:] == ["stamp"]:
        stamp()
        return 0
    if argv[1:] == ["check"]:
        found = problems()
        for p in found:
            print(f"lock: {p}", file=sys.stderr)  # noqa: T201
        return 1 if found else 0
    print(__doc__, file=sys.stderr)  # noqa: T201
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
