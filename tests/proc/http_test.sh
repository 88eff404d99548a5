#!/usr/bin/env bash
# Process-level tests of the operator surface: `thorp run` with
# THORP_HTTP_PORT against the simulator: /health, /ready, /metrics (valid
# text, counters that move), the JSON-RPC front door (single, batch, ids,
# errors, the policy hook), failover the client never sees, SIGHUP in the
# metrics, and SIGTERM: /health 503 while an in-flight call drains.
. "$(dirname "$0")/../helpers/proc.sh"
THORP_SIM=$(realpath "${THORP_SIM:-$(dirname "$THORP")/build/thorp-sim}")
command -v curl >/dev/null || { echo "FAIL - curl is needed (scripts/install-deps)"; echo "0 passed, 1 failed"; exit 1; }
unset HELIUS_RPC_URL CHAINSTACK_RPC_URL PUBLIC_RPC_URL THORP_HTTP THORP_HTTP_HOST

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$THORP_SIM" --count 3 --base-port 0 >"$work/sim.out" 2>&1 &
wait_for SIM_READY "$work/sim.out"; check $? "the simulator starts"
IFS=, read -r u1 u2 u3 <<<"$(sed -n 's/^SIM_READY //p' "$work/sim.out")"
fault() { curl -s -o /dev/null -d "$2" "$1/admin/fault"; }

cat >"$work/policy.lua" <<'LUA'
return {
  priorities = { rpc = { sendTransaction = "critical", getBalance = "normal" } },
  hooks = { frontdoor_request = function(req)
    if req.method == "getSlotViaHook" then req.method = "getSlot" end
  end },
}
LUA
port=$(free_port)
base="http://127.0.0.1:$port"
export THORP_RPC_URLS="a=$u1,b=$u2,c=$u3"
THORP_HTTP_PORT=$port SHUTDOWN_TIMEOUT_MS=10000 "$THORP" run "$work/policy.lua" >"$work/host.log" 2>&1 &
host=$!
ready=1
for _ in $(seq 200); do curl -sf "$base/ready" >/dev/null 2>&1 && { ready=0; break; }; sleep 0.05; done
check $ready "thorp run serves /ready on THORP_HTTP_PORT"
grep -q '"msg":"http listening"' "$work/host.log"; check $? "and logs the address it listens on"

out=$(curl -s -w ' %{http_code}' "$base/health")
echo "$out" | grep -q '"status":"ok".* 200$' && echo "$out" | grep -q '"endpoints_healthy":3'
check $? "/health is 200 ok ($out)"

rpc() { curl -s -H 'Content-Type: application/json' -d "$1" "$base/"; }
metric() { curl -s "$base/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

curl -s "$base/metrics" >"$work/m1"
python3 - "$work/m1" <<'PY'; check $? "the scrape is valid Prometheus text (names, labels, TYPE before samples, no duplicates)"
import re, sys
text = open(sys.argv[1]).read()
types, seen, series, errs = {}, set(), set(), []
for n, line in enumerate(text.splitlines(), 1):
    if line.startswith("# TYPE "):
        _, _, name, t = line.split(" ", 3)
        if name in types or name in seen: errs.append(f"{n}: TYPE {name} again or after samples")
        types[name] = t
    elif line and not line.startswith("#"):
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$', line)
        if not m: errs.append(f"{n}: bad sample {line!r}"); continue
        fam = re.sub(r"_(bucket|sum|count)$", "", m.group(1)) if re.sub(r"_(bucket|sum|count)$", "", m.group(1)) in types else m.group(1)
        if fam not in types: errs.append(f"{n}: {fam} has no TYPE")
        seen.add(fam); float(m.group(3).replace("Inf", "inf"))
        key = m.group(1) + (m.group(2) or "")
        if key in series: errs.append(f"{n}: duplicate {key}")
        series.add(key)
print("\n".join(errs), file=sys.stderr)
sys.exit(1 if errs or not series else 0)
PY
req0=$(metric 'thorp_rpc_endpoint_requests_total{endpoint="a"}')
ok0=$(metric 'thorp_frontdoor_calls_total{outcome="ok"}'); ok0=${ok0:-0}

out=$(rpc '{"jsonrpc":"2.0","id":"abc-1","method":"getSlot"}')
echo "$out" | grep -Eq '^\{"jsonrpc":"2.0","result":[0-9]+,"id":"abc-1"\}$'; check $? "a single call is answered with its id ($out)"
out=$(rpc '[{"jsonrpc":"2.0","id":1,"method":"getSlot"},{"jsonrpc":"2.0","id":2,"method":"getBalance","params":["W"]},{"jsonrpc":"2.0","id":3,"method":"getLatestBlockhash"}]')
echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert [x["id"] for x in d]==[1,2,3] and all("result" in x for x in d)'
check $? "a batch is answered in order with every id"
out=$(rpc '{"jsonrpc":"2.0","id":5,"method":')
check $(is "$out" '{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}') "malformed JSON gets -32700 ($out)"
out=$(rpc '{"jsonrpc":"2.0","id":6,"method":"noSuchMethod"}')
check $(is "$out" '{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":6}') "an upstream error passes through unchanged ($out)"
out=$(rpc '{"jsonrpc":"2.0","id":7,"method":"getSlotViaHook"}')
echo "$out" | grep -q '"result":[0-9]'; check $? "the policy's frontdoor_request hook rewrites a request ($out)"

fault "$u1" '{"down":true}'
bad=0
for i in $(seq 10); do
  out=$(rpc "{\"jsonrpc\":\"2.0\",\"id\":$i,\"method\":\"getBalance\",\"params\":[\"W$i\"]}")
  echo "$out" | grep -q '"value":1500000000' || bad=$((bad + 1))
done
check $(is $bad 0) "with endpoint a down, every call still succeeds ($bad failed)"
fault "$u1" '{"reset":true}'

req1=$(metric 'thorp_rpc_endpoint_requests_total{endpoint="a"}')
ok1=$(metric 'thorp_frontdoor_calls_total{outcome="ok"}')
terr=$(metric 'thorp_rpc_endpoint_errors_total{endpoint="a",class="transport_error"}')
[ "${req1:-0}" -gt "${req0:-0}" ]; check $? "endpoint request counters move (${req0} -> ${req1})"
[ "${ok1:-0}" -ge $((ok0 + 13)) ]; check $? "front-door call counters move (${ok0} -> ${ok1})"
[ "${terr:-0}" -ge 1 ]; check $? "the failed attempts on a are counted as transport errors (${terr})"
check $(is "$(metric thorp_policy_version)" 1) "policy version 1 after start"
kill -HUP $host
for _ in $(seq 100); do [ "$(metric thorp_policy_version)" = 2 ] && break; sleep 0.05; done
check $(is "$(metric thorp_policy_version)" 2) "SIGHUP: the metrics show policy version 2"
check $(is "$(metric thorp_policy_last_reload_ok)" 1) "and the reload as ok"

# A second host on the same port refuses to start, naming the port.
THORP_STATE_DIR="$work/state2" THORP_HTTP_PORT=$port "$THORP" run "$work/policy.lua" >"$work/second.log" 2>&1; rc=$?
check $(is $rc 2) "a second host on the same port exits 2 (rc=$rc)"
grep -q "cannot listen on 127.0.0.1:$port" "$work/second.log"; check $? "and says why"

# Shutdown: an in-flight call drains, /health turns 503 meanwhile, new normal calls get 503.
for u in "$u1" "$u2" "$u3"; do fault "$u" '{"latency_ms":1500}'; done
rpc '{"jsonrpc":"2.0","id":"slow","method":"sendTransaction","params":["AQAB"]}' >"$work/slow.out" &
slow=$!
sleep 0.4
kill -TERM $host
sleep 0.3
out=$(curl -s -w ' %{http_code}' "$base/health")
echo "$out" | grep -q '"status":"draining".* 503$'; check $? "/health is 503 draining during shutdown ($out)"
check $(is "$(metric thorp_shutdown_in_progress)" 1) "thorp_shutdown_in_progress is 1"
out=$(curl -s -w ' %{http_code}' -d '{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["W"]}' "$base/")
echo "$out" | grep -q '"SHUTTING_DOWN".* 503$'; check $? "a new normal call is refused with 503 ($out)"
wait $slow
grep -q '"result":"SimSig' "$work/slow.out"; check $? "the in-flight transaction completes ($(cat "$work/slow.out"))"
wait $host; rc=$?
check $(is $rc 0) "the host exits 0 once it has drained (rc=$rc)"

# THORP_HTTP_PORT=0 (the default): no listener.
echo 'io.write(tostring(thorp.http.port()), "\n")' >"$work/port.lua"
out=$(THORP_HTTP_PORT=0 "$THORP" exec "$work/port.lua" 2>/dev/null)
check $(is "$out" 0) "THORP_HTTP_PORT=0 starts no listener ($out)"
# A real client: @solana/kit (installed from npm by the test) through the front door.
bash "$(dirname "$0")/../node/run.sh" >"$work/node.out" 2>&1
grep -E '^(ok|FAIL|skip) ' "$work/node.out"
counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$work/node.out" | tail -1)
if [ -n "$counts" ]; then
  pass=$((pass + $(echo "$counts" | awk '{print $1}'))); fail=$((fail + $(echo "$counts" | awk '{print $3}')))
else
  check 1 "the @solana/kit test ran ($(tail -3 "$work/node.out" | tr '\n' ' '))"
fi
finish
