-- luacheck configuration: LuaJIT, with thorp's globals.
std = "luajit"
globals = { "thorp", "__thorp_step" }
max_line_length = 130
files["tests/**/*_spec.lua"] = { std = "+busted" }
files["tests/*_spec.lua"] = { std = "+busted" }
files["lib/thorp/testing.lua"] = { globals = { "arg", "os" } }
files["lib/thorp/cli.lua"] = { globals = { "arg" } }
