-- pretty: readable text for Lua values (the console prints with it).
--
--   local pretty = require "thorp.pretty"
--   pretty.format({ b = 1, a = { 1, 2, 3 } })   --> { a = { 1, 2, 3 }, b = 1 }
--   pretty.print(thorp.rpc.endpoints())         -- a list of records prints as columns
--
-- Keys are sorted; short tables stay on one line, long ones are indented;
-- a table that contains itself prints <cycle>; nesting beyond opts.depth
-- prints {...}. A list of flat records (tables of scalars with mostly the
-- same keys) prints as an aligned table with a header row.
-- opts: depth (6), width (80), indent ("  "), max_items (1000),
--       columns (true: allow the aligned-table layout), raw (ignore __tostring).
local M = {}

local type, tostring, pairs, floor, huge = type, tostring, pairs, math.floor, math.huge
local concat, sort = table.concat, table.sort

local DEFAULTS = { depth = 6, width = 80, indent = "  ", max_items = 1000, columns = true, raw = false }

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function fmt_number(n)
  if n ~= n then return "nan" end
  if n == huge then return "inf" end
  if n == -huge then return "-inf" end
  if n == floor(n) and n > -1e15 and n < 1e15 then return ("%d"):format(n) end
  return ("%.14g"):format(n)
end

local ESC = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t", ['"'] = '\\"', ["\\"] = "\\\\" }
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESC[c] or ("\\%d"):format(c:byte()) end) .. '"'
end

local function scalar(v, bare_strings)
  local t = type(v)
  if t == "string" then return bare_strings and v or quote(v) end
  if t == "number" then return fmt_number(v) end
  if t == "cdata" then
    local s = tostring(v)
    return s:match("^(%-?%d+)U?LL$") or s
  end
  return tostring(v)
end

local TYPE_ORDER = { number = 1, string = 2 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (TYPE_ORDER[ta] or 3) < (TYPE_ORDER[tb] or 3) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function fmt_key(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then return k end
  return "[" .. scalar(k) .. "]"
end

local function is_scalar(v) local t = type(v); return t ~= "table" end

-- Column order for the aligned layout: identifying keys first, then sorted.
local FIRST = { name = 1, id = 2, type = 3, topic = 4 }
local function col_less(a, b)
  local fa, fb = FIRST[a] or 99, FIRST[b] or 99
  if fa ~= fb then return fa < fb end
  return a < b
end

-- If list t (n items, no other keys) is a list of flat records, return its columns.
local function record_columns(t, n)
  if n < 2 then return nil end
  local union, ncols, min_keys = {}, 0, huge
  for i = 1, n do
    local r = t[i]
    if type(r) ~= "table" or getmetatable(r) then return nil end
    local k = 0
    for key, v in pairs(r) do
      if type(key) ~= "string" or not is_scalar(v) then return nil end
      if not union[key] then union[key] = true; ncols = ncols + 1 end
      k = k + 1
    end
    if k == 0 then return nil end
    if k < min_keys then min_keys = k end
  end
  if ncols > 12 or min_keys < ncols - math.floor(ncols / 4) then return nil end
  local cols = {}
  for k in pairs(union) do cols[#cols + 1] = k end
  sort(cols, col_less)
  return cols
end

local function columns_block(t, n, cols, pad)
  local cells, widths, numeric = {}, {}, {}
  for c, k in ipairs(cols) do widths[c] = #k; numeric[c] = true end
  for i = 1, n do
    local row = {}
    for c, k in ipairs(cols) do
      local v = t[i][k]
      local s = v == nil and "" or scalar(v, true):gsub("%c", " ")
      if v ~= nil and type(v) ~= "number" then numeric[c] = false end
      row[c] = s
      if #s > widths[c] then widths[c] = #s end
    end
    cells[i] = row
  end
  local function line(row, header)
    local parts = {}
    for c = 1, #cols do
      local s, w = row[c], widths[c]
      if numeric[c] and not header then parts[c] = (" "):rep(w - #s) .. s
      elseif c == #cols then parts[c] = s
      else parts[c] = s .. (" "):rep(w - #s) end
    end
    return pad .. concat(parts, "  "):gsub("%s+$", "")
  end
  local out = { line(cols, true) }
  local rule = {}
  for c = 1, #cols do rule[c] = ("-"):rep(widths[c]) end
  out[2] = pad .. concat(rule, "  ")
  for i = 1, n do out[#out + 1] = line(cells[i]) end
  return concat(out, "\n")
end

local format

-- Format table t at nesting level `level` (its closing brace is indented by
-- `pad`, its items by pad .. opts.indent). where: "top", "key" (the value
-- of a key: an aligned table starts on the next line) or "item" (a list
-- element: no aligned table).
local function fmt_table(t, opts, level, pad, path, where)
  if path[t] then return "<cycle>" end
  local mt = getmetatable(t)
  if not opts.raw and type(mt) == "table" and rawget(mt, "__tostring") then return tostring(t) end
  -- values holding secrets (keypairs) print only their __tostring, even raw
  if type(mt) == "table" and rawget(mt, "__secret") then return tostring(t) end
  if level > opts.depth then return next(t) == nil and "{}" or "{...}" end
  local n = #t
  local keys, nkeys = {}, 0
  for k in pairs(t) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == floor(k)) then
      nkeys = nkeys + 1
      keys[nkeys] = k
    end
  end
  if n == 0 and nkeys == 0 then return "{}" end
  path[t] = true
  local inner = pad .. opts.indent
  if nkeys == 0 and opts.columns and where ~= "item" then
    local cols = record_columns(t, n)
    if cols then
      path[t] = nil
      if where == "top" then return columns_block(t, n, cols, "") end
      return "\n" .. columns_block(t, n, cols, inner)
    end
  end
  sort(keys, key_less)
  local items, multiline, len = {}, false, 0
  local limit = opts.max_items
  for i = 1, n do
    if i > limit then items[#items + 1] = ("... (%d more)"):format(n + nkeys - limit); break end
    local s = format(t[i], opts, level + 1, inner, path, "item")
    if s:find("\n", 1, true) then multiline = true end
    items[#items + 1] = s
    len = len + #s + 2
  end
  for j = 1, nkeys do
    if n + j > limit then
      if n < limit then items[#items + 1] = ("... (%d more)"):format(n + nkeys - limit) end
      break
    end
    local k = keys[j]
    local s = format(t[k], opts, level + 1, inner, path, "key")
    if s:sub(1, 1) == "\n" then s = fmt_key(k) .. " =" .. s
    else s = fmt_key(k) .. " = " .. s end
    if s:find("\n", 1, true) then multiline = true end
    items[#items + 1] = s
    len = len + #s + 2
  end
  path[t] = nil
  if not multiline and len + 4 + #pad <= opts.width then
    return "{ " .. concat(items, ", ") .. " }"
  end
  if not multiline and nkeys == 0 then -- a long flat list: fill lines
    local lines, cur = {}, {}
    local w = #inner
    for i = 1, #items do
      if #cur > 0 and w + #items[i] + 2 > opts.width then
        lines[#lines + 1] = concat(cur, ", ")
        cur, w = {}, #inner
      end
      cur[#cur + 1] = items[i]
      w = w + #items[i] + 2
    end
    lines[#lines + 1] = concat(cur, ", ")
    return "{\n" .. inner .. concat(lines, ",\n" .. inner) .. "\n" .. pad .. "}"
  end
  return "{\n" .. inner .. concat(items, ",\n" .. inner) .. "\n" .. pad .. "}"
end

function format(v, opts, level, pad, path, where)
  if type(v) == "table" then return fmt_table(v, opts, level, pad, path, where) end
  return scalar(v)
end

local function options(opts)
  if opts == nil then return DEFAULTS end
  local o = {}
  for k, d in pairs(DEFAULTS) do
    if opts[k] == nil then o[k] = d else o[k] = opts[k] end
  end
  return o
end

--- format(v, opts) -> string
function M.format(v, opts)
  return (format(v, options(opts), 1, "", {}, "top"))
end

--- values(...) -> string: each value formatted; tab-separated when all fit
--- on one line, one per line otherwise ("" for no values).
function M.values(...)
  local n = select("#", ...)
  local parts, multi = {}, false
  for i = 1, n do
    local s = M.format((select(i, ...)))
    if s:find("\n", 1, true) then multi = true end
    parts[i] = s
  end
  return concat(parts, multi and "\n" or "\t")
end

--- print(...): write values(...) and a newline to stdout.
function M.print(...)
  io.stdout:write(M.values(...), "\n")
end

return M
