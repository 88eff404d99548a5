#!/usr/bin/env bash
# What user code prints passes the secret scrubber: print, io.write and
# io.stdout:write from a policy (its chunk, a module it requires, on_start, a
# handler) and from `thorp exec` never show an endpoint's API key or path token.
. "$(dirname "$0")/../helpers/proc.sh"

export THORP_RPC_URLS="main=https://rpc.example.com/PATHTOK9876/?api-key=SECRETXYZ"
no_secret() { ! grep -q 'SECRETXYZ\|PATHTOK9876' "$1"; }

cat >"$work/show.lua" <<'LUA'
local url = thorp.config.current.rpc.endpoints[1].url
print("print:", url)
io.write("io.write: ", url, "\n")
io.stdout:write("stdout: ", url, "\n")
print("bare:", url:match("api%-key=(.*)$"), url:match("/(PATHTOK%d+)/"))
LUA
"$THORP" exec "$work/show.lua" >"$work/exec.out" 2>"$work/exec.err"; rc=$?
check $(is $rc 0) "thorp exec prints the URL (rc=$rc)"
check $(is "$(grep -c 'https://rpc.example.com/\*\*\*/?api-key=\*\*\*' "$work/exec.out")" 3) \
  "print, io.write and io.stdout:write show it redacted ($(head -c 300 "$work/exec.out"))"
grep -q '^bare:	\*\*\*	\*\*\*$' "$work/exec.out"; check $? "the key and token alone are hidden too"
no_secret "$work/exec.out"; check $? "no secret on exec's stdout"
"$THORP" exec -e 'print(thorp.config.current.rpc.endpoints[1].url)' >"$work/e.out" 2>/dev/null
no_secret "$work/e.out" && grep -q 'api-key=\*\*\*' "$work/e.out"; check $? "nor from exec -e ($(cat "$work/e.out"))"
out=$("$THORP" exec -e 'print(1, nil, "plain text", 2.5); io.write(3, "\n")' 2>/dev/null)
check $(is "$out" "1	nil	plain text	2.5
3") "plain output is unchanged ($out)"

mkdir -p "$work/pol"
printf 'print("module:", thorp.config.current.rpc.endpoints[1].url)\nreturn {}\n' >"$work/pol/helper.lua"
cat >"$work/pol/show.lua" <<'LUA'
require "helper"
local url = thorp.config.current.rpc.endpoints[1].url
print("load:", url)
return {
  on_start = function()
    io.write("on_start: ", url, "\n")
    thorp.publish("show", { url = url })
  end,
  subscribers = { shower = { topic = "show", handler = function(ev)
    io.stdout:write("handler: ", ev.url, "\n")
    io.stdout:flush()
    thorp.log.info("handler printed")
  end } },
}
LUA
"$THORP" run "$work/pol/show.lua" >"$work/run.out" 2>"$work/run.err" &
host=$!
wait_for "handler printed" "$work/run.err"; check $? "the policy's handler ran"
kill -TERM $host; wait $host; check $(is $? 0) "the host exits 0"
for w in module load on_start handler; do
  grep -q "^$w:.*https://rpc.example.com/\*\*\*/?api-key=\*\*\*" "$work/run.out"
  check $? "a policy's $w output shows the URL redacted"
done
no_secret "$work/run.out"; check $? "no secret on the host's stdout ($(head -c 400 "$work/run.out"))"
no_secret "$work/run.err"; check $? "nor in its log"

finish
