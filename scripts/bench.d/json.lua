-- thorp.json against lua-cjson on real answer shapes: a 100-account
-- getMultipleAccounts (base64 data, rentEpoch u64::MAX, some nulls) and a
-- getTransaction (json encoding, meta with balances, logs, token balances).
-- BENCH_SCALE (default 1) scales the iteration counts.
local thorp = require "thorp"
local json = thorp.json
local cjson = require "cjson"
local scale = tonumber(os.getenv("BENCH_SCALE")) or 1

local function bench(name, n, fn)
  n = math.max(1, math.floor(n * scale))
  fn(math.min(n, 50))
  thorp.sleep(0)
  local t0 = thorp.now()
  fn(n)
  local us = (thorp.now() - t0) * 1e3 / n
  print(("%-58s %9.2f us/op  (%d ops)"):format(name, us, n))
  return us
end

local sol = thorp.solana
local function key(i) return tostring(sol.pubkey(sol.sha256("k" .. i))) end
local data165 = sol.base64.encode(("\7"):rep(165))

local accounts = {}
for i = 1, 100 do
  accounts[i] = i % 10 == 0 and "null" or ('{"data":["%s","base64"],"executable":false,"lamports":2039280,'
    .. '"owner":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","rentEpoch":18446744073709551615,"space":165}'):format(data165)
end
local gma = '{"jsonrpc":"2.0","result":{"context":{"apiVersion":"2.1.13","slot":312345678},"value":['
  .. table.concat(accounts, ",") .. ']},"id":1}'

local keys, pre, post, logs = {}, {}, {}, {}
for i = 1, 24 do keys[i] = '"' .. key(i) .. '"'; pre[i] = tostring(1e9 + i * 7919); post[i] = tostring(1e9 + i * 7000) end
for i = 1, 40 do logs[i] = ('"Program %s invoke [%d]"'):format(key(i % 24), 1 + i % 3) end
local tb = ('{"accountIndex":%d,"mint":"%s","owner":"%s","programId":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",'
  .. '"uiTokenAmount":{"amount":"123456789012","decimals":6,"uiAmount":123456.789012,"uiAmountString":"123456.789012"}}')
local tbs = {}
for i = 1, 6 do tbs[i] = tb:format(i, key(100 + i), key(200 + i)) end
local ixs = {}
for i = 1, 8 do
  ixs[i] = ('{"accounts":[1,2,3,4,5,6],"data":"3Bxs4h24hBtQy9rw","programIdIndex":%d,"stackHeight":null}'):format(i)
end
local gtx = '{"jsonrpc":"2.0","result":{"blockTime":1733100000,"meta":{"computeUnitsConsumed":185432,"err":null,'
  .. '"fee":105000,"innerInstructions":[{"index":2,"instructions":[' .. table.concat(ixs, ",") .. ']}],'
  .. '"loadedAddresses":{"readonly":[],"writable":[]},"logMessages":[' .. table.concat(logs, ",") .. '],'
  .. '"postBalances":[' .. table.concat(post, ",") .. '],"postTokenBalances":[' .. table.concat(tbs, ",") .. '],'
  .. '"preBalances":[' .. table.concat(pre, ",") .. '],"preTokenBalances":[' .. table.concat(tbs, ",") .. '],'
  .. '"rewards":[],"status":{"Ok":null}},"slot":312345600,"transaction":{"message":{"accountKeys":['
  .. table.concat(keys, ",") .. '],"header":{"numReadonlySignedAccounts":0,"numReadonlyUnsignedAccounts":9,'
  .. '"numRequiredSignatures":1},"instructions":[' .. table.concat(ixs, ",") .. '],"recentBlockhash":"'
  .. key(999) .. '"},"signatures":["' .. sol.base58.encode(("\9"):rep(64)) .. '"]},"version":"legacy"},"id":1}'

print(("getMultipleAccounts answer: %d bytes; getTransaction answer: %d bytes"):format(#gma, #gtx))
assert(tostring(json.decode(gma).result.value[1].rentEpoch) == "18446744073709551615ULL")
local sink
for _, c in ipairs({ { "getMultipleAccounts (100 accounts)", gma, 2000 }, { "getTransaction", gtx, 5000 } }) do
  local ours = bench("thorp.json.decode  " .. c[1], c[3], function(n) for _ = 1, n do sink = json.decode(c[2]) end end)
  local theirs = bench("cjson.decode       " .. c[1], c[3], function(n) for _ = 1, n do sink = cjson.decode(c[2]) end end)
  print(("  thorp.json / cjson time: %.2f (cjson rounds rentEpoch to %s)"):format(ours / theirs,
    string.format("%.0f", cjson.decode(gma).result.value[1].rentEpoch)))
end
local doc = json.decode(gtx)
local cdoc = cjson.decode(gtx)
bench("thorp.json.encode  getTransaction", 3000, function(n) for _ = 1, n do sink = json.encode(doc) end end)
bench("cjson.encode       getTransaction", 3000, function(n) for _ = 1, n do sink = cjson.encode(cdoc) end end)
local send = { jsonrpc = "2.0", id = 12345, method = "sendTransaction", params = { sol.base64.encode(("\5"):rep(1200)),
  { encoding = "base64", skipPreflight = true, maxRetries = 0 } } }
bench("thorp.json.encode  sendTransaction request (1.6 KB)", 20000, function(n)
  for _ = 1, n do sink = json.encode(send) end
end)
bench("cjson.encode       sendTransaction request (1.6 KB)", 20000, function(n)
  for _ = 1, n do sink = cjson.encode(send) end
end)
assert(sink ~= nil)
