#!/usr/bin/env bash
# Relay memory per idle subscribed connection, and connection setup cost:
# starts a `sotto-relay` process (fresh data directory, default
# configuration: access tokens required), opens COUNT connections with
# `sotto-load connections` (each: QUIC + TLS handshake, hello redeeming a
# real access token, subscribe to its own blinded mailbox), holds them, and
# prints one summary line with the machine's load average.
#
# Usage: tests/bench/idle-memory.sh [COUNT] [RELAY_BIN]
#   COUNT      connections (default 10000; needs `ulimit -n` above COUNT + 256)
#   RELAY_BIN  the relay binary to measure (default target/release/sotto-relay),
#              so that two builds can be compared run for run.
# Env: TOKENS=0 opens connections without tokens (relay configured not to
#      require them); HOLD (seconds, default 2); JSON_OUT appends the report.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
COUNT=${1:-10000}
RELAY_BIN=${2:-$REPO/target/release/sotto-relay}
LOAD_BIN=$REPO/target/release/sotto-load
HOLD=${HOLD:-2}
for bin in "$RELAY_BIN" "$LOAD_BIN"; do
    [ -x "$bin" ] || { echo "idle-memory.sh: $bin is missing (cargo build --release -p sotto-relay -p sotto-tests)" >&2; exit 2; }
done
DIR=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill -INT $PID 2>/dev/null; [ -n "$PID" ] && wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
config=()
if [ "${TOKENS:-1}" = 0 ]; then
    printf '[tokens]\nrequire_tokens = false\n' >"$DIR/relay.toml"
    config=(--config "$DIR/relay.toml")
fi
SOTTO_LOG=warn "$RELAY_BIN" --listen 127.0.0.1:0 --data "$DIR/data" "${config[@]}" >"$DIR/out" 2>"$DIR/err" &
PID=$!
for _ in $(seq 100); do grep -q '^fingerprint: ' "$DIR/out" && break; sleep 0.1; done
addr=$(sed -n 's/^listen: //p' "$DIR/out")
fp=$(sed -n 's/^fingerprint: //p' "$DIR/out")
code=$(sed -n 's/^bootstrap code: //p' "$DIR/out")
tok=()
[ "${TOKENS:-1}" = 0 ] || tok=(--bootstrap-code "$code")
la=$(cut -d' ' -f1-3 /proc/loadavg)
json=$("$LOAD_BIN" --relay "$addr" --fingerprint "$fp" --relay-pid "$PID" "${tok[@]}" --json \
    connections --count "$COUNT" --hold "$HOLD")
[ -z "${JSON_OUT:-}" ] || echo "$json" >>"$JSON_OUT"
python3 - "$json" "$la" "$(basename "$RELAY_BIN")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
cpu = r["cpu_while_opening"]
print(f"{sys.argv[3]}: {r['succeeded']}/{r['requested']} connections, tokens {'yes' if r['tokens'] else 'no'}: "
      f"relay RSS {r['rss_per_connection_kib']} KiB per idle connection "
      f"({r['rss_before_kib']} -> {r['rss_after_kib']} KiB); {r['handshakes_per_sec']:.0f} handshakes/s; "
      f"relay CPU {r['relay_cpu_ms_per_connection']} ms per setup; "
      f"other processes {cpu['other_processes']} cores; load avg {sys.argv[2]}")
PY
