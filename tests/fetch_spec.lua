-- thorp.fetch: any method, headers, body and timeout on the host's loop;
-- redirects off by default; secrets of its URL never in an error.
local thorp = require "thorp"
local cjson = require "cjson"

describe("thorp.fetch", function()
  local pid, pipe, base

  setup(function()
    local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests"
    pipe = assert(io.popen(("sh -c 'echo $$; exec python3 %q'"):format(dir .. "/helpers/echo_server.py"), "r"))
    pid = tonumber(pipe:read("*l"))
    local port = assert(pipe:read("*l"):match("^ECHO_READY (%d+)"))
    base = "http://127.0.0.1:" .. port
  end)
  teardown(function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    pipe:close()
  end)

  it("sends any method with headers and a body, and returns status, headers and body", function()
    for _, m in ipairs{ "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" } do
      local res = thorp.fetch(base .. "/echo", { method = m, headers = { ["X-Test"] = "v-" .. m }, body = "b=" .. m })
      assert.is_true(res.ok, m)
      assert.are.equal(200, res.status)
      assert.are.equal("1", res.headers["x-echo"])
      local got = cjson.decode(res.body)
      assert.are.equal(m, got.method)
      assert.are.equal("v-" .. m, got.headers["x-test"])
      assert.are.equal("b=" .. m, got.body)
    end
  end)

  it("treats an HTTP error status as an answer, and HEAD as headers only", function()
    local res = thorp.fetch(base .. "/echo?status=503")
    assert.is_true(res.ok)
    assert.are.equal(503, res.status)
    local h = thorp.fetch(base .. "/echo", { method = "head" })
    assert.is_true(h.ok)
    assert.are.equal("", h.body)
    assert.truthy(tonumber(h.headers["content-length"]) > 0)
  end)

  it("does not follow redirects unless asked", function()
    local res = thorp.fetch(base .. "/redirect")
    assert.are.equal(302, res.status)
    assert.are.equal("/echo?from=redirect", res.headers.location)
    local f = thorp.fetch(base .. "/redirect", { follow_redirects = true })
    assert.are.equal(200, f.status)
    assert.are.equal(1, f.redirects)
    assert.are.equal("/echo?from=redirect", cjson.decode(f.body).path)
  end)

  it("times out as a value, and hides the URL's secrets in the error", function()
    local t0 = thorp.now()
    local res = thorp.fetch(base .. "/slow/FETCHKEY77?api-key=QKEY88", { timeout_ms = 200 })
    assert.is_false(res.ok)
    assert.are.equal("TIMEOUT", res.error.code)
    assert.truthy(thorp.now() - t0 < 2500)
    local text = res.error.message .. " " .. res.error.url
    assert.is_nil(text:find("FETCHKEY77", 1, true))
    assert.is_nil(text:find("QKEY88", 1, true))
    assert.is_nil(thorp.log.scrub("later: FETCHKEY77 QKEY88"):find("KEY", 1, true))
  end)

  it("reports a refused connection as TRANSPORT_ERROR and an answer over max_body too", function()
    local res = thorp.fetch("http://127.0.0.1:1/x")
    assert.are.equal("TRANSPORT_ERROR", res.error.code)
    local big = thorp.fetch(base .. "/big?n=100000", { max_body = 1000 })
    assert.are.equal("TRANSPORT_ERROR", big.error.code)
    assert.truthy(big.error.message:find("max_body", 1, true))
  end)

  it("names the bad option and what is allowed", function()
    for _, case in ipairs{
      { nil, "url" }, { "ftp://x/", "url" },
      { base, "opts.method", { method = "GE T" } },
      { base, "opts.headers.X", { headers = { X = "a\r\nInjected: 1" } } },
      { base, "opts.timeout_ms", { timeout_ms = -1 } },
      { base, "opts.retries", { retries = 2 } },
    } do
      local ok, err = pcall(thorp.fetch, case[1], case[3])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(case[2], 1, true), tostring(err))
    end
  end)

  it("runs calls concurrently on the loop (each yields)", function()
    local done = 0
    local t0 = thorp.now()
    for _ = 1, 5 do
      thorp.spawn(function()
        local r = thorp.fetch(base .. "/slow")
        if r.ok then done = done + 1 end
      end)
    end
    while done < 5 and thorp.now() - t0 < 10000 do thorp.sleep(20) end
    assert.are.equal(5, done)
    assert.truthy(thorp.now() - t0 < 9000) -- five 3 s answers did not take 15 s
  end)

  it("keeps thorp.rpc.http_post as an alias", function()
    local r = assert(thorp.rpc.http_post(base .. "/echo", '{"a":1}'))
    assert.are.equal(200, r.status)
    local got = cjson.decode(r.body)
    assert.are.equal("POST", got.method)
    assert.are.equal("application/json", got.headers["content-type"])
  end)
end)
