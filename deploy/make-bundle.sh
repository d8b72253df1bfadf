#!/usr/bin/env bash
# Make an offline install bundle: deploy/make-bundle.sh OUT_DIR [PYTHON]
#   OUT_DIR/wheels   redactd and every dependency as wheels for PYTHON's version/platform
#   OUT_DIR/models   the default models, verified (a store copy; `--from` accepts it)
#   OUT_DIR/deploy   unit files, snippets, install scripts, packaged config
#   OUT_DIR/SHA256SUMS  checked by install.sh --offline before anything is installed
# The models come from the local store (./models, filled by `make install`).
set -euo pipefail
OUT="$1"
PY="${2:-python3}"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/models"
"$PY" -m pip wheel --quiet --wheel-dir "$OUT/wheels" "$SRC"
"$PY" -m redactd.cli models fetch --config "$SRC/config/redactd.toml" \
    --from "$SRC/models" --store "$OUT/models"
rm -f "$OUT/models/.redactd-models.lock"
cp -r "$SRC/deploy" "$OUT/deploy"
cp "$SRC/README.md" "$OUT/README.md"
(cd "$OUT" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)
echo "bundle ready: $OUT"
