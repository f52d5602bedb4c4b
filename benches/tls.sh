#!/usr/bin/env bash
# fastim's /echo over TLS (wss://, --tls-self-signed) against fastim's own plain
# ws:// in the same run, and TLS handshakes per second.
# See BENCHMARKS.md, "TLS".
#
#   benches/tls.sh                    # everything, 3 repeats, 5 s runs (about 6 minutes)
#   REPEATS=1 DURATION=2 benches/tls.sh a d
#   SKIP_BUILD=1 benches/tls.sh hs    # reuse target/release; handshakes only
#
# Scenarios: a (1 conn, 64 B, 1024 in flight), b (1000 conns, 64 B, 8 in flight),
# c (10 conns, 1 MiB binary, 4 in flight; payloads compared in both runs, since a
# TLS client must decrypt every byte anyway), d (10,000 idle connections: server RSS
# per connection), hs (connections per second, each a handshake, GET /healthz and
# close, from 4 threads of `fastim-load handshakes`: plain TCP, full TLS handshakes,
# resumed ones; and the server's CPU per connection).
# Each measurement starts a fresh server pinned to CPU $SERVER_CPU (default 0), the
# load tool on $LOAD_CPU (default 1); plain and TLS alternate; medians of REPEATS.
# QUIET_WAIT (default 60) waits for an idle machine before each run, as compare.sh.
set -euo pipefail

cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
QUIET_WAIT=${QUIET_WAIT:-60}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(a b c d hs)

OUT=target/bench
mkdir -p "$OUT"
RESULTS=$OUT/tls.jsonl
: >"$RESULTS"

for tool in taskset timeout python3; do
    command -v "$tool" >/dev/null || { echo "tls.sh: $tool is required" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "building release binaries..." >&2
    cargo build --release --bin fastim --bin fastim-load >&2
fi
TARGET=${CARGO_TARGET_DIR:-target}
FASTIM=$TARGET/release/fastim
LOAD=$TARGET/release/fastim-load

ulimit -n "$(ulimit -Hn)"
# shellcheck source=benches/servers.sh
. "$(dirname "$0")/servers.sh"

# start_server plain|tls|full|resumed LOG (all but plain with TLS)
start_server() {
    new_data_dir
    local tls=()
    [ "$1" != plain ] && tls=(--tls-self-signed)
    launch_server "$2" 600 "$FASTIM" --listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
        --resource-dir "$DATA_DIR/resource" --max-unauthenticated-per-address 0 "${tls[@]}"
}

scenario_args() {
    case $1 in
    a) echo "echo --connections 1 --size 64 --in-flight 1024 --duration $DURATION --warmup $WARMUP" ;;
    b) echo "echo --connections 1000 --size 64 --in-flight 8 --duration $DURATION --warmup $WARMUP" ;;
    c) echo "echo --connections 10 --size 1MiB --binary --in-flight 4 --duration $DURATION --warmup $WARMUP" ;;
    d) echo "idle --connections $IDLE_CONNECTIONS --settle 1" ;;
    esac
}

measure() {
    local scenario=$1 kind=$2 rep=$3 tag="tls-$1-$2-$rep" result status=0
    wait_quiet
    start_server "$kind" "$OUT/$tag.server.log"
    if [ "$scenario" = hs ]; then
        local scheme=wss resume=""
        [ "$kind" = plain ] && scheme=ws
        [ "$kind" = resumed ] && resume=--resume
        taskset -c "$LOAD_CPU" timeout $((DURATION + 60)) "$LOAD" handshakes --parallel 4 \
            --duration "$DURATION" $resume --url "$scheme://$SERVER_ADDR/" \
            --server-pid "$SERVER_PID" >"$OUT/$tag.load.log" 2>&1 || status=$?
        result=$(sed -n 's/^RESULT //p' "$OUT/$tag.load.log" | tail -n1)
        [ -n "$result" ] || result='{}'
        grep -E '^handshakes|^  (server|other)' "$OUT/$tag.load.log" | sed "s/^/  $tag: /" >&2 || true
    else
        local scheme=ws
        [ "$kind" = tls ] && scheme=wss
        # shellcheck disable=SC2046
        taskset -c "$LOAD_CPU" timeout $((DURATION + WARMUP + 90)) "$LOAD" \
            $(scenario_args "$scenario") --url "$scheme://$SERVER_ADDR/echo" \
            --server-pid "$SERVER_PID" >"$OUT/$tag.load.log" 2>&1 || status=$?
        result=$(sed -n 's/^RESULT //p' "$OUT/$tag.load.log" | tail -n1)
        [ -n "$result" ] || result='{}'
        grep -E '^  (throughput|server|other)|^  server RSS' "$OUT/$tag.load.log" |
            sed "s/^/  $tag: /" >&2 || true
    fi
    stop_server
    printf '{"scenario":"%s","kind":"%s","rep":%d,"exit":%d,"result":%s}\n' \
        "$scenario" "$kind" "$rep" "$status" "$result" >>"$RESULTS"
}

for scenario in "${SCENARIOS[@]}"; do
    echo "scenario $scenario" >&2
    for rep in $(seq "$REPEATS"); do
        if [ "$scenario" = hs ]; then
            measure hs plain "$rep"
            measure hs full "$rep"
            measure hs resumed "$rep"
        else
            measure "$scenario" plain "$rep"
            measure "$scenario" tls "$rep"
        fi
    done
done

python3 - "$RESULTS" "$REPEATS" "$DURATION" <<'PY' | tee "$OUT/tls.md"
import json, statistics, sys, datetime

path, repeats, duration = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [json.loads(line) for line in open(path)]

def values(scenario, kind, key):
    vals = [r["result"].get(key) for r in runs if r["scenario"] == scenario and r["kind"] == kind]
    return [v for v in vals if isinstance(v, (int, float))]

def med(scenario, kind, key):
    v = values(scenario, kind, key)
    return statistics.median(v) if v else None

def spread(scenario, kind, key, fmt):
    v = values(scenario, kind, key)
    return f"{fmt.format(min(v))}–{fmt.format(max(v))}" if len(v) > 1 else ""

ROWS = [
    ("a", "1 conn, 64 B, 1024 in flight", "messages/s", "msgs_per_s", "{:,.0f}"),
    ("a", "", "server CPU per message (us)", "server_us_per_msg", "{:.3f}"),
    ("b", "1000 conns, 64 B, 8 in flight", "messages/s", "msgs_per_s", "{:,.0f}"),
    ("b", "", "server CPU per message (us)", "server_us_per_msg", "{:.3f}"),
    ("c", "10 conns, 1 MiB, 4 in flight", "MB/s (one way)", "mb_per_s", "{:,.0f}"),
    ("c", "", "server CPU per message (us)", "server_us_per_msg", "{:,.0f}"),
    ("d", "10,000 idle conns", "server RSS per connection (bytes)", "bytes_per_conn", "{:,.0f}"),
]
scenarios = {r["scenario"] for r in runs}
print(f"fastim /echo, plain ws:// and wss:// (--tls-self-signed), medians of {repeats} runs "
      f"of {duration} s, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}\n")
print("| scenario | figure | plain | TLS | TLS/plain | plain range | TLS range | other CPU % (plain / TLS) |")
print("|---|---|--:|--:|--:|---|---|---|")
for s, title, figure, key, fmt in ROWS:
    if s not in scenarios:
        continue
    p, t = med(s, "plain", key), med(s, "tls", key)
    show = lambda v: fmt.format(v) if v is not None else "n/a"
    ratio = f"{t / p:.2f}" if p and t is not None else "n/a"
    other = " / ".join(f"{med(s, k, 'other_cpu_pct'):.0f}" if med(s, k, "other_cpu_pct") is not None
                       else "n/a" for k in ("plain", "tls"))
    if key == "bytes_per_conn":
        other = ""
    label = f"({s}) {title}" if title else ""
    print(f"| {label} | {figure} | {show(p)} | {show(t)} | {ratio} | "
          f"{spread(s, 'plain', key, fmt)} | {spread(s, 'tls', key, fmt)} | {other} |")
if "hs" in scenarios:
    for key, figure, fmt in (("per_s", "connections/s (4 threads)", "{:,.0f}"),
                             ("server_us_per_conn", "server CPU per connection (us)", "{:.0f}")):
        p = med("hs", "plain", key)
        for i, kind in enumerate(("full", "resumed")):
            t = med("hs", kind, key)
            show = lambda v: fmt.format(v) if v is not None else "n/a"
            ratio = f"{t / p:.2f}" if p and t is not None else "n/a"
            label = "(hs) handshake, GET /healthz, close" if key == "per_s" and i == 0 else ""
            o = med("hs", kind, "other_cpu_pct")
            po = med("hs", "plain", "other_cpu_pct")
            other = f"{po:.0f} / {o:.0f}" if o is not None and po is not None else ""
            print(f"| {label} | {figure}, TLS {kind} | {show(p)} | {show(t)} | {ratio} | "
                  f"{spread('hs', 'plain', key, fmt)} | {spread('hs', kind, key, fmt)} | {other} |")
bad = [r for r in runs if r["exit"] != 0 or not r["result"]]
if bad:
    print("\nRuns that failed: " + ", ".join(f"{r['scenario']}/{r['kind']}/{r['rep']}" for r in bad))
PY
