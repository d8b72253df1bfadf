#!/usr/bin/env bash
# Install or upgrade redactd as a systemd service. Idempotent, non-interactive.
#
#   deploy/install.sh                    # from this source tree (needs the package registry)
#   deploy/install.sh --offline BUNDLE   # from a bundle made by `make bundle` (no network)
#
# Options: --prefix DIR (default /opt/redactd), --no-start (install only),
#          --instance NAME (install /etc/redactd/NAME.toml for redactd@NAME.service).
#
# Upgrades keep the config and the folders. The new version is built next to
# the old one and only swapped in after its models verified, so a failed
# upgrade leaves the running version untouched.
set -euo pipefail

PREFIX=/opt/redactd
BUNDLE=""
START=1
INSTANCE=""
SRC="$(cd "$(dirname "$0")/.." && pwd)"

while [ $# -gt 0 ]; do
  case "$1" in
    --offline) BUNDLE="$(cd "$2" && pwd)"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    --instance) INSTANCE="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "install.sh: python3 is required" >&2; exit 1; }

if [ -n "$BUNDLE" ]; then
  DEPLOY="$BUNDLE/deploy"
  echo "checking bundle checksums"
  (cd "$BUNDLE" && sha256sum --quiet -c SHA256SUMS)
else
  DEPLOY="$SRC/deploy"
fi

say() { echo "install.sh: $*"; }

# 1. The service user (sysusers.d where systemd has it, useradd otherwise).
install -D -m 0644 "$DEPLOY/sysusers.d-redactd.conf" /usr/lib/sysusers.d/redactd.conf
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers /usr/lib/sysusers.d/redactd.conf
elif ! id redactd >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/redactd --shell /usr/sbin/nologin redactd
fi

# 2. A fresh virtual environment in a new release folder; `$PREFIX/venv` is a
#    symlink switched atomically once the release is complete.
mkdir -p "$PREFIX/releases"
NEW="$PREFIX/releases/$(date +%Y%m%d%H%M%S)-$$"
"$PY" -m venv "$NEW"
if [ -n "$BUNDLE" ]; then
  "$NEW/bin/python" -m pip install --quiet --no-index --find-links "$BUNDLE/wheels" redactd
else
  "$NEW/bin/python" -m pip install --quiet --upgrade pip
  "$NEW/bin/python" -m pip install --quiet "$SRC"
fi

# 3. Models, fetched and verified into a staging store; the live store is only
#    replaced in step 5, so a failed verification changes nothing.
install -d -m 0755 /var/lib/redactd
STORE=/var/lib/redactd/models
STAGE=/var/lib/redactd/models.new
rm -rf "$STAGE"
# Offline: the bundle is complete, stage from it alone. Online: start from the
# verified store so that unchanged models are not downloaded again.
if [ -d "$STORE" ] && [ -z "$BUNDLE" ]; then cp -a "$STORE" "$STAGE"; else install -d -m 0755 "$STAGE"; fi
rm -f "$STAGE/.redactd-models.lock"
FETCH=("$NEW/bin/redactd" models fetch --store "$STAGE" --config "$DEPLOY/redactd.toml")
[ -n "$BUNDLE" ] && FETCH+=(--from "$BUNDLE/models")
if ! "${FETCH[@]}" || ! "$NEW/bin/redactd" models verify --store "$STAGE" --config "$DEPLOY/redactd.toml" >/dev/null; then
  rm -rf "$NEW" "$STAGE"
  say "model fetch or verification failed; the installed version is unchanged" >&2
  exit 1
fi

# 4. Config: installed once, never overwritten; a newer default lands beside it.
CONF_NAME="${INSTANCE:-redactd}.toml"
install -d -m 0755 /etc/redactd
if [ -e "/etc/redactd/$CONF_NAME" ]; then
  install -m 0640 -g redactd "$DEPLOY/redactd.toml" "/etc/redactd/$CONF_NAME.dist"
else
  install -m 0640 -g redactd "$DEPLOY/redactd.toml" "/etc/redactd/$CONF_NAME"
fi
"$NEW/bin/redactd" check-config --config "/etc/redactd/$CONF_NAME"

# 5. Switch to the new models and release (rename of a symlink); keep the
#    previous release for a manual roll-back, remove older ones.
rm -rf "$STORE.old"
[ -d "$STORE" ] && mv "$STORE" "$STORE.old"
mv "$STAGE" "$STORE"
rm -rf "$STORE.old"
ln -sfn "$NEW" "$PREFIX/venv.tmp"
mv -T "$PREFIX/venv.tmp" "$PREFIX/venv"
ls -1dt "$PREFIX"/releases/* | tail -n +3 | xargs -r rm -rf
install -d -m 0755 "$PREFIX/share"
install -m 0644 "$DEPLOY/../README.md" "$PREFIX/share/README.md" 2>/dev/null || true

# 6. Units and snippets.
install -D -m 0644 "$DEPLOY/tmpfiles.d-redactd.conf" /usr/lib/tmpfiles.d/redactd.conf
install -D -m 0644 "$DEPLOY/redactd.service" /etc/systemd/system/redactd.service
install -D -m 0644 "$DEPLOY/redactd@.service" /etc/systemd/system/redactd@.service
if command -v systemd-tmpfiles >/dev/null; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/redactd.conf
fi
chown -R redactd:redactd /var/lib/redactd

if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  UNIT=redactd.service
  [ -n "$INSTANCE" ] && UNIT="redactd@$INSTANCE.service"
  if [ "$START" -eq 1 ]; then
    systemctl enable "$UNIT"
    systemctl restart "$UNIT"
    say "$UNIT started"
  fi
else
  say "systemd is not running here; units installed but not started"
fi
