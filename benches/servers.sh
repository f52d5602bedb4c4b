# Shared by compare.sh and chat.sh (sourced, not run): starting and stopping one
# pinned server at a time, cleaning up on exit, and waiting for a quiet machine.
# Expects SERVER_CPU and QUIET_WAIT to be set by the sourcing script.

WRAPPER_PID=""    # the `timeout` process around the running server
SERVER_PID=""     # the server itself
SERVER_ADDR=""
DATA_DIRS=()

stop_server() {
    if [ -n "$WRAPPER_PID" ]; then
        kill "$WRAPPER_PID" 2>/dev/null || true
        wait "$WRAPPER_PID" 2>/dev/null || true
    fi
    WRAPPER_PID="" SERVER_PID="" SERVER_ADDR=""
}

cleanup() {
    stop_server
    for d in "${DATA_DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets DATA_DIR to a fresh, empty directory, removed on exit (not in a subshell:
# the list of directories to remove must keep it).
new_data_dir() {
    DATA_DIR=$(mktemp -d)
    DATA_DIRS+=("$DATA_DIR")
}

# launch_server LOG LIMIT COMMAND...: runs COMMAND pinned to SERVER_CPU for at most
# LIMIT seconds and waits until it logs `listening on ADDR`; sets SERVER_ADDR and
# SERVER_PID, or prints the log and exits.
launch_server() {
    local log=$1 limit=$2
    shift 2
    # Created here: the background job's redirection may come after the first look
    # (and a sed of a missing file would end the script under pipefail).
    : >"$log"
    timeout "$limit" taskset -c "$SERVER_CPU" "$@" 2>"$log" &
    WRAPPER_PID=$!
    for _ in $(seq 100); do
        SERVER_ADDR=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1)
        [ -n "$SERVER_ADDR" ] && break
        sleep 0.05
    done
    # taskset execs the server: it is the only child of `timeout`.
    SERVER_PID=$(pgrep -P "$WRAPPER_PID" | head -n1 || true)
    if [ -z "$SERVER_ADDR" ] || [ -z "$SERVER_PID" ]; then
        echo "$(basename "$0"): $1 did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
}

# Busy ticks (1/100 s) of all CPUs since boot: user nice system irq softirq steal.
machine_busy() {
    awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# Waits (at most QUIET_WAIT s) until the machine is idle for a second.
wait_quiet() {
    [ "$QUIET_WAIT" -gt 0 ] || return 0
    local deadline=$((SECONDS + QUIET_WAIT)) a b
    while :; do
        a=$(machine_busy)
        sleep 1
        b=$(machine_busy)
        [ $((b - a)) -le 15 ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "  machine still busy ($((b - a)) % of a core): running anyway" >&2
            return 0
        fi
        sleep 4
    done
}
