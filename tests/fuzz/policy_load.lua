-- policy_load: the policy loader and validator (thorp.policy.check, what
-- `thorp check` and every reload run first) on a policy file the fuzzer
-- writes. Invariant: check never raises and returns a list of error
-- strings (empty: the policy is valid).
local here = debug.getinfo(1, "S").source:match("^@(.*/)")
local guard = dofile(here .. "guard.lua")
local policy = require "thorp.policy"

return {
  one = function(input)
    local path = guard.file("policy.lua", input)
    local errs = guard.call(policy.check, { path }, nil)
    if type(errs) ~= "table" then error("policy.check returned a " .. type(errs) .. ", not a list") end
    for i, e in ipairs(errs) do
      if type(e) ~= "string" then error(("error %d is a %s, not a message"):format(i, type(e))) end
    end
  end,
}
