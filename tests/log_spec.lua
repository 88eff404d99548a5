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

describe("one scrubber for every URL", function()
  it("hides every path segment and query value whatever its length or dots", function()
    for _, case in ipairs{
      { "http://host/SECRET456", "http://host/***" },
      { "http://host:8899/a.b/c?k=1&flag", "http://host:8899/***/***?k=***&***" },
      { "https://u:pw@host/v1/", "https://***@host/***/" },
      { "wss://host/x#frag", "wss://host/***#***" },
      { "http://host", "http://host" },
    } do
      assert.are.equal(case[2], log.redact_url(case[1]))
      assert.are.equal("see " .. case[2] .. " now", log.scrub("see " .. case[1] .. " now"))
    end
  end)

  it("hides URLs written JSON-escaped (cjson writes \\/)", function()
    assert.are.equal([["http:\/\/h\/***\/***"]], log.scrub([["http:\/\/h\/Tk.5\/x"]]))
  end)

  it("keeps the path of a public endpoint and still hides its query values", function()
    assert.are.equal("https://pub.example/api/v1?key=***",
      log.redact_url("https://pub.example/api/v1?key=abc", { public_path = true }))
    assert.are.equal("at https://pub.example/api/v1/x?key=***", log.scrub("at https://pub.example/api/v1/x?key=z"))
    assert.are.equal("https://pub.example/***", log.scrub("https://pub.example/apix")) -- a prefix of segments, not bytes
  end)

  it("knows the pieces of a redacted URL and header values as literal secrets", function()
    log.redact_url("https://node.example/KEYPIECE77/rpc?token=TOKVAL88", { headers = { Authorization = "Bearer HDRTOK99" } })
    assert.are.equal("*** *** *** ***", log.scrub("KEYPIECE77 TOKVAL88 HDRTOK99 Bearer HDRTOK99"):gsub("Bearer %*%*%*", "***"))
  end)

  it("scrubs text of any length in one pass (no piece boundary)", function()
    log.secret("EDGESECRET42")
    for _, at in ipairs{ 4090, 4096 - 6, 8186, 65530 } do
      local out = log.scrub(("x"):rep(at) .. "EDGESECRET42" .. ("y"):rep(5000))
      assert.is_nil(out:find("EDGESECRET42", 1, true))
      assert.are.equal(at + 3 + 5000, #out)
    end
  end)

  it("grows its output when hiding short pieces lengthens the text", function()
    local s = ("http://h/a "):rep(2000)
    assert.are.equal(("http://h/*** "):rep(2000), log.scrub(s))
  end)
end)

describe("literal secrets inside URL syntax", function()
  it("are hidden in a host, a public path and a query name too", function()
    log.secret("HOSTTOK55")
    assert.are.equal("http://***.example/***", log.scrub("http://HOSTTOK55.example/x"))
    log.redact_url("https://pub2.example/open", { public_path = true })
    assert.are.equal("https://pub2.example/open/***?***=***", log.scrub("https://pub2.example/open/HOSTTOK55?HOSTTOK55=1"))
  end)
end)

describe("log fields", function()
  local json = require "thorp.json"
  local solana = require "thorp.solana"
  local pk = solana.pubkey("11111111111111111111111111111111")

  it("are written as thorp.json: uint64 with every digit, null, pubkeys in base58", function()
    local line = log.format("info", "m", { lamports = 18446744073709551615ULL, gone = json.null, owner = pk,
                                            list = { 1, json.null } }, "t", true)
    local v = assert(json.decode(line))
    assert.are.equal(18446744073709551615ULL, v.lamports)
    assert.is_true(json.is_null(v.gone))
    assert.are.equal("11111111111111111111111111111111", v.owner)
    assert.are.equal(1, v.list[1])
    assert.is_true(json.is_null(v.list[2]))
    assert.are.equal("t", v.module)
    assert.are.equal("m", v.msg)
  end)

  it("keep the other fields when one cannot be encoded", function()
    local line = log.format("warn", "m", { n = 5, fn = print, bad = 0 / 0 }, nil, true)
    local v = assert(json.decode(line))
    assert.are.equal(5, v.n)
    assert.are.equal("string", type(v.fn))
    assert.are.equal("string", type(v.bad))
  end)

  it("read the same way in text lines", function()
    local line = log.format("info", "m", { lamports = 18446744073709551615ULL, owner = pk, gone = json.null,
                                            error = require("thorp.errors").new("BAD_INPUT", "what was wrong") })
    assert.truthy(line:find("lamports=18446744073709551615 ", 1, true), line)
    assert.truthy(line:find("owner=11111111111111111111111111111111", 1, true), line)
    assert.truthy(line:find("gone=null", 1, true), line)
    assert.truthy(line:find("BAD_INPUT: what was wrong", 1, true), line)
  end)

  it("come out of a real log line whole (the host's sink, JSON lines)", function()
    local bin = os.getenv("THORP") or (require("thorp.host").dev_root() .. "/thorp")
    local p = io.popen(("d=$(mktemp -d); THORP_STATE_DIR=$d %q exec -e %q 2>&1 >/dev/null; rm -rf $d"):format(bin,
      'thorp.log.info("fields", { lamports = 18446744073709551615ULL, gone = thorp.json.null, '
      .. 'owner = thorp.solana.pubkey("11111111111111111111111111111111") })'))
    local out = p:read("*a")
    p:close()
    local line = assert(out:match('[^\n]*"msg":"fields"[^\n]*'), out)
    local v = assert(json.decode(line))
    assert.are.equal(18446744073709551615ULL, v.lamports)
    assert.is_true(json.is_null(v.gone))
    assert.are.equal("11111111111111111111111111111111", v.owner)
  end)
end)
