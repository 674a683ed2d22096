# RabbitMQ for herald-bench's amqp mode, sourced by crates/herald-bench/smoke.sh, scripts/bench-smoke and
# scripts/bench-run: the local broker, and a virtual host of its own for each run, so that nothing one run left
# in a queue reaches another.
#
#   rabbitmq_up WHO           the broker on 127.0.0.1:5672 is running, or is started (scripts/ensure-services:
#                             rabbitmq-server -detached, waited for within a bound); otherwise prints why, returns 1
#   rabbitmq_vhost_add WHO V  creates vhost V with full permissions for guest; prints its URL
#   rabbitmq_vhost_delete V   deletes vhost V and everything in it (for an EXIT trap; never fails)
#
# A broker that cannot be reached is a failure, never a skip: CI must not pass an amqp run it did not make.

RABBITMQ_PORT=5672
RABBITMQ_ENSURE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/ensure-services"

# The repository's scripts/ensure-services does the starting (and, on Debian, the installing) and the bounded
# wait, as it does for the test suite; this only says who needed the broker and why it failed.
rabbitmq_up() {
    local who="$1"
    if ! "$RABBITMQ_ENSURE"; then
        echo "$who: RabbitMQ is not reachable on 127.0.0.1:$RABBITMQ_PORT, and the amqp mode needs it" \
            "(scripts/ensure-services could not start it; see /var/log/rabbitmq)" >&2
        return 1
    fi
}

rabbitmq_vhost_add() {
    local who="$1" vhost="$2"
    if ! rabbitmqctl -q add_vhost "$vhost" >/dev/null ||
        ! rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null; then
        echo "$who: cannot create the RabbitMQ vhost $vhost" >&2
        return 1
    fi
    echo "amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT/$vhost"
}

rabbitmq_vhost_delete() {
    rabbitmqctl -q delete_vhost "$1" >/dev/null 2>&1 || true
}
