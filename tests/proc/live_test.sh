#!/usr/bin/env bash
# Live mode: the pool's read-only checks against a real Solana endpoint.
#   THORP_LIVE_RPC_URL=https://mainnet.helius-rpc.com/?api-key=... make test
# Without it the test says it is skipped, and why. Nothing here sends a
# transaction. The URL's key must never reach the output.
. "$(dirname "$0")/../helpers/proc.sh"
if [ -z "${THORP_LIVE_RPC_URL:-}" ]; then
  echo "skip - live endpoint checks: THORP_LIVE_RPC_URL is not set (set it to a real Solana RPC URL to run them)"
  finish; exit
fi
cat >"$work/live.lua" <<'LUA'
local url = os.getenv("THORP_LIVE_RPC_URL")
local pool = thorp.rpc.new_pool{ endpoints = { { name = "live", url = url } }, timeout_ms = 10000 }
local function say(ok, what) io.stdout:write(ok and "PASS " or "MISS ", what, "\n") end
local v = pool:call("getVersion")
say(v.ok and type(v.result["solana-core"]) == "string", "getVersion")
local s = pool:call("getSlot")
say(s.ok and type(s.result) == "number" and s.result > 1e8, "getSlot")
local bh = pool:call("getLatestBlockhash", { { commitment = "confirmed" } })
say(bh.ok and type(bh.result.value.blockhash) == "string", "getLatestBlockhash")
local bal = pool:call("getBalance", { "11111111111111111111111111111111" })   -- the system program
say(bal.ok and type(bal.result.value) == "number", "getBalance")
local b = pool:batch({ { "getSlot" }, { "getBlockHeight" } })
say(b.ok and b.results[1].ok and b.results[2].ok, "batch")
local bad = pool:call("getBalance")   -- no account: invalid params on every node
say(not bad.ok and bad.error.code == "RPC_ERROR", "an invalid param comes back as RPC_ERROR")
pool:start_health(400, 50)
thorp.sleep(1500)
pool:stop_health()
local e = pool:endpoints()[1]
say(e.slot ~= nil and e.healthy and e.state == "CLOSED", "health checker reads the slot")
io.stdout:write("URL ", e.url, "\n")
LUA
out=$("$THORP" exec "$work/live.lua" 2>"$work/live.err")
for what in getVersion getSlot getLatestBlockhash getBalance batch "an invalid param comes back as RPC_ERROR" \
            "health checker reads the slot"; do
  echo "$out" | grep -qx "PASS $what"; check $? "live: $what"
done
key=$(echo "$THORP_LIVE_RPC_URL" | sed -n 's/.*[?&]api-key=\([^&]*\).*/\1/p')
if [ -n "$key" ]; then
  ! grep -qF "$key" <(echo "$out"; cat "$work/live.err"); check $? "live: the API key appears nowhere in the output"
fi
finish
