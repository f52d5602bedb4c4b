#!/usr/bin/env bash
# fastim's /chat end to end: group fan-out and one-to-one messages with
# persistence, measured by `fastim-load chat`. See BENCHMARKS.md, "Chat".
#
#   benches/chat.sh                        # groups of 10, 100, 1000 and 10 pairs; 3 repeats, 10 s each
#   REPEATS=1 DURATION=3 benches/chat.sh g10 s10
#   SKIP_BUILD=1 GROUP_IN_FLIGHT=32 benches/chat.sh g1000
#   SKIP_BUILD=1 FASTIM_BIN=/path/to/other/fastim benches/chat.sh s100   # another build
#
# Scenarios: gN = a group of N users, one sender (GROUP_IN_FLIGHT messages
# unacknowledged, default 8); sP = P pairs of friends, one sender each
# (SINGLE_IN_FLIGHT, default 8); a suffix wW sets the messages in flight of
# one scenario (g1000w64). Default: g10 g100 g1000 s10.
#
# Every measurement starts a fresh server (fresh database) pinned to CPU
# $SERVER_CPU (default 0), the load tool pinned to $LOAD_CPU (default 1); the
# repeats go round the scenarios (g10 g100 ... g10 g100 ...). Before each run it
# waits up to QUIET_WAIT seconds (default 60) for an idle machine and measures
# again (up to RETRIES more times, default 1) when other processes used more
# than MAX_OTHER_CPU % of a core (default 25). The markdown table of medians goes
# to stdout and target/bench/chat.md; RESULT lines to target/bench/chat.jsonl,
# logs to target/bench/chat-<scenario>-<repeat>.{load,server}.log.
set -euo pipefail

cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
GROUP_IN_FLIGHT=${GROUP_IN_FLIGHT:-8}
SINGLE_IN_FLIGHT=${SINGLE_IN_FLIGHT:-8}
SIZE=${SIZE:-64}
QUIET_WAIT=${QUIET_WAIT:-60}
RETRIES=${RETRIES:-1}
MAX_OTHER_CPU=${MAX_OTHER_CPU:-25}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(g10 g100 g1000 s10)

OUT=target/bench
mkdir -p "$OUT"
RESULTS=$OUT/chat.jsonl
: >"$RESULTS"

for tool in taskset timeout python3; do
    command -v "$tool" >/dev/null || { echo "chat.sh: $tool is required" >&2; exit 1; }
done
for s in "${SCENARIOS[@]}"; do
    [[ $s =~ ^[gs][0-9]+(w[0-9]+)?$ ]] ||
        { echo "chat.sh: unknown scenario $s (gN or sP, optionally followed by wW)" >&2; exit 1; }
done

if [ "${SKIP_BUILD:-0}" = 1 ]; then
    echo "SKIP_BUILD=1: using the binaries already in target/release" >&2
else
    echo "building release binaries..." >&2
    cargo build --release --bin fastim --bin fastim-load >&2
fi
# FASTIM_BIN: another build of the server to measure (an A/B run alternates two
# invocations of this script, one with FASTIM_BIN set).
FASTIM=${FASTIM_BIN:-target/release/fastim}
LOAD=target/release/fastim-load

ulimit -n "$(ulimit -Hn)"
# shellcheck source=benches/servers.sh
. "$(dirname "$0")/servers.sh"

# start_server LOG: a fresh fastim with an empty data directory, pinned.
start_server() {
    new_data_dir
    # The load tool registers and logs in every user from 127.0.0.1, and opens their
    # sockets at once: lift the per-address limits meant for strangers.
    launch_server "$1" 900 "$FASTIM" --listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
        --max-unauthenticated-per-address 0 --register-per-hour 0 --login-per-minute 0
}

# The load-tool arguments of a scenario.
scenario_args() {
    local n=${1:1} w=""
    if [[ $n == *w* ]]; then w=${n#*w} n=${n%w*}; fi
    case $1 in
    g*) echo "--mode group --clients $n --in-flight ${w:-$GROUP_IN_FLIGHT}" ;;
    s*) echo "--mode single --pairs $n --in-flight ${w:-$SINGLE_IN_FLIGHT}" ;;
    esac
}

# Users a scenario registers (for its time limit: registration is ~50 ms each).
scenario_users() {
    local n=${1:1}
    n=${n%w*}
    case $1 in
    g*) echo "$n" ;;
    s*) echo $((2 * n)) ;;
    esac
}

# One measurement; sets RESULT (the JSON of the RESULT line, or {}) and STATUS.
measure() {
    local scenario=$1 rep=$2
    local tag="chat-$scenario-$rep"
    local limit=$((DURATION + WARMUP + 90 + $(scenario_users "$scenario") / 5))
    wait_quiet
    start_server "$OUT/$tag.server.log"
    STATUS=0
    # shellcheck disable=SC2046
    taskset -c "$LOAD_CPU" timeout "$limit" "$LOAD" chat $(scenario_args "$scenario") \
        --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" \
        --url "http://$SERVER_ADDR" --server-pid "$SERVER_PID" --timeout "$((limit - 5))" \
        >"$OUT/$tag.load.log" 2>&1 || STATUS=$?
    stop_server
    RESULT=$(sed -n 's/^RESULT //p' "$OUT/$tag.load.log" | tail -n1)
    if [ -z "$RESULT" ]; then
        echo "  $tag: no result (exit $STATUS), see $OUT/$tag.load.log" >&2
        RESULT='{}'
    fi
    grep -E '^  (setup|throughput|latency|server|other|load|verification)' "$OUT/$tag.load.log" |
        sed "s/^/  $tag: /" >&2 || true
}

run_one() {
    local scenario=$1 rep=$2 attempt other
    for attempt in $(seq 0 "$RETRIES"); do
        measure "$scenario" "$rep"
        other=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1]).get("other_cpu_pct") or 0))' "$RESULT")
        [ "$other" -le "$MAX_OTHER_CPU" ] && break
        [ "$attempt" -lt "$RETRIES" ] &&
            echo "  $scenario-$rep: other processes used $other % of a core: measuring again" >&2
    done
    printf '{"scenario":"%s","rep":%d,"exit":%d,"attempts":%d,"result":%s}\n' \
        "$scenario" "$rep" "$STATUS" $((attempt + 1)) "$RESULT" >>"$RESULTS"
}

for rep in $(seq "$REPEATS"); do
    for scenario in "${SCENARIOS[@]}"; do
        echo "$scenario, repeat $rep: $(scenario_args "$scenario")" >&2
        run_one "$scenario" "$rep"
    done
done

python3 - "$RESULTS" "$REPEATS" "$DURATION" "${SCENARIOS[@]}" <<'PY' | tee "$OUT/chat.md"
import datetime, json, os, statistics, sys

path, repeats, duration, scenarios = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = [json.loads(line) for line in open(path)]

def values(scenario, key):
    vals = [r["result"].get(key) for r in runs if r["scenario"] == scenario]
    return [v for v in vals if isinstance(v, (int, float))]

def median(scenario, key):
    vals = values(scenario, key)
    return statistics.median(vals) if vals else None

def title(s):
    r = next((r["result"] for r in runs if r["scenario"] == s and r["result"]), {})
    w = r.get("in_flight", "?")
    n = int(s[1:].split("w")[0])
    if s[0] == "g":
        return f"group of {n:,}, 1 sender, W={w}"
    return f"{n:,} pairs, 1:1, W={w} each"

COLUMNS = [
    ("messages/s (acked)", "msgs_per_s", "{:,.0f}", 1),
    ("deliveries/s", "deliveries_per_s", "{:,.0f}", 1),
    ("delivery p50 (ms)", "p50_us", "{:,.2f}", 1e-3),
    ("delivery p99 (ms)", "p99_us", "{:,.2f}", 1e-3),
    ("ack p50 (ms)", "ack_p50_us", "{:,.2f}", 1e-3),
    ("ack p99 (ms)", "ack_p99_us", "{:,.2f}", 1e-3),
    ("server CPU (% of a core)", "server_cpu_pct", "{:.0f}", 1),
    ("server CPU per message (us)", "server_us_per_msg", "{:,.1f}", 1),
    ("server CPU per delivery (us)", "server_us_per_delivery", "{:,.2f}", 1),
    ("load tool CPU (%)", "load_cpu_pct", "{:.0f}", 1),
    ("other CPU (%)", "other_cpu_pct", "{:.0f}", 1),
    ("registration (s)", "register_s", "{:.1f}", 1),
]

model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
              if l.startswith("model name")), "unknown CPU")
print(f"fastim /chat: medians of {repeats} runs of {duration} s each, "
      f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} x {model}, "
      f"Linux {os.uname().release}\n")
print("| load | " + " | ".join(c[0] for c in COLUMNS) + " |")
print("|---|" + "--:|" * len(COLUMNS))
for s in scenarios:
    cells = []
    for _, key, fmt, scale in COLUMNS:
        v = median(s, key)
        cells.append("n/a" if v is None else fmt.format(v * scale))
    print(f"| {title(s)} | " + " | ".join(cells) + " |")

print()
print("Spread (min–max over the runs):")
for s in scenarios:
    parts = []
    for label, key, fmt in (("messages/s", "msgs_per_s", "{:,.0f}"),
                            ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
                            ("delivery p99 us", "p99_us", "{:,.0f}")):
        vals = values(s, key)
        if vals:
            parts.append(f"{label} {fmt.format(min(vals))}–{fmt.format(max(vals))}")
    print(f"- {title(s)}: " + "; ".join(parts))

checks = ["missing", "duplicates", "out_of_order", "misdelivered", "refused", "unanswered",
          "errors", "failed_connections"]
print()
for s in scenarios:
    rs = [r for r in runs if r["scenario"] == s]
    totals = {k: sum(r["result"].get(k, 0) or 0 for r in rs) for k in checks}
    delivered = sum(r["result"].get("expected_deliveries", 0) or 0 for r in rs)
    bad = sum(1 for r in rs if r["exit"] != 0 or not r["result"])
    print(f"- {title(s)}: {len(rs)} runs, {delivered:,} deliveries verified; " +
          ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items()) +
          (f"; **{bad} runs failed**" if bad else ""))
again = sum(r.get("attempts", 1) - 1 for r in runs)
if again:
    print(f"\n{again} measurements were taken again because other processes used more "
          f"than {os.environ.get('MAX_OTHER_CPU', '25')} % of a core during them.")
PY
