# The RPC pool beside a plain libcurl multi loop in C and wrk, against the
# same simulator endpoint, at concurrency 1, 16 and 64: calls/s and p50/p99.
set -u
cd "$(dirname "$0")/../.."
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cc -O2 -o "$work/curl_loop" scripts/bench.d/curl_loop.c $(pkg-config --cflags --libs libcurl) || exit 1
"$THORP_SIM" --count 1 --base-port 0 >"$work/sim.out" 2>&1 &
for _ in $(seq 100); do grep -q SIM_READY "$work/sim.out" && break; sleep 0.05; done
url=$(sed -n 's/^SIM_READY //p' "$work/sim.out")
cat >"$work/pool.lua" <<'LUA'
local url, conc, secs = arg[1], tonumber(arg[2]), tonumber(arg[3])
local pool = thorp.rpc.new_pool{ endpoints = { { name = "sim", url = url } }, hedge = false }
for _ = 1, 200 do pool:call("getSlot") end
local lat, n, stop, running = {}, 0, thorp.now() + secs * 1000, conc
for _ = 1, conc do
  thorp.spawn(function()
    while thorp.now() < stop do
      local t0 = thorp.now()
      if pool:call("getSlot", nil, { priority = "critical" }).ok then n = n + 1; lat[#lat + 1] = thorp.now() - t0 end
    end
    running = running - 1
  end)
end
while running > 0 do thorp.sleep(5) end
table.sort(lat)
print(("%.0f %.0f %.0f"):format(n / secs, lat[math.ceil(#lat * 0.5)] * 1000, lat[math.ceil(#lat * 0.99)] * 1000))
LUA
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"getSlot"}'
LUA
printf "   %-6s %-34s %-34s %s\n" conc "thorp.rpc pool (calls/s p50 p99 us)" "plain libcurl loop in C" "wrk -t1 (req/s)"
for c in 1 16 64; do
  p=$("$THORP" exec "$work/pool.lua" "$url" $c 3 2>/dev/null)
  b=$("$work/curl_loop" "$url" $c 3)
  w=$(wrk -t1 -c$c -d3s -s "$work/post.lua" "$url" 2>/dev/null | sed -n 's/^Requests\/sec: *//p')
  ratio=$(awk -v a="${p%% *}" -v b="${b%% *}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b }')
  printf "   %-6s %-34s %-34s %s   pool/plain %s\n" "$c" "$p" "$b" "$w" "$ratio"
done
