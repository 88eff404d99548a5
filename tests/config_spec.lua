-- Configuration: layers, validation messages, booleans, URL redaction.
local config = require "thorp.config"
local log = require "thorp.log"

local function env(t) return function(name) return t[name] end end

local function write(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- load a config file's text; returns cfg, all errors joined
local function load_text(text, e, extra)
  local path = write(text)
  local opts = { file = path, env = env(e or {}) }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local cfg, errs = config.load(opts)
  os.remove(path)
  return cfg, errs and table.concat(errs, "\n") or ""
end

describe("config", function()
  it("has the contract's defaults", function()
    local cfg = assert(config.load{ env = env{} })
    assert.are.equal(10000, cfg.backpressure.max_queue_size)
    assert.are.equal(0.8, cfg.backpressure.warning_threshold)
    assert.are.equal(0.95, cfg.backpressure.critical_threshold)
    assert.is_true(cfg.backpressure.enabled)
    assert.is_true(cfg.shutdown.enabled)
    assert.are.equal("./thorp-state", cfg.state_dir)
    assert.are.equal("./thorp-state/console.sock", cfg.console.socket)
    assert.are.same({}, cfg.rpc.endpoints)
  end)

  it("reads booleans strictly: false means false", function()
    for _, v in ipairs{ "false", "0", "no", "FALSE", "No" } do
      local cfg = assert(config.load{ env = env{ ENABLE_BACKPRESSURE_MANAGEMENT = v } })
      assert.is_false(cfg.backpressure.enabled, v)
    end
    for _, v in ipairs{ "true", "1", "yes" } do
      local cfg = assert(config.load{ env = env{ ENABLE_GRACEFUL_SHUTDOWN = v } })
      assert.is_true(cfg.shutdown.enabled, v)
    end
    local cfg, errs = config.load{ env = env{ ENABLE_GRACEFUL_SHUTDOWN = "maybe" } }
    assert.is_nil(cfg)
    assert.matches('ENABLE_GRACEFUL_SHUTDOWN="maybe": allowed true, false, 1, 0, yes or no', errs[1], 1, true)
  end)

  it("reports every invalid value with its name, value and what is allowed", function()
    local cfg, errs = config.load{ env = env{
      BACKPRESSURE_MAX_QUEUE_SIZE = "lots", SHUTDOWN_TIMEOUT_MS = "-5", LOG_LEVEL = "loud" } }
    assert.is_nil(cfg)
    assert.are.equal(3, #errs)
    local all = table.concat(errs, "\n")
    assert.matches('BACKPRESSURE_MAX_QUEUE_SIZE="lots": allowed an integer', all, 1, true)
    assert.matches('SHUTDOWN_TIMEOUT_MS="-5": allowed an integer from 0', all, 1, true)
    assert.matches('LOG_LEVEL="loud": allowed one of error, warn, info, debug', all, 1, true)
  end)

  it("checks that the warning threshold is below the critical one", function()
    local _, errs = config.load{ env = env{ BACKPRESSURE_WARNING_THRESHOLD = "0.97" } }
    assert.matches("must be below BACKPRESSURE_CRITICAL_THRESHOLD", errs[1], 1, true)
  end)

  it("layers defaults < file < environment < command line", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[return { backpressure = { max_queue_size = 500, warning_threshold = 0.7 },
      shutdown = { timeout_ms = 1234 },
      rpc = { endpoints = { { name = "mine", url = "http://127.0.0.1:1/", weight = 3 } } } }]])
    f:close()
    local cfg = assert(config.load{ file = path, env = env{ BACKPRESSURE_MAX_QUEUE_SIZE = "600" },
                                    sets = { "shutdown.timeout_ms=99" } })
    os.remove(path)
    assert.are.equal(600, cfg.backpressure.max_queue_size)
    assert.are.equal(0.7, cfg.backpressure.warning_threshold)
    assert.are.equal(99, cfg.shutdown.timeout_ms)
    assert.are.equal("mine", cfg.rpc.endpoints[1].name)
    assert.are.equal(3, cfg.rpc.endpoints[1].weight)
  end)

  it("rejects unknown keys and bad endpoint entries in the file, naming them", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[return { backpresure = { max_queue_size = 5 },
      rpc = { endpoints = { { name = "x", url = "ftp://nope" }, { url = "http://a" } } } }]])
    f:close()
    local cfg, errs = config.load{ file = path, env = env{} }
    os.remove(path)
    assert.is_nil(cfg)
    local all = table.concat(errs, "\n")
    assert.matches('unknown key backpresure (allowed at the top level: backpressure, bus,', all, 1, true)
    assert.matches("rpc.endpoints[1].url = ftp://nope: must be an http:// or https:// URL", all, 1, true)
    assert.matches("rpc.endpoints[2].name = nil", all, 1, true)
  end)

  it("orders the well-known endpoints Helius, Chainstack, public", function()
    local cfg = assert(config.load{ env = env{
      PUBLIC_RPC_URL = "https://api.mainnet-beta.solana.com",
      HELIUS_RPC_URL = "https://mainnet.helius-rpc.com/?api-key=abcdef123456",
      CHAINSTACK_RPC_URL = "https://solana-mainnet.core.chainstack.com/0123456789abcdef0123456789abcdef" } })
    local names = {}
    for i, e in ipairs(cfg.rpc.endpoints) do names[i] = e.name end
    assert.are.same({ "helius", "chainstack", "public" }, names)
    assert.are.equal("https://mainnet.helius-rpc.com/?api-key=***", cfg.rpc.endpoints[1].display_url)
    assert.are.equal("https://solana-mainnet.core.chainstack.com/***", cfg.rpc.endpoints[2].display_url)
  end)

  it("redacts user:password, query values, path tokens and registers them with the log scrubber", function()
    local u = config.redact_url("https://bob:hunter22pass@rpc.example.com/v2/KEYabc123def456ghi789?token=tok-9876&x=1")
    assert.are.equal("https://***@rpc.example.com/***/***?token=***&x=***", u) -- every segment, whatever its length
    assert.are.equal("[***] [***] [***]", log.scrub("[hunter22pass] [KEYabc123def456ghi789] [tok-9876]"))
  end)

  it("never shows a secret in a validation error", function()
    local _, errs = config.load{ env = env{ HELIUS_RPC_URL = "not a url?api-key=SECRETKEY999" } }
    assert.is_nil(tostring(errs[1]):find("SECRETKEY999", 1, true))
  end)

  it("rejects unknown keys at any depth, naming the key and what is allowed there", function()
    local _, all = load_text([[return { rpc = { timeout = 5, endpoints = {} }, shutdown = { grace = { x = 1 } } }]])
    assert.matches("unknown key rpc.timeout (allowed in rpc: auto_batch,", all, 1, true)
    assert.matches("timeout_ms", all, 1, true)
    assert.matches("unknown key shutdown.grace (allowed in shutdown: enabled, force_timeout_ms, timeout_ms)", all, 1, true)
    local _, all2 = load_text([[return { nothing_here = {} }]])
    assert.matches("unknown key nothing_here", all2, 1, true)
  end)

  it("rejects endpoint mistakes: a misspelt key, a map, NaN or infinite weights, duplicate names", function()
    local _, all = load_text([[return { rpc = { endpoints = { { name = "a", url = "http://a", wieght = 2 } } } }]])
    assert.matches("rpc.endpoints[1]: unknown key wieght (allowed: headers, name, public_path, timeout_ms, url, weight, ws_url)",
      all, 1, true)
    _, all = load_text([[return { rpc = { endpoints = { helius = { url = "http://a" } } } }]])
    assert.matches("not a map (found key helius", all, 1, true)
    for _, w in ipairs{ "0/0", "1/0", "-1/0", "-3", "'2'" } do
      _, all = load_text(("return { rpc = { endpoints = { { name = 'a', url = 'http://a', weight = %s } } } }"):format(w))
      assert.matches("rpc%.endpoints%[1%]%.weight = .*: must be a finite number > 0", all)
    end
    _, all = load_text([[return { rpc = { endpoints = { { name = "a", url = "http://a" },
                                                        { name = "a", url = "http://b" } } } }]])
    assert.matches("rpc.endpoints[2].name = a: duplicate endpoint name (also", all, 1, true)
    _, all = load_text([[return { rpc = { endpoints = { { name = "helius", url = "http://a" } } } }]],
      { HELIUS_RPC_URL = "http://b" })
    assert.matches("endpoint name helius is defined twice (config file rpc.endpoints[1] and HELIUS_RPC_URL)", all, 1, true)
  end)

  it("takes endpoint headers (secrets) and ws_url, and checks them", function()
    local cfg = load_text([[return { rpc = { endpoints = { { name = "a", url = "http://a",
      headers = { ["x-api-key"] = "HDRSECRET42" }, ws_url = "wss://a/ws" } } } }]])
    assert.are.equal("HDRSECRET42", cfg.rpc.endpoints[1].headers["x-api-key"])
    assert.are.equal("wss://a/ws", cfg.rpc.endpoints[1].ws_url)
    assert.is_nil(log.scrub("key HDRSECRET42 here"):find("HDRSECRET42", 1, true))
    local _, all = load_text([[return { rpc = { endpoints = { { name = "a", url = "http://a",
      headers = { ["bad name"] = "v", ok = "line\nbreak" }, ws_url = "http://a" } } } }]])
    assert.matches("bad name is not a header name", all, 1, true)
    assert.matches("headers.ok: must be a one-line string", all, 1, true)
    assert.matches("ws_url = http://a: must be a ws:// or wss:// URL", all, 1, true)
  end)

  it("takes a ws table and THORP_WS_* (file < environment), checks them, and thorp.ws applies them", function()
    local cfg = assert(load_text([[return { ws = { heartbeat_ms = 800, max_message_bytes = 1048576, mailbox = 50,
      backoff_min_ms = 10, backoff_max_ms = 900 } }]], { THORP_WS_PING_TIMEOUT_MS = "4000", THORP_WS_MAILBOX = "60" }))
    assert.are.equal(800, cfg.ws.heartbeat_ms)
    assert.are.equal(1048576, cfg.ws.max_message_bytes)
    assert.are.equal(4000, cfg.ws.ping_timeout_ms)
    assert.are.equal(60, cfg.ws.mailbox)
    assert.are.equal(5000, cfg.ws.ping_interval_ms) -- a default
    local _, all = load_text([[return { ws = { heartbeat = 5, max_message_bytes = 10 } }]],
                             { THORP_WS_BACKOFF_MAX_MS = "soon" })
    assert.matches("unknown key ws.heartbeat (allowed in ws: backoff_max_ms, backoff_min_ms, ca_file, "
      .. "connect_timeout_ms, heartbeat_ms, mailbox, max_message_bytes, ping_interval_ms, ping_timeout_ms)", all, 1, true)
    assert.matches("ws.max_message_bytes = 10: allowed an integer from 4096 to 1073741824", all, 1, true)
    assert.matches('THORP_WS_BACKOFF_MAX_MS="soon": allowed an integer', all, 1, true)
    local _, all2 = load_text([[return { ws = { backoff_min_ms = 500, backoff_max_ms = 100 } }]])
    assert.matches("ws.backoff_min_ms) must be at most THORP_WS_BACKOFF_MAX_MS=100", all2, 1, true)
    -- applied at start: thorp.ws takes the effective table
    local ws = require "thorp.ws"
    local saved = {}
    for k, v in pairs(ws.options) do saved[k] = v end
    assert.is_true(ws.start(cfg))
    assert.are.equal(800, ws.options.heartbeat_ms)
    assert.are.equal(60, ws.options.mailbox)
    for k, v in pairs(saved) do ws.options[k] = v end
    assert.has_error(function() ws.configure{ heartbeat = 1 } end,
      "ws.configure: unknown option heartbeat (allowed: backoff_max_ms, backoff_min_ms, ca_file, connect_timeout_ms, "
      .. "heartbeat_ms, mailbox, max_message_bytes, ping_interval_ms, ping_timeout_ms)")
  end)

  it("refuses a force timeout below the shutdown timeout", function()
    local cfg, errs = config.load{ env = env{ SHUTDOWN_TIMEOUT_MS = "5000", FORCE_SHUTDOWN_TIMEOUT_MS = "4999" } }
    assert.is_nil(cfg)
    assert.matches("FORCE_SHUTDOWN_TIMEOUT_MS=4999 (shutdown.force_timeout_ms) must be at least SHUTDOWN_TIMEOUT_MS=5000",
      errs[1], 1, true)
    assert.truthy(config.load{ env = env{ SHUTDOWN_TIMEOUT_MS = "5000", FORCE_SHUTDOWN_TIMEOUT_MS = "5000" } })
  end)

  it("refuses a policy file named in the config that does not exist", function()
    local _, all = load_text([[return { policies = { "/nonexistent/p.lua" } }]])
    assert.matches("policies[1] = /nonexistent/p.lua: no such policy file or folder", all, 1, true)
  end)

  it("refuses an unknown THORP_ variable and suggests the right one", function()
    local cfg, errs = config.load{ env = env{}, environ = { "PATH", "THORP_HTTP_PROT", "THORP_STATE_DIR", "THORP_SIM" } }
    assert.is_nil(cfg)
    assert.are.equal(1, #errs)
    assert.matches("THORP_HTTP_PROT: unknown THORP_ variable, did you mean THORP_HTTP_PORT?", errs[1], 1, true)
  end)

  it("stops a config file that runs forever, and one that calls os.exit", function()
    local _, all = load_text("local n = 0 while true do n = n + 1 end", nil, { timeout_ms = 100 })
    assert.matches("still running after 100 ms", all, 1, true)
    _, all = load_text("os.exit(0)")
    assert.matches("os.exit is not allowed in a config file", all, 1, true)
    _, all = load_text("local o = _G['o' .. 's']; o['ex' .. 'it'](0)") -- the real os table, another way
    assert.matches("os.exit is not allowed in a config file", all, 1, true)
    assert.are.equal("function", type(os.exit))
  end)
end)
