#!/usr/bin/env bash
# Process-level tests of shutdown, the journal and idempotency: signals, exit
# codes, restarts, kill -9, a second host, a corrupt journal.
. "$(dirname "$0")/../helpers/proc.sh"

cat >"$work/hold.lua" <<'LUA'
thorp.shutdown.register("TRADE", "held", { token = "BONK" })
io.stdout:write("SCRIPT_READY\n"); io.stdout:flush()
while true do thorp.sleep(100) end
LUA

# A second host on the same state directory refuses to start.
"$THORP" exec "$work/hold.lua" >"$work/a.log" 2>&1 &
pid=$!
wait_for SCRIPT_READY "$work/a.log"
"$THORP" exec "$work/hold.lua" >"$work/b.log" 2>&1; rc=$?
check $(is $rc 2) "a second host on the same state directory exits 2 (rc=$rc)"
grep -q "in use by another running thorp host (pid $pid)" "$work/b.log"
check $? "and says which host holds it"

# A second SIGINT forces the exit at once, the trade stays journaled.
kill -INT $pid; sleep 0.3; kill -INT $pid; wait $pid; rc=$?
check $(is $rc 1) "second SIGINT forces exit 1 (rc=$rc)"
grep -q "second SIGINT" "$work/a.log"; check $? "the forced exit is logged with its reason"
echo 'for _, t in ipairs(thorp.journal.open_trades()) do print(t.id) end' >"$work/list.lua"
out=$("$THORP" exec "$work/list.lua" 2>"$work/list.err")
check $(is "$out" held) "the abandoned trade is listed by the next run ($out)"
grep -q "trade left open by an earlier run" "$work/list.err"; check $? "and logged at start"

# Shutdown progress is logged while waiting.
# (a state directory of its own: run a left trade "held" open, and an open id is refused)
THORP_STATE_DIR="$work/state-c" SHUTDOWN_TIMEOUT_MS=1500 "$THORP" exec "$work/hold.lua" >"$work/c.log" 2>&1 &
pid=$!
wait_for SCRIPT_READY "$work/c.log"
kill -TERM $pid; wait $pid; rc=$?
check $(is $rc 1) "SIGTERM with a stuck trade exits 1 after the timeout"
grep 'shutdown waiting' "$work/c.log" | grep -q '"held"'; check $? "progress names the open trade"

# Graceful shutdown off: SIGTERM exits at once; the open trade is kept.
THORP_STATE_DIR="$work/state-d" ENABLE_GRACEFUL_SHUTDOWN=false "$THORP" exec "$work/hold.lua" >"$work/d.log" 2>&1 &
pid=$!
wait_for SCRIPT_READY "$work/d.log"
t0=$(date +%s%3N); kill -TERM $pid; wait $pid; rc=$?; dt=$(( $(date +%s%3N) - t0 ))
check $(is $rc 1) "ENABLE_GRACEFUL_SHUTDOWN=false exits 1 with a trade open (rc=$rc, ${dt} ms)"

# Once draining, only critical work is admitted: bus events and RPC calls.
cat >"$work/drain.lua" <<'LUA'
thorp.shutdown.register("TRADE", "d1", {})
thorp.timer.after(200, function() thorp.shutdown.complete("d1") end)
thorp.shutdown.initiate("TEST")
local okn, why = thorp.publish("prices", { p = 1 }, "normal")
local okc = thorp.publish("trade_signal", { t = 1 }, "critical")
local r = thorp.rpc.call("getSlot", {}, { priority = "normal" })
print(tostring(okn) .. "/" .. tostring(why) .. "/" .. tostring(okc) .. "/" .. r.error.code)
LUA
out=$("$THORP" exec "$work/drain.lua" 2>/dev/null)
check $(is "$out" "false/SHUTTING_DOWN/true/SHUTTING_DOWN") "draining sheds normal events and calls, keeps critical ($out)"

# Idempotency survives a restart.
cat >"$work/once.lua" <<'LUA'
local ok, r = thorp.idempotency.once("signal:42", function() return "PLACED" end, { ttl_ms = 60000 })
print(ok and r or r.code)
LUA
a=$("$THORP" exec "$work/once.lua" 2>/dev/null); b=$("$THORP" exec "$work/once.lua" 2>/dev/null)
check $(is "$a/$b" PLACED/DUPLICATE) "idempotency key survives a restart ($a/$b)"

# kill -9 in the middle of registering loses nothing that register returned.
cat >"$work/crash.lua" <<'LUA'
for i = 1, 300 do
  thorp.shutdown.register("TRADE", "c" .. i, { n = i })
  if i % 2 == 0 then thorp.shutdown.complete("c" .. i) end
  io.stdout:write("REG ", i, "\n"); io.stdout:flush()
end
while true do thorp.sleep(100) end
LUA
rm -rf "$THORP_STATE_DIR"
"$THORP" exec "$work/crash.lua" >"$work/e.log" 2>&1 &
pid=$!
wait_for "REG 300" "$work/e.log"; kill -KILL $pid; wait $pid 2>/dev/null
out=$("$THORP" exec "$work/list.lua" 2>/dev/null | wc -l)
check $(is "$out" 150) "kill -9 keeps every odd trade open ($out of 150)"

# A corrupt journal stops the start with a clear message.
rm -rf "$THORP_STATE_DIR"; mkdir -p "$THORP_STATE_DIR"
head -c 8192 /dev/urandom >"$THORP_STATE_DIR/journal.db"
"$THORP" exec "$work/list.lua" >/dev/null 2>"$work/f.err"; rc=$?
check $(is $rc 2) "a corrupt journal exits 2 (rc=$rc)"
grep -q "journal.db.*move it aside" "$work/f.err"; check $? "and says what to do"

# An unusable state directory is a clear start error.
THORP_STATE_DIR=/dev/null/state "$THORP" exec "$work/list.lua" >/dev/null 2>"$work/g.err"; rc=$?
check $(is $rc 2) "an unusable state directory exits 2"
grep -q "cannot create state directory /dev/null/state" "$work/g.err"; check $? "and names it"

finish
