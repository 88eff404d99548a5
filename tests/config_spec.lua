-- Configuration: layers, validation messages, booleans, URL redaction.
local config = require "thorp.config"
local log = require "thorp.log"

local function env(t) return function(name) return t[name] end end

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
    assert.matches('unknown key "backpresure.max_queue_size"', all, 1, true)
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
end)
