-- thorp.policy: policy files, their schema, and atomic hot reload.
--
-- A policy file is a Lua chunk returning a table; several files merge in
-- order (later files win key by key; subscribers merge by name):
--   priorities   = { rpc = { sendTransaction = "critical" }, topics = { trade_signal = "critical" } }
--   backpressure = { warning_threshold = 0.8, critical_threshold = 0.95 }
--   breakers     = { default = { failure_threshold = 5 }, endpoints = { helius = { ... } } }
--   subscribers  = { executor = { topic = "trade_signal", handler = function(ev) end,
--                                 max_failure_rate = 0.5 } }
--   hooks        = { frontdoor_request = function(req) end }
--   methods      = { getPriorityFeeEstimate = { endpoints = { "helius" }, timeout_ms = 800, priority = "normal" },
--                    submit = { "sendBundle" } }   -- rpc routing (validated by thorp.rpc)
--   on_start     = function() end   -- runs once in its own task after the first load
--                                      (not on reloads): start feeds, timers
--
-- Loading a file: its folder goes on package.path (a policy can require a
-- module beside it), it runs in a sandbox whose os.exit raises an error
-- naming it (a source that calls os.exit is refused outright, so `thorp
-- check` reports it too), and with a deadline (THORP_LOAD_TIMEOUT_MS): the
-- JIT is off while it runs and a count hook stops `while true do end`,
-- reporting the file.
--
-- Sections. Each top-level key is a section, owned by the module it
-- configures, declared with M.section(name, spec):
--   spec.validate(value, where, ctx) -> { "error", ... }  one file's section alone
--                                        (ctx.endpoints = set of endpoint names or nil)
--   spec.check(value, merged, ctx)   -> { "error", ... }  optional: the merged value
--                                        against live state (capacity, other modules)
--   spec.apply(value, merged)                             installs it; must not fail
--                                                         once validate and check passed
--   spec.merge(dst_value, src_value) -> merged value      optional (default: deep merge)
--   spec.empty() -> the value when no file sets it        optional (default: nil)
-- Sections apply in declaration order. To add one (say `methods`), write its
-- three functions next to the others below and call M.section("methods", {...}).
--
-- reload() (SIGHUP, `thorp reload`, the console) loads every file, runs every
-- validate, merges, runs every check, and only when there is no error at all
-- applies every section in one go, with no yield in between: no coroutine
-- ever sees half a policy, and a rejected reload changes nothing (the error,
-- with file and line, is logged and kept in status().last_error).
-- Priorities are swapped, breakers and admission reconfigured in place
-- (state and counts kept), subscribers matched by name (same name: new
-- handler on the same mailbox and sequence state; removed: unsubscribed;
-- new: subscribed). The version is 1 after start and grows by one per
-- applied reload.
local sched = require "thorp.sched"
local log = require("thorp.log").for_module("policy")
local errors = require "thorp.errors"

local M = {}

local state = { version = 0, files = {}, applied = nil, reloads = 0, rejected = 0 }
local appliers = {} -- on_apply listeners
--- on_apply(fn): fn(policy) after each policy is applied (thorp.host wires the front door's hook here).
function M.on_apply(fn) appliers[#appliers + 1] = fn end
M.hooks = {}
local PRIO = require("thorp.priority").RANK
local check = require "thorp.check"
local HOOKS = { frontdoor_request = true }

-- Files -------------------------------------------------------------------

local function list_dir(dir)
  local p = io.popen(('ls -1 %q 2>/dev/null'):format(dir))
  local out = {}
  if p then
    for name in p:lines() do if name:match("%.lua$") then out[#out + 1] = dir .. "/" .. name end end
    p:close()
  end
  table.sort(out)
  return out
end

local function is_dir(path)
  local f = io.open(path .. "/.", "r")
  if f then f:close(); return true end
  return false
end

--- expand({ "file.lua", "dir/" }) -> files
function M.expand(paths)
  local files = {}
  for _, p in ipairs(paths) do
    if is_dir(p) then
      for _, f in ipairs(list_dir(p)) do files[#files + 1] = f end
    else
      files[#files + 1] = p
    end
  end
  return files
end

--- Policies used when `thorp run` names none: ./policies, else the source
--- tree's, else the installed ones (PREFIX/share/thorp/policies).
function M.default_paths()
  if is_dir("policies") then return { "policies" } end
  local host = require "thorp.host"
  local root = host.dev_root()
  if root ~= "" and is_dir(root .. "/policies") then return { root .. "/policies" } end
  local share = host.exe_dir() .. "/../share/thorp/policies"
  if is_dir(share) then return { share } end
  return {}
end

-- Schema -------------------------------------------------------------------

local function keys_of(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k)
  return table.concat(k, ", ")
end

local function check_prio_map(map, where, errs)
  if type(map) ~= "table" then
    errs[#errs + 1] = where .. ": expected a table of name = \"critical\" | \"normal\" | \"low\""
    return
  end
  for k, v in pairs(map) do
    if type(k) ~= "string" then errs[#errs + 1] = where .. ": keys must be names (strings)"
    elseif not PRIO[v] then
      errs[#errs + 1] = ("%s.%s = %s: allowed \"critical\", \"normal\", \"low\""):format(where, k, tostring(v))
    end
  end
end

-- Sections -------------------------------------------------------------------

local SECTIONS, ORDER = {}, {}

--- section(name, spec): declare a top-level policy key (see the top of this file).
function M.section(name, spec)
  if not SECTIONS[name] then ORDER[#ORDER + 1] = name end
  SECTIONS[name] = spec
end

local function merge_into(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" and type(dst[k]) == "table" then
      merge_into(dst[k], v)
    else
      dst[k] = v
    end
  end
  return dst
end

local function add_all(errs, more) for _, e in ipairs(more or {}) do errs[#errs + 1] = e end end

M.section("priorities", {
  empty = function() return { rpc = {}, topics = {} } end,
  validate = function(pr, where)
    local errs = {}
    if type(pr) ~= "table" then return { where .. ": expected a table { rpc = {...}, topics = {...} }" } end
    for k in pairs(pr) do
      if k ~= "rpc" and k ~= "topics" then
        errs[#errs + 1] = ("%s.%s: unknown key (allowed: rpc, topics)"):format(where, tostring(k))
      end
    end
    if pr.rpc ~= nil then check_prio_map(pr.rpc, where .. ".rpc", errs) end
    if pr.topics ~= nil then check_prio_map(pr.topics, where .. ".topics", errs) end
    return errs
  end,
  apply = function(pr)
    require("thorp.rpc").set_priorities(pr.rpc or {})
    require("thorp.bus").default:set_topic_priorities(pr.topics or {})
  end,
})

M.section("backpressure", {
  validate = function(b, where)
    if type(b) ~= "table" then return { where .. ": expected a table" } end
    return require("thorp.backpressure").validate(b, where)
  end,
  -- the values it leaves unset come from the running admission control: check the combination
  check = function(b)
    local bpm = require "thorp.backpressure"
    local live = bpm.default and bpm.default.a
    if not live then return {} end
    return bpm.validate({ max_queue_size = b.max_queue_size, warning_threshold = b.warning_threshold or live.warning,
                          critical_threshold = b.critical_threshold or live.critical },
                        "backpressure (with the running values)")
  end,
  apply = function(b) if b then require("thorp.backpressure").default:configure(b) end end,
})

M.section("breakers", {
  validate = function(b, where, ctx)
    if type(b) ~= "table" then return { where .. ": expected a table { default = {...}, endpoints = {...} }" } end
    local errs = {}
    local breaker = require "thorp.breaker"
    for k in pairs(b) do
      if k ~= "default" and k ~= "endpoints" then
        errs[#errs + 1] = ("%s.%s: unknown key (allowed: default, endpoints)"):format(where, tostring(k))
      end
    end
    if b.default ~= nil then add_all(errs, breaker.validate(b.default, where .. ".default")) end
    if b.endpoints ~= nil then
      if type(b.endpoints) ~= "table" then errs[#errs + 1] = where .. ".endpoints: expected a table"
      else
        for name, o in pairs(b.endpoints) do
          local w = where .. ".endpoints." .. tostring(name)
          if ctx.endpoints and not ctx.endpoints[name] then
            errs[#errs + 1] = ("%s: no such endpoint (configured: %s)"):format(w, keys_of(ctx.endpoints))
          end
          add_all(errs, breaker.validate(o, w))
        end
      end
    end
    return errs
  end,
  apply = function(b) require("thorp.rpc").configure_breakers(b or {}) end,
})

-- rpc routing: methods = { NAME = { endpoints =, timeout_ms =, priority = }, submit = { NAME, ... } }
M.section("methods", {
  validate = function(m, where, ctx) return require("thorp.rpc").validate_methods(m, where, ctx.endpoints) end,
  empty = function() return {} end,
  merge = function(dst, src) -- routes by method name, later files win; submit lists add up
    dst = dst or {}
    for k, v in pairs(src) do
      if k == "submit" then
        dst.submit = dst.submit or {}
        for _, name in ipairs(v) do dst.submit[#dst.submit + 1] = name end
      else dst[k] = v end
    end
    return dst
  end,
  apply = function(m) require("thorp.rpc").set_methods(m) end,
})

local subscribed = {} -- name -> { topic, sub }: the subscribers this module attached

M.section("subscribers", {
  empty = function() return {} end,
  merge = function(dst, src) for name, sub in pairs(src) do dst[name] = sub end return dst end,
  validate = function(subs, where)
    if type(subs) ~= "table" then return { where .. ": expected a table name = { topic =, handler = }" } end
    local errs = {}
    for name, sub in pairs(subs) do
      local w = where .. "." .. tostring(name)
      if type(name) ~= "string" then errs[#errs + 1] = where .. ": names must be strings"
      elseif type(sub) ~= "table" then errs[#errs + 1] = w .. ": expected { topic = \"...\", handler = function }"
      else
        if type(sub.topic) ~= "string" or sub.topic == "" then
          errs[#errs + 1] = ("%s.topic = %s: expected a non-empty string"):format(w, tostring(sub.topic))
        end
        if type(sub.handler) ~= "function" then
          errs[#errs + 1] = ("%s.handler: expected a function, got %s"):format(w, type(sub.handler))
        end
        if sub.max_failure_rate ~= nil then -- the same range as bus:subscribe's
          errs[#errs + 1] = check.problem(w .. ".max_failure_rate", sub.max_failure_rate,
            check.rate_rule(sub.max_failure_rate))
        end
        for k in pairs(sub) do
          if k ~= "topic" and k ~= "handler" and k ~= "max_failure_rate" then
            errs[#errs + 1] = ("%s: unknown key %s (allowed: topic, handler, max_failure_rate)"):format(w, tostring(k))
          end
        end
      end
    end
    return errs
  end,
  -- the bus must have room for them all, counting subscribers attached by others
  check = function(subs)
    local busm = package.loaded["thorp.bus"]
    local bus = busm and busm.default
    if not bus or not bus.max_subscribers then return {} end
    local mine, want = 0, 0
    for _ in pairs(subscribed) do mine = mine + 1 end
    for _ in pairs(subs) do want = want + 1 end
    local others = (bus.nsubs or 0) - mine
    if others + want > bus.max_subscribers then
      return { ("subscribers: %d in the policy plus %d attached elsewhere exceed the bus's max_subscribers (%d); "
                .. "remove some or raise BUS_MAX_SUBSCRIBERS"):format(want, others, bus.max_subscribers) }
    end
    return {}
  end,
  apply = function(subs)
    local bus = require("thorp.bus").default
    for name, cur in pairs(subscribed) do
      local sub = subs[name]
      if not sub or sub.topic ~= cur.topic then
        bus:unsubscribe(cur.sub)
        subscribed[name] = nil
      end
    end
    for name, sub in pairs(subs) do
      if subscribed[name] then
        bus:replace_handler(name, sub.handler)
      else
        subscribed[name] = { topic = sub.topic, sub = bus:subscribe(sub.topic, sub.handler,
          { name = name, max_failure_rate = sub.max_failure_rate }) }
      end
    end
  end,
})

M.section("hooks", {
  empty = function() return {} end,
  validate = function(h, where)
    if type(h) ~= "table" then return { where .. ": expected a table" } end
    local errs = {}
    for k, v in pairs(h) do
      if not HOOKS[k] then
        errs[#errs + 1] = ("%s.%s: unknown hook (allowed: %s)"):format(where, tostring(k), keys_of(HOOKS))
      elseif type(v) ~= "function" then
        errs[#errs + 1] = ("%s.%s: expected a function"):format(where, k)
      end
    end
    return errs
  end,
  apply = function(h) M.hooks = h or {} end, -- the front door reads them through on_apply

})

M.section("on_start", {
  validate = function(v, where)
    if type(v) ~= "function" then
      return { ("%s: expected a function (run once, after the first load), got %s"):format(where, type(v)) }
    end
    return {}
  end,
  merge = function(_, v) return v end,
  apply = function() end, -- started by M.start, once
})

--- validate(p, file, known_endpoints) -> errors
function M.validate(p, file, endpoints)
  if type(p) ~= "table" then return { ("%s: a policy must return a table, got %s"):format(file, type(p)) } end
  local errs = {}
  local ctx = { endpoints = endpoints, file = file }
  for k in pairs(p) do
    if not SECTIONS[k] then
      errs[#errs + 1] = ("%s: unknown key %s (allowed: %s)"):format(file, tostring(k), keys_of(SECTIONS))
    end
  end
  for _, name in ipairs(ORDER) do
    if p[name] ~= nil then add_all(errs, SECTIONS[name].validate(p[name], file .. ": " .. name, ctx)) end
  end
  return errs
end

-- Loading and merging -----------------------------------------------------------

local function known_endpoints()
  local pool = require("thorp.rpc").default_pool()
  if not pool then return nil end
  local set = {}
  for _, e in ipairs(pool:endpoints()) do set[e.name] = true end
  return set
end

-- A policy must not end the host: a source that calls os.exit is refused
-- (outside comments), so `thorp check` reports it as well as a reload.
local function calls_os_exit(file)
  local f = io.open(file, "r")
  if not f then return nil end
  local src = f:read("*a")
  f:close()
  src = src:gsub("%-%-%[(=*)%[.-%]%1%]", function(c) return (c:gsub("[^\n]", "")) end)
  local n = 0
  for line in (src .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local code = line:gsub("%-%-.*$", "")
    if code:match("os%s*%.%s*exit") or code:match("os%s*%[%s*[\"']exit[\"']%s*%]") then return n end
  end
  return nil
end

local added_dirs = {}
-- a policy can require a module beside it: its folder goes on package.path
local function add_folder(file)
  local dir = file:match("^(.*)/[^/]*$") or "."
  if added_dirs[dir] then return end
  added_dirs[dir] = true
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
end

local function load_one(file, errs)
  local line = calls_os_exit(file)
  if line then
    errs[#errs + 1] = ("%s:%d: calls os.exit, which is not allowed in a policy (it would end the host and abandon "
                       .. "open trades): use thorp.shutdown.initiate(reason)"):format(file, line)
    return nil
  end
  local chunk, err = loadfile(file)
  if not chunk then errs[#errs + 1] = tostring(err); return nil end
  add_folder(file)
  local config = require "thorp.config"
  setfenv(chunk, config.sandbox("a policy", file, { thorp = require "thorp" }))
  -- a load stuck past its deadline ends the process: 2 at start, 1 in a running host (restart it)
  local ok, p = config.run_bounded(chunk, file, config.load_timeout(), "a policy", state.running and 1 or 2)
  if not ok then
    -- an error value whose __tostring raises must not escape the loader
    local shown, text = pcall(tostring, p)
    errs[#errs + 1] = ("%s: error while loading: %s"):format(file, shown and text or "(an error value that cannot be shown)")
    return nil
  end
  return p
end

--- load(paths) -> merged policy, files | nil, { errors }
function M.load(paths, eps)
  local files = M.expand(paths)
  local errs, merged = {}, {}
  for _, name in ipairs(ORDER) do
    if SECTIONS[name].empty then merged[name] = SECTIONS[name].empty() end
  end
  eps = eps or known_endpoints()
  for _, file in ipairs(files) do
    local p = load_one(file, errs)
    if p ~= nil then
      local perrs = M.validate(p, file, eps)
      add_all(errs, perrs)
      if #perrs == 0 then
        for _, name in ipairs(ORDER) do
          local v, spec = p[name], SECTIONS[name]
          if v ~= nil then
            if spec.merge then merged[name] = spec.merge(merged[name], v)
            elseif type(v) == "table" and type(merged[name]) == "table" then merge_into(merged[name], v)
            elseif type(v) == "table" then merged[name] = merge_into({}, v)
            else merged[name] = v end
          end
        end
      end
    end
  end
  if #errs == 0 then -- the whole against live state (capacity, other modules)
    for _, name in ipairs(ORDER) do
      local spec = SECTIONS[name]
      if spec.check and merged[name] ~= nil then add_all(errs, spec.check(merged[name], merged, { endpoints = eps })) end
    end
  end
  if #errs > 0 then return nil, errs end
  return merged, files
end

--- check(paths, cfg) -> { errors } (thorp check)
function M.check(paths, cfg)
  local eps
  if cfg and cfg.rpc and cfg.rpc.endpoints and #cfg.rpc.endpoints > 0 then
    eps = {}
    for _, e in ipairs(cfg.rpc.endpoints) do eps[e.name] = true end
  end
  local p, errs = M.load(paths or M.default_paths(), eps)
  if p then return {} end
  return errs
end

-- Applying -------------------------------------------------------------------

local function apply(p)
  for _, name in ipairs(ORDER) do SECTIONS[name].apply(p[name], p) end
  state.applied = p
  for _, fn in ipairs(appliers) do fn(p) end
end

-- reload results go out on the bus topic "thorp.policy"
local function announce(ev) require("thorp.bus").system("thorp.policy", ev, "low") end

local function reload_now()
  local t0 = sched.now()
  local p, files = M.load(state.paths)
  if not p then
    state.rejected = state.rejected + 1
    state.last_error = table.concat(files, "\n")
    state.last_error_at = sched.wall()
    log.error("policy reload rejected; the running policy is unchanged", { version = state.version,
                                                                         errors = files })
    announce({ ok = false, version = state.version, error = state.last_error })
    return false, errors.described("POLICY_ERROR", state.last_error)
  end
  local prev = state.applied
  local ok, err = pcall(apply, p)
  if not ok then -- validate and check should make this unreachable: put the running policy back
    state.rejected = state.rejected + 1
    state.last_error = "apply failed: " .. tostring(err)
    local restored = prev and pcall(apply, prev)
    log.error("policy apply failed; the previous policy was put back", { error = tostring(err),
                                                                       restored = restored and true or false })
    return false, errors.described("POLICY_ERROR", state.last_error)
  end
  state.version = state.version + 1
  state.files = files
  state.loaded_at = sched.wall()
  state.last_error = nil
  state.last_ms = sched.now() - t0
  announce({ ok = true, version = state.version, files = files })
  log.info("policy applied", { version = state.version, files = files, ms = math.floor(state.last_ms * 1000) / 1000 })
  return true, state.version
end

--- reload() -> true, version | false, err (an error value, code POLICY_ERROR; err.message has every
--- problem with its file and line)
function M.reload()
  if not state.paths then
    return false, errors.described("POLICY_ERROR", "no policy loaded (start the host with `thorp run [POLICY ...]`)")
  end
  state.reloads = state.reloads + 1
  return reload_now()
end

--- load_and_apply(paths) -> true, version | false, err (used at start, and by tests/scripts)
function M.apply_files(paths)
  state.paths = paths
  return reload_now()
end

function M.status()
  return { version = state.version, loaded_at = state.loaded_at, files = state.files, last_error = state.last_error,
           last_error_at = state.last_error_at, reloads = state.reloads, rejected = state.rejected,
           last_apply_ms = state.last_ms, subscribers = (function()
             local n = {}
             for name in pairs(subscribed) do n[#n + 1] = name end
             table.sort(n)
             return n
           end)() }
end

function M.current() return state.applied end

function M.start(_cfg, mode, opts)
  if mode ~= "run" then return true end
  local paths = opts and opts.policies and #opts.policies > 0 and opts.policies or M.default_paths()
  local ok, err = M.apply_files(paths)
  if not ok then return nil, "policy: " .. err.message end
  if state.applied.on_start then
    sched.spawn_opts({ name = "policy.on_start" }, state.applied.on_start)
  end
  sched.on_signal(sched.SIGHUP, function() M.reload() end)
  state.running = true
  return true
end

function M.stop()
  subscribed = {}
  state.running = nil
end

return M
