#!/usr/bin/env bash
# The send path against LiteSVM (real signature checks, real programs):
# installs `litesvm` from npm into tests/litesvm/node_modules (once), starts
# tests/litesvm/server.mjs, runs tests/litesvm/send_test.lua in the host, and
# stops the node. Output: ok/FAIL lines and "N passed, N failed". Without
# node/npm or the npm registry it prints a "skip - reason" line.
. "$(dirname "$0")/../helpers/proc.sh"
dir=$(cd "$(dirname "$0")/../litesvm" && pwd)
skip() { echo "skip - LiteSVM send test: $1"; echo "0 passed, 0 failed"; exit 0; }
command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm are not installed"
if [ ! -d "$dir/node_modules/litesvm" ]; then
  (cd "$dir" && timeout 300 npm install --no-package-lock --no-audit --no-fund --loglevel=error) >"$work/npm.log" 2>&1 ||
    skip "npm install litesvm failed (no registry?): $(tail -1 "$work/npm.log")"
fi
node "$dir/server.mjs" >"$work/node.out" 2>&1 &
node_pid=$!
wait_for LITESVM_READY "$work/node.out" || { echo "FAIL - the LiteSVM node did not start"; cat "$work/node.out"; exit 1; }
url=$(sed -n 's/^LITESVM_READY //p' "$work/node.out")
THORP_RPC_URLS="svm=$url" LOG_LEVEL=warn timeout 60 "$THORP" exec "$dir/send_test.lua" 2>"$work/host.err"
rc=$?
kill "$node_pid"; wait "$node_pid" 2>/dev/null
[ $rc -eq 0 ] || { echo "  host log:"; tail -20 "$work/host.err" | sed 's/^/  /'; }
exit $rc
