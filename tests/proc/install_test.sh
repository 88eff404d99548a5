#!/usr/bin/env bash
# `make install` into a temporary PREFIX: binary, simulator, policies, docs
# and a systemd unit whose ExecStart is PREFIX/bin/thorp and that
# systemd-analyze verify accepts; the installed binary runs from anywhere.
. "$(dirname "$0")/../helpers/proc.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
THORP_SIM=$(realpath "${THORP_SIM:-$root/build/thorp-sim}")
prefix="$work/prefix"
make -s -C "$root" install PREFIX="$prefix" THORP_BIN="$THORP" SIM_BIN="$THORP_SIM" >"$work/install.out" 2>&1
check $? "make install PREFIX=... succeeds ($(tail -2 "$work/install.out" | tr '\n' ' '))"
unit="$prefix/lib/systemd/system/thorp.service"
[ -x "$prefix/bin/thorp" ] && [ -x "$prefix/bin/thorp-sim" ]; check $? "installs thorp and thorp-sim in PREFIX/bin"
[ -f "$prefix/share/doc/thorp/README.md" ] && [ -f "$prefix/share/doc/thorp/http.md" ]; check $? "installs the docs"
[ -f "$prefix/share/thorp/policies/default.lua" ]; check $? "installs the default policy"
grep -q "^ExecStart=$prefix/bin/thorp run " "$unit"; check $? "the unit's ExecStart is PREFIX/bin/thorp ($(grep ^ExecStart "$unit"))"
! grep -q /usr/local "$unit"; check $? "no /usr/local path is left in the unit"
grep -q '^LoadCredential=keypair:' "$unit"; check $? "the unit says where the keypair comes from (LoadCredential=)"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" >"$work/verify.out" 2>&1
  check $? "systemd-analyze verify accepts the installed unit ($(head -c 200 "$work/verify.out"))"
else
  echo "skip - systemd-analyze is not installed (not counted)"
fi
out=$(cd / && THORP_STATE_DIR="$work/st" "$prefix/bin/thorp" version); check $? "the installed binary runs from / ($out)"
"$prefix/bin/thorp-sim" --count 1 --base-port 0 >"$work/sim.out" 2>&1 & sim=$!
wait_for SIM_READY "$work/sim.out"; check $? "the installed simulator starts"
kill $sim 2>/dev/null; wait $sim 2>/dev/null
finish
