#!/usr/bin/env bash
# Remove redactd: units, snippets, the virtual environment and models
# (/opt/redactd), the service's state and metrics, but NOT the data folders
# (/srv/redactd: inbound, outbound, quarantine), not the config in /etc/redactd
# and not the user and groups (files in the kept folders still belong to them).
# Unfinished jobs in the work area hold originals: refuse while there are any
# (restart the service to finish them), unless --force.
set -euo pipefail
PREFIX=/opt/redactd
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run as root" >&2; exit 1; }
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now redactd.service 2>/dev/null || true
  for u in $(systemctl list-units --plain --no-legend 'redactd@*' | awk '{print $1}'); do
    systemctl disable --now "$u" || true
  done
fi
WORK=(/var/lib/redactd /srv/redactd/.work /srv/redactd/*/.work)
# (not find | grep: under pipefail a missing folder would hide a found job)
if [ "$FORCE" -ne 1 ] && [ -n "$(find "${WORK[@]}" -name job.json -print -quit 2>/dev/null)" ]; then
  echo "uninstall.sh: unfinished jobs in a work area (/srv/redactd/.work); restart the service to finish them or use --force" >&2
  exit 1
fi
rm -f /etc/systemd/system/redactd.service /etc/systemd/system/redactd@.service
rm -f /usr/lib/sysusers.d/redactd.conf /usr/lib/tmpfiles.d/redactd.conf /etc/tmpfiles.d/redactd-*.conf
rm -rf "$PREFIX"
rm -rf /var/lib/redactd/models /var/lib/redactd/cache /var/lib/redactd/metrics /var/lib/redactd-metrics
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "uninstall.sh: removed; data folders (/srv/redactd) and /etc/redactd kept"
