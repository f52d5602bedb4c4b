#!/usr/bin/env bash
# Compares fastim's /echo with three peer echo servers, tokio-tungstenite
# (examples/tungstenite_echo.rs, "peer"), fastwebsockets
# (examples/fastwebsockets_echo.rs, "fwsk") and uWebSockets (uWebSockets.js,
# benches/uws/echo.js, "uws"; needs Node.js, its package is installed with
# `npm ci` in benches/uws), under the same load, in the same run.
# See BENCHMARKS.md for the method.
#
#   benches/compare.sh                       # everything, 3 repeats, 5 s runs
#   REPEATS=1 DURATION=2 benches/compare.sh a c
#   SKIP_BUILD=1 benches/compare.sh         # reuse target/release binaries
#
# SERVERS="fastim peer" (any subset) leaves the others out.
# SERVERS="fastim base" BASE_BIN=/path/to/an/older/fastim compares two builds of
# fastim the same way (the table then shows fastim only; results.jsonl has both).
#
# On a shared machine: before each run, wait up to QUIET_WAIT seconds (default 60)
# for the machine to be idle (under 15 % of a core busy), and run a measurement
# again (up to RETRIES more times, default 2) when other processes used more than
# MAX_OTHER_CPU % of a core during it (default 25). QUIET_WAIT=0 RETRIES=0 turns
# both off.
#
# Every server runs pinned to CPU $SERVER_CPU (default 0), the load tool to
# $LOAD_CPU (default 1). Each run starts a fresh server; the servers
# alternate (fastim, peer, fwsk, uws, fastim, peer, ...). The markdown table goes to stdout
# and to target/bench/compare.md; raw RESULT lines to target/bench/results.jsonl.
set -euo pipefail

cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
QUIET_WAIT=${QUIET_WAIT:-60}
RETRIES=${RETRIES:-2}
MAX_OTHER_CPU=${MAX_OTHER_CPU:-25}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
if [ -z "${SERVERS:-}" ]; then
    SERVERS="fastim peer fwsk uws"
    if ! command -v node >/dev/null; then
        echo "compare.sh: no Node.js (node): leaving out the uWebSockets peer" >&2
        SERVERS="fastim peer fwsk"
    fi
fi
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(a b c d e f g)

OUT=target/bench
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

for tool in taskset timeout python3; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is required" >&2; exit 1; }
done

if [ "${SKIP_BUILD:-0}" = 1 ]; then
    echo "SKIP_BUILD=1: using the binaries already in target/release" >&2
else
    echo "building release binaries..." >&2
    cargo build --release --bin fastim --bin fastim-load \
        --example tungstenite_echo --example fastwebsockets_echo >&2
fi
TARGET=${CARGO_TARGET_DIR:-target}
FASTIM=$TARGET/release/fastim
PEER=$TARGET/release/examples/tungstenite_echo
FWSK=$TARGET/release/examples/fastwebsockets_echo
LOAD=$TARGET/release/fastim-load
UWS=benches/uws/echo.js
case " $SERVERS " in
*" uws "*)
    command -v node >/dev/null || { echo "compare.sh: the uws peer needs Node.js (node)" >&2; exit 1; }
    if [ ! -d benches/uws/node_modules/@trufflesuite/uws-js-unofficial ]; then
        echo "installing uWebSockets.js (npm ci in benches/uws)..." >&2
        (cd benches/uws && timeout 300 npm ci --ignore-scripts --no-audit --no-fund) >&2
    fi
    ;;
esac

# 10,000 idle connections need as many descriptors in each process.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE_CONNECTIONS + 100)) ]; then
    echo "compare.sh: open-file limit $(ulimit -n) is below $IDLE_CONNECTIONS connections" >&2
    exit 1
fi
# shellcheck source=benches/servers.sh
. "$(dirname "$0")/servers.sh"

# start_server fastim|base|peer|fwsk|uws LOG: starts a fresh server on a free port, pinned.
start_server() {
    case $1 in
    fastim)
        new_data_dir
        # Every load connection comes from 127.0.0.1: lift the per-address cap.
        launch_server "$2" 600 "$FASTIM" --listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
            --max-unauthenticated-per-address 0
        ;;
    base)
        new_data_dir
        launch_server "$2" 600 "$BASE_BIN" --listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
            --max-unauthenticated-per-address 0
        ;;
    peer) launch_server "$2" 600 "$PEER" --listen 127.0.0.1:0 ;;
    fwsk) launch_server "$2" 600 "$FWSK" --listen 127.0.0.1:0 ;;
    uws) launch_server "$2" 600 node "$UWS" 0 ;;
    esac
}

# The load-tool arguments of each scenario.
scenario_args() {
    case $1 in
    a) echo "echo --connections 1 --size 64 --in-flight 1024" ;;
    b) echo "echo --connections 1000 --size 64 --in-flight 8" ;;
    # Payloads are discarded unread in the kernel (only types and lengths are
    # checked): copying 1 MiB echoes capped the load tool below the servers.
    c) echo "echo --connections 10 --size 1MiB --binary --in-flight 4 --no-verify" ;;
    d) echo "idle --connections $IDLE_CONNECTIONS --settle 1" ;;
    # Latency-bound loads: one connection with a short window, and many
    # connections with one message each in flight.
    e) echo "echo --connections 1 --size 64 --in-flight 64" ;;
    f) echo "echo --connections 100 --size 64 --in-flight 1" ;;
    # (b) with permessage-deflate offered: fastim accepts it, and 64-byte messages
    # stay under its threshold; the peers decline it. Compare with (b).
    g) echo "echo --connections 1000 --size 64 --in-flight 8 --offer-deflate" ;;
    esac
}

run_one() {
    local scenario=$1 server=$2 rep=$3 attempt
    for attempt in $(seq 0 "$RETRIES"); do
        measure "$scenario" "$server" "$rep"
        local other
        other=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1]).get("other_cpu_pct") or 0))' "$RESULT")
        [ "$other" -le "$MAX_OTHER_CPU" ] && break
        [ "$attempt" -lt "$RETRIES" ] &&
            echo "  $scenario-$server-$rep: other processes used $other % of a core: measuring again" >&2
    done
    printf '{"scenario":"%s","server":"%s","rep":%d,"exit":%d,"attempts":%d,"result":%s}\n' \
        "$scenario" "$server" "$rep" "$STATUS" $((attempt + 1)) "$RESULT" >>"$RESULTS"
}

# One measurement; sets RESULT (the JSON of the RESULT line, or {}) and STATUS.
measure() {
    local scenario=$1 server=$2 rep=$3
    local tag="$scenario-$server-$rep"
    local args
    args=$(scenario_args "$scenario")
    wait_quiet
    start_server "$server" "$OUT/$tag.server.log"
    local extra=""
    [ "${args%% *}" = echo ] && extra="--duration $DURATION --warmup $WARMUP"
    STATUS=0
    # shellcheck disable=SC2086
    taskset -c "$LOAD_CPU" timeout $((DURATION + WARMUP + 90)) "$LOAD" $args $extra \
        --url "ws://$SERVER_ADDR/echo" --server-pid "$SERVER_PID" \
        >"$OUT/$tag.load.log" 2>&1 || STATUS=$?
    stop_server
    RESULT=$(sed -n 's/^RESULT //p' "$OUT/$tag.load.log" | tail -n1)
    if [ -z "$RESULT" ]; then
        echo "  $tag: no result (exit $STATUS), see $OUT/$tag.load.log" >&2
        RESULT='{}'
    fi
    grep -E '^  (throughput|latency|server|other|verification)|^idle|^  server RSS' "$OUT/$tag.load.log" |
        sed "s/^/  $tag: /" >&2 || true
}

for scenario in "${SCENARIOS[@]}"; do
    echo "scenario $scenario: $(scenario_args "$scenario")" >&2
    for rep in $(seq "$REPEATS"); do
        for server in $SERVERS; do
            run_one "$scenario" "$server" "$rep"
        done
    done
done

MAX_OTHER_CPU=$MAX_OTHER_CPU python3 - "$RESULTS" "$REPEATS" "$DURATION" <<'PY' | tee "$OUT/compare.md"
import json, statistics, sys, datetime, os

path, repeats, duration = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [json.loads(line) for line in open(path)]

def median(scenario, server, key):
    vals = [r["result"].get(key) for r in runs
            if r["scenario"] == scenario and r["server"] == server]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None

def failures(scenario, server):
    return sum(1 for r in runs if r["scenario"] == scenario and r["server"] == server
               and (r["exit"] != 0 or not r["result"]))

# The peers in the table, in this order, with their names in its header.
PEERS = [("peer", "tungstenite"), ("fwsk", "fastwebsockets"), ("uws", "uWebSockets")]
PEERS = [(k, n) for k, n in PEERS if any(r["server"] == k for r in runs)]

# scenario, title, figure, key, format, targets: (peer, kind, x), kind ">=" or "<="
# on the ratio fastim/peer, or (None, "abs<=", x) on fastim's own figure.
# (a), (b), (c) against tungstenite are the first benchmark's targets; the ones
# against uWebSockets are the engine issue's (M1b, M3, M4, M1, M2 there).
ROWS = [
    ("a", "1 conn, 64 B, 1024 in flight", "messages/s", "msgs_per_s", "{:,.0f}",
     [("peer", ">=", 2.5), ("uws", ">=", 1.0)]),
    ("a", "", "latency p50 (us)", "p50_us", "{:,.0f}", []),
    ("a", "", "latency p99 (us)", "p99_us", "{:,.0f}", []),
    ("a", "", "server CPU per message (us)", "server_us_per_msg", "{:.3f}", []),
    ("a", "", "other processes' CPU (% of a core)", "other_cpu_pct", "{:.0f}", []),
    ("b", "1000 conns, 64 B, 8 in flight each", "server CPU per message (us)", "server_us_per_msg", "{:.3f}",
     [("peer", "<=", 0.5), ("uws", "<=", 1.0)]),
    ("b", "", "messages/s", "msgs_per_s", "{:,.0f}", []),
    ("b", "", "server CPU (% of a core)", "server_cpu_pct", "{:.0f}", []),
    ("b", "", "latency p99 (us)", "p99_us", "{:,.0f}", []),
    ("b", "", "other processes' CPU (% of a core)", "other_cpu_pct", "{:.0f}", []),
    ("c", "10 conns, 1 MiB binary, 4 in flight each", "MB/s (echoed payload, one way)", "mb_per_s", "{:,.0f}",
     [("peer", ">=", 1.5), ("uws", ">=", 1.5)]),
    ("c", "", "server CPU per message (us)", "server_us_per_msg", "{:,.0f}", []),
    ("c", "", "server CPU (% of a core)", "server_cpu_pct", "{:.0f}", []),
    ("c", "", "latency p99 (us)", "p99_us", "{:,.0f}", []),
    ("c", "", "other processes' CPU (% of a core)", "other_cpu_pct", "{:.0f}", []),
    ("d", "10,000 idle conns", "server RSS per connection (bytes)", "bytes_per_conn", "{:,.0f}",
     [(None, "abs<=", 256)]),
    ("e", "1 conn, 64 B, 64 in flight", "messages/s", "msgs_per_s", "{:,.0f}",
     [("peer", ">=", 1.0), ("uws", ">=", 1.0)]),
    ("e", "", "latency p50 (us)", "p50_us", "{:,.0f}", []),
    ("e", "", "server CPU per message (us)", "server_us_per_msg", "{:.3f}", []),
    ("e", "", "other processes' CPU (% of a core)", "other_cpu_pct", "{:.0f}", []),
    ("f", "100 conns, 64 B, 1 in flight each", "messages/s", "msgs_per_s", "{:,.0f}",
     [("peer", ">=", 1.0), ("fwsk", ">=", 1.0), ("uws", ">=", 1.0)]),
    ("f", "", "latency p50 (us)", "p50_us", "{:,.0f}", []),
    ("f", "", "server CPU per message (us)", "server_us_per_msg", "{:.3f}", []),
    ("f", "", "other processes' CPU (% of a core)", "other_cpu_pct", "{:.0f}", []),
    ("g", "(b) with permessage-deflate offered", "server CPU per message (us)", "server_us_per_msg", "{:.3f}", []),
    ("g", "", "messages/s", "msgs_per_s", "{:,.0f}", []),
    ("g", "", "other processes' CPU (% of a core)", "other_cpu_pct", "{:.0f}", []),
]

scenarios = {r["scenario"] for r in runs}
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
              if l.startswith("model name")), "unknown CPU")
names = dict(PEERS)
print(f"fastim vs {', '.join(f'{n} ({k})' for k, n in PEERS) or 'no peer'} echo: "
      f"medians of {repeats} runs of {duration} s each, "
      f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} x {model}, "
      f"Linux {os.uname().release}\n")
print("| scenario | figure | fastim | " + " | ".join(n for _, n in PEERS) + " | "
      + " | ".join(f"fastim/{n}" for _, n in PEERS) + " | target | met |")
print("|---|---|--:|" + "--:|" * (2 * len(PEERS)) + "---|---|")
for scenario, title, figure, key, fmt, targets in ROWS:
    if scenario not in scenarios:
        continue
    f = median(scenario, "fastim", key)
    values = {k: median(scenario, k, key) for k, _ in PEERS}
    ratios = {k: f / v if f is not None and v not in (None, 0) else None for k, v in values.items()}
    show = lambda v: fmt.format(v) if v is not None else "n/a"
    showr = lambda r: "n/a" if r is None else f"{r:.2f}"
    yes = lambda ok: "yes" if ok else "**no**"
    goals, mets = [], []
    for peer, kind, x in targets:
        if kind == "abs<=":
            goals.append(f"fastim <= {x}")
            mets.append(yes(f is not None and f <= x))
        elif peer in ratios:
            r = ratios[peer]
            goals.append(f"{kind} {x} x {names[peer]}")
            mets.append(yes(r is not None and (r >= x if kind == ">=" else r <= x)))
    label = f"({scenario}) {title}" if title else ""
    print(f"| {label} | {figure} | {show(f)} | "
          + " | ".join(show(values[k]) for k, _ in PEERS) + " | "
          + " | ".join(showr(ratios[k]) for k, _ in PEERS)
          + f" | {'; '.join(goals)} | {' / '.join(mets)} |")

again = sum(r.get("attempts", 1) - 1 for r in runs)
if again:
    print(f"\n{again} measurements were taken again because other processes used more "
          f"than {os.environ.get('MAX_OTHER_CPU', '25')} % of a core during them; "
          "the last attempt counts.")

bad = [(s, srv, failures(s, srv)) for s in sorted(scenarios)
       for srv in ["fastim"] + [k for k, _ in PEERS]]
bad = [b for b in bad if b[2]]
if bad:
    print("\nRuns that failed or reported errors: " +
          ", ".join(f"{s}/{srv}: {n}" for s, srv, n in bad))
PY
