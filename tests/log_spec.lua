-- The log scrubber: registered secrets never come out, whatever the length.
local log = require "thorp.log"

describe("log scrubber", function()
  it("scrubs secrets anywhere in strings longer than its first buffer", function()
    log.secret("LONGSECRET777")
    local s = ("x"):rep(8190) .. "LONGSECRET777" .. ("y"):rep(50) .. "LONGSECRET777"
    local out = log.scrub(s)
    assert.is_nil(out:find("LONGSECRET777", 1, true))
    assert.are.equal(8190 + 3 + 50 + 3, #out)
  end)

  it("hides the key of an endpoint URL once the URL has been redacted", function()
    local shown = require("thorp.config").redact_url("https://rpc.example.com/?api-key=abcdef123456")
    assert.is_nil(shown:find("abcdef123456", 1, true))
    assert.is_nil(log.scrub("calling https://rpc.example.com/?api-key=abcdef123456"):find("abcdef123456", 1, true))
  end)
end)
