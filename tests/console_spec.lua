-- The console's evaluator (thorp.console.eval) and the pretty printer.
local thorp = require "thorp"
local console = require "thorp.console"
local pretty = require "thorp.pretty"

describe("pretty.format", function()
  local f = pretty.format

  it("formats scalars", function()
    assert.are.equal("1", f(1))
    assert.are.equal("-3", f(-3))
    assert.are.equal("0.3", f(0.1 + 0.2))
    assert.are.equal("1712345678123.5", f(1712345678123.5))
    assert.are.equal("inf", f(1 / 0))
    assert.are.equal("nan", f(0 / 0))
    assert.are.equal('"a\\nb\\"c"', f('a\nb"c'))
    assert.are.equal("nil", f(nil))
    assert.are.equal("true", f(true))
    assert.are.equal("42", f(require("ffi").new("int64_t", 42)))
  end)

  it("sorts keys and keeps short tables on one line", function()
    assert.are.equal("{ a = 1, b = { 1, 2, 3 }, c = \"x\" }", f({ c = "x", b = { 1, 2, 3 }, a = 1 }))
    assert.are.equal("{}", f({}))
    assert.are.equal('{ 1, 2, [5] = 5, ["a b"] = 3, ["end"] = 2, x = 1 }', f({ 1, 2, [5] = 5, x = 1, ["end"] = 2, ["a b"] = 3 }))
  end)

  it("indents long tables and fills lines with long lists", function()
    local t = { name = ("n"):rep(40), list = {}, nested = { deeper = { value = ("v"):rep(50) } } }
    for i = 1, 30 do t.list[i] = i * 1000 end
    local s = f(t)
    assert.truthy(s:find('^{\n  list = {\n    1000, 2000, '))
    assert.truthy(s:find('\n  nested = {\n    deeper = { value = "v+" }\n  }\n}$'), s)
    for line in s:gmatch("[^\n]+") do assert.is_true(#line <= 82, line) end
  end)

  it("marks cycles and stops at the depth limit", function()
    local t = { x = 1 }
    t.self = t
    assert.are.equal("{ self = <cycle>, x = 1 }", f(t))
    local deep = { a = { b = { c = { d = 1 } } } }
    assert.are.equal("{ a = { b = {...} } }", f(deep, { depth = 2 }))
    local shared = { 1 }
    assert.are.equal("{ { 1 }, { 1 } }", f({ shared, shared }))
  end)

  it("prints a list of records as aligned columns", function()
    local s = f({
      { name = "helius", state = "CLOSED", slot = 123456, healthy = true },
      { name = "public", state = "OPEN", slot = 99, healthy = false },
    })
    local lines = {}
    for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.same({
      "name    healthy  slot    state",
      "------  -------  ------  ------",
      "helius  true     123456  CLOSED",
      "public  false        99  OPEN",
    }, lines)
  end)

  it("nests an aligned table under its key", function()
    local s = f({ eps = { { name = "a", n = 1 }, { name = "bb", n = 22 } } })
    assert.are.equal("{\n  eps =\n    name  n\n    ----  --\n    a      1\n    bb    22\n}", s)
  end)

  it("does not use columns for records that differ or nest", function()
    assert.are.equal("{ { a = 1 }, { b = 2 } }", f({ { a = 1 }, { b = 2 } }))
    assert.are.equal("{ { a = { 1 } }, { a = { 2 } } }", f({ { a = { 1 } }, { a = { 2 } } }))
  end)

  it("limits the number of items shown", function()
    local t = {}
    for i = 1, 50 do t[i] = i end
    assert.truthy(f(t, { max_items = 10 }):find("... (40 more)", 1, true))
  end)

  it("uses __tostring when the value has one", function()
    local v = setmetatable({}, { __tostring = function() return "<thing>" end })
    assert.are.equal("{ v = <thing> }", f({ v = v }))
  end)

  it("values() joins with tabs, or lines when a value is multi-line", function()
    assert.are.equal('1\t"a"\tnil', pretty.values(1, "a", nil))
    local big = {}
    for i = 1, 40 do big["k" .. i] = i end
    assert.truthy(pretty.values(1, big):find("^1\n{\n"))
    assert.are.equal("", pretty.values())
  end)
end)

describe("console.eval", function()
  it("prints the value of an expression, with or without =", function()
    local env = console.new_env()
    assert.are.same({ true, "2\n" }, { console.eval("=1+1", env) })
    assert.are.same({ true, "2\n" }, { console.eval("1+1", env) })
    assert.are.same({ true, '1\t"two"\n' }, { console.eval("1, 'two'", env) })
    assert.are.same({ true, "{ a = 1 }\n" }, { console.eval("= { a = 1 }", env) })
  end)

  it("runs statements and keeps variables per environment", function()
    local env = console.new_env()
    assert.are.same({ true, "" }, { console.eval("x = 41", env) })
    assert.are.same({ true, "42\n" }, { console.eval("=x + 1", env) })
    assert.are.same({ true, "nil\n" }, { console.eval("=x", console.new_env()) })
    assert.is_nil(rawget(_G, "x"))
  end)

  it("sends print output to the console", function()
    local ok, out = console.eval("for i = 1, 3 do print(i, 'x') end", console.new_env())
    assert.is_true(ok)
    assert.are.equal("1\tx\n2\tx\n3\tx\n", out)
  end)

  it("returns errors as text with a traceback, and keeps going", function()
    local env = console.new_env()
    local ok, out = console.eval("local t = nil\nreturn t.field", env)
    assert.is_false(ok)
    assert.truthy(out:find("console:2: attempt to index local 't'", 1, true), out)
    assert.truthy(out:find("stack traceback", 1, true))
    ok, out = console.eval('error("boom")', env)
    assert.is_false(ok)
    assert.truthy(out:find("console:1: boom", 1, true), out)
    ok, out = console.eval("error({ code = 'X' })", env)
    assert.is_false(ok)
    assert.truthy(out:find('code = "X"', 1, true), out)
    ok, out = console.eval("this is not lua", env)
    assert.is_false(ok)
    assert.truthy(out:find("console:1:", 1, true))
    assert.are.same({ true, "3\n" }, { console.eval("=1+2", env) })
  end)

  it("lets a command yield while other tasks run", function()
    local other = false
    thorp.spawn(function() thorp.sleep(5); other = true end)
    local ok, out = console.eval("thorp.sleep(40); return 'woke'", console.new_env())
    assert.are.same({ true, '"woke"\n' }, { ok, out })
    assert.is_true(other, "the other task ran while the command slept")
  end)

  it("never shows a registered secret", function()
    thorp.log.secret("S3CRETKEY-abc123")
    local ok, out = console.eval('="https://rpc.example/?api-key=S3CRETKEY-abc123"', console.new_env())
    assert.is_true(ok)
    assert.falsy(out:find("S3CRETKEY", 1, true))
    assert.truthy(out:find("***", 1, true))
    ok, out = console.eval('error("key S3CRETKEY-abc123")', console.new_env())
    assert.is_false(ok)
    assert.falsy(out:find("S3CRETKEY", 1, true))
    ok, out = console.eval('print(("x"):rep(20000) .. "S3CRETKEY-abc123")', console.new_env())
    assert.is_true(ok)
    assert.falsy(out:find("S3CRETKEY", 1, true))
  end)

  it("has the helpers", function()
    local env = console.new_env()
    local ok, out = console.eval("help()", env)
    assert.is_true(ok)
    assert.truthy(out:find("endpoints()", 1, true))
    ok, out = console.eval("stats()", env)
    assert.is_true(ok)
    assert.truthy(out:find("scheduler", 1, true), out)
    ok, out = console.eval("reload()", env)
    if not package.loaded["thorp.policy"] and not pcall(require, "thorp.policy") then
      assert.is_false(ok)
      assert.truthy(out:find("policy module", 1, true), out)
      assert.falsy(out:find("traceback", 1, true))
    else
      assert.is_string(out)
    end
  end)

  it("tells a complete chunk from one that needs more lines", function()
    assert.is_true(console.incomplete("for i = 1, 2 do"))
    assert.is_true(console.incomplete("=f("))
    assert.is_true(console.incomplete("x = [[abc"))
    assert.is_false(console.incomplete("for i = 1, 2 do end"))
    assert.is_false(console.incomplete("1 +* 2"))
    assert.is_false(console.incomplete("f(); g()"))
    assert.is_false(console.incomplete("=1"))
  end)
end)

describe("console.listen", function()
  it("refuses a world-writable socket directory", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert.is_true(require("thorp.sys").mkdir_p(dir, tonumber("777", 8)))
    os.execute("chmod 0777 " .. dir)
    local ok, err = console.listen(dir .. "/c.sock")
    os.remove(dir)
    assert.is_nil(ok)
    assert.truthy(err:find("world-writable", 1, true), err)
  end)

  it("refuses a path that is not a socket", function()
    local file = os.tmpname()
    local ok, err = console.listen(file)
    os.remove(file)
    assert.is_nil(ok)
    assert.truthy(err:find("is not a socket", 1, true), err)
  end)
end)
