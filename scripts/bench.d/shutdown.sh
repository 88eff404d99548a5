# Graceful shutdown: time from the last trade completing to the process
# having exited (target: under 50 ms). Five runs, each: a trade open, shutdown
# initiated, the trade completes 200 ms later.
set -u
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cat >"$work/s.lua" <<'LUA'
thorp.shutdown.register("TRADE", "t1", { token = "BONK" })
thorp.shutdown.initiate("bench")
thorp.timer.after(200, function()
  thorp.shutdown.complete("t1")
  io.stdout:write(("%.3f\n"):format(require("thorp.sched").wall())); io.stdout:flush()
end)
LUA
all=""
for i in 1 2 3 4 5; do
  done_at=$(THORP_STATE_DIR="$work/st$i" "$THORP" exec "$work/s.lua" 2>/dev/null)
  exit_at=$(date +%s%3N)
  all="$all $(awk -v a="$done_at" -v b="$exit_at" 'BEGIN { printf "%.1f", b - a }')"
done
echo "   last trade completed -> process gone (ms, 5 runs):$all"
