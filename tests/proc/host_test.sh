#!/usr/bin/env bash
# Process-level tests of the host foundation: command line, exit codes,
# config errors, exec lifetime, errors in coroutines and timers, logs, signals.
. "$(dirname "$0")/../helpers/proc.sh"

"$THORP" version >"$work/v" 2>&1; rc=$?
check $(is "$rc" 0) "thorp version exits 0"
grep -q "^thorp " "$work/v"; check $? "thorp version prints the version"

"$THORP" >/dev/null 2>&1; check $(is $? 2) "no command is bad usage (exit 2)"
"$THORP" frobnicate >/dev/null 2>"$work/e"; check $(is $? 2) "unknown command exits 2"
grep -q "unknown command frobnicate" "$work/e"; check $? "unknown command is named"

BACKPRESSURE_MAX_QUEUE_SIZE=lots SHUTDOWN_TIMEOUT_MS=-1 ENABLE_GRACEFUL_SHUTDOWN=maybe \
  "$THORP" check >/dev/null 2>"$work/e"; rc=$?
check $(is "$rc" 2) "thorp check with three bad values exits 2"
n=$(grep -c "thorp: config:" "$work/e")
check $(is "$n" 3) "thorp check lists all three bad values ($n)"
grep -q 'ENABLE_GRACEFUL_SHUTDOWN="maybe": allowed true, false, 1, 0, yes or no' "$work/e"
check $? "the message names the variable, the value and what is allowed"
"$THORP" check --set backpressure.max_queue_size=0 >/dev/null 2>"$work/e"
check $(is $? 2) "a bad --set value exits 2"

cat >"$work/many.lua" <<'LUA'
local done = 0
for _ = 1, 10000 do
  thorp.spawn(function()
    thorp.sleep(math.random() * 100)
    done = done + 1
    if done == 10000 then io.stdout:write("DONE ", done, "\n") end  -- exec must not exit before this
  end)
end
LUA
out=$("$THORP" exec "$work/many.lua" 2>"$work/e"); rc=$?
check $(is "$rc" 0) "exec of 10,000 sleeping coroutines exits 0"
check $(is "$out" "DONE 10000") "all 10,000 coroutines finished before exit ($out)"

cat >"$work/timer_err.lua" <<'LUA'
thorp.timer.after(10, function() error("boom inside a timer") end)
thorp.timer.after(50, function() io.stdout:write("STILL_RUNNING\n") end)
LUA
out=$("$THORP" exec "$work/timer_err.lua" 2>"$work/e"); rc=$?
check $(is "$out" "STILL_RUNNING") "an error in a timer leaves the host running"
check $(is "$rc" 0) "and the script still exits 0"
grep -q "boom inside a timer" "$work/e" && grep -q "stack traceback" "$work/e"
check $? "the timer's error is logged with its traceback"

printf 'error("main failed")\n' >"$work/main_err.lua"
"$THORP" exec "$work/main_err.lua" >/dev/null 2>"$work/e"; rc=$?
check $(is "$rc" 1) "an error in the main script exits 1"
printf 'this is not lua(\n' >"$work/syntax.lua"
"$THORP" exec "$work/syntax.lua" >/dev/null 2>"$work/e"; rc=$?
check $(is "$rc" 2) "a script that does not compile exits 2"
grep -q "syntax.lua:1" "$work/e"; check $? "and names the file and line"

printf 'thorp.log.info("hello", { n = 1 })\n' >"$work/log.lua"
"$THORP" exec "$work/log.lua" 2>"$work/e" >/dev/null
python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); assert r["msg"]=="hello" and r["level"]=="info" and r["n"]==1' "$work/e"
check $? "logs are JSON lines when stderr is not a terminal"
LOG_LEVEL=warn "$THORP" exec "$work/log.lua" 2>"$work/e" >/dev/null
check $(is "$(wc -c <"$work/e")" 0) "LOG_LEVEL=warn hides info lines"

cat >"$work/secret.lua" <<'LUA'
local cfg = thorp.config.current
thorp.log.warn("endpoint configured " .. cfg.rpc.endpoints[1].url)
io.stdout:write(thorp.config.current.rpc.endpoints[1].display_url, "\n")
LUA
out=$(HELIUS_RPC_URL="https://mainnet.helius-rpc.com/?api-key=SECRETKEY123" "$THORP" exec "$work/secret.lua" 2>"$work/e")
! grep -q SECRETKEY123 "$work/e"; check $? "an API key formatted into a log line by mistake is scrubbed"
check $(is "$out" "https://mainnet.helius-rpc.com/?api-key=***") "endpoint URLs are shown redacted"

(cd / && "$THORP" exec "$work/log.lua" 2>/dev/null); check $? "runs from any directory"
THORP_NO_DEV_LIB=1 "$THORP" exec "$work/many.lua" >"$work/o" 2>/dev/null
check $(is "$(cat "$work/o")" "DONE 10000") "runs on the bytecode linked into the binary alone"

printf 'thorp.timer.every(1000, function() end)\nio.stdout:write("READY\\n"); io.stdout:flush()\n' >"$work/forever.lua"
"$THORP" exec "$work/forever.lua" >"$work/o" 2>/dev/null &
pid=$!
for _ in $(seq 100); do grep -q READY "$work/o" 2>/dev/null && break; sleep 0.05; done
kill -TERM $pid; wait $pid; rc=$?
check $(is "$rc" 0) "SIGTERM with nothing open exits 0 (rc=$rc)"

cat >"$work/stuck.lua" <<'LUA'
require("thorp.sched").spawn_opts({ name = "greedy-handler" }, function()
  local t = thorp.now(); while thorp.now() - t < 500 do end
end)
LUA
THORP_WATCHDOG_MS=150 "$THORP" exec "$work/stuck.lua" >/dev/null 2>"$work/wd.err"; rc=$?
check $(is "$rc" 0) "a task that hogs the loop does not crash the host"
grep -q 'task greedy-handler has run [0-9]* ms without yielding' "$work/wd.err"
check $? "the watchdog reports the stuck task by name"
n=$(grep -c 'greedy-handler' "$work/wd.err")
check $([ "$n" -ge 2 ] && [ "$n" -le 3 ] && echo 0 || echo 1) "and reports it again at 2x the limit, not on every tick ($n)"

cat >"$work/bp.lua" <<'LUA'
local bp = thorp.backpressure.default
local n = 0
for _ = 1, 20 do if bp:try_acquire("low").accepted then n = n + 1 end end
print(n, bp:stats().enabled)
LUA
out=$(ENABLE_BACKPRESSURE_MANAGEMENT=false BACKPRESSURE_MAX_QUEUE_SIZE=10 "$THORP" exec "$work/bp.lua" 2>/dev/null)
check $(is "$out" "$(printf '20\tfalse')") "ENABLE_BACKPRESSURE_MANAGEMENT=false admits past the capacity ($out)"
out=$(ENABLE_BACKPRESSURE_MANAGEMENT=true BACKPRESSURE_MAX_QUEUE_SIZE=10 "$THORP" exec "$work/bp.lua" 2>/dev/null)
check $(is "$out" "$(printf '8\ttrue')") "and true sheds low work past the warning threshold ($out)"

finish
