#!/usr/bin/env bash
# Front-door throughput: wrk -c64 -t2 -d5s POSTing getSlot straight to the
# simulator, then through thorp's JSON-RPC front door (thorp run with the
# simulator's endpoints). Prints requests/s and p99 for both and the ratio.
# Figures only; nothing is asserted. Needs wrk.
set -u
cd "$(dirname "$0")/../.."
THORP=${THORP:-$(realpath ./thorp)}
THORP_SIM=${THORP_SIM:-$(realpath build/thorp-sim)}
CONNS=${BENCH_CONNS:-64} DUR=${BENCH_DURATION:-5s}
command -v wrk >/dev/null || { echo "   wrk not installed (scripts/install-deps): skipped"; exit 0; }
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"getSlot"}'
done = function(summary, latency)
  io.write(string.format("RESULT %.0f %.2f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.requests))
end
LUA

"$THORP_SIM" --count 3 --base-port 0 >"$work/sim.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do grep -q SIM_READY "$work/sim.out" && break; sleep 0.05; done
urls=$(sed -n 's/^SIM_READY //p' "$work/sim.out")
[ -n "$urls" ] || { echo "   simulator did not start"; exit 1; }
IFS=, read -r u1 u2 u3 <<<"$urls"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo 'return {}' >"$work/policy.lua"
THORP_RPC_AUTO_BATCH=${THORP_RPC_AUTO_BATCH:-0} THORP_RPC_URLS="a=$u1,b=$u2,c=$u3" THORP_HTTP_PORT=$port THORP_STATE_DIR="$work/state" LOG_LEVEL=error \
  "$THORP" run "$work/policy.lua" >"$work/host.out" 2>&1 & pids+=($!)
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.05; done

# the same request every time (concurrent identical reads share one upstream call)
# and a distinct getBalance per request (every call goes upstream on its own)
sed -e '/^wrk.body/d' "$work/post.lua" >"$work/distinct.lua"
cat >>"$work/distinct.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. n .. ',"method":"getBalance","params":["Wallet' .. n .. '"]}')
end
LUA
run() { # script url -> "rps p99_ms errors requests"
  wrk -c"$CONNS" -t2 -d"$DUR" -s "$work/$1" "$2" 2>/dev/null | sed -n 's/^RESULT //p'
}
row() { read -r rps p99 err _ <<<"$2"; printf "   %-44s %8s req/s   p99 %7s ms   errors %s\n" "$1" "${rps:-?}" "${p99:-?}" "${err:-?}"; }
ratio() { awk -v f="$1" -v d="$2" 'BEGIN { if (d > 0) printf "%.0f%%", 100 * f / d; else print "?" }'; }
for kind in post.lua distinct.lua; do
  label=$([ $kind = post.lua ] && echo "getSlot, identical" || echo "getBalance, a distinct account per request")
  direct=$(run $kind "$u1/"); front=$(run $kind "http://127.0.0.1:$port/")
  echo "   $label (wrk -c$CONNS -t2 -d$DUR):"
  row "direct to the simulator" "$direct"
  row "through the front door" "$front"
  echo "   front door / direct: $(ratio "$(echo $front | cut -d' ' -f1)" "$(echo $direct | cut -d' ' -f1)") (target >= 70%)"
done
coalesced=$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^thorp_frontdoor_coalesced_total //p')
echo "   identical reads that shared an upstream call: ${coalesced:-?}"

# the distinct case again with upstream auto-batching (THORP_RPC_AUTO_BATCH=100)
kill "${pids[-1]}" 2>/dev/null; wait "${pids[-1]}" 2>/dev/null
THORP_RPC_AUTO_BATCH=100 THORP_RPC_URLS="a=$u1,b=$u2,c=$u3" THORP_HTTP_PORT=$port THORP_STATE_DIR="$work/state" \
  LOG_LEVEL=error "$THORP" run "$work/policy.lua" >"$work/host2.out" 2>&1 & pids+=($!)
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.05; done
direct=$(run distinct.lua "$u1/"); front=$(run distinct.lua "http://127.0.0.1:$port/")
echo "   getBalance, distinct, with THORP_RPC_AUTO_BATCH=100 (wrk -c$CONNS -t2 -d$DUR):"
row "direct to the simulator" "$direct"
row "through the front door (auto-batched)" "$front"
echo "   front door / direct: $(ratio "$(echo $front | cut -d' ' -f1)" "$(echo $direct | cut -d' ' -f1)") (target >= 70%)"
