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
--   on_start     = function() end   -- runs once in its own task after the first load
--                                      (not on reloads): start feeds, timers
--
-- reload() (SIGHUP, `thorp reload`, the console) loads and validates the
-- whole new set aside first; on any error nothing changes, the error (file
-- and line) is logged and kept in status().last_error. Otherwise it is
-- applied in one go, with no yield in between, so no coroutine ever sees
-- half a policy: priorities swapped, breakers and admission reconfigured in
-- place (state and counts kept), subscribers matched by name (same name:
-- new handler on the same mailbox and sequence state; removed:
-- unsubscribed; new: subscribed). The version is 1 after start and grows
-- by one per applied reload.
local sched = require "thorp.sched"
local log = require("thorp.log").for_module("policy")

local M = {}

local state = { version = 0, files = {}, applied = nil, reloads = 0, rejected = 0 }
local appliers = {} -- on_apply listeners
--- on_apply(fn): fn(policy) after each policy is applied (thorp.host wires the front door's hook here).
function M.on_apply(fn) appliers[#appliers + 1] = fn end
M.hooks = {}
local PRIO = require("thorp.priority").RANK
local check = require "thorp.check"
local TOP_KEYS = { priorities = true, backpressure = true, breakers = true, subscribers = true, hooks = true,
                   on_start = true }
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

--- validate(p, file, known_endpoints) -> errors
function M.validate(p, file, endpoints)
  local errs = {}
  if type(p) ~= "table" then return { ("%s: a policy must return a table, got %s"):format(file, type(p)) } end
  for k in pairs(p) do
    if not TOP_KEYS[k] then
      errs[#errs + 1] = ("%s: unknown key %s (allowed: %s)"):format(file, tostring(k), keys_of(TOP_KEYS))
    end
  end
  if p.priorities ~= nil then
    local pr = p.priorities
    if type(pr) ~= "table" then errs[#errs + 1] = file .. ": priorities: expected a table { rpc = {...}, topics = {...} }"
    else
      for k in pairs(pr) do
        if k ~= "rpc" and k ~= "topics" then
          errs[#errs + 1] = ("%s: priorities.%s: unknown key (allowed: rpc, topics)"):format(file, tostring(k))
        end
      end
      if pr.rpc ~= nil then check_prio_map(pr.rpc, file .. ": priorities.rpc", errs) end
      if pr.topics ~= nil then check_prio_map(pr.topics, file .. ": priorities.topics", errs) end
    end
  end
  if p.backpressure ~= nil then
    if type(p.backpressure) ~= "table" then errs[#errs + 1] = file .. ": backpressure: expected a table"
    else
      for _, e in ipairs(require("thorp.backpressure").validate(p.backpressure, file .. ": backpressure")) do
        errs[#errs + 1] = e
      end
    end
  end
  if p.breakers ~= nil then
    local b = p.breakers
    if type(b) ~= "table" then errs[#errs + 1] = file .. ": breakers: expected a table { default = {...}, endpoints = {...} }"
    else
      local breaker = require "thorp.breaker"
      for k in pairs(b) do
        if k ~= "default" and k ~= "endpoints" then
          errs[#errs + 1] = ("%s: breakers.%s: unknown key (allowed: default, endpoints)"):format(file, tostring(k))
        end
      end
      if b.default ~= nil then
        for _, e in ipairs(breaker.validate(b.default, file .. ": breakers.default")) do errs[#errs + 1] = e end
      end
      if b.endpoints ~= nil then
        if type(b.endpoints) ~= "table" then errs[#errs + 1] = file .. ": breakers.endpoints: expected a table"
        else
          for name, o in pairs(b.endpoints) do
            local w = file .. ": breakers.endpoints." .. tostring(name)
            if endpoints and not endpoints[name] then
              errs[#errs + 1] = ("%s: no such endpoint (configured: %s)"):format(w, keys_of(endpoints))
            end
            for _, e in ipairs(breaker.validate(o, w)) do errs[#errs + 1] = e end
          end
        end
      end
    end
  end
  if p.subscribers ~= nil then
    if type(p.subscribers) ~= "table" then
      errs[#errs + 1] = file .. ": subscribers: expected a table name = { topic =, handler = }"
    else
      for name, s in pairs(p.subscribers) do
        local w = file .. ": subscribers." .. tostring(name)
        if type(name) ~= "string" then errs[#errs + 1] = file .. ": subscribers: names must be strings"
        elseif type(s) ~= "table" then errs[#errs + 1] = w .. ": expected { topic = \"...\", handler = function }"
        else
          if type(s.topic) ~= "string" or s.topic == "" then
            errs[#errs + 1] = ("%s.topic = %s: expected a non-empty string"):format(w, tostring(s.topic))
          end
          if type(s.handler) ~= "function" then
            errs[#errs + 1] = ("%s.handler: expected a function, got %s"):format(w, type(s.handler))
          end
          if s.max_failure_rate ~= nil then -- the same range as bus:subscribe's
            errs[#errs + 1] = check.problem(w .. ".max_failure_rate", s.max_failure_rate, check.rate_rule(s.max_failure_rate))
          end
          for k in pairs(s) do
            if k ~= "topic" and k ~= "handler" and k ~= "max_failure_rate" then
              errs[#errs + 1] = ("%s: unknown key %s (allowed: topic, handler, max_failure_rate)"):format(w, tostring(k))
            end
          end
        end
      end
    end
  end
  if p.on_start ~= nil and type(p.on_start) ~= "function" then
    errs[#errs + 1] = ("%s: on_start: expected a function (run once, after the first load), got %s"):format(file,
      type(p.on_start))
  end
  if p.hooks ~= nil then
    if type(p.hooks) ~= "table" then errs[#errs + 1] = file .. ": hooks: expected a table"
    else
      for k, v in pairs(p.hooks) do
        if not HOOKS[k] then
          errs[#errs + 1] = ("%s: hooks.%s: unknown hook (allowed: %s)"):format(file, tostring(k), keys_of(HOOKS))
        elseif type(v) ~= "function" then
          errs[#errs + 1] = ("%s: hooks.%s: expected a function"):format(file, k)
        end
      end
    end
  end
  return errs
end

-- Loading and merging -----------------------------------------------------------

local function merge_into(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" and type(dst[k]) == "table" then
      merge_into(dst[k], v)
    else
      dst[k] = v
    end
  end
end

local function known_endpoints()
  local pool = require("thorp.rpc").default_pool()
  if not pool then return nil end
  local set = {}
  for _, e in ipairs(pool:endpoints()) do set[e.name] = true end
  return set
end

--- load(paths) -> merged policy, files | nil, { errors }
function M.load(paths, eps)
  local files = M.expand(paths)
  local errs, merged = {}, { priorities = { rpc = {}, topics = {} }, subscribers = {}, hooks = {} }
  eps = eps or known_endpoints()
  for _, file in ipairs(files) do
    local chunk, err = loadfile(file)
    if not chunk then
      errs[#errs + 1] = tostring(err)
    else
      local env = setmetatable({ thorp = require "thorp" }, { __index = _G })
      setfenv(chunk, env)
      local ok, p = xpcall(chunk, debug.traceback)
      if not ok then
        -- an error value whose __tostring raises must not escape the loader
        local shown, text = pcall(tostring, p)
        errs[#errs + 1] = ("%s: error while loading: %s"):format(file, shown and text or "(an error value that cannot be shown)")
      else
        local perrs = M.validate(p, file, eps)
        for _, e in ipairs(perrs) do errs[#errs + 1] = e end
        if #perrs == 0 then
          local subs = p.subscribers
          local rest = {}
          for k, v in pairs(p) do if k ~= "subscribers" then rest[k] = v end end
          merge_into(merged, rest)
          for name, s in pairs(subs or {}) do merged.subscribers[name] = s end
        end
      end
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

local subscribed = {} -- name -> { topic, sub }

local function apply(p)
  local rpc = require "thorp.rpc"
  local bus = require("thorp.bus").default
  rpc.set_priorities(p.priorities.rpc or {})
  bus:set_topic_priorities(p.priorities.topics or {})
  if p.backpressure then require("thorp.backpressure").default:configure(p.backpressure) end
  rpc.configure_breakers(p.breakers or {})
  -- subscribers, matched by name
  for name, cur in pairs(subscribed) do
    local s = p.subscribers[name]
    if not s or s.topic ~= cur.topic then
      bus:unsubscribe(cur.sub)
      subscribed[name] = nil
    end
  end
  for name, s in pairs(p.subscribers) do
    local cur = subscribed[name]
    if cur then
      bus:replace_handler(name, s.handler)
    else
      subscribed[name] = { topic = s.topic, sub = bus:subscribe(s.topic, s.handler,
        { name = name, max_failure_rate = s.max_failure_rate }) }
    end
  end
  M.hooks = p.hooks or {}
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
    return false, state.last_error
  end
  local ok, err = pcall(apply, p)
  if not ok then -- validation should make this unreachable; keep the version if it happens
    state.rejected = state.rejected + 1
    state.last_error = "apply failed: " .. tostring(err)
    log.error("policy apply failed", { error = tostring(err) })
    return false, state.last_error
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

--- reload() -> true, version | false, err
function M.reload()
  if not state.paths then return false, "no policy loaded (start the host with `thorp run [POLICY ...]`)" end
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
  if not ok then return nil, "policy: " .. tostring(err) end
  if state.applied.on_start then
    sched.spawn_opts({ name = "policy.on_start" }, state.applied.on_start)
  end
  sched.on_signal(sched.SIGHUP, function() M.reload() end)
  return true
end

function M.stop()
  subscribed = {}
end

return M
