-- thorp's send path against a LiteSVM node (tests/litesvm/server.mjs): real
-- signature checks and program execution. Run by tests/proc/send_litesvm_test.sh
-- as `thorp exec` with THORP_RPC_URLS pointing at the node. Prints ok/FAIL
-- lines and "N passed, N failed".
local S = thorp.solana
local pass, fail = 0, 0
local function check(ok, what, detail)
  if ok then pass = pass + 1 else fail = fail + 1 end
  print(("%s - %s%s"):format(ok and "ok  " or "FAIL", what, detail and (" (" .. tostring(detail) .. ")") or ""))
end
local function balance(pk)
  local r = thorp.rpc.call("getBalance", { tostring(pk) })
  return r.ok and r.result.value or nil
end
local fast = { poll_ms = 50, rebroadcast_ms = 500, timeout_ms = 20000 }

local payer = S.keypair.generate()
local air = thorp.rpc.call("requestAirdrop", { tostring(payer.pubkey), 2000000000 })
check(air.ok, "requestAirdrop funds a new keypair", air.ok and air.result or air.error.message)
check(balance(payer.pubkey) == 2000000000, "the payer holds the airdrop", balance(payer.pubkey))

local bh = assert(S.blockhash())
local to = S.keypair.generate().pubkey
local tx = S.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh.blockhash,
                          instructions = { S.system.transfer(payer.pubkey, to, 1000000) } }
tx:sign(payer)
local res = S.send_and_confirm(tx, fast)
check(res.ok and res.status == "confirmed", "a system transfer lands and is confirmed", res.status)
check(res.signature == tx:signature() and type(res.slot) == "number", "with its signature and slot", res.slot)
check(balance(to) == 1000000, "the recipient is credited", balance(to))
check(balance(payer.pubkey) == 2000000000 - 1000000 - 5000, "the payer is debited the amount and the fee", balance(payer.pubkey))

local memo = S.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh.blockhash,
                            instructions = { S.memo("thorp on litesvm", { payer.pubkey }) } }
memo:sign(payer)
local before = balance(payer.pubkey)
res = S.send_and_confirm(memo, fast)
check(res.ok, "a memo signed by the payer lands", res.status)
check(balance(payer.pubkey) == before - 5000, "and costs the fee", balance(payer.pubkey))

local bytes = S.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh.blockhash,
                             instructions = { S.memo("tampered", { payer.pubkey }) } }
bytes:sign(payer)
bytes = bytes:serialize()
local bad = bytes:sub(1, 20) .. string.char((bytes:byte(21) + 1) % 256) .. bytes:sub(22)
before = balance(payer.pubkey)
res = S.send_and_confirm(bad, fast)
check(not res.ok and res.status == "failed" and res.sends == 1, "a bad signature is refused at preflight",
      res.error and res.error.message:sub(1, 60))
check(balance(payer.pubkey) == before, "and costs nothing", balance(payer.pubkey))

local big = S.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh.blockhash,
                           instructions = { S.system.transfer(payer.pubkey, to, 50 * 1000000000) } }
big:sign(payer)
res = S.send_and_confirm(big, { skip_preflight = true, poll_ms = 50, timeout_ms = 20000 })
check(res.status == "failed" and type(res.err) == "table", "a transfer beyond the balance lands as failed, with its error",
      res.status)

local prepared, info = require("thorp.sender").prepare({ fee_payer = payer.pubkey, recent_blockhash = bh.blockhash,
  instructions = { S.system.transfer(payer.pubkey, to, 5000000), S.memo("with a tight compute limit") } }, payer)
check(prepared and info.units > 0 and info.limit < 1400000, "simulateTransaction sizes the compute unit limit",
      info and ("units " .. info.units .. ", limit " .. info.limit) or (prepared == nil and "no tx"))
if prepared then
  res = S.send_and_confirm(prepared, fast)
  check(res.ok, "the prepared transaction lands", res.status)
end

print(("%d passed, %d failed"):format(pass, fail))
