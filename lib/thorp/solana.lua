-- thorp.solana: keys, instructions and transactions (see DESIGN.md, Solana).
--
--   local sol = thorp.solana
--   local kp = assert(sol.keypair.from_file(os.getenv("WALLET_KEYPAIR")))
--   local tx = sol.transaction{ fee_payer = kp.pubkey, recent_blockhash = bh,
--     instructions = { sol.compute_budget.set_compute_unit_price(5000),
--                      sol.system.transfer(kp.pubkey, to, 1000) } }
--   tx:sign(kp); local wire = tx:serialize()
--
-- base58, ed25519, program addresses and the wire decoder are C (host/solana.c,
-- through the FFI); the message compiler is here. Accounts are ordered as
-- solana-sdk's CompiledKeys does: the fee payer, then writable signers,
-- read-only signers, writable and read-only others, each group in byte order
-- of the keys; for v0, writable then read-only non-signer, non-program keys
-- found in a lookup table move to that table's lookup, tables in the order
-- given. Bytes are Lua strings; secrets stay in C (sodium_malloc'd memory).
-- Errors: decoders and keypair loaders return nil, err, an error value
-- (thorp.errors.described: err.code BAD_INPUT, BAD_KEYPAIR or BAD_TRANSACTION,
-- err.message what is wrong; tostring gives "CODE: message"); building a
-- transaction with bad input raises an error naming the field.
local ffi = require "ffi"
local bit = require "bit"
local C = require "thorp.cdef"
local errors = require "thorp.errors"

local type, tostring, error, ipairs, select, setmetatable, getmetatable = type, tostring, error, ipairs, select,
  setmetatable, getmetatable
local char, concat, floor = string.char, table.concat, math.floor
local band, bor, rshift = bit.band, bit.bor, bit.rshift
local fstring = ffi.string

assert(C.thorp_sol_init() == 0, "solana: sodium_init failed")

local M = {}

local SCRATCH = 16384
local buf = ffi.new("uint8_t[?]", SCRATCH)
local msgbuf = ffi.new("uint8_t[?]", SCRATCH)
local cbuf = ffi.new("char[?]", SCRATCH)
local errbuf = ffi.new("char[256]")
local badpos = ffi.new("size_t[1]")
local lens = ffi.new("size_t[17]")
local sigbuf = ffi.new("uint8_t[64]")

local function cerr() return fstring(errbuf) end
-- v, or nil and an error value with the message of a nil, message result
local function as_error(code, v, msg)
  if v == nil then return nil, errors.described(code, msg) end
  return v
end

-- base58 / base64 -------------------------------------------------------------

local function b58enc(s)
  local n = C.thorp_sol_b58_encode(s, #s, cbuf, SCRATCH)
  if n < 0 then error("base58.encode: at most 4096 bytes", 3) end
  return fstring(cbuf, n)
end

local function b58dec(s, what)
  if type(s) ~= "string" then return nil, ("%s: expected a base58 string, got %s"):format(what, type(s)) end
  local n = C.thorp_sol_b58_decode(s, #s, buf, SCRATCH, badpos)
  if n == -1 then
    local i = tonumber(badpos[0]) + 1
    return nil, ("%s: not base58 (character %d %q is outside the base58 alphabet)"):format(what, i, s:sub(i, i))
  elseif n < 0 then
    return nil, ("%s: base58 text too long (%d characters)"):format(what, #s)
  end
  return fstring(buf, n)
end

M.base58 = {
  encode = function(s)
    if type(s) ~= "string" then error("base58.encode: expected bytes (a string), got " .. type(s), 2) end
    return b58enc(s)
  end,
  decode = function(s) return as_error("BAD_INPUT", b58dec(s, "base58.decode")) end,
}

M.base64 = {
  encode = function(s)
    if type(s) ~= "string" then error("base64.encode: expected bytes (a string), got " .. type(s), 2) end
    local need = tonumber(C.thorp_sol_b64_len(#s))
    local out = need <= SCRATCH and cbuf or ffi.new("char[?]", need)
    local n = C.thorp_sol_b64_encode(s, #s, out, need)
    return fstring(out, n)
  end,
  decode = function(s)
    if type(s) ~= "string" then return as_error("BAD_INPUT", nil, "base64.decode: expected a string, got " .. type(s)) end
    local cap = floor(#s * 3 / 4) + 3
    local out = cap <= SCRATCH and buf or ffi.new("uint8_t[?]", cap)
    local n = C.thorp_sol_b64_decode(s, #s, out, cap)
    if n < 0 then return as_error("BAD_INPUT", nil, "base64.decode: not standard padded base64") end
    return fstring(out, n)
  end,
}

-- public keys -------------------------------------------------------------------

local PK = {}
PK.__index = PK
local by_bytes = setmetatable({}, { __mode = "v" })
local by_text = setmetatable({}, { __mode = "v" })

local function pk_of_bytes(b)
  local p = by_bytes[b]
  if not p then
    p = setmetatable({ _b = b }, PK)
    by_bytes[b] = p
  end
  return p
end

function PK.__tostring(p)
  local s = p._s
  if not s then
    s = b58enc(p._b)
    p._s = s
  end
  return s
end
function PK.__eq(a, b) return a._b == b._b end
function PK.__lt(a, b) return a._b < b._b end
function PK.__concat(a, b) return tostring(a) .. tostring(b) end
function PK:bytes() return self._b end
PK.__tojson = PK.__tostring -- thorp.json (so RPC params) writes a pubkey as its base58
function PK:base58() return tostring(self) end
M.Pubkey = PK

--- pubkey(x) -> pk | nil, err: x a pubkey, its base58 or its 32 bytes.
local function to_pubkey(x, what)
  if getmetatable(x) == PK then return x end
  if type(x) ~= "string" then
    return nil, ("%s: expected a pubkey (base58 string or 32 bytes), got %s"):format(what, type(x))
  end
  local p = by_text[x]
  if p then return p end
  local n = #x
  if n >= 32 and n <= 44 then
    local b = C.thorp_sol_b58_decode(x, n, buf, SCRATCH, badpos) == 32 and fstring(buf, 32)
    if b then
      p = pk_of_bytes(b)
      p._s = x
      by_text[x] = p
      return p
    end
  end
  if n == 32 then return pk_of_bytes(x) end
  local b, err = b58dec(x, what)
  if not b then return nil, err end
  return nil, ("%s: %q decodes to %d bytes; a pubkey is 32 bytes"):format(what, x, #b)
end

function M.pubkey(x)
  local p, err = to_pubkey(x, "pubkey")
  if not p then error(err, 2) end
  return p
end
M.is_pubkey = function(x) return getmetatable(x) == PK end

-- for builders: raise an error that names the field
-- need_pk(x, what [, name] [, level]): the pubkey, or an error naming the field
-- (what .. name, only built on the error path).
local function need_pk(x, what, name, level)
  if getmetatable(x) == PK then return x end
  if type(name) == "string" then what = what .. name else level = name end
  if x == nil then error(what .. " is missing (a pubkey: base58 string or 32 bytes)", level or 3) end
  local p, err = to_pubkey(x, what)
  if not p then error(err, level or 3) end
  return p
end

M.SYSTEM_PROGRAM = M.pubkey("11111111111111111111111111111111")
M.COMPUTE_BUDGET_PROGRAM = M.pubkey("ComputeBudget111111111111111111111111111111")
M.TOKEN_PROGRAM = M.pubkey("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
M.TOKEN_2022_PROGRAM = M.pubkey("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
M.ASSOCIATED_TOKEN_PROGRAM = M.pubkey("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
M.MEMO_PROGRAM = M.pubkey("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")

-- keypairs ------------------------------------------------------------------------

local KP = { __secret = true }
KP.__index = KP
function KP.__tostring(k) return "keypair(" .. tostring(k.pubkey) .. ")" end
KP.__tojson = KP.__tostring
function KP:sign(msg)
  if type(msg) ~= "string" then error("keypair:sign: expected the message bytes (a string), got " .. type(msg), 2) end
  C.thorp_sol_sign(self._h, msg, #msg, sigbuf)
  return fstring(sigbuf, 64)
end

local function wrap_kp(h)
  if h == nil then return as_error("BAD_KEYPAIR", nil, cerr()) end
  h = ffi.gc(h, C.thorp_sol_keypair_free)
  C.thorp_sol_keypair_pubkey(h, buf)
  return setmetatable({ pubkey = pk_of_bytes(fstring(buf, 32)), _h = h }, KP)
end
local function bad_kp(msg) return as_error("BAD_KEYPAIR", nil, msg) end

M.keypair = {
  generate = function() return wrap_kp(C.thorp_sol_keypair_generate(errbuf, 256)) end,
  from_bytes = function(b)
    if type(b) ~= "string" then return bad_kp("keypair.from_bytes: expected 64 bytes (a string), got " .. type(b)) end
    return wrap_kp(C.thorp_sol_keypair_from_bytes(b, #b, errbuf, 256))
  end,
  from_seed = function(b)
    if type(b) ~= "string" or #b ~= 32 then return bad_kp("keypair.from_seed: expected a 32-byte seed") end
    return wrap_kp(C.thorp_sol_keypair_from_seed(b, errbuf, 256))
  end,
  from_base58 = function(s)
    if type(s) ~= "string" then return bad_kp("keypair.from_base58: expected a base58 string, got " .. type(s)) end
    return wrap_kp(C.thorp_sol_keypair_from_base58(s, #s, errbuf, 256))
  end,
  from_file = function(path)
    if type(path) ~= "string" then return bad_kp("keypair.from_file: expected a path, got " .. type(path)) end
    return wrap_kp(C.thorp_sol_keypair_from_file(path, errbuf, 256))
  end,
}
M.is_keypair = function(x) return getmetatable(x) == KP end

function M.verify(pubkey, message, signature)
  local p = need_pk(pubkey, "verify: pubkey")
  if type(message) ~= "string" then error("verify: message must be bytes (a string)", 2) end
  if type(signature) ~= "string" or #signature ~= 64 then return false end
  return C.thorp_sol_verify(p._b, message, #message, signature) == 1
end

function M.sha256(s)
  C.thorp_sol_sha256(s, #s, buf)
  return fstring(buf, 32)
end

function M.is_on_curve(x) return C.thorp_sol_on_curve(need_pk(x, "is_on_curve: key")._b) == 1 end

-- program addresses -----------------------------------------------------------------

local function seed_bytes(seeds, what)
  if type(seeds) ~= "table" then error(what .. ": seeds must be a list of byte strings or pubkeys", 3) end
  local parts = {}
  for i, s in ipairs(seeds) do
    if getmetatable(s) == PK then s = s._b end
    if type(s) ~= "string" then error(("%s: seed %d is a %s; seeds are byte strings or pubkeys"):format(what, i, type(s)), 3) end
    if i <= 16 then lens[i - 1] = #s end
    parts[i] = s
  end
  return concat(parts), #parts
end

function M.find_program_address(seeds, program_id)
  local s, n = seed_bytes(seeds, "find_program_address")
  local prog = need_pk(program_id, "find_program_address: program_id")
  local bump = C.thorp_sol_find_pda(s, lens, n, prog._b, buf, errbuf, 256)
  if bump < 0 then error(cerr(), 2) end
  return pk_of_bytes(fstring(buf, 32)), bump
end

function M.create_program_address(seeds, program_id)
  local s, n = seed_bytes(seeds, "create_program_address")
  local prog = need_pk(program_id, "create_program_address: program_id")
  local r = C.thorp_sol_create_pda(s, lens, n, prog._b, buf, errbuf, 256)
  if r ~= 0 then return nil, cerr() end
  return pk_of_bytes(fstring(buf, 32))
end

function M.associated_token_address(owner, mint, token_program)
  local o = need_pk(owner, "associated_token_address: owner")
  local m = need_pk(mint, "associated_token_address: mint")
  local tp = token_program and need_pk(token_program, "associated_token_address: token_program") or M.TOKEN_PROGRAM
  return (M.find_program_address({ o._b, tp._b, m._b }, M.ASSOCIATED_TOKEN_PROGRAM))
end

-- little-endian integers for instruction data ------------------------------------

local u64box = ffi.new("union { uint64_t u; uint8_t b[8]; }")
local u64_t, i64_t = ffi.typeof("uint64_t"), ffi.typeof("int64_t")
local function u64le(v, what)
  if type(v) == "number" then
    if v < 0 or v ~= floor(v) or v > 2 ^ 53 then
      error(("%s: %s is not an integer 0..2^53 (pass uint64 cdata for larger amounts)"):format(what, tostring(v)), 3)
    end
  elseif not (type(v) == "cdata" and (ffi.istype(u64_t, v) or (ffi.istype(i64_t, v) and v >= 0))) then
    error(("%s: expected an integer amount (a number or uint64 cdata), got %s"):format(what, type(v)), 3)
  end
  u64box.u = v
  return fstring(u64box.b, 8)
end
local function u32le(v, what)
  if type(v) ~= "number" or v < 0 or v ~= floor(v) or v > 4294967295 then
    error(("%s: %s is not an integer 0..4294967295"):format(what, tostring(v)), 3)
  end
  return char(band(v, 255), band(rshift(v, 8), 255), band(rshift(v, 16), 255), rshift(v, 24) % 256)
end
local function u8(v, what)
  if type(v) ~= "number" or v < 0 or v > 255 or v ~= floor(v) then
    error(("%s: %s is not an integer 0..255"):format(what, tostring(v)), 3)
  end
  return char(v)
end

-- instruction builders -----------------------------------------------------------

local function acct(pk, signer, writable) return { pubkey = pk, is_signer = signer, is_writable = writable } end

M.system = {
  transfer = function(from, to, lamports)
    return { program_id = M.SYSTEM_PROGRAM,
             accounts = { acct(need_pk(from, "system.transfer: from"), true, true),
                          acct(need_pk(to, "system.transfer: to"), false, true) },
             data = "\2\0\0\0" .. u64le(lamports, "system.transfer: lamports") }
  end,
}

M.compute_budget = {
  set_compute_unit_limit = function(units)
    return { program_id = M.COMPUTE_BUDGET_PROGRAM, accounts = {},
             data = "\2" .. u32le(units, "compute_budget.set_compute_unit_limit: units") }
  end,
  set_compute_unit_price = function(micro_lamports)
    return { program_id = M.COMPUTE_BUDGET_PROGRAM, accounts = {},
             data = "\3" .. u64le(micro_lamports, "compute_budget.set_compute_unit_price: micro_lamports") }
  end,
}

local function opts_table(t, what)
  if type(t) ~= "table" then error(what .. ": expected a table of named fields", 3) end
  return t
end

M.token = {
  transfer_checked = function(t)
    opts_table(t, "token.transfer_checked")
    local w = "token.transfer_checked: "
    return { program_id = t.program_id and need_pk(t.program_id, w, "program_id") or M.TOKEN_PROGRAM,
             accounts = { acct(need_pk(t.source, w, "source"), false, true),
                          acct(need_pk(t.mint, w, "mint"), false, false),
                          acct(need_pk(t.destination, w, "destination"), false, true),
                          acct(need_pk(t.owner, w, "owner"), true, false) },
             data = "\12" .. u64le(t.amount, w .. "amount") .. u8(t.decimals, w .. "decimals") }
  end,
  create_associated_token_account_idempotent = function(t)
    opts_table(t, "token.create_associated_token_account_idempotent")
    local w = "token.create_associated_token_account_idempotent: "
    local tp = t.program_id and need_pk(t.program_id, w, "program_id") or M.TOKEN_PROGRAM
    local owner, mint = need_pk(t.owner, w, "owner"), need_pk(t.mint, w, "mint")
    return { program_id = M.ASSOCIATED_TOKEN_PROGRAM,
             accounts = { acct(need_pk(t.payer, w, "payer"), true, true),
                          acct(M.associated_token_address(owner, mint, tp), false, true),
                          acct(owner, false, false), acct(mint, false, false),
                          acct(M.SYSTEM_PROGRAM, false, false), acct(tp, false, false) },
             data = "\1" }
  end,
}

function M.memo(text, signers)
  if type(text) ~= "string" then error("memo: text must be a string, got " .. type(text), 2) end
  local accounts = {}
  if signers ~= nil then
    if type(signers) ~= "table" or getmetatable(signers) == PK then signers = { signers } end
    for i, s in ipairs(signers) do accounts[i] = acct(need_pk(s, ("memo: signers[%d]"):format(i)), true, false) end
  end
  return { program_id = M.MEMO_PROGRAM, accounts = accounts, data = text }
end

-- compact-u16 and the message encoder ----------------------------------------------

local function cu16(n)
  if n < 0x80 then return char(n) end
  if n < 0x4000 then return char(bor(band(n, 0x7f), 0x80), rshift(n, 7)) end
  return char(bor(band(n, 0x7f), 0x80), bor(band(rshift(n, 7), 0x7f), 0x80), rshift(n, 14))
end
M.compact_u16 = cu16
local cu16v = ffi.new("unsigned[1]")
--- compact_u16_decode(bytes) -> value, nbytes | nil, err (minimal encodings of 0..65535 only)
function M.compact_u16_decode(s)
  local n = C.thorp_sol_cu16_decode(s, #s, cu16v)
  if n < 0 then return nil, "compact-u16: truncated, non-minimal, over 3 bytes or over 65535" end
  return tonumber(cu16v[0]), n
end

-- the encoder writes into one FFI buffer: no intermediate strings
local function put_cu16(p, o, n)
  if n < 0x80 then p[o] = n; return o + 1 end
  if n < 0x4000 then p[o] = bor(band(n, 0x7f), 0x80); p[o + 1] = rshift(n, 7); return o + 2 end
  p[o] = bor(band(n, 0x7f), 0x80); p[o + 1] = bor(band(rshift(n, 7), 0x7f), 0x80); p[o + 2] = rshift(n, 14)
  return o + 3
end
local function put_u8s(p, o, t)
  local n = #t
  o = put_cu16(p, o, n)
  for i = 1, n do p[o] = t[i]; o = o + 1 end
  return o
end
local function put_bytes(p, o, str)
  local n = #str
  ffi.copy(p + o, str, n)
  return o + n
end

--- encode_message(m) -> bytes: a compiled message (decode_message's shape) on the wire.
function M.encode_message(m)
  local keys, ixs, lk = m.account_keys, m.instructions, m.version == 0 and (m.lookups or {}) or nil
  local size = 45 + 32 * #keys
  for i = 1, #ixs do size = size + 7 + #ixs[i].accounts + #ixs[i].data end
  if lk then for i = 1, #lk do size = size + 38 + #lk[i].writable_indexes + #lk[i].readonly_indexes end end
  local bh = m.recent_blockhash_bytes or need_pk(m.recent_blockhash, "message: recent_blockhash")._b
  local p = size <= SCRATCH and msgbuf or ffi.new("uint8_t[?]", size) -- not buf: base58 decoding uses it
  local o = 0
  if lk then p[0] = 0x80; o = 1 end
  local h = m.header
  p[o], p[o + 1], p[o + 2] = h.num_required_signatures, h.num_readonly_signed_accounts, h.num_readonly_unsigned_accounts
  o = put_cu16(p, o + 3, #keys)
  for i = 1, #keys do o = put_bytes(p, o, keys[i]._b) end
  o = put_bytes(p, o, bh)
  o = put_cu16(p, o, #ixs)
  for i = 1, #ixs do
    local ix = ixs[i]
    p[o] = ix.program_id_index
    o = put_u8s(p, o + 1, ix.accounts)
    o = put_cu16(p, o, #ix.data)
    o = put_bytes(p, o, ix.data)
  end
  if lk then
    o = put_cu16(p, o, #lk)
    for i = 1, #lk do
      o = put_bytes(p, o, lk[i].account_key._b)
      o = put_u8s(p, o, lk[i].writable_indexes)
      o = put_u8s(p, o, lk[i].readonly_indexes)
    end
  end
  return fstring(p, o)
end

-- the compiler: Lua checks the input and lays it out, C orders and writes ---------------

local PACKET = 1232
local cix_t, cacc_t, ctab_t = ffi.typeof("sol_cix[?]"), ffi.typeof("sol_cacct[?]"), ffi.typeof("sol_ctable[?]")
local cix_n, cacc_n, ctab_n = 16, 64, 4
local cix, cacc, ctab = cix_t(cix_n), cacc_t(cacc_n), ctab_t(ctab_n)
local packed = setmetatable({}, { __mode = "k" }) -- lookup table -> { n, first address, addresses concatenated }
local IXW = "transaction: instructions[%d]."

-- a table's addresses as one string, cached while its list holds the same values
local function pack_table(lt, w)
  local addrs = lt.addresses
  if type(addrs) ~= "table" then error(w .. ".addresses is missing (a list of pubkeys)", 4) end
  local pk, n = packed[lt], #addrs
  if pk and pk.n == n then
    local same = true
    for i = 1, n do if pk[i] ~= addrs[i] then same = false; break end end
    if same then return pk.s end
  end
  local parts, copy = {}, { n = n }
  for ai = 1, n do
    local a = addrs[ai]
    parts[ai] = need_pk(a, ("%s.addresses[%d]"):format(w, ai), 5)._b
    copy[ai] = a
  end
  copy.s = concat(parts)
  packed[lt] = copy
  return copy.s
end

local function compile(t)
  if type(t) ~= "table" then error("transaction: expected a table { fee_payer, recent_blockhash, instructions, ... }", 3) end
  local payer = need_pk(t.fee_payer, "transaction: fee_payer", 4)
  local bh = t.recent_blockhash
  if bh == nil then error("transaction: recent_blockhash is missing (base58 of 32 bytes)", 3) end
  local bhk, err = to_pubkey(bh, "transaction: recent_blockhash")
  if not bhk then error(err, 3) end
  local version = t.version
  if version == nil or version == "legacy" then version = "legacy"
  elseif version ~= 0 and version ~= "0" and version ~= "v0" then
    error(("transaction: version %s; allowed: \"legacy\" or 0"):format(tostring(version)), 3)
  else version = 0 end
  local ixs = t.instructions
  if type(ixs) ~= "table" then error("transaction: instructions is missing (a list of instructions)", 3) end
  local tables = t.lookup_tables
  if tables ~= nil and version ~= 0 then error("transaction: lookup_tables need version = 0", 3) end

  local nix = #ixs
  if nix > cix_n then cix_n = nix; cix = cix_t(nix) end
  local anchor = {} -- keys converted from text: the C arrays only point at their bytes
  local k = 0
  for i = 1, nix do
    local ix = ixs[i]
    if type(ix) ~= "table" then error(("transaction: instructions[%d] is a %s, not an instruction"):format(i, type(ix)), 3) end
    local pid = ix.program_id
    if getmetatable(pid) ~= PK then -- converted here: anchor it while C holds its bytes
      pid = need_pk(pid, IXW:format(i) .. "program_id", 4)
      anchor[#anchor + 1] = pid
    end
    local accs = ix.accounts
    if type(accs) ~= "table" then
      error(IXW:format(i) .. "accounts is missing (a list of { pubkey, is_signer, is_writable })", 3)
    end
    local na = #accs
    if k + na > cacc_n then
      local old, n2 = cacc, math.max(2 * cacc_n, k + na)
      cacc = cacc_t(n2)
      ffi.copy(cacc, old, ffi.sizeof("sol_cacct") * k)
      cacc_n = n2
    end
    local c = cix[i - 1]
    c.program, c.first, c.naccounts = pid._b, k, na
    for j = 1, na do
      local a = accs[j]
      if type(a) ~= "table" then
        error(("%saccounts[%d] is a %s, not { pubkey, is_signer, is_writable }"):format(IXW:format(i), j, type(a)), 3)
      end
      local pk = a.pubkey
      if getmetatable(pk) ~= PK then
        pk = need_pk(pk, ("%saccounts[%d].pubkey"):format(IXW:format(i), j), 4)
        anchor[#anchor + 1] = pk
      end
      local e = cacc[k]
      e.key = pk._b
      e.flags = (a.is_signer and 1 or 0) + (a.is_writable and 2 or 0)
      k = k + 1
    end
    local d = ix.data
    if d == nil then d = ""
    elseif type(d) ~= "string" then error(IXW:format(i) .. "data must be bytes (a string), got " .. type(d), 3) end
    c.data, c.data_len = d, #d
  end
  local nt, keep = 0, anchor
  if tables then
    if type(tables) ~= "table" then error("transaction: lookup_tables must be a list of { key, addresses }", 3) end
    nt = #tables
    if nt > ctab_n then ctab_n = nt; ctab = ctab_t(nt) end
    for ti = 1, nt do
      local lt = tables[ti]
      local w = "transaction: lookup_tables[" .. ti .. "]"
      if type(lt) ~= "table" then error(w .. " is not a table { key, addresses }", 3) end
      local e = ctab[ti - 1]
      local key = need_pk(lt.key, w .. ".key", 4)
      local addrs = pack_table(lt, w)
      keep[#keep + 1] = addrs
      keep[#keep + 1] = key
      e.key, e.addresses, e.naddresses = key._b, addrs, #addrs / 32
    end
  end
  local n = C.thorp_sol_compile(version == 0 and 0 or -1, payer._b, bhk._b, cix, nix, cacc, ctab, nt, msgbuf,
    SCRATCH, errbuf, 256)
  if n < 0 then error(cerr(), 3) end
  local msg = fstring(msgbuf, n)
  return msg, version, keep
end

-- transactions ------------------------------------------------------------------

local TX = {}
TX.__index = TX
function TX.__tostring(tx)
  return ("transaction(%s, %d signers, %d bytes)"):format(tx.version == 0 and "v0" or "legacy", tx.nsig, tx:size())
end

local function new_tx(message, version, sigs)
  return setmetatable({ version = version, nsig = message:byte(version == 0 and 2 or 1), _msg = message,
                        _sigs = sigs or {} }, TX)
end

function M.transaction(t)
  local msg, version = compile(t)
  return new_tx(msg, version)
end

function TX:message() return self._msg end
function TX:size() return #cu16(self.nsig) + 64 * self.nsig + #self._msg end
--- tx:decoded() -> the compiled message as decode_message gives it (computed once)
function TX:decoded()
  local d = self._decoded
  if not d then
    d = assert(M.decode_message(self._msg))
    self._decoded = d
  end
  return d
end
function TX:signers()
  local out, keys = {}, self:decoded().account_keys
  for i = 1, self.nsig do out[i] = keys[i] end
  return out
end

local function signer_index(tx, pk)
  local i = C.thorp_sol_msg_signer_index(tx._msg, #tx._msg, pk._b)
  return i >= 0 and i + 1 or nil
end

function TX:sign(...)
  local msg = self._msg
  for a = 1, select("#", ...) do
    local kp = select(a, ...)
    if getmetatable(kp) ~= KP then error(("tx:sign: argument %d is not a keypair"):format(a), 2) end
    local at = signer_index(self, kp.pubkey)
    if not at then
      local names = {}
      for i, key in ipairs(self:signers()) do names[i] = tostring(key) end
      error(("tx:sign: %s is not a signer of this transaction (signers: %s)"):format(tostring(kp.pubkey),
        concat(names, ", ")), 2)
    end
    C.thorp_sol_sign(kp._h, msg, #msg, sigbuf)
    self._sigs[at] = fstring(sigbuf, 64)
  end
  return self
end

--- tx:add_signature(pubkey, sig64): a signature made elsewhere (a hardware wallet).
function TX:add_signature(pubkey, sig)
  local p = need_pk(pubkey, "tx:add_signature: pubkey")
  if type(sig) ~= "string" or #sig ~= 64 then error("tx:add_signature: a signature is 64 bytes", 2) end
  local at = signer_index(self, p)
  if not at then error(("tx:add_signature: %s is not a signer of this transaction"):format(tostring(p)), 2) end
  self._sigs[at] = sig
  return self
end

local ZERO_SIG = ("\0"):rep(64)
--- tx:serialize([{ partial = true }]): partial puts zero bytes for missing signatures.
function TX:serialize(opts)
  local sigs = self._sigs
  local p = { cu16(self.nsig) }
  for i = 1, self.nsig do
    local s = sigs[i]
    if not s then
      if not (opts and opts.partial) then
        error(("tx:serialize: missing signature %d of %d (signer %s): sign with its keypair first"):format(i,
          self.nsig, tostring(self:signers()[i])), 2)
      end
      s = ZERO_SIG
    end
    p[i + 1] = s
  end
  p[self.nsig + 2] = self._msg
  local wire = concat(p)
  if #wire > PACKET then
    error(("tx:serialize: transaction is %d bytes; at most %d allowed (the packet limit): "
      .. "fewer instructions or accounts, or lookup tables"):format(#wire, PACKET), 2)
  end
  return wire
end

function TX:base64(opts) return M.base64.encode(self:serialize(opts)) end
function TX:signature()
  local s = self._sigs[1]
  return s and b58enc(s) or nil
end
function TX:signatures()
  local out = {}
  for i = 1, self.nsig do out[i] = self._sigs[i] and b58enc(self._sigs[i]) or false end
  return out
end
function TX:is_signed()
  for i = 1, self.nsig do if not self._sigs[i] then return false end end
  return true
end

-- the decoder (C does the parsing) -----------------------------------------------------

local txbox = ffi.new("sol_tx")
local used = ffi.new("size_t[1]")

local function idx_list(p, n)
  local t = {}
  for i = 0, n - 1 do t[i + 1] = p[i] end
  return t
end

local function lua_msg(m)
  local keys = {}
  for i = 0, m.nkeys - 1 do keys[i + 1] = pk_of_bytes(fstring(m.keys + 32 * i, 32)) end
  local ixs = {}
  for i = 0, m.nix - 1 do
    local ix = m.ix[i]
    ixs[i + 1] = { program_id_index = ix.program, accounts = idx_list(ix.accounts, ix.naccounts),
                   data = fstring(ix.data, ix.data_len), program_id = keys[ix.program + 1] }
  end
  local out = {
    version = m.version == 0 and 0 or "legacy",
    header = { num_required_signatures = m.num_required_signatures,
               num_readonly_signed_accounts = m.num_readonly_signed,
               num_readonly_unsigned_accounts = m.num_readonly_unsigned },
    account_keys = keys, recent_blockhash = b58enc(fstring(m.blockhash, 32)), instructions = ixs,
  }
  if m.version == 0 then
    local lk = {}
    for i = 0, m.nlookups - 1 do
      local l = m.lookups[i]
      lk[i + 1] = { account_key = pk_of_bytes(fstring(l.key, 32)), writable_indexes = idx_list(l.writable, l.nwritable),
                    readonly_indexes = idx_list(l.readonly, l.nreadonly) }
    end
    out.lookups = lk
  end
  return out
end

--- decode_message(bytes) -> message | nil, err: structural, like @solana/kit's codec.
local function bad_tx(msg) return as_error("BAD_TRANSACTION", nil, msg) end
function M.decode_message(b)
  if type(b) ~= "string" then return bad_tx("decode_message: expected bytes (a string), got " .. type(b)) end
  if C.thorp_sol_msg_decode(b, #b, txbox.msg, used, errbuf, 256) ~= 0 then return bad_tx(cerr()) end
  if used[0] ~= #b then return bad_tx(("message: %d bytes after the message"):format(#b - tonumber(used[0]))) end
  return lua_msg(txbox.msg)
end

--- decode_transaction(bytes) -> { version, header, account_keys, recent_blockhash, instructions,
--- lookups, signatures, message } | nil, err. Indexes are 0-based, as on the wire.
function M.decode_transaction(b)
  if type(b) ~= "string" then return bad_tx("decode_transaction: expected bytes (a string), got " .. type(b)) end
  if C.thorp_sol_tx_decode(b, #b, txbox, errbuf, 256) ~= 0 then return bad_tx(cerr()) end
  local out = lua_msg(txbox.msg)
  local sigs = {}
  for i = 0, txbox.nsigs - 1 do sigs[i + 1] = fstring(txbox.sigs + 64 * i, 64) end
  out.signatures = sigs
  out.message = fstring(txbox.msg.bytes, txbox.msg.len)
  return out
end

--- verify_transaction(bytes) -> true | false, err: decodes and checks every signature.
function M.verify_transaction(b)
  if type(b) ~= "string" then return false, select(2, bad_tx("verify_transaction: expected bytes")) end
  if C.thorp_sol_tx_decode(b, #b, txbox, errbuf, 256) ~= 0 then return false, select(2, bad_tx(cerr())) end
  local bad = C.thorp_sol_tx_verify(txbox)
  if bad >= 0 then return false, select(2, bad_tx(("signature %d does not verify"):format(bad + 1))) end
  return true
end

--- transaction_from(decoded): a tx object from decode_transaction's table (to re-sign or re-send).
function M.transaction_from(d)
  local sigs = {}
  for i, s in ipairs(d.signatures or {}) do if s ~= ZERO_SIG then sigs[i] = s end end
  return new_tx(d.message or M.encode_message(d), d.version, sigs)
end

-- sending lives in thorp.sender (another module) ------------------------------------------
function M.send_and_confirm(...) return require("thorp.sender").send_and_confirm(...) end
function M.blockhash(...) return require("thorp.sender").blockhash(...) end
function M.priority_fee(...) return require("thorp.sender").priority_fee(...) end
function M.send_bundle(...) return require("thorp.sender").send_bundle(...) end
function M.prepare(...) return require("thorp.sender").prepare(...) end
M.jito = setmetatable({}, { __index = function(_, k) return require("thorp.sender").jito[k] end })

return M
