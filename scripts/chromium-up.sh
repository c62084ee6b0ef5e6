#!/usr/bin/env bash
# Provision headless Chromium for the simulator report test (idempotent, non-interactive).
#
#   scripts/chromium-up.sh          # prints the browser's path as its LAST line
#
# If a Chromium binary is already on the PATH (chromium, chromium-browser, google-chrome) or at
# $SHOAL_CHROMIUM, it only checks that it starts headless. Otherwise (root only) it installs the
# Debian package `chromium` with apt-get. The test (test/sim-report.test.ts) runs it with
# --headless --no-sandbox --disable-gpu --disable-background-networking; it never loads anything
# from the network (the report is one self-contained file).
set -euo pipefail

say() { echo "chromium-up: $*" >&2; }
die() { echo "chromium-up: ERROR: $*" >&2; exit 1; }

find_browser() {
  if [ -n "${SHOAL_CHROMIUM:-}" ] && [ -x "$SHOAL_CHROMIUM" ]; then echo "$SHOAL_CHROMIUM"; return 0; fi
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}

if ! BIN="$(find_browser)"; then
  [ "$(id -u)" = 0 ] || die "chromium missing and not root: install it (apt-get install chromium) or set SHOAL_CHROMIUM"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install chromium by hand and set SHOAL_CHROMIUM"
  export DEBIAN_FRONTEND=noninteractive
  say "apt-get update"
  apt-get update -qq >&2
  say "apt-get install chromium"
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
  BIN="$(find_browser)" || die "chromium installed but not found on PATH"
fi

# Smoke test: render a trivial page headless (catches missing shared libraries early).
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo '<html><body><p id="ok">ok</p></body></html>' >"$TMP/t.html"
if ! timeout 60 "$BIN" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-dev-shm-usage --no-first-run --user-data-dir="$TMP/profile" \
  --dump-dom "file://$TMP/t.html" 2>"$TMP/err" | grep -q 'id="ok"'; then
  cat "$TMP/err" >&2
  die "$BIN does not render headless"
fi
say "ready: $BIN"
echo "$BIN"
