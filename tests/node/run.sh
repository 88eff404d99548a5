#!/usr/bin/env bash
# A real client proves the front door: installs @solana/kit from npm into
# tests/node/node_modules (once), starts the simulator and `thorp run` with
# THORP_HTTP_PORT, and runs kit_test.mjs against it; then solana_test.mjs
# compares thorp's transactions with kit's. Output: ok/FAIL lines and one
# closing "N passed, N failed" for both. Without node/npm or the npm registry it prints a
# "skip - reason" line and "0 passed, 0 failed".
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
THORP=$(realpath "${THORP:-$root/thorp}")
THORP_SIM=$(realpath "${THORP_SIM:-$root/build/thorp-sim}")
skip() { echo "skip - @solana/kit integration: $1"; echo "0 passed, 0 failed"; exit 0; }
command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm are not installed"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $major is too old (20 or later)"
work=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
if [ ! -d "$here/node_modules/@solana/kit" ] || [ ! -d "$here/node_modules/@solana/web3.js" ]; then
  (cd "$here" && timeout 300 npm install --no-package-lock --no-audit --no-fund --loglevel=error) >"$work/npm.log" 2>&1 ||
    skip "npm install @solana/kit failed (no registry?): $(tail -1 "$work/npm.log")"
fi
"$THORP_SIM" --count 3 --base-port 0 >"$work/sim.out" 2>&1 & pids+=($!)
for _ in $(seq 200); do grep -q SIM_READY "$work/sim.out" && break; sleep 0.05; done
IFS=, read -r u1 u2 u3 <<<"$(sed -n 's/^SIM_READY //p' "$work/sim.out")"
IFS=, read -r w1 w2 w3 <<<"$(sed -n 's/^SIM_WS //p' "$work/sim.out")"
cat >"$work/thorp.conf.lua" <<EOF
return { rpc = { endpoints = { { name = "a", url = "$u1", ws_url = "$w1" }, { name = "b", url = "$u2", ws_url = "$w2" },
                               { name = "c", url = "$u3", ws_url = "$w3" } } } }
EOF
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
echo 'return {}' >"$work/policy.lua"
# the endpoints (with their ws_url) come from the config file only
env -u THORP_RPC_URLS THORP_HTTP_PORT=$port THORP_STATE_DIR="$work/state" LOG_LEVEL=error \
  "$THORP" run -c "$work/thorp.conf.lua" "$work/policy.lua" >"$work/host.log" 2>&1 & pids+=($!)
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.05; done
THORP_URL="http://127.0.0.1:$port/" SIM_URL_1="$u1" timeout 120 node "$here/kit_test.mjs" | tee "$work/kit.out"
rc=${PIPESTATUS[0]}
# subscriptions (kit and web3.js) through the front door's WebSocket
THORP_URL="http://127.0.0.1:$port/" THORP_WS_URL="ws://127.0.0.1:$port/" SIM_WS_1="$w1" SIM_WS_2="$w2" SIM_WS_3="$w3" \
  timeout 120 node "$here/ws_subscriptions_test.mjs" | tee "$work/ws.out"
rc_ws=${PIPESTATUS[0]}; [ $rc -eq 0 ] && rc=$rc_ws
[ $rc -eq 0 ] || { echo "  host log:"; tail -20 "$work/host.log" | sed 's/^/  /'; }
(cd "$here" && THORP="$THORP" timeout 120 node solana_test.mjs) | tee "$work/sol.out"
rc2=${PIPESTATUS[0]}
p=0; f=0
for o in "$work/kit.out" "$work/ws.out" "$work/sol.out"; do
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$o" | tail -1)
  if [ -n "$line" ]; then p=$((p + $(echo "$line" | awk '{print $1}'))); f=$((f + $(echo "$line" | awk '{print $3}'))); else f=$((f + 1)); echo "FAIL - $o printed no counts"; fi
done
echo "$p passed, $f failed"
[ $rc -eq 0 ] && [ $rc2 -eq 0 ]
