# Shared set-up of the process-level tests (tests/proc/*.sh): source it.
# Gives $THORP (absolute), $work (a temp dir, removed at exit with any
# background job), THORP_STATE_DIR inside it, and:
#   check STATUS "what"     ok/FAIL line, counted
#   is A B                  0 when A = B (for check)
#   wait_for PATTERN FILE   until PATTERN appears in FILE (10 s)
#   sim_sends URL...        sendTransaction requests the simulator endpoints took
#   finish                  the "N passed, N failed" line and the exit code
set -u
THORP=$(realpath "${THORP:-./thorp}")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
export THORP_STATE_DIR="$work/state"
pass=0; fail=0
check() { if [ "$1" = 0 ]; then pass=$((pass+1)); echo "ok   - $2"; else fail=$((fail+1)); echo "FAIL - $2"; fi; }
is() { [ "$1" = "$2" ] && echo 0 || echo 1; }
# Waits are bounded generously (30 s): under load or ASan a host can take seconds to start.
WAIT_TRIES=${WAIT_TRIES:-600}
# A port nothing listens on now (the kernel picks it), for a listener a test starts.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq "$WAIT_TRIES"); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
sim_sends() { local n=0 u; for u in "$@"; do
  n=$((n + $(curl -s "$u/admin/stats" | sed -n 's/.*"send_transaction":\([0-9]*\).*/\1/p'))); done; echo $n; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; }
