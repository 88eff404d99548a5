-- thorp's default policy: what matters in a viral burst.
-- Sending and confirming trades is critical; account reads are normal;
-- analytics and metrics are low and shed first. Copy and edit, then
-- `kill -HUP <pid>` or `thorp reload` to apply without a restart.
return {
  priorities = {
    rpc = {
      sendTransaction = "critical",
      getSignatureStatuses = "critical",
      getLatestBlockhash = "critical",
      simulateTransaction = "normal",
      getBalance = "normal",
      getAccountInfo = "normal",
      getTokenAccountBalance = "normal",
      getSlot = "normal",
      getVersion = "low",
      getHealth = "low",
    },
    topics = { trade_signal = "critical", price_update = "normal", metrics = "low" },
  },
  backpressure = { warning_threshold = 0.8, critical_threshold = 0.95 },
  breakers = {
    -- isolate a failing provider fast, probe it again after a short, jittered cooldown
    default = { failure_threshold = 5, cooldown_ms = 5000, jitter = 0.2, max_cooldown_ms = 60000,
                half_open_max_calls = 1 },
  },
}
