-- thorp.solana: byte-exact codec vectors (solana-sdk's short_vec tests,
-- @solana/kit's transaction-messages codec tests, RFC 8032), the account
-- order of solana-sdk's compiler, the decoder's refusals, and bad input.
-- The cross-check against @solana/kit itself is tests/node/solana_test.mjs.
local thorp = require "thorp"
local sol = thorp.solana

local function hex(s) return (s:gsub("%s", ""):gsub("..", function(h) return string.char(tonumber(h, 16)) end)) end
local function bytes(t) return string.char(unpack(t)) end
local function rep(b, n) return string.rep(string.char(b), n or 32) end
local function tmpfile(text)
  local p = os.tmpname()
  local f = assert(io.open(p, "w")); f:write(text); f:close()
  return p
end

describe("compact-u16 (solana-sdk short_vec vectors)", function()
  local good = {
    { 0x0000, { 0x00 } }, { 0x007f, { 0x7f } }, { 0x0080, { 0x80, 0x01 } }, { 0x00ff, { 0xff, 0x01 } },
    { 0x0100, { 0x80, 0x02 } }, { 0x07ff, { 0xff, 0x0f } }, { 0x3fff, { 0xff, 0x7f } },
    { 0x4000, { 0x80, 0x80, 0x01 } }, { 0x7fff, { 0xff, 0xff, 0x01 } }, { 0xffff, { 0xff, 0xff, 0x03 } },
  }
  it("encodes and decodes each value minimally", function()
    for _, c in ipairs(good) do
      assert.are.equal(bytes(c[2]), sol.compact_u16(c[1]))
      local v, n = sol.compact_u16_decode(bytes(c[2]))
      assert.are.equal(c[1], v)
      assert.are.equal(#c[2], n)
    end
  end)
  it("refuses aliases, truncation, a 4th byte and values over 0xffff", function()
    local bad = { { 0x80, 0x00 }, { 0x80, 0x80, 0x00 }, { 0xff, 0x00 }, { 0xff, 0x80, 0x00 }, { 0x80, 0x81, 0x00 },
                  { 0xff, 0x81, 0x00 }, { 0x80, 0x82, 0x00 }, { 0xff, 0x8f, 0x00 }, { 0xff, 0xff, 0x00 }, {},
                  { 0x80 }, { 0x80, 0x80, 0x80, 0x00 }, { 0x80, 0x80, 0x04 }, { 0x80, 0x80, 0x06 },
                  { 0x81, 0x80, 0x00 } }
    for _, b in ipairs(bad) do
      local v, err = sol.compact_u16_decode(bytes(b))
      assert.is_nil(v)
      assert.matches("compact%-u16", err)
    end
  end)
end)

describe("base58 and base64", function()
  it("matches known encodings", function()
    assert.are.equal("", sol.base58.encode(""))
    assert.are.equal("1", sol.base58.encode("\0"))
    assert.are.equal("2NEpo7TZRRrLZSi2U", sol.base58.encode("Hello World!"))
    assert.are.equal("11111111111111111111111111111111", sol.base58.encode(rep(0)))
    assert.are.equal("k7FaK87WHGVXzkaoHb7CdVPgkKDQhZ29VLDeBVbDfYn", sol.base58.encode(rep(11)))
    assert.are.equal("3EKkiwNLWqoUbzFkPrmKbtUB4EweE6f4STzevYUmezeL", sol.base58.encode(rep(33)))
    assert.are.equal(rep(22), sol.base58.decode("2VDW9dFE1ZXz4zWAbaBDQFynNVdRpQ73HyfSHMzBSL6Z"))
    assert.are.equal("Hello World!", sol.base58.decode("2NEpo7TZRRrLZSi2U"))
  end)
  it("round-trips random bytes with leading zeros", function()
    math.randomseed(7)
    for n = 0, 80 do
      local t = {}
      for i = 1, n do t[i] = i <= n % 4 and 0 or math.random(0, 255) end
      local b = bytes(t)
      assert.are.equal(b, sol.base58.decode(sol.base58.encode(b)))
      assert.are.equal(b, sol.base64.decode(sol.base64.encode(b)))
    end
  end)
  it("refuses a character outside the alphabet, naming it", function()
    local v, err = sol.base58.decode("abc0def")
    assert.is_nil(v)
    assert.are.equal("BAD_INPUT", err.code)
    assert.matches('character 4 "0" is outside the base58 alphabet', err.message, 1, true)
    assert.matches('^BAD_INPUT: base58.decode: not base58', tostring(err))
    v, err = sol.base64.decode("not base64!")
    assert.is_nil(v)
    assert.are.equal("BAD_INPUT", err.code)
    assert.matches("not standard padded base64", err.message, 1, true)
    assert.are.equal("BAD_INPUT", select(2, sol.base64.decode(42)).code)
    assert.are.equal("SGVsbG8=", sol.base64.encode("Hello"))
  end)
end)

describe("pubkeys", function()
  it("parse base58 or 32 bytes, print base58, compare by value", function()
    local a = sol.pubkey("k7FaK87WHGVXzkaoHb7CdVPgkKDQhZ29VLDeBVbDfYn")
    assert.are.equal(rep(11), a:bytes())
    assert.are.equal("k7FaK87WHGVXzkaoHb7CdVPgkKDQhZ29VLDeBVbDfYn", tostring(a))
    assert.is_true(a == sol.pubkey(rep(11)))
    assert.is_false(a == sol.pubkey(rep(22)))
    assert.are.equal(rep(0), sol.pubkey("11111111111111111111111111111111"):bytes())
  end)
  it("refuse bad input with the reason", function()
    assert.has_error(function() sol.pubkey("k7FaK87WHGVXzkaoHb7CdVPgkKDQhZ29VLDeBVbDfY0") end,
      'pubkey: not base58 (character 43 "0" is outside the base58 alphabet)')
    assert.has_error(function() sol.pubkey("2NEpo7TZRRrLZSi2U") end,
      'pubkey: "2NEpo7TZRRrLZSi2U" decodes to 12 bytes; a pubkey is 32 bytes')
    assert.has_error(function() sol.pubkey(42) end, "pubkey: expected a pubkey (base58 string or 32 bytes), got number")
  end)
end)

describe("keypairs and signatures", function()
  -- RFC 8032 section 7.1, test 1
  local seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
  local pub = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
  local sig = hex([[e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f
                      b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b]])

  it("sign as RFC 8032 says, and verify", function()
    local kp = assert(sol.keypair.from_bytes(seed .. pub))
    assert.are.equal(pub, kp.pubkey:bytes())
    assert.are.equal(sig, kp:sign(""))
    assert.is_true(sol.verify(kp.pubkey, "", sig))
    assert.is_false(sol.verify(kp.pubkey, "x", sig))
    assert.is_false(sol.verify(kp.pubkey, "", sig:sub(1, 63) .. "\0"))
  end)
  it("load the Solana CLI file, base58 and generated forms", function()
    local nums = {}
    for i = 1, 64 do nums[i] = ((seed .. pub):byte(i)) end
    local p = tmpfile("[" .. table.concat(nums, ",") .. "]\n")
    local kp = assert(sol.keypair.from_file(p))
    os.remove(p)
    assert.are.equal(pub, kp.pubkey:bytes())
    local kp2 = assert(sol.keypair.from_base58(sol.base58.encode(seed .. pub)))
    assert.is_true(kp2.pubkey == kp.pubkey)
    local g = assert(sol.keypair.generate())
    assert.is_true(sol.verify(g.pubkey, "m", g:sign("m")))
  end)
  it("never show the secret: tostring, the pretty printer (raw too), errors", function()
    local kp = assert(sol.keypair.from_bytes(seed .. pub))
    local secret58 = sol.base58.encode(seed)
    for _, text in ipairs({ tostring(kp), thorp.pretty.format(kp), thorp.pretty.format({ w = kp }, { raw = true }),
                            thorp.pretty.format(kp, { raw = true }) }) do
      assert.matches("keypair%(" .. tostring(kp.pubkey) .. "%)", text)
      assert.is_nil(text:find(secret58, 1, true))
    end
    local _, err = sol.keypair.from_base58(sol.base58.encode(seed .. seed))
    assert.matches("does not belong to the secret seed", err.message)
    assert.is_nil(tostring(err):find(secret58, 1, true))
  end)
  it("never show the secret in logs (JSON and text lines) or in a failed task's error", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      local kp = assert(thorp.solana.keypair.from_bytes(thorp.solana.base58.decode(%q)))
      local log = require "thorp.log"
      log.warn("wallet", { wallet = kp, list = { kp }, pk = kp.pubkey })
      log.set_json(false)
      log.warn("wallet", { wallet = kp, list = { kp } })
      print(kp, thorp.pretty.format({ kp }, { raw = true }))
      error({ wallet = kp })
    ]]):format(sol.base58.encode(seed .. pub)))
    f:close()
    local bin = os.getenv("THORP") or (require("thorp.host").dev_root() .. "/thorp")
    local p = io.popen(("d=$(mktemp -d); THORP_STATE_DIR=$d LOG_LEVEL=info %q exec %q 2>&1; rm -rf $d"):format(bin, script))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    assert.matches("wallet", out)
    assert.matches("keypair%(" .. sol.base58.encode(pub) .. "%)", out)
    local hexseed = seed:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    for _, secret in ipairs({ sol.base58.encode(seed .. pub), sol.base58.encode(seed), hexseed, seed,
                              sol.base64.encode(seed), table.concat({ seed:byte(1, -1) }, ",") }) do
      assert.is_nil(out:find(secret, 1, true), out)
    end
  end)
  it("refuse malformed keypair files and wrong-length keys with the rule", function()
    local cases = {
      { "", "does not start with '%['" },
      { "[1,2,3]", "3 numbers; expected a JSON array of 64 numbers %(0%-255%)" },
      { "[" .. ("1,"):rep(63) .. "256]", "element 64 is not an integer 0%-255" },
      { "[" .. ("1,"):rep(64) .. "1]", "more than 64 numbers" },
      { "[" .. ("1,"):rep(63) .. "1] x", "text after the closing" },
      { "{\"secret\": 1}", "does not start with" },
    }
    for _, c in ipairs(cases) do
      local p = tmpfile(c[1])
      local kp, err = sol.keypair.from_file(p)
      os.remove(p)
      assert.is_nil(kp)
      assert.are.equal("BAD_KEYPAIR", err.code)
      assert.matches("keypair file " .. p:gsub("%p", "%%%0") .. ": " .. c[2], err.message)
    end
    local kp, err = sol.keypair.from_file("/nonexistent/id.json")
    assert.is_nil(kp)
    assert.are.equal("BAD_KEYPAIR", err.code)
    assert.matches("cannot open %(No such file", err.message)
    -- assert() and concatenation still show what is wrong
    local ok, raised = pcall(function() assert(sol.keypair.from_file("/nonexistent/id.json")) end)
    assert.is_false(ok)
    assert.matches("^BAD_KEYPAIR: .*cannot open", tostring(raised))
    assert.matches("^why: BAD_KEYPAIR: ", "why: " .. err)
    kp, err = sol.keypair.from_bytes(seed)
    assert.is_nil(kp)
    assert.are.equal("BAD_KEYPAIR", err.code)
    assert.matches("32 bytes; a keypair is 64 bytes", err.message)
    kp, err = sol.keypair.from_base58("3x0")
    assert.is_nil(kp)
    assert.are.equal("BAD_KEYPAIR", err.code)
    assert.matches("not base58 %(character 3", err.message)
    for _, f in ipairs{ "from_bytes", "from_seed", "from_base58", "from_file" } do
      assert.are.equal("BAD_KEYPAIR", select(2, sol.keypair[f](42)).code, f)
    end
  end)
end)

describe("program addresses", function()
  it("derive the associated token account (vector from @solana/kit)", function()
    -- computed by @solana/kit's findAssociatedTokenPda-equivalent getProgramDerivedAddress
    -- (tests/node/solana_test.mjs checks hundreds more against kit)
    local ata = sol.associated_token_address("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
      "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")
    assert.are.equal("F4YA4H7HeXLCvjLRKdh56FgE4cyHpPqLP1VCM6fEqEmX", tostring(ata))
  end)
  it("tells on-curve keys from PDAs", function()
    assert.is_true(sol.is_on_curve(sol.keypair.generate().pubkey))
    -- points of small order count as on the curve (curve25519-dalek decompresses them;
    -- libsodium's is_valid_point would not): the identity, (0, -1), and y = p + 1 (non-canonical 1);
    -- @solana/kit's isOffCurveAddress says the same of all four
    assert.is_true(sol.is_on_curve("\1" .. ("\0"):rep(31)))
    assert.is_true(sol.is_on_curve("\236" .. ("\255"):rep(30) .. "\127"))
    assert.is_true(sol.is_on_curve("\238" .. ("\255"):rep(30) .. "\127"))
    assert.is_false(sol.is_on_curve("\2" .. ("\0"):rep(31))) -- y = 2: (y^2-1)/(dy^2+1) is not a square
    local pda = sol.find_program_address({ "seed" }, sol.SYSTEM_PROGRAM)
    assert.is_false(sol.is_on_curve(pda))
  end)
  it("refuse too many or too long seeds", function()
    assert.has_error(function() sol.find_program_address({ ("x"):rep(33) }, sol.SYSTEM_PROGRAM) end,
      "program address: seed 1 is 33 bytes; at most 32 allowed")
    local many = {}
    for i = 1, 16 do many[i] = "s" end
    assert.has_error(function() sol.find_program_address(many, sol.SYSTEM_PROGRAM) end)
  end)
end)

-- @solana/kit packages/transaction-messages/src/codecs/__tests__/message-test.ts
describe("message codec (@solana/kit vectors)", function()
  local v0_bytes = bytes({ 128, 3, 2, 1, 2 }) .. rep(11) .. rep(22) .. rep(33)
    .. bytes({ 2, 44, 0, 0, 55, 2, 77, 66, 3, 7, 8, 9, 1 })
    .. rep(44) .. bytes({ 2, 66, 55, 1, 77 })
  local legacy_bytes = bytes({ 3, 2, 1, 2 }) .. rep(11) .. rep(22) .. rep(33) .. bytes({ 2, 44, 0, 0, 55, 2, 77, 66, 3, 7, 8, 9 })
  local function compiled(version)
    return {
      version = version,
      header = { num_required_signatures = 3, num_readonly_signed_accounts = 2, num_readonly_unsigned_accounts = 1 },
      account_keys = { sol.pubkey("k7FaK87WHGVXzkaoHb7CdVPgkKDQhZ29VLDeBVbDfYn"),
                       sol.pubkey("2VDW9dFE1ZXz4zWAbaBDQFynNVdRpQ73HyfSHMzBSL6Z") },
      recent_blockhash = "3EKkiwNLWqoUbzFkPrmKbtUB4EweE6f4STzevYUmezeL",
      instructions = { { program_id_index = 44, accounts = {}, data = "" },
                       { program_id_index = 55, accounts = { 77, 66 }, data = "\7\8\9" } },
      lookups = version == 0 and { { account_key = sol.pubkey(
                                     "3yS1JFVT284y8z1LC9MRoWxZjzFrdoD5axKsZiyMsfC7"),
                                     writable_indexes = { 66, 55 }, readonly_indexes = { 77 } } } or nil,
    }
  end
  it("serializes a v0 message according to the spec", function()
    assert.are.equal(v0_bytes, sol.encode_message(compiled(0)))
  end)
  it("serializes v0 with no lookups (count 0) and legacy with no version byte or lookups", function()
    local m = { version = 0, header = { num_required_signatures = 3, num_readonly_signed_accounts = 2,
                num_readonly_unsigned_accounts = 1 }, account_keys = {}, instructions = {},
                recent_blockhash = "k7FaK87WHGVXzkaoHb7CdVPgkKDQhZ29VLDeBVbDfYn" }
    assert.are.equal(bytes({ 128, 3, 2, 1, 0 }) .. rep(11) .. bytes({ 0, 0 }), sol.encode_message(m))
    m.version = "legacy"
    assert.are.equal(bytes({ 3, 2, 1, 0 }) .. rep(11) .. bytes({ 0 }), sol.encode_message(m))
  end)
  it("deserializes v0 and legacy messages according to the spec", function()
    for _, c in ipairs({ { v0_bytes, 0 }, { legacy_bytes, "legacy" } }) do
      local m = assert(sol.decode_message(c[1]))
      local want = compiled(c[2])
      assert.are.equal(want.version, m.version)
      assert.are.same(want.header, m.header)
      assert.are.equal(want.recent_blockhash, m.recent_blockhash)
      assert.are.equal(2, #m.account_keys)
      assert.is_true(want.account_keys[2] == m.account_keys[2])
      assert.are.same({ 77, 66 }, m.instructions[2].accounts)
      assert.are.equal("\7\8\9", m.instructions[2].data)
      assert.are.equal(55, m.instructions[2].program_id_index)
      if c[2] == 0 then
        assert.are.same({ 66, 55 }, m.lookups[1].writable_indexes)
        assert.are.same({ 77 }, m.lookups[1].readonly_indexes)
        assert.is_true(m.lookups[1].account_key == want.lookups[1].account_key)
      else
        assert.is_nil(m.lookups)
      end
      assert.are.equal(c[1], sol.encode_message(m))
    end
  end)
  it("refuses unknown versions", function()
    local m, err = sol.decode_message(bytes({ 129, 3, 2, 1, 0 }) .. rep(11) .. bytes({ 0, 0 }))
    assert.is_nil(m)
    assert.are.equal("BAD_TRANSACTION", err.code)
    assert.matches("version 1; only legacy and version 0", err.message)
  end)
end)

describe("transactions", function()
  local payer = assert(sol.keypair.from_seed(rep(1)))
  local other = assert(sol.keypair.from_seed(rep(2)))
  local bh = "3EKkiwNLWqoUbzFkPrmKbtUB4EweE6f4STzevYUmezeL"
  local function k(b) return sol.pubkey(rep(b)) end

  it("orders accounts as solana-sdk: payer, writable signers, read-only signers, writable, read-only, by bytes", function()
    local ix = { program_id = k(200), data = "\1", accounts = {
      { pubkey = k(9), is_writable = false }, { pubkey = k(8), is_writable = true },
      { pubkey = other.pubkey, is_signer = true }, { pubkey = k(7), is_writable = true },
      { pubkey = k(8), is_signer = false }, { pubkey = k(3), is_signer = true, is_writable = true },
    } }
    local tx = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh, instructions = { ix } }
    local m = assert(sol.decode_message(tx:message()))
    local order = {}
    for i, key in ipairs(m.account_keys) do order[i] = key:bytes() end
    -- other.pubkey is a read-only signer; 8 is writable (merged), 9 and the program read-only
    assert.are.same({ payer.pubkey:bytes(), rep(3), other.pubkey:bytes(), rep(7), rep(8), rep(9), rep(200) }, order)
    assert.are.same({ num_required_signatures = 3, num_readonly_signed_accounts = 1,
                      num_readonly_unsigned_accounts = 2 }, m.header)
    assert.are.same({ 5, 4, 2, 3, 4, 1 }, m.instructions[1].accounts)
    assert.are.equal(6, m.instructions[1].program_id_index)
  end)

  it("v0: moves writable then read-only non-signer keys into the lookups, tables in order", function()
    local ix = { program_id = k(200), data = "", accounts = {
      { pubkey = k(50), is_writable = true }, { pubkey = k(40) }, { pubkey = k(60), is_writable = true },
      { pubkey = k(70) }, { pubkey = k(201) } } }
    local ix2 = { program_id = k(201), accounts = {} } -- invoked: stays static although in a table
    local tx = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh, version = 0, instructions = { ix, ix2 },
      lookup_tables = { { key = k(90), addresses = { k(1), k(60), k(40), k(50), k(201) } },
                        { key = k(91), addresses = { k(70) } }, { key = k(92), addresses = { k(5) } } } }
    tx:sign(payer)
    local d = assert(sol.decode_transaction(tx:serialize()))
    assert.are.equal(0, d.version)
    assert.are.equal(3, #d.account_keys) -- payer, 200, 201
    assert.are.equal(2, #d.lookups)      -- the third table holds nothing used
    assert.are.same({ 3, 1 }, d.lookups[1].writable_indexes) -- 50 then 60 (byte order of the keys)
    assert.are.same({ 2 }, d.lookups[1].readonly_indexes)
    assert.are.same({ 0 }, d.lookups[2].readonly_indexes)
    -- indexes: static 0-2, then writable loaded (50, 60) = 3, 4, then read-only (40, 70) = 5, 6
    assert.are.same({ 3, 5, 4, 6, 2 }, d.instructions[1].accounts)
    assert.is_true(sol.verify_transaction(tx:serialize()))
  end)

  it("signs partially, serializes once every signer signed, and round-trips through the decoder", function()
    local tx = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh, instructions = {
      sol.compute_budget.set_compute_unit_limit(200000), sol.compute_budget.set_compute_unit_price(5000),
      sol.system.transfer(other.pubkey, k(5), 12345), sol.memo("hi", { payer.pubkey }) } }
    tx:sign(payer)
    assert.has_error(function() tx:serialize() end,
      ("tx:serialize: missing signature 2 of 2 (signer %s): sign with its keypair first"):format(tostring(other.pubkey)))
    tx:sign(other)
    local wire = tx:serialize()
    assert.are.equal(tx:size(), #wire)
    local d = assert(sol.decode_transaction(wire))
    assert.are.equal("legacy", d.version)
    assert.are.equal(sol.base58.encode(d.signatures[1]), tx:signature())
    assert.are.equal(tx:message(), d.message)
    assert.are.equal(tx:message(), sol.encode_message(d))
    assert.are.equal(wire, sol.transaction_from(d):serialize())
    assert.are.equal(wire, sol.base64.decode(tx:base64()))
    local data = d.instructions[3].data
    assert.are.equal("\2\0\0\0\57\48\0\0\0\0\0\0", data)
    assert.are.equal("\3\136\19\0\0\0\0\0\0", d.instructions[2].data)
    assert.are.equal("\2\64\13\3\0", d.instructions[1].data)
  end)

  it("builds the same bytes from base58 text as from pubkeys, with the GC running all the time", function()
    local function k58(i) return sol.base58.encode(sol.sha256("gc" .. i)) end
    local function build(conv)
      local accs = {}
      for i = 1, 20 do accs[i] = { pubkey = conv(k58(i)), is_writable = i % 2 == 0 } end
      return sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh, version = 0,
        instructions = { { program_id = conv(k58(99)), accounts = accs, data = "x" } },
        lookup_tables = { { key = conv(k58(98)), addresses = { conv(k58(3)), conv(k58(4)) } } } }:message()
    end
    local want = build(sol.pubkey)
    collectgarbage("collect")
    local pause = collectgarbage("setpause", 0)
    local stepmul = collectgarbage("setstepmul", 1000)
    local ok = true
    for _ = 1, 200 do
      if build(function(x) return x .. "" end) ~= want then ok = false end
    end
    collectgarbage("setpause", pause)
    collectgarbage("setstepmul", stepmul)
    assert.is_true(ok)
  end)

  it("refuses a signer that is not in the transaction", function()
    local tx = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh,
      instructions = { sol.memo("x") } }
    assert.has_error(function() tx:sign(other) end,
      ("tx:sign: %s is not a signer of this transaction (signers: %s)"):format(tostring(other.pubkey), tostring(payer.pubkey)))
  end)

  it("refuses a message over 1,232 bytes and over 256 accounts, naming the limit", function()
    local tx = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh,
      instructions = { sol.memo(("x"):rep(1200)) } }
    tx:sign(payer)
    assert.has_error(function() tx:serialize() end)
    local ok, err = pcall(tx.serialize, tx)
    assert.is_false(ok)
    assert.matches("transaction is 1370 bytes; at most 1232 allowed", err)
    local accs = {}
    for i = 1, 300 do accs[i] = { pubkey = sol.sha256(tostring(i)) } end
    ok, err = pcall(sol.transaction, { fee_payer = payer.pubkey, recent_blockhash = bh,
      instructions = { { program_id = k(200), accounts = accs, data = "" } } })
    assert.is_false(ok)
    assert.matches("transaction: more than 256 accounts; at most 256 allowed", err)
  end)

  it("names the missing field of an instruction", function()
    local function err_of(t) local ok, e = pcall(sol.transaction, t); assert.is_false(ok); return e end
    assert.matches("transaction: fee_payer is missing", err_of({ recent_blockhash = bh, instructions = {} }))
    assert.matches("recent_blockhash is missing", err_of({ fee_payer = payer.pubkey, instructions = {} }))
    assert.matches("instructions%[1%]%.program_id is missing", err_of({ fee_payer = payer.pubkey, recent_blockhash = bh,
      instructions = { { accounts = {}, data = "" } } }))
    assert.matches("instructions%[1%]%.accounts is missing", err_of({ fee_payer = payer.pubkey, recent_blockhash = bh,
      instructions = { { program_id = k(5), data = "" } } }))
    assert.matches("instructions%[1%]%.accounts%[1%]%.pubkey is missing", err_of({ fee_payer = payer.pubkey,
      recent_blockhash = bh, instructions = { { program_id = k(5), accounts = { { is_signer = true } } } } }))
    assert.matches('version 2; allowed: "legacy" or 0', err_of({ fee_payer = payer.pubkey, recent_blockhash = bh,
      instructions = {}, version = 2 }))
    assert.has_error(function() sol.system.transfer(payer.pubkey, nil, 1) end,
      "system.transfer: to is missing (a pubkey: base58 string or 32 bytes)")
    assert.has_error(function() sol.system.transfer(payer.pubkey, k(1), 1.5) end)
    assert.has_error(function() sol.token.transfer_checked{ source = k(1), mint = k(2), destination = k(3), amount = 1,
      decimals = 6 } end, "token.transfer_checked: owner is missing (a pubkey: base58 string or 32 bytes)")
  end)

  it("takes u64 amounts beyond 2^53 as uint64 cdata", function()
    local ix = sol.system.transfer(payer.pubkey, k(5), 18446744073709551615ULL)
    assert.are.equal("\2\0\0\0" .. rep(255, 8), ix.data)
  end)

  it("builds the token instructions with their accounts", function()
    local ata = sol.associated_token_address(payer.pubkey, k(7))
    local c = sol.token.create_associated_token_account_idempotent{ payer = payer.pubkey, owner = payer.pubkey, mint = k(7) }
    assert.is_true(c.accounts[2].pubkey == ata)
    assert.are.equal("\1", c.data)
    assert.is_true(c.program_id == sol.ASSOCIATED_TOKEN_PROGRAM)
    local t = sol.token.transfer_checked{ source = ata, mint = k(7), destination = k(8), owner = payer.pubkey,
      amount = 1000000, decimals = 6 }
    assert.are.equal("\12\64\66\15\0\0\0\0\0\6", t.data)
    assert.is_true(t.accounts[4].is_signer and not t.accounts[4].is_writable)
  end)
end)

describe("decode_transaction refuses malformed bytes", function()
  local payer = assert(sol.keypair.from_seed(rep(1)))
  local tx = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = rep(33), version = 0,
    instructions = { sol.system.transfer(payer.pubkey, rep(5), 1) } }
  tx:sign(payer)
  local wire = tx:serialize()

  it("with an error value naming the problem", function()
    local function refused(b, pat)
      local d, err = sol.decode_transaction(b)
      assert.is_nil(d)
      assert.are.equal("BAD_TRANSACTION", err.code)
      assert.matches(pat, err.message)
    end
    refused("", "signatures: bad compact%-u16")
    refused(wire:sub(1, -2), "truncated")
    refused(wire .. "\0", "1 bytes after the message")
    refused("\128\0" .. wire:sub(2), "non%-minimal")
    refused(wire:sub(1, 65) .. "\129" .. wire:sub(67), "version 1")
    refused("\2" .. wire:sub(2, 65) .. wire:sub(2, 65) .. wire:sub(66), "2 signatures for a message that requires 1")
    refused(("\0"):rep(2000), "2000 bytes; at most 1232")
    local bad_sig = wire:sub(1, 10) .. string.char((wire:byte(11) + 1) % 256) .. wire:sub(12)
    assert.is_truthy(sol.decode_transaction(bad_sig))
    local ok, err = sol.verify_transaction(bad_sig)
    assert.is_false(ok)
    assert.are.equal("BAD_TRANSACTION", err.code)
    assert.matches("signature 1 does not verify", err.message)
  end)

  it("and never crashes on random mutations and truncations", function()
    math.randomseed(11)
    local decoded, refused = 0, 0
    for _ = 1, 3000 do
      local b = { wire:byte(1, -1) }
      for _ = 1, math.random(1, 4) do b[math.random(1, #b)] = math.random(0, 255) end
      local s = string.char(unpack(b)):sub(1, math.random(1, #b + 2))
      local d, err = sol.decode_transaction(s)
      if d then
        decoded = decoded + 1
        assert.are.equal(s, sol.transaction_from(d):serialize({ partial = true }))
      else
        refused = refused + 1
        assert.are.equal("BAD_TRANSACTION", err.code)
        assert.is_string(err.message)
      end
    end
    assert.is_true(refused > 0)
    assert.is_true(decoded > 0)
  end)
end)
