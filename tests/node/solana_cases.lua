-- thorp's half of tests/node/solana_test.mjs: builds the cases the test
-- describes (same keys, blockhash and instructions as @solana/kit), decodes
-- kit's bytes, derives ATAs and base58. Usage: thorp exec solana_cases.lua IN.json
-- Prints one JSON document.
local sol, json = thorp.solana, thorp.json
local f = assert(io.open(arg and arg[1] or ..., "r"))
local doc = assert(json.decode(f:read("*a")))
f:close()
local function unhex(h) return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end

local function instruction(ix)
  if ix.b == "transfer" then return sol.system.transfer(ix.from, ix.to, ix.lamports) end
  if ix.b == "limit" then return sol.compute_budget.set_compute_unit_limit(ix.units) end
  if ix.b == "price" then return sol.compute_budget.set_compute_unit_price(ix.micro_lamports) end
  if ix.b == "transfer_checked" then return sol.token.transfer_checked(ix) end
  if ix.b == "create_ata" then return sol.token.create_associated_token_account_idempotent(ix) end
  if ix.b == "memo" then return sol.memo(ix.text, ix.signers) end
  error("unknown instruction " .. tostring(ix.b))
end

local function plain(d)
  local keys, ixs, lks = {}, {}, json.array()
  for i, k in ipairs(d.account_keys) do keys[i] = tostring(k) end
  for i, ix in ipairs(d.instructions) do
    ixs[i] = { program_id_index = ix.program_id_index, accounts = json.array(ix.accounts), data = sol.base64.encode(ix.data) }
  end
  for i, l in ipairs(d.lookups or {}) do
    lks[i] = { account_key = tostring(l.account_key), writable_indexes = json.array(l.writable_indexes),
               readonly_indexes = json.array(l.readonly_indexes) }
  end
  return { version = d.version, header = d.header, account_keys = keys, recent_blockhash = d.recent_blockhash,
           instructions = ixs, lookups = lks }
end

local out = { cases = {}, atas = {}, b58 = {} }
for i, c in ipairs(doc.cases) do
  local ixs = {}
  for j, ix in ipairs(c.instructions) do ixs[j] = instruction(ix) end
  local tx = sol.transaction{ fee_payer = c.fee_payer, recent_blockhash = c.blockhash, instructions = ixs,
    version = c.version, lookup_tables = c.lookup_tables }
  for _, seed in ipairs(c.signers) do tx:sign(assert(sol.keypair.from_seed(unhex(seed)))) end
  local kit = assert(sol.base64.decode(c.kit_wire))
  local d, err = sol.decode_transaction(kit)
  local ok, verr = sol.verify_transaction(kit)
  out.cases[i] = { wire = tx:base64(), kit_decoded = d and plain(d) or err, kit_verifies = ok or verr,
                   reencoded = d and sol.base64.encode(sol.transaction_from(d):serialize()) or nil }
end
for i, p in ipairs(doc.atas) do out.atas[i] = tostring(sol.associated_token_address(p[1], p[2])) end
for i, h in ipairs(doc.b58) do out.b58[i] = sol.base58.encode(unhex(h)) end
io.write(json.encode(out), "\n")
