-- Policy for the meme-coin example: load it after the default policy.
--   thorp run policies/default.lua examples/memecoin_policy.lua
-- Edit and `thorp reload`: the new handler and settings apply without losing
-- a queued signal or an open trade.
-- The bot is a module beside this file (a policy's folder is on package.path):
-- require loads it once, so a reload keeps its one wallet, feed and stats
-- (edits to memecoin.lua itself take a restart).
local bot = require "memecoin"

return {
  priorities = { topics = { trade_signal = "critical", price_update = "low" } },
  breakers = {
    default = { failure_threshold = 3, cooldown_ms = 3000 },
  },
  subscribers = {
    executor = { topic = "trade_signal", handler = bot.on_signal, max_failure_rate = 0.5 },
  },
  on_start = function()
    bot.recover()
    if os.getenv("THORP_DEMO_FEED") ~= "0" then bot.feed(tonumber(os.getenv("THORP_DEMO_FEED_MS")) or 700) end
  end,
}
