-- thorp.json: null sentinel, lossless u64/i64, round trips, errors, and the
-- RPC pool answering through it.
local thorp = require "thorp"
local json = thorp.json
local ffi = require "ffi"

describe("thorp.json", function()
  it("decodes null to the documented sentinel", function()
    local v = assert(json.decode('{"value":[null,{"lamports":5}],"x":null}'))
    assert.is_true(json.is_null(v.x))
    assert.are.equal(json.null, v.value[1])
    assert.are.equal(2, #v.value)
    assert.are.equal(5, v.value[2].lamports)
    assert.is_false(json.is_null(v.value[2]))
    assert.are.equal("null", tostring(json.null))
    assert.has_error(function() json.null.x = 1 end)
  end)

  it("keeps every digit of integers beyond 2^53 and writes them back unchanged", function()
    local text = '{"rentEpoch":18446744073709551615,"amount":9007199254740993,"neg":-9223372036854775808}'
    local v = assert(json.decode(text))
    assert.is_true(ffi.istype("uint64_t", v.rentEpoch))
    assert.are.equal(18446744073709551615ULL, v.rentEpoch)
    assert.are.equal(9007199254740993ULL, v.amount)
    assert.are.equal(-9223372036854775807LL - 1, v.neg)
    local back = json.encode(v)
    assert.truthy(back:find('"rentEpoch":18446744073709551615', 1, true))
    assert.truthy(back:find('"amount":9007199254740993', 1, true))
    assert.truthy(back:find('"neg":-9223372036854775808', 1, true))
    -- within 2^53 integers stay Lua numbers
    assert.are.equal("number", type(json.decode("9007199254740992")))
    assert.are.equal("number", type(json.decode("-9007199254740992")))
  end)

  it("decodes numbers, strings and escapes exactly", function()
    assert.are.equal(0.1, json.decode("0.1"))
    assert.are.equal(-1.5e-7, json.decode("-1.5e-7"))
    assert.are.equal(123456789.125, json.decode("123456789.125"))
    assert.are.equal(1.7976931348623157e308, json.decode("1.7976931348623157e308"))
    assert.are.equal('a"b\\c/\b\f\n\r\tz', json.decode('"a\\"b\\\\c\\/\\b\\f\\n\\r\\tz"'))
    assert.are.equal("é😀", json.decode('"\\u00e9\\ud83d\\ude00"'))
    assert.are.equal("ümlaut", json.decode('"ümlaut"'))
  end)

  it("round-trips values, keeping [] as [] and {} as {}", function()
    local cases = { '[]', '{}', '[1,2,3]', '{"a":[],"b":{}}', '[null,true,false,"s",-0.25]',
                    '{"logs":[],"err":null,"fee":5000}', '"\\u0000\\u001f"' }
    for _, c in ipairs(cases) do
      local v = json.decode(c)
      assert.are.same(json.decode(c), json.decode(json.encode(v)), c)
    end
    assert.are.equal("[]", json.encode(json.decode("[]")))
    assert.are.equal("{}", json.encode(json.decode("{}")))
    assert.are.equal("[]", json.encode(json.array()))
    assert.are.equal('{"a":1}', json.encode({ a = 1 }))
    assert.are.equal("0.30000000000000004", json.encode(0.1 + 0.2))
  end)

  it("refuses malformed text with the reason and byte offset", function()
    local cases = {
      { "", "empty input" }, { "[1,2", "unexpected end of input at byte 5" }, { '{"a" 1}', "expected ':'" },
      { "01", "leading zero" }, { "[1,]", "unexpected character at byte 4" }, { '"abc', "unterminated string" },
      { "nul", "unexpected character" }, { "[1] x", "text after the JSON value at byte 5" },
      { '"a\\x"', "bad escape" }, { '"\\u12"', "bad \\u escape" }, { '{"a":1,}', "expected a string key" },
      { "1.", "no digit after" }, { "1e", "no digit in the exponent" }, { '"a\nb"', "control character" },
      { ("["):rep(1001), "nesting deeper than 1000" },
    }
    for _, c in ipairs(cases) do
      local v, err = json.decode(c[1])
      assert.is_nil(v, c[1])
      assert.are.equal("BAD_JSON", err.code)
      assert.truthy(err.message:find(c[2], 1, true), err.message)
      assert.are.equal("BAD_JSON: " .. err.message, tostring(err))
    end
    local v, err = json.decode(nil)
    assert.is_nil(v)
    assert.are.equal("BAD_JSON", err.code)
  end)

  it("refuses values JSON cannot hold when encoding", function()
    assert.has_error(function() json.encode(0 / 0) end)
    assert.has_error(function() json.encode({ f = print }) end, "json.encode: cannot encode a function")
    local t = {}; t.self = t
    assert.has_error(function() json.encode(t) end)
    assert.is_nil((json.safe_encode(math.huge)))
  end)

  it("writes pubkeys as base58 and keypairs as their public face (__tojson)", function()
    local sol = thorp.solana
    local kp = assert(sol.keypair.from_seed(("\1"):rep(32)))
    local pk = sol.pubkey(("\2"):rep(32))
    assert.are.equal('["' .. tostring(pk) .. '",{"w":"keypair(' .. tostring(kp.pubkey) .. ')"}]',
      json.encode({ pk, { w = kp } }))
    local inner = setmetatable({}, { __tojson = function() return { raw = json.encode({ 1, 2 }) } end })
    assert.are.equal('[1,{"raw":"[1,2]"},3]', json.encode({ 1, inner, 3 }))
  end)

  it("decodes straight from a C buffer", function()
    local s = '{"ok":[1,"two"]}'
    local b = ffi.new("char[?]", #s)
    ffi.copy(b, s, #s)
    local v = assert(json.decode_buffer(b, #s))
    assert.are.equal("two", v.ok[2])
  end)

  it("is what the RPC pool decodes answers with (null is json.null)", function()
    local sim = require("helpers.sim").start(1)
    local pool = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a" }), timeout_ms = 2000, health = false }
    local sig = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"
    local r = pool:call("getSignatureStatuses", { { sig } })
    sim:stop()
    assert.is_true(r.ok)
    local st = r.result.value[1]
    assert.is_true(json.is_null(st) or json.is_null(st.err), json.encode(r.result))
  end)
end)
