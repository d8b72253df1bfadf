#!/usr/bin/env bash
# Make an offline install bundle: deploy/make-bundle.sh OUT_DIR [PYTHON]
#   OUT_DIR/wheels   every dependency of the service lock (requirements/service.txt,
#                    hash-checked; systemd-python built from its locked source) and redactd
#   OUT_DIR/requirements.txt  those wheels with their sha256 (install.sh: --require-hashes)
#   OUT_DIR/requirements/service.txt  the lock they came from
#   OUT_DIR/models   the default models, verified (a store copy; `--from` accepts it)
#   OUT_DIR/deploy   unit files, snippets, install scripts, packaged config
#   OUT_DIR/sbom.cdx.json  CycloneDX SBOM: packages, models, licences, provenance
#   OUT_DIR/SHA256SUMS  every other file; install.sh --offline checks it and the
#                    SBOM before anything is installed
# The models come from the local store (./models, filled by `make install`).
# Building systemd-python needs libsystemd-dev and pkg-config (`make install` too).
set -euo pipefail
OUT="$1"
PY="${2:-python3}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/models" "$OUT/requirements"
"$PY" -m pip wheel --quiet --require-hashes --wheel-dir "$OUT/wheels" -r "$SRC/requirements/service.txt"
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT/wheels" "$SRC"
cp "$SRC/requirements/service.txt" "$OUT/requirements/service.txt"
"$PY" -m redactd.cli models fetch --config "$SRC/config/redactd.toml" \
    --from "$SRC/models" --store "$OUT/models"
rm -f "$OUT/models/.redactd-models.lock"
cp -r "$SRC/deploy" "$OUT/deploy"
rm -rf "$OUT/deploy/__pycache__"
cp "$SRC/README.md" "$OUT/README.md"
# A fixed time (the last commit's) keeps the SBOM the same for the same inputs.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$SRC" log -1 --format=%ct 2>/dev/null || echo 0)}" \
  "$PY" "$SRC/deploy/bundle.py" describe "$OUT" "$SRC/requirements/service.txt"
"$PY" "$SRC/deploy/bundle.py" verify "$OUT"
echo "bundle ready: $OUT"
echo "sha256 of its SHA256SUMS (pass on to the installer: install.sh --offline BUNDLE --sums-sha256 ...):"
sha256sum "$OUT/SHA256SUMS" | cut -d' ' -f1
