#!/usr/bin/env bash
# The meme-coin example trades for real against the simulator's ledger: a
# demo wallet created with mode 0600, signed transactions confirmed, the
# wallet debited; after kill -9 mid-trade the next start's recover()
# settles the open trade by its signature.
. "$(dirname "$0")/../helpers/proc.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
THORP_SIM=$(realpath "${THORP_SIM:-$root/build/thorp-sim}")

"$THORP_SIM" --count 2 --base-port 0 >"$work/sim.out" 2>&1 &
wait_for SIM_READY "$work/sim.out"; check $? "the simulator starts"
IFS=, read -r u1 u2 <<<"$(sed -n 's/^SIM_READY //p' "$work/sim.out")"
export THORP_RPC_URLS="a=$u1,b=$u2" THORP_DEMO_FEED_MS=150 SHUTDOWN_TIMEOUT_MS=5000 LOG_LEVEL=info
count() { grep -c "$1" "$2" 2>/dev/null || true; }

"$THORP" run "$root/policies/default.lua" "$root/examples/memecoin_policy.lua" >"$work/a.out" 2>"$work/a.log" &
pid=$!
for _ in $(seq "$WAIT_TRIES"); do [ "$(count '"trade confirmed"' "$work/a.log")" -ge 3 ] && break; sleep 0.05; done
n=$(count '"trade confirmed"' "$work/a.log")
[ "$n" -ge 3 ]; check $? "the example confirms signed trades ($n)"
wallet="$THORP_STATE_DIR/demo-wallet.json"
check $(is "$(stat -c %a "$wallet" 2>/dev/null)" 600) "the demo wallet is created with mode 0600"
pk=$(sed -n 's/.*"msg":"demo wallet created".*"pubkey":"\([^"]*\)".*/\1/p' "$work/a.log" | head -1)
bal=$(curl -s -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"getBalance\",\"params\":[\"$pk\"]}" "$u1" |
      sed -n 's/.*"value":\([0-9]*\).*/\1/p')
[ -n "$bal" ] && [ "$bal" -lt 1500000000 ]; check $? "the wallet pays for them on the ledger ($bal lamports)"
! grep -q "SIMTX" "$work/a.log"; check $? "no fake transaction strings"
# the policy requires its bot module: one instance, which a reload keeps
same='=package.loaded.memecoin ~= nil and thorp.policy.current().subscribers.executor.handler == package.loaded.memecoin.on_signal'
out=$(timeout 10 "$THORP" repl -e "$same" 2>&1)
check $(is "$out" true) "the policy's handler is the required memecoin module's ($out)"
timeout 10 "$THORP" reload >/dev/null 2>&1; check $? "thorp reload of the example applies"
out=$(timeout 10 "$THORP" repl -e "$same" 2>&1)
check $(is "$out" true) "and keeps the same module instance ($out)"

# kill -9 while trades are in flight: the leader drops everything first, so
# one is open for sure once a transaction reaches an endpoint after that (the
# trade is journaled before its first send)
curl -s -d '{"drop_all":true}' "$u1/admin/chain" >/dev/null
before=$(sim_sends "$u1" "$u2")
for _ in $(seq "$WAIT_TRIES"); do [ "$(sim_sends "$u1" "$u2")" -gt "$before" ] && break; sleep 0.05; done
[ "$(sim_sends "$u1" "$u2")" -gt "$before" ]; check $? "a trade is sent while the leader drops everything"
kill -9 "$pid"; wait "$pid" 2>/dev/null
curl -s -d '{"drop_all":false}' "$u1/admin/chain" >/dev/null
THORP_DEMO_FEED=0 "$THORP" run "$root/policies/default.lua" "$root/examples/memecoin_policy.lua" >"$work/b.out" 2>"$work/b.log" &
pid=$!
for _ in $(seq "$WAIT_TRIES"); do grep -q '"open trade reconciled"' "$work/b.log" && break; sleep 0.05; done
grep -q '"open trade reconciled"' "$work/b.log"; check $? "the next start's recover() reconciles the trade the crash left open"
for _ in $(seq "$WAIT_TRIES"); do grep '"open trade reconciled"' "$work/b.log" | grep -q '"status":"confirmed"' && break; sleep 0.05; done
grep '"open trade reconciled"' "$work/b.log" | grep -q '"status":"confirmed"'
check $? "and completed as confirmed (it landed, or was rebroadcast from the journal until it did)"
kill -TERM "$pid"; wait "$pid"; rc=$?
check $(is $rc 0) "and the host then exits 0 (rc=$rc)"
[ "$fail" = 0 ] || { echo "  run 1:"; grep -v '"rpc attempt failed"' "$work/a.log" | tail -5 | cut -c1-300 | sed 's/^/  /'; \
                     echo "  run 2:"; tail -8 "$work/b.log" | cut -c1-300 | sed 's/^/  /'; }
finish
