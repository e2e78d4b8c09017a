#!/usr/bin/env bash
# sotto against the do-nothing QUIC floor, interleaved: floor, sotto, floor,
# sotto ... in the same minutes, and each sotto figure divided by the floor
# figure measured just before it. On a shared machine absolute figures swing
# by 2x between minutes; the ratio of neighbours is what holds.
#
# Workload, identical on both sides: 64 sender and 64 receiver connections,
# 1 KiB blobs, window 16 per sender, every blob durable (fdatasync, group
# commit) before it is acknowledged and forwarded; 2 s warm-up, then
# DURATION s measured.
#   - saturated: as fast as acknowledged; figure: delivered msg/s.
#   - rate:      5,000 msg/s offered; figures: push latency p50 and p99.
#
# sotto runs as users run it: a separate `sotto-relay` process with its
# default configuration (access tokens required, default limits), fresh
# data directory per run, and `sotto-load` opening every connection with a
# real access token (obtained before the run, not measured).
#
# quic-floor is not part of this repository: the script runs it from
# ../shared/bench/quic-floor next to the repository (or $QUIC_FLOOR).
#
# Usage: tests/bench/ratio.sh [ROUNDS]     (default 3 rounds, ~2 min each)
# Env:   DURATION (10), RATE (5000), SKIP_BUILD=1, OUT (JSON lines file),
#        BENCH_DIR (data directories of both relays; default /tmp),
#        ENGINES (storage engines to run sotto on, default "sled"; with
#        ENGINES="sled fjall" each floor run is followed by one sotto run
#        per engine, in that order, each divided by that floor run),
#        KINDS ("saturated rate", or one of them).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
FLOOR=${QUIC_FLOOR:-$REPO/../shared/bench/quic-floor}
ROUNDS=${1:-3}
DURATION=${DURATION:-10}
WARMUP=2
RATE=${RATE:-5000}
ENGINES=${ENGINES:-sled}
KINDS=${KINDS:-saturated rate}
BENCH_DIR=${BENCH_DIR:-/tmp}
OUT=${OUT:-$REPO/target/bench-ratio/$(date -u +%Y%m%dT%H%M%SZ).jsonl}

if [ ! -x "$FLOOR/run.sh" ]; then
    echo "ratio.sh: quic-floor is missing: no executable $FLOOR/run.sh." >&2
    echo "  It is not part of this repository; put it at ../shared/bench/quic-floor" >&2
    echo "  next to the repository, or set QUIC_FLOOR=DIR. Nothing was measured." >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "ratio.sh: needs python3" >&2; exit 2; }

if [ -z "${SKIP_BUILD:-}" ]; then
    (cd "$REPO" && cargo build --release -q -p sotto-relay --bin sotto-relay -p sotto-tests --bin sotto-load)
fi
RELAY_BIN=$REPO/target/release/sotto-relay
LOAD_BIN=$REPO/target/release/sotto-load
for bin in "$RELAY_BIN" "$LOAD_BIN"; do
    [ -x "$bin" ] || { echo "ratio.sh: $bin is missing (build failed?)" >&2; exit 2; }
done
mkdir -p "$(dirname "$OUT")"

WORKLOAD=(--senders 64 --receivers 64 --window 16)
SOTTO_DIR=$BENCH_DIR/sotto-ratio-relay
RELAY_PID=

stop_relay() {
    if [ -n "$RELAY_PID" ]; then
        kill -INT "$RELAY_PID" 2>/dev/null || true
        wait "$RELAY_PID" 2>/dev/null || true
        RELAY_PID=
    fi
}
cleanup() {
    stop_relay
    rm -rf "$SOTTO_DIR" "$BENCH_DIR/quic-floor"
}
trap cleanup EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# One quic-floor run (fresh durable relay); prints its JSON line.
floor_run() {
    DIR=$BENCH_DIR/quic-floor "$FLOOR/run.sh" durable "${WORKLOAD[@]}" \
        --duration "$DURATION" --warmup "$WARMUP" "$@"
}

# One sotto run against a fresh `sotto-relay` process on engine $1; prints
# its JSON line.
sotto_run() {
    local engine=$1
    shift
    rm -rf "$SOTTO_DIR"
    mkdir -p "$SOTTO_DIR"
    printf '[storage]\nengine = "%s"\n' "$engine" >"$SOTTO_DIR/relay.toml"
    SOTTO_LOG=warn "$RELAY_BIN" --config "$SOTTO_DIR/relay.toml" --listen 127.0.0.1:0 --data "$SOTTO_DIR/data" \
        >"$SOTTO_DIR/relay.out" 2>"$SOTTO_DIR/relay.err" &
    RELAY_PID=$!
    local addr="" fingerprint="" code=""
    # Up to 30 s: on a busy disk a fresh database's first fsyncs are slow.
    for _ in $(seq 300); do
        addr=$(sed -n 's/^listen: //p' "$SOTTO_DIR/relay.out")
        fingerprint=$(sed -n 's/^fingerprint: //p' "$SOTTO_DIR/relay.out")
        code=$(sed -n 's/^bootstrap code: //p' "$SOTTO_DIR/relay.out")
        [ -n "$addr" ] && [ -n "$fingerprint" ] && [ -n "$code" ] && break
        sleep 0.1
    done
    # This runs in a command substitution, where the EXIT trap does not
    # apply: stop the relay on every path out.
    if [ -z "$code" ]; then
        echo "ratio.sh: sotto-relay did not start; its stderr:" >&2
        cat "$SOTTO_DIR/relay.err" >&2
        stop_relay
        return 1
    fi
    "$LOAD_BIN" --relay "$addr" --fingerprint "$fingerprint" --relay-pid "$RELAY_PID" \
        --bootstrap-code "$code" --json \
        throughput "${WORKLOAD[@]}" --size 1024 --duration "$DURATION" --warmup "$WARMUP" "$@" \
        || { stop_relay; return 1; }
    stop_relay
}

# Runs one floor run, then one sotto run per engine, and records each
# sotto line with that floor line and the load averages.
pair() {
    local round=$1 kind=$2
    shift 2
    local floor_args=() sotto_args=()
    if [ "$kind" = saturated ]; then
        floor_args=(--mode throughput)
        sotto_args=(--rate max)
    else
        floor_args=(--mode rate --rate "$RATE")
        sotto_args=(--rate "$RATE")
    fi
    local la_floor la_sotto floor sotto engine
    la_floor=$(loadavg)
    floor=$(floor_run "${floor_args[@]}")
    for engine in $ENGINES; do
        la_sotto=$(loadavg)
        sotto=$(sotto_run "$engine" "${sotto_args[@]}")
    python3 - "$round" "$kind" "$floor" "$sotto" "$la_floor" "$la_sotto" "$OUT" "$engine" <<'PY'
import json, sys
round_, kind, floor, sotto, la_floor, la_sotto, out, engine = sys.argv[1:]
f, s = json.loads(floor), json.loads(sotto)
rec = {"round": int(round_), "kind": kind, "engine": engine, "loadavg_floor": la_floor,
       "loadavg_sotto": la_sotto, "floor": f, "sotto": s}
with open(out, "a") as fh:
    fh.write(json.dumps(rec) + "\n")
def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"
others = s.get("cpu", {}).get("other_processes")
relay_cores = s.get("cpu", {}).get("external_relay_process")
gen_cores = s.get("cpu", {}).get("by_thread_group", {}).get("load generator")
state = (f"load avg {la_floor} / {la_sotto}; relay cores floor {f.get('relay_cpu_pct', 0) / 100:.2f}"
         f" sotto {relay_cores}; generator cores floor {f.get('generator_cpu_pct', 0) / 100:.2f}"
         f" sotto {gen_cores}; others during sotto {others}")
if kind == "saturated":
    fv, sv = f["delivered_per_s"], s["delivered_per_sec"]
    print(f"{round_:>5}  {engine:<6} delivered msg/s      floor {fv:>9.0f}  sotto {sv:>9.0f}  ratio {ratio(sv, fv):>5}   {state}")
else:
    for p, fk, sk in (("p50", "p50", "p50_ms"), ("p99", "p99", "p99_ms")):
        fv, sv = f["lat_ms"][fk], s["push_latency"][sk]
        print(f"{round_:>5}  {engine:<6} push {p} @{s['offered_per_sec']:.0f}/s (ms) floor {fv:>7.2f}  sotto {sv:>7.2f}  ratio {ratio(sv, fv):>5}   {state}")
errs = s["totals"]["put_errors"] + s["totals"]["ack_errors"] + s["totals"]["undelivered"]
if errs or f.get("errors"):
    print(f"       (errors: sotto put/ack/undelivered {errs}, floor {f.get('errors')};"
          f" sotto first error: {s['totals'].get('first_error')})")
PY
    done
}

echo "sotto / quic-floor, interleaved; 64 x 64, 1 KiB, window 16, durable; ${DURATION} s measured after ${WARMUP} s"
echo "machine: $(nproc) cores, load average $(loadavg) at start; raw JSON lines: $OUT"
echo "round  figure"
for round in $(seq "$ROUNDS"); do
    for kind in $KINDS; do
        pair "$round" "$kind"
    done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
def show(name, xs, target):
    if xs:
        print(f"{name:<34} median {statistics.median(xs):.2f}  (runs: {', '.join(f'{x:.2f}' for x in xs)})  target {target}")
for engine in dict.fromkeys(r.get("engine", "sled") for r in recs):
    mine = [r for r in recs if r.get("engine", "sled") == engine]
    sat = [r["sotto"]["delivered_per_sec"] / r["floor"]["delivered_per_s"]
           for r in mine if r["kind"] == "saturated" and r["floor"]["delivered_per_s"]]
    p50 = [r["sotto"]["push_latency"]["p50_ms"] / r["floor"]["lat_ms"]["p50"]
           for r in mine if r["kind"] == "rate" and r["floor"]["lat_ms"]["p50"]]
    p99 = [r["sotto"]["push_latency"]["p99_ms"] / r["floor"]["lat_ms"]["p99"]
           for r in mine if r["kind"] == "rate" and r["floor"]["lat_ms"]["p99"]]
    print(f"summary (sotto on {engine} / floor)")
    show("saturated delivered msg/s", sat, ">= 0.8")
    show("push p50 at the fixed rate", p50, "<= 1.5")
    show("push p99 at the fixed rate", p99, "<= 2.0")
PY
