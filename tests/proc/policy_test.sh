#!/usr/bin/env bash
# Process-level tests of policies: thorp check, a bad policy at start, and
# hot reload by SIGHUP and `thorp reload` on a running host.
. "$(dirname "$0")/../helpers/proc.sh"

printf 'return { priorities = { rpc = { getSlot = "urgent" } }, breakers = { default = { cooldown = 1 } } }\n' >"$work/bad.lua"
"$THORP" check "$work/bad.lua" >/dev/null 2>"$work/check.err"; rc=$?
check $(is $rc 2) "thorp check on a bad policy exits 2"
grep -q 'bad.lua: priorities.rpc.getSlot = urgent: allowed "critical", "normal", "low"' "$work/check.err"
check $? "names the file, the key and what is allowed"
grep -q 'bad.lua: breakers.default: unknown option "cooldown"' "$work/check.err"; check $? "and lists every error"
"$THORP" run "$work/bad.lua" >/dev/null 2>&1; check $(is $? 2) "thorp run with a bad policy exits 2"
(cd "$(dirname "$THORP")" && "$THORP" check policies/default.lua examples/memecoin_policy.lua >/dev/null 2>&1)
check $? "the shipped policies are valid"

# An installed binary (PREFIX/bin) finds PREFIX/share/thorp/policies when given none.
mkdir -p "$work/prefix/bin" "$work/prefix/share/thorp/policies" "$work/elsewhere"
cp "$THORP" "$work/prefix/bin/thorp"
cp "$(dirname "$THORP")/policies/default.lua" "$work/prefix/share/thorp/policies/"
(cd "$work/elsewhere" && THORP_STATE_DIR="$work/inst-state" timeout 3 "$work/prefix/bin/thorp" run >/dev/null 2>"$work/inst.err" &
 sleep 1; kill -TERM $! 2>/dev/null; wait)
grep "policy applied" "$work/inst.err" | grep -q 'share\\/thorp\\/policies\\/default.lua'
check $? "an installed thorp run loads PREFIX/share/thorp/policies by default"

printf 'return { priorities = { rpc = { getSlot = "low" } } }\n' >"$work/p.lua"
"$THORP" run "$work/p.lua" >"$work/host.out" 2>"$work/host.err" &
host=$!
wait_for "console listening" "$work/host.err"
v=$(echo '=thorp.policy.status().version' | "$THORP" repl 2>/dev/null)
check $(is "$v" 1) "version 1 after start ($v)"
printf 'return { priorities = { rpc = { getSlot = "critical" } } }\n' >"$work/p.lua"
kill -HUP $host
for _ in $(seq 100); do grep -q '"version":2' "$work/host.err" && break; sleep 0.05; done
out=$(echo '=thorp.policy.status().version, thorp.rpc.priorities().getSlot' | "$THORP" repl 2>/dev/null | tr '\t\n' '  ')
check $(is "$(echo $out)" '2 "critical"') "SIGHUP applies the edited policy ($out)"
printf 'return { priorities = \n' >"$work/p.lua"
"$THORP" reload >"$work/reload.out" 2>&1; rc=$?
check $(is $rc 1) "thorp reload of a broken policy exits 1"
grep -q "p.lua:2" "$work/reload.out"; check $? "and shows the error with file and line"
out=$(echo '=thorp.policy.status().version, thorp.rpc.priorities().getSlot' | "$THORP" repl 2>/dev/null | tr '\t\n' '  ')
check $(is "$(echo $out)" '2 "critical"') "the running policy is unchanged ($out)"
printf 'return { priorities = { rpc = { getSlot = "normal" } } }\n' >"$work/p.lua"
"$THORP" reload >/dev/null 2>&1; check $? "thorp reload of a fixed policy exits 0"
kill -TERM $host; wait $host; check $(is $? 0) "host exits 0"

finish
