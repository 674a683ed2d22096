#!/usr/bin/env bash
# Runs every herald-bench mode at a tiny size (--smoke) against a fresh floor server, and,
# when HERALD_BENCH_SERVER is set, against that Herald too; and, when nginx with nchan is installed
# (scripts/bench-peer nchan installs it; the smoke never does), idle, targeted and broadcast against nchan. Checks correctness, not speed: a run
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
#   HERALD_BENCH_SMTP_LISTEN  where that Herald sends email (its HERALD_SMTP_HOST:HERALD_SMTP_PORT), for the
#                         email mode's SMTP sink (optional; without it the email mode is not run)
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
peer_pid=""
vhost=""
cleanup() {
    local pid
    for pid in "$floor_pid" "$peer_pid"; do
        [[ -n "$pid" ]] || continue
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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
    run "$label idle, burst" idle --server "$url" --burst "$@"
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
    run "$label reconnect, burst" reconnect --server "$url" --burst "$@"
}

suite floor "$floor_url" 1 "$floor_queue" --server-pid "$floor_pid"
run "floor idle, memory after closing" idle --server "$floor_url" --server-pid "$floor_pid" --settle-secs 0.2

if [[ -n "${HERALD_BENCH_SERVER:-}" ]]; then
    suite herald "$HERALD_BENCH_SERVER" 1 herald.notifications \
        ${HERALD_BENCH_SERVER_PID:+--server-pid "$HERALD_BENCH_SERVER_PID"}
    if [[ -n "${HERALD_BENCH_SMTP_LISTEN:-}" ]]; then
        run "herald email" email --server "$HERALD_BENCH_SERVER" --smtp-listen "$HERALD_BENCH_SMTP_LISTEN"
    fi
fi

# nchan, when it is installed: the modes it takes part in, in its URL scheme. bench-peer exits 3 when
# nginx or the nchan module is missing.
"$root/scripts/bench-peer" nchan --no-install >"$work/nchan.out" 2>"$work/nchan.err" &
peer_pid=$!
nchan_url=""
for _ in $(seq 100); do
    nchan_url="$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$work/nchan.out")"
    [[ -n "$nchan_url" ]] && break
    kill -0 "$peer_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -n "$nchan_url" ]]; then
    nginx_pid="$(sed -n 's/.*nginx master pid \([0-9]*\).*/\1/p' "$work/nchan.out")"
    nchan=(--server "$nchan_url" --peer nchan --server-pid "$nginx_pid" --server-children)
    run "nchan idle" idle "${nchan[@]}"
    run "nchan idle, burst" idle --burst "${nchan[@]}"
    run "nchan targeted" targeted "${nchan[@]}"
    run "nchan broadcast" broadcast "${nchan[@]}"
else
    kill "$peer_pid" 2>/dev/null || true
    status=0
    wait "$peer_pid" 2>/dev/null || status=$?
    peer_pid=""
    if [[ "$status" == 3 ]]; then
        echo "smoke: nginx with nchan is not installed; skipping the nchan runs (scripts/bench-peer nchan installs it)" >&2
    else
        cat "$work/nchan.err" >&2
        echo "smoke: FAILED: nchan did not start" >&2
        failed=$((failed + 1))
    fi
fi

echo "$passed passed, $failed failed"
[[ "$failed" == 0 ]]
