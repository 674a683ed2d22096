#!/usr/bin/env bash
# Runs every herald-bench mode at a tiny size (--smoke) against a fresh floor server, and,
# when HERALD_BENCH_SERVER is set, against that Herald too. Checks correctness, not speed: a run
# fails when it lost, duplicated, misrouted or reordered a notification, when a publish or a
# connection failed, or in reconnect mode when a user never caught up (herald-bench exits
# non-zero for each of those). Prints one JSON line per run, then "N passed, N failed".
#
# Environment:
#   HERALD_BENCH_BIN      path to a built herald-bench; otherwise it is built (debug profile)
#   HERALD_BENCH_SERVER   a running Herald, e.g. http://127.0.0.1:8004 (optional)
#   HERALD_JWT_SECRET     Herald's HS256 secret, for minting user tokens
#   HERALD_BENCH_API_KEY  one of Herald's publisher API keys
#   HERALD_BENCH_SERVER_PID  its pid, so idle mode reports its memory (optional)
#   HERALD_BENCH_AMQP_URL the RabbitMQ vhost that Herald consumes (its HERALD_AMQP_URL); the floor consumes
#                         its own queue on it. Without it a fresh vhost is made for this run and deleted after.
#
# The amqp mode needs RabbitMQ on 127.0.0.1:5672: a broker that is down is started, one that cannot be
# reached fails the run (never a skip).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
# shellcheck source=crates/herald-bench/rabbitmq.sh
source "$root/crates/herald-bench/rabbitmq.sh"

# The floor consumes this queue, so that it and Herald (herald.notifications) can share one vhost.
floor_queue=herald-bench.floor

bench="${HERALD_BENCH_BIN:-}"
if [[ -z "$bench" ]]; then
    cargo build --quiet -p herald-bench
    bench="${CARGO_TARGET_DIR:-$root/target}/debug/herald-bench"
fi

work="$(mktemp -d)"
floor_pid=""
vhost=""
cleanup() {
    if [[ -n "$floor_pid" ]]; then
        kill "$floor_pid" 2>/dev/null || true
        wait "$floor_pid" 2>/dev/null || true
    fi
    [[ -z "$vhost" ]] || rabbitmq_vhost_delete "$vhost"
    rm -rf "$work"
}
trap cleanup EXIT

amqp_url="${HERALD_BENCH_AMQP_URL:-}"
if [[ -z "$amqp_url" ]]; then
    rabbitmq_up smoke || exit 1
    vhost="herald-smoke-$$-$RANDOM"
    amqp_url="$(rabbitmq_vhost_add smoke "$vhost")" || exit 1
fi

# Port 0: the floor picks a free port and prints it as its first line.
"$bench" floor --listen 127.0.0.1:0 --amqp-url "$amqp_url" --amqp-queue "$floor_queue" \
    >"$work/floor.out" 2>"$work/floor.err" &
floor_pid=$!
floor_url=""
for _ in $(seq 100); do
    floor_url="$(sed -n 's/^listening on //p' "$work/floor.out")"
    [[ -n "$floor_url" ]] && break
    if ! kill -0 "$floor_pid" 2>/dev/null; then
        cat "$work/floor.err" >&2
        echo "smoke: the floor server did not start" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$floor_url" ]]; then
    echo "smoke: the floor server printed no address within 10 s" >&2
    exit 1
fi

passed=0
failed=0

# run NAME MODE [ARGS...]: one tiny run, bounded in time.
run() {
    local name="$1"
    shift
    echo "== $name" >&2
    if timeout 120 "$bench" "$@" --smoke --quiet; then
        passed=$((passed + 1))
    else
        echo "smoke: FAILED: $name" >&2
        failed=$((failed + 1))
    fi
}

# suite LABEL URL WITH_BROADCAST QUEUE [ARGS...]: every mode against one server, which consumes QUEUE.
suite() {
    local label="$1" url="$2" with_broadcast="$3" queue="$4"
    shift 4
    run "$label idle" idle --server "$url" "$@"
    run "$label targeted" targeted --server "$url" "$@"
    run "$label targeted, batch endpoint" targeted --server "$url" --batch 50 "$@"
    run "$label amqp" amqp --server "$url" --amqp-url "$amqp_url" --queue "$queue" "$@"
    run "$label amqp, two worker processes" amqp --server "$url" --amqp-url "$amqp_url" --queue "$queue" \
        --workers 2 "$@"
    if [[ "$with_broadcast" == 1 ]]; then
        run "$label broadcast" broadcast --server "$url" "$@"
    fi
    run "$label reconnect" reconnect --server "$url" "$@"
    run "$label reconnect, two worker processes" reconnect --server "$url" --workers 2 "$@"
}

suite floor "$floor_url" 1 "$floor_queue" --server-pid "$floor_pid"

if [[ -n "${HERALD_BENCH_SERVER:-}" ]]; then
    suite herald "$HERALD_BENCH_SERVER" 1 herald.notifications \
        ${HERALD_BENCH_SERVER_PID:+--server-pid "$HERALD_BENCH_SERVER_PID"}
fi

echo "$passed passed, $failed failed"
[[ "$failed" == 0 ]]
