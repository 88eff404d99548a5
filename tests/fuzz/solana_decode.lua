-- solana_decode: the transaction decoder (thorp.solana.decode_transaction,
-- host/solana.c's wire codec) on arbitrary bytes, as a transaction that came
-- from outside (a client of the front door, a signer, a file).
-- Invariants: decoding, message decoding and verification never raise;
-- they return a value or nil/false and an error value (BAD_TRANSACTION); what the decoder
-- accepts is canonical: re-encoding the decoded message gives its bytes
-- back, and the decoded transaction serializes to exactly the input.
local sol = require "thorp.solana"

local function check_err(v, err, what)
  if v == nil or v == false then
    if type(err) ~= "table" or err.code ~= "BAD_TRANSACTION" or type(err.message) ~= "string" or err.message == "" then
      error(what .. " failed without an error value { code = \"BAD_TRANSACTION\", message = ... }")
    end
    return false
  end
  return true
end

return {
  one = function(input)
    local d, err = sol.decode_transaction(input)
    if check_err(d, err, "decode_transaction") then
      local msg = sol.encode_message(d)
      if msg ~= d.message then
        error(("decode_transaction accepted a message that re-encodes differently (%d bytes in, %d out)")
          :format(#d.message, #msg))
      end
      local wire = sol.transaction_from(d):serialize{ partial = true }
      if wire ~= input then
        error(("decode_transaction accepted %d bytes that serialize back as %d different bytes"):format(#input, #wire))
      end
    end
    local ok, verr = sol.verify_transaction(input)
    if ok ~= true then check_err(ok, verr, "verify_transaction") end
    local m, merr = sol.decode_message(input)
    check_err(m, merr, "decode_message")
  end,
}
