#!/usr/bin/env bash
# Process-level tests of shutdown, the journal and idempotency: signals, exit
# codes, restarts, kill -9, a second host, a corrupt journal.
. "$(dirname "$0")/../helpers/proc.sh"

cat >"$work/hold.lua" <<'LUA'
local id = os.getenv("TRADE_ID") or "held"
local op, err = thorp.shutdown.register("TRADE", id, { token = "BONK" })
if not op then io.stdout:write("REFUSED ", err.code, " ", err.message, "\n"); io.stdout:flush(); return end
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

# The next run may not reuse the id of a trade left open: refused, not replaced.
out=$("$THORP" exec "$work/hold.lua" 2>/dev/null)
case "$out" in "REFUSED DUPLICATE trade held is already open in the journal, left open by an earlier run"*) r=0 ;; *) r=1 ;; esac
check $r "registering the id of a trade an earlier run left open is refused ($out)"
out=$("$THORP" exec "$work/list.lua" 2>/dev/null)
check $(is "$out" held) "and the open trade is still there, unchanged"

# Shutdown progress is logged while waiting.
TRADE_ID=held2 SHUTDOWN_TIMEOUT_MS=1500 "$THORP" exec "$work/hold.lua" >"$work/c.log" 2>&1 &
pid=$!
wait_for SCRIPT_READY "$work/c.log"
kill -TERM $pid; wait $pid; rc=$?
check $(is $rc 1) "SIGTERM with a stuck trade exits 1 after the timeout"
grep 'shutdown waiting' "$work/c.log" | grep -q '"held2"'; check $? "progress names the open trade"

# Graceful shutdown off: SIGTERM exits at once; the open trade is kept.
TRADE_ID=held3 ENABLE_GRACEFUL_SHUTDOWN=false "$THORP" exec "$work/hold.lua" >"$work/d.log" 2>&1 &
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

# What is about to be sent survives kill -9; the outcome goes to the history.
cat >"$work/send.lua" <<'LUA'
assert(thorp.shutdown.register("TRADE", "snd-1", { token = "WIF" }))
assert(thorp.journal.record_send("snd-1", { signature = "5VERYsig", last_valid_block_height = 4242, tx = "\1\2\0\3" }))
assert(thorp.shutdown.register("TRADE", "snd-2", {}))
thorp.shutdown.complete("snd-2", { status = "failed", err = { InstructionError = { 0, "Custom" } }, slot = 77 })
io.stdout:write("SENT\n"); io.stdout:flush()
while true do thorp.sleep(100) end
LUA
rm -rf "$THORP_STATE_DIR"
"$THORP" exec "$work/send.lua" >"$work/s.log" 2>&1 &
pid=$!
wait_for SENT "$work/s.log"; kill -KILL $pid; wait $pid 2>/dev/null
cat >"$work/reconcile.lua" <<'LUA'
local t = thorp.journal.open_trades()[1]
local h = thorp.journal.history{ status = "failed" }[1]
print(t.id, t.signature, t.last_valid_block_height, #t.tx, t.tx:byte(3), h.id, h.slot, h.err.InstructionError[2])
LUA
out=$("$THORP" exec "$work/reconcile.lua" 2>/dev/null | tr '\t' ' ')
check $(is "$out" "snd-1 5VERYsig 4242 4 0 snd-2 77 Custom") "signature, block height and signed bytes survive kill -9; outcomes are in the history ($out)"

# An idempotency key claimed and never finished (kill -9 inside fn) is IN_DOUBT, not done.
cat >"$work/doubt.lua" <<'LUA'
local ok, r = thorp.idempotency.once("sig:doubt", function()
  io.stdout:write("INSIDE\n"); io.stdout:flush()
  while true do thorp.sleep(100) end
end)
LUA
"$THORP" exec "$work/doubt.lua" >"$work/dt.log" 2>&1 &
pid=$!
wait_for INSIDE "$work/dt.log"; kill -KILL $pid; wait $pid 2>/dev/null
cat >"$work/doubt2.lua" <<'LUA'
local ok, r = thorp.idempotency.once("sig:doubt", function() return "AGAIN" end)
local ok2, r2 = thorp.idempotency.once("signal:done", function() return 1 end)
local ok3, r3 = thorp.idempotency.once("signal:done", function() return 1 end)
print(r.code, type(r.claimed_at), r3.code, thorp.idempotency.release("sig:doubt"),
      (select(2, thorp.idempotency.once("sig:doubt", function() return "AGAIN" end))))
LUA
out=$("$THORP" exec "$work/doubt2.lua" 2>/dev/null | tr '\t' ' ')
check $(is "$out" "IN_DOUBT number DUPLICATE true AGAIN") "a key claimed by a killed run is IN_DOUBT with its claim time; release allows it again ($out)"

# Journal I/O failure mid-run (a file-size limit: every write fails): the host stays up,
# /health says 503 naming the journal, the error is counted and logged, the journal
# reopens when writes work again, and shutdown exits 1 because trades were refused.
cat >"$work/io.lua" <<'LUA'
io.stdout:write("PID ", require("thorp.sys").getpid(), "\n"); io.stdout:flush()
local n = 0
thorp.timer.every(20, function()
  n = n + 1
  local op, err = thorp.shutdown.register("TRADE", "io-" .. n, { n = n })
  if op then thorp.shutdown.complete(op.id, "confirmed") end
  io.stdout:write(op and "REG ok\n" or ("REG " .. err.code .. "\n")); io.stdout:flush()
end)
LUA
rm -rf "$THORP_STATE_DIR"
port=$(free_port)
# output through pipes: the file-size limit must only hit the journal
( THORP_HTTP_PORT=$port "$THORP" exec "$work/io.lua" 2> >(cat >"$work/io.err") | cat >"$work/io.out" ) &
wait_for "REG ok" "$work/io.out"
pid=$(awk '/^PID / {print $2; exit}' "$work/io.out")
prlimit --pid "$pid" --fsize=1:unlimited
wait_for "REG JOURNAL_ERROR" "$work/io.out"; check $? "a register during the failure is refused with JOURNAL_ERROR (no exception)"
h=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/health")
case "$h" in *"journal failing"*" 503") r=0 ;; *) r=1 ;; esac; check $r "/health answers 503 naming the journal ($h)"
n=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^thorp_journal_errors_total/ {print $2}')
check $([ "${n:-0}" -ge 1 ] && echo 0 || echo 1) "thorp_journal_errors_total counts the failures ($n)"
grep -q '"msg":"journal write failed' "$work/io.err"; check $? "the failure is logged"
[ ! -e "$THORP_STATE_DIR/journal.db-shm" ]; check $? "no mmapped -shm file exists (locking_mode=EXCLUSIVE)"
prlimit --pid "$pid" --fsize=unlimited:unlimited
wait_for "journal recovered" "$work/io.err"; check $? "the journal reopens once writes work again"
: >"$work/io.out"; wait_for "REG ok" "$work/io.out"; check $? "and trades are journaled again"
h=$(curl -s "http://127.0.0.1:$port/health")
case "$h" in *journal*) r=1 ;; *) r=0 ;; esac; check $r "/health no longer names the journal ($h)"
kill -TERM "$pid"; for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
wait; grep -q '"exit_code":1' "$work/io.err"; check $? "shutdown exits 1: some trades could not be journaled"
kill -0 "$pid" 2>/dev/null; check $(is $? 1) "the host is gone after SIGTERM"

# An idle host learns of the failure too: the periodic test write (THORP_JOURNAL_CHECK_MS)
# fails, /health turns 503 before any trade is tried, and it recovers the same way.
cat >"$work/idle.lua" <<'LUA'
io.stdout:write("PID ", require("thorp.sys").getpid(), "\n"); io.stdout:flush()
while true do thorp.sleep(1000) end
LUA
rm -rf "$THORP_STATE_DIR"
port=$(free_port)
( THORP_HTTP_PORT=$port THORP_JOURNAL_CHECK_MS=100 "$THORP" exec "$work/idle.lua" 2> >(cat >"$work/idle.err") | cat >"$work/idle.out" ) &
wait_for "PID " "$work/idle.out"
pid=$(awk '/^PID / {print $2; exit}' "$work/idle.out")
for _ in $(seq "$WAIT_TRIES"); do h=$(curl -s "http://127.0.0.1:$port/health") && break; sleep 0.05; done
case "$h" in *journal*) r=1 ;; *) r=0 ;; esac; check $r "an idle host's /health does not name a working journal ($h)"
prlimit --pid "$pid" --fsize=1:unlimited
wait_for '"msg":"journal write failed' "$work/idle.err"; check $? "an idle host's test write finds the failing journal"
h=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$port/health")
case "$h" in *"journal failing"*" 503") r=0 ;; *) r=1 ;; esac; check $r "and /health answers 503 with no trade tried ($h)"
prlimit --pid "$pid" --fsize=unlimited:unlimited
wait_for "journal recovered" "$work/idle.err"; check $? "it recovers once writes work again"
kill -TERM "$pid"; for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
wait; grep -q '"exit_code":0' "$work/idle.err"; check $? "and exits 0: no trade was refused"

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
