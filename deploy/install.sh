#!/usr/bin/env bash
# Install or upgrade redactd as a systemd service. Idempotent, non-interactive.
#
#   deploy/install.sh                    # from this source tree (needs the package registry)
#   deploy/install.sh --offline BUNDLE   # from a bundle made by `make bundle` (no network)
#
# Options: --prefix DIR (default /opt/redactd), --no-start (install only),
#          --instance NAME (install /etc/redactd/NAME.toml for redactd@NAME.service),
#          --sums-sha256 HEX (offline: the digest of the bundle's SHA256SUMS that
#          `make bundle` printed; passed on out of band, it pins the whole bundle).
#
# Python packages come from the hashed lock (requirements/service.txt, or the
# bundle's requirements.txt) with --require-hashes: the same versions as tested.
#
# Upgrades keep the config and the folders. The new version is built next to
# the old one and only swapped in after its models verified, so a failed
# upgrade leaves the running version untouched.
set -euo pipefail

PREFIX=/opt/redactd
BUNDLE=""
START=1
INSTANCE=""
SUMS_SHA256=""
SRC="$(cd "$(dirname "$0")/.." && pwd)"

while [ $# -gt 0 ]; do
  case "$1" in
    --offline) BUNDLE="$(cd "$2" && pwd)"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    --instance) INSTANCE="$2"; shift 2 ;;
    --sums-sha256) SUMS_SHA256="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "install.sh: python3 is required" >&2; exit 1; }

say() { echo "install.sh: $*"; }

if [ -n "$BUNDLE" ]; then
  DEPLOY="$BUNDLE/deploy"
  # Before anything is installed: SHA256SUMS lists exactly the files present,
  # the SBOM describes exactly the wheels and models present (same digests).
  # Whoever can rewrite the bundle can rewrite this script too: only
  # --sums-sha256, passed on out of band, pins all of it.
  say "checking the bundle's SHA256SUMS and SBOM"
  if ! "$PY" "$SRC/deploy/bundle.py" verify "$BUNDLE" $SUMS_SHA256; then
    say "the bundle does not match its checksums or SBOM; nothing was installed" >&2
    exit 1
  fi
  [ -n "$SUMS_SHA256" ] || say "note: no --sums-sha256 given; the bundle is checked against itself only"
else
  DEPLOY="$SRC/deploy"
  # systemd-python builds against libsystemd (the bundle carries it built).
  if ! pkg-config --exists libsystemd 2>/dev/null && command -v apt-get >/dev/null; then
    say "installing libsystemd-dev and pkg-config (to build systemd-python)"
    apt-get install -y -qq libsystemd-dev pkg-config >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq libsystemd-dev pkg-config >/dev/null; }
  fi
fi

# 1. The service user and the producer/consumer/admin/metrics groups
#    (sysusers.d where systemd has it, useradd otherwise).
install -D -m 0644 "$DEPLOY/sysusers.d-redactd.conf" /usr/lib/sysusers.d/redactd.conf
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers /usr/lib/sysusers.d/redactd.conf
else
  for g in redactd-in redactd-out redactd-admin redactd-metrics; do
    getent group "$g" >/dev/null || groupadd --system "$g"
  done
  id redactd >/dev/null 2>&1 ||
    useradd --system --home-dir /var/lib/redactd --shell /usr/sbin/nologin redactd
  usermod -aG redactd-in redactd
fi

# 2. A fresh virtual environment in a new release folder; `$PREFIX/venv` is a
#    symlink switched atomically once the release is complete.
mkdir -p "$PREFIX/releases"
NEW="$PREFIX/releases/$(date +%Y%m%d%H%M%S)-$$"
"$PY" -m venv "$NEW"
if [ -n "$BUNDLE" ]; then
  "$NEW/bin/python" -m pip install --quiet --no-index --find-links "$BUNDLE/wheels" \
      --require-hashes -r "$BUNDLE/requirements.txt"
  "$NEW/bin/python" -m pip install --quiet --no-index --no-deps "$BUNDLE"/wheels/redactd-*.whl
else
  "$NEW/bin/python" -m pip install --quiet --require-hashes -r "$SRC/requirements/service.txt"
  "$NEW/bin/python" -m pip install --quiet --no-deps "$SRC"
fi

# 3. Models, fetched and verified into a staging store; the live store is only
#    replaced in step 5, so a failed verification changes nothing. The store is
#    the one the config that will run names (an older install's config may say
#    /var/lib/redactd/models; the packaged one says /opt/redactd/models). It is
#    owned by root: the service can read it, never write it.
CONF_NAME="${INSTANCE:-redactd}.toml"
CONF="/etc/redactd/$CONF_NAME"
[ -e "$CONF" ] || CONF="$DEPLOY/redactd.toml"
if ! STORE="$("$NEW/bin/python" -c 'import sys; from pathlib import Path; from redactd.core.config import load; print(load(Path(sys.argv[1])).models.dir)' "$CONF")"; then
  rm -rf "$NEW"
  say "cannot read models.dir from $CONF (run redactd check-config); the installed version is unchanged" >&2
  exit 1
fi
install -d -o redactd -g redactd -m 0700 /var/lib/redactd
install -d -m 0755 "$(dirname "$STORE")"
STAGE="$STORE.new"
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
rm -f "$STAGE/.redactd-models.lock"
chown -R root:root "$STAGE"
chmod -R u=rwX,go=rX "$STAGE"

# 4. Config: installed once, never overwritten; a newer default lands beside it.
#    An instance's folders, state and metrics file carry its name.
install -d -m 0755 /etc/redactd
DIST="$(mktemp)"
if [ -n "$INSTANCE" ]; then
  sed -e "s#\"/srv/redactd/#\"/srv/redactd/$INSTANCE/#" \
      -e "s#/var/lib/redactd/status.json#/var/lib/redactd/$INSTANCE/status.json#" \
      -e "s#/redactd.prom\"#/$INSTANCE.prom\"#" "$DEPLOY/redactd.toml" > "$DIST"
else
  cp "$DEPLOY/redactd.toml" "$DIST"
fi
if [ -e "/etc/redactd/$CONF_NAME" ]; then
  install -m 0640 -g redactd "$DIST" "/etc/redactd/$CONF_NAME.dist"
else
  install -m 0640 -g redactd "$DIST" "/etc/redactd/$CONF_NAME"
fi
rm -f "$DIST"
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

# Compiled blobs written by an older version (whose unit could write them)
# are never trusted: OpenVINO would load them unchecked. The folder stays,
# empty: the unit mounts it read-only (ReadOnlyPaths= skips a missing one).
for d in /var/lib/redactd/cache/openvino /var/lib/redactd/*/cache/openvino; do
  [ -d "$d" ] && find "$d" -mindepth 1 -delete
done

# 6. Units and snippets; folders with their groups (tmpfiles "d" also fixes
#    the mode and group of folders an older version made).
install -D -m 0644 "$DEPLOY/tmpfiles.d-redactd.conf" /usr/lib/tmpfiles.d/redactd.conf
install -D -m 0644 "$DEPLOY/redactd.service" /etc/systemd/system/redactd.service
install -D -m 0644 "$DEPLOY/redactd@.service" /etc/systemd/system/redactd@.service
TMPFILES=(/usr/lib/tmpfiles.d/redactd.conf)
if [ -n "$INSTANCE" ]; then
  I="/srv/redactd/$INSTANCE"
  cat > "/etc/tmpfiles.d/redactd-$INSTANCE.conf" <<EOT
# redactd@$INSTANCE folders (written by deploy/install.sh --instance $INSTANCE)
d $I            0755 root    root          -
d $I/inbound    2770 redactd redactd-in    -
d $I/outbound   2750 redactd redactd-out   -
d $I/quarantine 2750 redactd redactd-admin -
d $I/.work      0700 redactd redactd       -
EOT
  TMPFILES+=("/etc/tmpfiles.d/redactd-$INSTANCE.conf")
fi
if command -v systemd-tmpfiles >/dev/null; then
  systemd-tmpfiles --create "${TMPFILES[@]}"
fi
# Results and quarantined files an older version left with the one group
# `redactd` get the group of their folder's audience.
for pair in inbound:redactd-in outbound:redactd-out quarantine:redactd-admin; do
  d="/srv/redactd/${pair%%:*}"
  [ -d "$d" ] && find "$d" -group redactd -exec chgrp -h "${pair#*:}" {} +
done

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
