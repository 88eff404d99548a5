#!/usr/bin/env bash
# The RPC call path against the fastest upstream at hand: nginx-light (one
# worker, keep-alive) answering every POST with a getSlot result that echoes
# the request's id (the pool checks ids; the echo module, shipped with
# nginx-light, reads the body). Side by side in one run, at concurrency 1, 16
# and 64: a plain libcurl multi loop in C (curl_loop.c), thorp.rpc on a
# new_pool (health off), and wrk; then the front door against wrk straight at
# nginx for distinct calls, and the memory a call in flight holds.
# Figures only; nothing is asserted. BENCH_SECS (default 3) per measurement.
#   THORP=/path/to/other/thorp scripts/bench rpc_nginx   compares another build
set -u
cd "$(dirname "$0")/../.."
THORP=${THORP:-$(realpath ./thorp)}
SECS=${BENCH_SECS:-3}
ECHO_SO=/usr/lib/nginx/modules/ngx_http_echo_module.so
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "   nginx-light not installed (scripts/install-deps): skipped"; exit 0; }
[ -f "$ECHO_SO" ] || { echo "   $ECHO_SO missing (libnginx-mod-http-echo): skipped"; exit 0; }
command -v wrk >/dev/null || { echo "   wrk not installed (scripts/install-deps): skipped"; exit 0; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cc -O2 -o "$work/curl_loop" scripts/bench.d/curl_loop.c $(pkg-config --cflags --libs libcurl) || exit 1

port=$(freeport)
mkdir -p "$work/logs"
cat >"$work/nginx.conf" <<EOF
load_module $ECHO_SO;
worker_processes 1;
error_log logs/error.log error;
pid nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path tmp;
  client_body_buffer_size 16k;
  client_body_in_single_buffer on;
  map \$request_body \$rpc_id { "~\"id\":(?<n>[0-9]+)" \$n; default 1; }
  server {
    listen 127.0.0.1:$port;
    keepalive_requests 100000000;
    default_type application/json;
    location / { echo_read_request_body; echo -n '{"jsonrpc":"2.0","id":\$rpc_id,"result":123}'; }
  }
}
EOF
"$NGINX" -p "$work" -c nginx.conf -g 'daemon on;' || { echo "   nginx did not start"; exit 1; }
url="http://127.0.0.1:$port/"
for _ in $(seq 100); do curl -sf -d '{"id":1}' "$url" >/dev/null && break; sleep 0.05; done

cat >"$work/pool.lua" <<'LUA'
local url, conc, secs = arg[1], tonumber(arg[2]), tonumber(arg[3])
local pool = thorp.rpc.new_pool{ endpoints = { { name = "nginx", url = url } }, hedge = false, health = false }
for _ = 1, 200 do pool:call("getSlot") end
local lat, n, bad, stop, running = {}, 0, 0, thorp.now() + secs * 1000, conc
local c0 = os.clock()
for _ = 1, conc do
  thorp.spawn(function()
    while thorp.now() < stop do
      local t0 = thorp.now()
      if pool:call("getSlot", nil, { priority = "critical" }).ok then n = n + 1; lat[#lat + 1] = thorp.now() - t0
      else bad = bad + 1 end
    end
    running = running - 1
  end)
end
while running > 0 do thorp.sleep(5) end
local cpu_us = (os.clock() - c0) * 1e6 / math.max(n, 1)
table.sort(lat)
print(("%.0f %.0f %.0f %d %.1f"):format(n / secs, lat[math.ceil(#lat * 0.5)] * 1000, lat[math.ceil(#lat * 0.99)] * 1000,
  bad, cpu_us))
LUA

# memory per call in flight: N calls parked on an upstream that accepts and never answers
cat >"$work/park.lua" <<'LUA'
local url, N = arg[1], tonumber(arg[2])
local ffi = require "ffi"
local C = require "thorp.cdef"
local function rss_kb()
  local f = io.open("/proc/self/statm"); local s = f:read("*a"); f:close()
  return tonumber(s:match("^%S+%s+(%S+)")) * 4
end
local pool = thorp.rpc.new_pool{ endpoints = { { name = "sink", url = url, max_inflight = N } }, hedge = false,
                                 health = false }
collectgarbage(); collectgarbage()
local kb0, rss0, done = collectgarbage("count"), rss_kb(), 0
for _ = 1, N do
  thorp.spawn(function() pool:call("getSlot", nil, { priority = "critical", timeout_ms = 1500 }); done = done + 1 end)
end
local t_end = thorp.now() + 1000
while C.thorp_pool_inflight() < N and thorp.now() < t_end do thorp.sleep(5) end
collectgarbage(); collectgarbage()
local kb1, rss1 = collectgarbage("count"), rss_kb()
print(("%d %.0f %.0f"):format(tonumber(C.thorp_pool_inflight()), (kb1 - kb0) * 1024 / N, (rss1 - rss0) * 1024 / N))
while done < N do thorp.sleep(20) end
LUA

echo "   upstream: nginx-light, 1 worker, keep-alive, getSlot echoing the id; ${SECS} s per figure"
printf "   %-5s %-30s %-30s %-12s %s\n" conc "plain libcurl loop (C)" "thorp.rpc new_pool" "wrk -t1" "pool/plain"
printf "   %-5s %-30s %-30s %-12s %s\n" "" "calls/s p50 p99 us, cpu us/call" "calls/s p50 p99 us, cpu us/call" "req/s" "calls/s, cpu"
for c in 1 16 64; do
  read -r b_rps b_p50 b_p99 b_cpu <<<"$("$work/curl_loop" "$url" $c "$SECS")"
  read -r p_rps p_p50 p_p99 p_bad p_cpu <<<"$("$THORP" exec "$work/pool.lua" "$url" $c "$SECS" 2>/dev/null)"
  w=$(wrk -t1 -c$c -d"${SECS}s" -s /dev/stdin "$url" 2>/dev/null <<'LUA' | sed -n 's/^Requests\/sec: *//p'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"getSlot"}'
LUA
)
  ratio=$(awk -v a="${p_rps:-0}" -v b="${b_rps:-0}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "?" }')
  # CPU per call, plain over pool: what calls/s would be with a core each (steadier when the machine is busy)
  cratio=$(awk -v a="${p_cpu:-0}" -v b="${b_cpu:-0}" 'BEGIN { if (a > 0) printf "%.0f%%", 100 * b / a; else print "?" }')
  printf "   %-5s %-30s %-30s %-12s %s%s\n" "$c" "${b_rps:-?} ${b_p50:-?} ${b_p99:-?}, ${b_cpu:-?}" \
    "${p_rps:-?} ${p_p50:-?} ${p_p99:-?}, ${p_cpu:-?}" "${w:-?}" "$ratio, $cratio" \
    "$([ "${p_bad:-0}" != 0 ] && echo "  ($p_bad pool calls failed)")"
  [ $c = 1 ] && added=$(awk -v p="${p_p50:-0}" -v b="${b_p50:-0}" 'BEGIN { printf "%.0f", p - b }')
done
echo "   added by the pool at p50, concurrency 1: ${added:-?} us (target < 25)   pool/plain target >= 80% at 16 and 64"

# front door: wrk with a distinct getBalance per request, straight at nginx and through thorp
hport=$(freeport)
echo 'return {}' >"$work/policy.lua"
THORP_RPC_AUTO_BATCH=0 THORP_RPC_URLS="a=$url" THORP_HTTP_PORT=$hport THORP_STATE_DIR="$work/state" LOG_LEVEL=error \
  "$THORP" run "$work/policy.lua" >"$work/host.out" 2>&1 & pids+=($!)
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$hport/ready" >/dev/null 2>&1 && break; sleep 0.05; done
cat >"$work/distinct.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. n .. ',"method":"getBalance","params":["Wallet' .. n .. '"]}')
end
done = function(summary, latency)
  io.write(string.format("RESULT %.0f %.0f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
LUA
fd() { wrk -c64 -t1 -d"${SECS}s" -s "$work/distinct.lua" "$1" 2>/dev/null | sed -n 's/^RESULT //p'; }
read -r d_rps d_p99 d_err <<<"$(fd "$url")"
read -r f_rps f_p99 f_err <<<"$(fd "http://127.0.0.1:$hport/")"
echo "   front door, distinct getBalance, wrk -c64 -t1:"
echo "     straight at nginx:      ${d_rps:-?} req/s  p99 ${d_p99:-?} us  errors ${d_err:-?}"
echo "     through the front door: ${f_rps:-?} req/s  p99 ${f_p99:-?} us  errors ${f_err:-?}"
echo "     front door / straight: $(awk -v a="${f_rps:-0}" -v b="${d_rps:-0}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "?" }') (target >= 70%)"
kill "${pids[-1]}" 2>/dev/null; wait "${pids[-1]}" 2>/dev/null

# memory: an upstream that accepts connections and never answers
sport=$(freeport)
python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $sport)); s.listen(4096); time.sleep(60)" & pids+=($!)
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $sport))" 2>/dev/null && break; sleep 0.05; done
read -r parked lua_b rss_b <<<"$("$THORP" exec "$work/park.lua" "http://127.0.0.1:$sport/" 200 2>/dev/null)"
echo "   memory per call in flight (${parked:-?} parked): Lua heap ${lua_b:-?} B, RSS ${rss_b:-?} B (curl handle and connection included)"
