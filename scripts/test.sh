#!/usr/bin/env bash
# The project's whole test command (README, .ci/run): lint, type-check, then every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export NODE_OPTIONS="${NODE_OPTIONS:-} --no-warnings=ExperimentalWarning"
echo "== lint (biome)"
npx --no-install biome check .
echo "== type-check (tsc)"
npx --no-install tsc --noEmit -p .
echo "== tests (vitest)"
mkdir -p .data
report=.data/vitest-report.json
rm -f "$report"
status=0
npx --no-install vitest run --reporter=default --reporter=json --outputFile="$report" "$@" || status=$?
# One plain closing line that any CI reader understands.
if [ -f "$report" ]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
  ' "$report"
fi
exit $status
