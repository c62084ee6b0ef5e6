#!/usr/bin/env bash
# Stop the private dockerd started by scripts/docker-up.sh (idempotent). Its data dir is kept,
# so images (shoal/busybox:latest) survive; pass --purge to delete it as well.
set -euo pipefail

SOCK="${SHOAL_DOCKER_SOCKET:-/tmp/shoal-docker/docker.sock}"
DIR="${SHOAL_DOCKER_DIR:-$(dirname "$SOCK")}"
PIDFILE="$DIR/dockerd.pid"
STOP_TIMEOUT_S="${SHOAL_DOCKER_STOP_TIMEOUT:-20}"

say() { echo "docker-down: $*" >&2; }

if [ ! -f "$PIDFILE" ]; then
  say "no $PIDFILE: nothing to stop"
else
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        say "dockerd did not exit within ${STOP_TIMEOUT_S}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  fi
  rm -f "$PIDFILE"
fi
rm -f "$SOCK"

if [ "${1:-}" = "--purge" ]; then
  # Unmount anything dockerd left under its roots before deleting.
  grep -o " $DIR/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$DIR/data" "$DIR/exec" "$DIR/dockerd.log"
  say "purged $DIR"
fi
