#!/usr/bin/env bash
# Provision a private Docker engine for shoal's tests and local agents (idempotent, non-interactive).
#
#   scripts/docker-up.sh            # prints the engine's socket path as its LAST line
#   SHOAL_DOCKER_SOCKET=/path/docker.sock scripts/docker-up.sh
#
# 1. If an engine already answers at $SHOAL_DOCKER_SOCKET (default /tmp/shoal-docker/docker.sock),
#    it only makes sure the image shoal/busybox:latest exists.
# 2. Otherwise (root only) it installs docker.io + busybox-static via apt when dockerd is missing,
#    starts a private dockerd (no bridge, no iptables: it never touches the host network) with all
#    its state under $SHOAL_DOCKER_DIR (default: the socket's directory), waits until it answers,
#    and imports a busybox rootfs as shoal/busybox:latest. Nothing is ever pulled from a registry.
# scripts/docker-down.sh stops that dockerd.
set -euo pipefail

SOCK="${SHOAL_DOCKER_SOCKET:-/tmp/shoal-docker/docker.sock}"
DIR="${SHOAL_DOCKER_DIR:-$(dirname "$SOCK")}"
IMAGE="shoal/busybox:latest"
READY_TIMEOUT_S="${SHOAL_DOCKER_READY_TIMEOUT:-60}"
LOG="$DIR/dockerd.log"
PIDFILE="$DIR/dockerd.pid"

say() { echo "docker-up: $*" >&2; }
die() { echo "docker-up: ERROR: $*" >&2; exit 1; }

dk() { docker -H "unix://$SOCK" "$@"; }
answers() { [ -S "$SOCK" ] && command -v docker >/dev/null 2>&1 && dk version --format '{{.Server.Version}}' >/dev/null 2>&1; }

apt_updated=0
apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to install $* (or start an engine yourself and set SHOAL_DOCKER_SOCKET)"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
  fi
  say "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

find_busybox() {
  for b in /bin/busybox /usr/bin/busybox /usr/local/bin/busybox; do
    if [ -x "$b" ] && "$b" --list >/dev/null 2>&1; then echo "$b"; return 0; fi
  done
  return 1
}

ensure_image() {
  if dk image inspect "$IMAGE" >/dev/null 2>&1; then return 0; fi
  local bb
  bb="$(find_busybox)" || { apt_install busybox-static; bb="$(find_busybox)" || die "busybox not found after install"; }
  # A dynamically linked busybox would need its libc inside the image: insist on a static one.
  if command -v file >/dev/null 2>&1 && file -L "$bb" | grep -q 'dynamically linked'; then
    die "$bb is dynamically linked; install busybox-static"
  fi
  local root
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root/bin" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/etc"
  cp "$bb" "$root/bin/busybox"
  local applet
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  # busybox has no `true`/`false` binaries on every build: make sure both exist.
  [ -e "$root/bin/true" ] || printf '#!/bin/sh\nexit 0\n' >"$root/bin/true"
  [ -e "$root/bin/false" ] || printf '#!/bin/sh\nexit 1\n' >"$root/bin/false"
  chmod +x "$root/bin/true" "$root/bin/false"
  chmod 1777 "$root/tmp"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  say "importing $IMAGE from $bb"
  tar -C "$root" -c . | dk import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >&2
}

if answers; then
  ensure_image
  echo "$SOCK"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "no Docker engine answers at $SOCK and starting one needs root"

pkgs=()
command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
command -v docker >/dev/null 2>&1 || pkgs+=(docker.io)
find_busybox >/dev/null || pkgs+=(busybox-static)
if [ "${#pkgs[@]}" -gt 0 ]; then
  # dedupe
  mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
  apt_install "${pkgs[@]}"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after apt-get install docker.io"

mkdir -p "$DIR/data" "$DIR/exec"
# A stale pid file from a crashed run: drop it if that process is gone.
if [ -f "$PIDFILE" ]; then
  old="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
    say "dockerd (pid $old) is running but not answering yet; waiting"
  else
    rm -f "$PIDFILE" "$SOCK"
  fi
fi

if [ ! -f "$PIDFILE" ]; then
  say "starting dockerd at $SOCK (log: $LOG)"
  # setsid: a new session, so the engine outlives this script, the test runner and its terminal.
  setsid dockerd \
    --host "unix://$SOCK" \
    --data-root "$DIR/data" \
    --exec-root "$DIR/exec" \
    --pidfile "$PIDFILE" \
    --bridge=none --iptables=false --ip6tables=false \
    >>"$LOG" 2>&1 </dev/null &
  disown || true
fi

deadline=$((SECONDS + READY_TIMEOUT_S))
until answers; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "dockerd did not answer at $SOCK within ${READY_TIMEOUT_S}s; last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "dockerd exited; last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.2
done

ensure_image
echo "$SOCK"
