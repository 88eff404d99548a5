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

# Config mistakes are errors naming the key and what is allowed, exit 2, for run and check.
cfgcase() { # NAME FILE-TEXT [ENV=VALUE] -- expects exit 2 and PATTERN in stderr
  local what=$1 text=$2 pat=$3; shift 3
  printf '%s\n' "$text" >"$work/c.lua"
  for cmd in check run; do
    env "$@" timeout 10 "$THORP" $cmd -c "$work/c.lua" >/dev/null 2>"$work/e"; rc=$?
    grep -qF -- "$pat" "$work/e"; found=$?
    check $([ $rc = 2 ] && [ $found = 0 ] && echo 0 || echo 1) "$cmd: $what exits 2 naming it (rc=$rc)"
  done
}
cfgcase "a misspelt endpoint key" 'return { rpc = { endpoints = { { name = "a", url = "http://127.0.0.1:9", wieght = 2 } } } }' \
  "rpc.endpoints[1]: unknown key wieght (allowed: " X=1
cfgcase "endpoints written as a map" 'return { rpc = { endpoints = { a = { url = "http://127.0.0.1:9" } } } }' \
  "not a map (found key a" X=1
cfgcase "a NaN weight" 'return { rpc = { endpoints = { { name = "a", url = "http://127.0.0.1:9", weight = 0/0 } } } }' \
  "weight = nan: must be a finite number > 0" X=1
cfgcase "an infinite weight" 'return { rpc = { endpoints = { { name = "a", url = "http://127.0.0.1:9", weight = math.huge } } } }' \
  "weight = inf: must be a finite number > 0" X=1
cfgcase "duplicate endpoint names" 'return { rpc = { endpoints = { { name = "a", url = "http://127.0.0.1:9" }, { name = "a", url = "http://127.0.0.1:8" } } } }' \
  "duplicate endpoint name" X=1
cfgcase "an unknown nested key" 'return { shutdown = { timeout = 5 } }' \
  "unknown key shutdown.timeout (allowed in shutdown: enabled, force_timeout_ms, timeout_ms)" X=1
cfgcase "a missing policy file" 'return { policies = { "no-such-policy.lua" } }' \
  "policies[1] = no-such-policy.lua: no such policy file or folder" X=1
cfgcase "a force timeout below the shutdown timeout" 'return {}' \
  "FORCE_SHUTDOWN_TIMEOUT_MS=1000 (shutdown.force_timeout_ms) must be at least SHUTDOWN_TIMEOUT_MS=2000" \
  SHUTDOWN_TIMEOUT_MS=2000 FORCE_SHUTDOWN_TIMEOUT_MS=1000
cfgcase "a misspelt THORP_ variable" 'return {}' "THORP_HTTP_PROT: unknown THORP_ variable, did you mean THORP_HTTP_PORT?" \
  THORP_HTTP_PROT=8080

# No endpoints: a loud warning in check and at start.
"$THORP" check >/dev/null 2>"$work/e"; rc=$?
check $(is $rc 0) "check with no endpoints still passes (rc=$rc)"
grep -q "WARNING: no RPC endpoints configured" "$work/e"; check $? "but warns loudly"
printf 'return {}\n' >"$work/empty_policy.lua"
"$THORP" run "$work/empty_policy.lua" >/dev/null 2>"$work/e" &
pid=$!
wait_for "no RPC endpoints configured" "$work/e"; check $? "run with no endpoints warns at start"
kill -TERM $pid; wait $pid

# --name=VALUE is the same as --name VALUE; exec -e runs code like luajit -e.
printf 'return { http = { host = "127.0.0.1" } }\n' >"$work/cfg.lua"
out=$("$THORP" exec --config="$work/cfg.lua" --http-port=0 -e 'print(thorp.config.current.http.host, thorp.config.current.http.port)' 2>/dev/null)
check $(is "$out" "$(printf '127.0.0.1\t0')") "--config=F and --http-port=N work ($out)"
"$THORP" check --http-port=notaport >/dev/null 2>"$work/e"; rc=$?
check $(is $rc 2) "--http-port=bad is a config error (rc=$rc)"
out=$("$THORP" exec -e 'x = 40' -e 'print(x + 2)' 2>/dev/null)
check $(is "$out" 42) "thorp exec -e CODE -e CODE ($out)"
printf 'print(x * 2, ...)\n' >"$work/after_e.lua"
out=$("$THORP" exec -e 'x = 21' "$work/after_e.lua" a b 2>/dev/null | tr '\t' ' ')
check $(is "$out" "42 a b") "exec -e CODE then FILE with its arguments ($out)"
mkdir -p "$work/mods"; printf 'return { v = 7 }\n' >"$work/mods/mymod.lua"
out=$("$THORP" exec -I "$work/mods" -e 'print(require("mymod").v)' 2>/dev/null)
check $(is "$out" 7) "-I DIR puts DIR on the module path ($out)"
out=$(LUA_PATH="$work/mods/?.lua;;" "$THORP" exec -e 'print(require("mymod").v)' 2>/dev/null)
check $(is "$out" 7) "LUA_PATH works too ($out)"

# thorp test: a fresh state directory per run unless THORP_STATE_DIR is set, removed afterwards.
mkdir -p "$work/bot"
cat >"$work/bot/once_spec.lua" <<'LUA'
describe("once", function() it("runs the first time", function()
  assert.is_true((thorp.idempotency.once("k1", function() end)))
  io.stdout:write("STATE ", thorp.config.current.state_dir, "\n")
end) end)
LUA
a=$(cd "$work/bot" && env -u THORP_STATE_DIR "$THORP" test once_spec.lua 2>&1)
b=$(cd "$work/bot" && env -u THORP_STATE_DIR "$THORP" test once_spec.lua 2>&1)
case "$a/$b" in *"1 passed, 0 failed"*/*"1 passed, 0 failed"*) r=0 ;; *) r=1 ;; esac
check $r "an idempotency spec passes on the rerun too"
[ ! -e "$work/bot/thorp-state" ]; check $? "and nothing is written to ./thorp-state"
d=$(echo "$a" | awk '/^STATE / {print $2}')
[ -n "$d" ] && [ ! -e "$d" ]; check $? "the temporary state directory is removed afterwards ($d)"
out=$(cd "$work/bot" && THORP_STATE_DIR="$work/keep" "$THORP" test once_spec.lua 2>&1 | awk '/^STATE / {print $2}')
check $(is "$out" "$work/keep") "THORP_STATE_DIR is honoured by thorp test ($out)"

# Endpoint headers reach the provider; their values never reach a log line.
cat >"$work/upstream.py" <<'PY'
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[2], "a") as f: f.write("KEY=%s\n" % self.headers.get("x-api-key"))
        req = json.loads(body)
        out = json.dumps({"jsonrpc": "2.0", "id": req.get("id"), "result": 1234}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)  # a free port, written once listening
with open(sys.argv[1] + ".tmp", "w") as f: f.write(str(srv.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
PY
python3 "$work/upstream.py" "$work/uport" "$work/seen" &
for _ in $(seq "$WAIT_TRIES"); do [ -s "$work/uport" ] && break; sleep 0.05; done
uport=$(cat "$work/uport")
cat >"$work/hdr.lua" <<LUA
return { rpc = { endpoints = { { name = "keyed", url = "http://127.0.0.1:$uport/", headers = { ["x-api-key"] = "HDRSECRET77" } } } } }
LUA
out=$(LOG_LEVEL=debug "$THORP" exec -c "$work/hdr.lua" -e 'local r = thorp.rpc.call("getSlot"); thorp.log.warn("oops " .. thorp.config.current.rpc.endpoints[1].headers["x-api-key"]); print(r.ok and r.result or r.error.message)' 2>"$work/e")
check $(is "$out" 1234) "a call to a header-authenticated endpoint succeeds ($out)"
grep -q "KEY=HDRSECRET77" "$work/seen"; check $? "the endpoint's header was sent"
! grep -q HDRSECRET77 "$work/e"; check $? "and its value never appears in a log line"

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
