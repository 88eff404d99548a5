-- Writes the seed transactions of the solana_decode fuzz target:
--   ./thorp exec tests/fuzz/solana_seeds.lua tests/fuzz/corpus/solana_decode
local sol = require "thorp.solana"
local dir = assert(arg and arg[1], "usage: solana_seeds.lua DIR")
local rep = function(b) return string.char(b):rep(32) end
local k = function(b) return sol.pubkey(rep(b)) end
local payer, other = sol.keypair.from_seed(rep(1)), sol.keypair.from_seed(rep(2))
local bh = "3EKkiwNLWqoUbzFkPrmKbtUB4EweE6f4STzevYUmezeL"
local function write(name, bytes)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end
local ix = { program_id = k(200), data = "\1\2\3", accounts = {
  { pubkey = k(9) }, { pubkey = k(8), is_writable = true }, { pubkey = other.pubkey, is_signer = true } } }
local tx = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh, instructions = { ix } }
tx:sign(payer, other)
write("legacy_signed", tx:serialize())
write("legacy_unsigned", sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh,
  instructions = { sol.memo("gm") } }:serialize{ partial = true })
local v0 = sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh, version = 0,
  instructions = { { program_id = k(200), data = "",
                     accounts = { { pubkey = k(50), is_writable = true }, { pubkey = k(40) } } } },
  lookup_tables = { { key = k(90), addresses = { k(40), k(50) } } } }
v0:sign(payer)
write("v0_lookups", v0:serialize())
write("empty", "")
