#!/usr/bin/env bash
# Trades survive a crash during a send: kill -9 while send_and_confirm is
# rebroadcasting, restart, and the next run reconciles every trade left open
# with a journaled signature against the simulator's ledger: landed,
# failed, expired, and still valid (rebroadcast from the journaled bytes
# until it lands).
. "$(dirname "$0")/../helpers/proc.sh"
THORP_SIM=$(realpath "${THORP_SIM:-$(dirname "$THORP")/build/thorp-sim}")

THORP_SIM_SLOT_MS=40 "$THORP_SIM" --count 2 --base-port 0 >"$work/sim.out" 2>&1 &
wait_for SIM_READY "$work/sim.out"; check $? "the simulator starts"
IFS=, read -r u1 u2 <<<"$(sed -n 's/^SIM_READY //p' "$work/sim.out")"
export THORP_RPC_URLS="a=$u1,b=$u2" LOG_LEVEL=info
chain() { curl -s -d "$1" "$u1/admin/chain"; }

# Run 1: four trades, then kill -9 while the last one is still being rebroadcast.
cat >"$work/run1.lua" <<'LUA'
local S, sender = thorp.solana, require "thorp.sender"
local kp = S.keypair.generate()
local bh = assert(S.blockhash())
local function tx(lamports)
  local t = S.transaction{ fee_payer = kp.pubkey, recent_blockhash = bh.blockhash,
                           instructions = { S.system.transfer(kp.pubkey, S.keypair.generate().pubkey, lamports) } }
  t:sign(kp)
  return t
end
local function journaled(id, t, lvbh)
  assert(thorp.shutdown.register("TRADE", id, {}))
  assert(thorp.journal.record_send(id, { signature = t:signature(), last_valid_block_height = lvbh, tx = t:serialize() }))
end
-- landed: sent by hand (the crash came before its confirmation was seen)
local landed = tx(1000)
journaled("t-landed", landed, bh.last_valid_block_height)
assert(thorp.rpc.call("sendTransaction", { landed:base64(), { encoding = "base64" } }).ok)
-- failed: lands with an error (more lamports than the wallet holds)
local failed = tx(99e9)
journaled("t-failed", failed, bh.last_valid_block_height)
assert(thorp.rpc.call("sendTransaction", { failed:base64(), { encoding = "base64", skipPreflight = true } }).ok)
-- expired: never reached a leader and its block height is long past
local h = thorp.rpc.call("getBlockHeight", {}).result
journaled("t-expired", tx(2000), h - 1)
-- valid: send_and_confirm is rebroadcasting (the leader drops every send) when the process dies
assert(thorp.rpc.http_post(os.getenv("SIM_URL") .. "/admin/chain", '{"drop_all":true}', 2000))
assert(thorp.shutdown.register("TRADE", "t-valid", {}))
local valid = tx(3000)
thorp.spawn(function() S.send_and_confirm(valid, { trade = "t-valid", rebroadcast_ms = 200 }) end)
while sender.stats.sends < 3 do thorp.sleep(20) end
print("SENDING " .. valid:signature()); io.stdout:flush()
while true do thorp.sleep(100) end
LUA
SIM_URL=$u1 "$THORP" exec "$work/run1.lua" >"$work/run1.out" 2>"$work/run1.err" &
pid=$!
wait_for SENDING "$work/run1.out"; check $? "run 1 journals four trades and is rebroadcasting the last"
valid_sig=$(sed -n 's/^SENDING //p' "$work/run1.out")
kill -9 "$pid"; wait "$pid" 2>/dev/null
echo 'for _, t in ipairs(thorp.journal.open_trades()) do print(t.id .. " " .. tostring(t.signature)) end' >"$work/list.lua"
# (this look only: no start-up reconciliation)
open=$(THORP_SEND_RECONCILE=false "$THORP" exec "$work/list.lua" 2>/dev/null | sort | tr '\n' ' ')
echo "$open" | grep -q "t-valid $valid_sig"; check $? "after kill -9 the trades are open with their signatures ($open)"

# Run 2: the leader takes transactions again; start-up reconciliation settles all four.
chain '{"drop_all":false}' >/dev/null
cat >"$work/run2.lua" <<'LUA'
local outcomes = require("thorp.sender").reconcile()
table.sort(outcomes, function(a, b) return a.id < b.id end)
for _, o in ipairs(outcomes) do print(o.id .. " " .. o.status .. " " .. tostring(o.slot)) end
local r = require("thorp.sender").stats.reconciled
print(("counted landed=%d failed=%d expired=%d rebroadcast=%d"):format(r.landed, r.failed, r.expired, r.rebroadcast))
print("open " .. #thorp.journal.open_trades())
local m = require("thorp.metrics").render()
for _, k in ipairs{ "landed", "failed", "expired", "rebroadcast" } do
  print("metric " .. k .. " " .. tostring(m:match('thorp_send_reconciled_total{outcome="' .. k .. '"} (%d+)')))
end
for _, t in ipairs(thorp.journal.history{}) do print("history " .. t.id .. " " .. t.status) end
LUA
timeout 30 "$THORP" exec "$work/run2.lua" >"$work/run2.out" 2>"$work/run2.err"; rc=$?
check $(is $rc 0) "run 2 exits 0 (rc=$rc)"
grep -q "^t-landed confirmed [0-9]" "$work/run2.out"; check $? "the landed trade is completed with its slot"
grep -q "^t-failed failed [0-9]" "$work/run2.out"; check $? "the failed trade is completed as failed"
grep -q "^t-expired expired" "$work/run2.out"; check $? "the expired trade is completed as expired"
grep -q "^t-valid confirmed [0-9]" "$work/run2.out"; check $? "the trade killed mid-send is rebroadcast from the journal and lands"
grep -q "^counted landed=1 failed=1 expired=1 rebroadcast=1" "$work/run2.out"; check $? "each outcome is counted"
grep -q "^open 0" "$work/run2.out"; check $? "no trade is left open"
[ "$(grep -c '^metric [a-z]* 1$' "$work/run2.out")" = 4 ]; check $? "and in Prometheus (thorp_send_reconciled_total)"
for s in "t-landed confirmed" "t-failed failed" "t-expired expired" "t-valid confirmed"; do
  grep -q "^history $s" "$work/run2.out"; check $? "journal history: $s"
done
[ "$(grep -c '"msg":"reconciled trade"' "$work/run2.err")" -ge 4 ]; check $? "each reconciliation is logged"
n=$(chain '{}' | sed -n 's/.*"transactions":\([0-9]*\).*/\1/p')
check $(is "$n" 3) "the ledger holds each landed signature once ($n)"
[ "$fail" = 0 ] || { echo "  run1:"; tail -5 "$work/run1.err" | sed 's/^/  /'; echo "  run2:"; cat "$work/run2.out" | sed 's/^/  /'; tail -8 "$work/run2.err" | sed 's/^/  /'; }
finish
