# RabbitMQ for herald-bench's amqp mode, sourced by crates/herald-bench/smoke.sh, scripts/bench-smoke and
# scripts/bench-run: the local broker, and a virtual host of its own for each run, so that nothing one run left
# in a queue reaches another.
#
#   rabbitmq_up WHO           the broker on 127.0.0.1:5672 is running, or is started (rabbitmq-server
#                             -detached, waited for within a bound); otherwise prints why and returns 1
#   rabbitmq_vhost_add WHO V  creates vhost V with full permissions for guest; prints its URL
#   rabbitmq_vhost_delete V   deletes vhost V and everything in it (for an EXIT trap; never fails)
#
# A broker that cannot be reached is a failure, never a skip: CI must not pass an amqp run it did not make.

RABBITMQ_PORT=5672
RABBITMQ_START_WAIT=120

rabbitmq_port_open() {
    timeout 2 bash -c "</dev/tcp/127.0.0.1/$RABBITMQ_PORT" 2>/dev/null
}

rabbitmq_up() {
    local who="$1"
    if ! command -v rabbitmqctl >/dev/null 2>&1; then
        echo "$who: RabbitMQ is not reachable: rabbitmqctl is not installed, and the amqp mode needs a broker on" \
            "127.0.0.1:$RABBITMQ_PORT (Debian: apt-get install rabbitmq-server)" >&2
        return 1
    fi
    if rabbitmq_port_open && timeout 30 rabbitmqctl -q await_startup >/dev/null 2>&1; then
        return 0
    fi
    echo "$who: RabbitMQ is down; starting it (rabbitmq-server -detached)" >&2
    rabbitmq-server -detached >/dev/null 2>&1 || true
    # await_startup fails at once while the node itself is not up yet, so it is asked again until the bound.
    local deadline=$((SECONDS + RABBITMQ_START_WAIT))
    while ((SECONDS < deadline)); do
        if timeout 30 rabbitmqctl -q await_startup >/dev/null 2>&1 && rabbitmq_port_open; then
            return 0
        fi
        sleep 1
    done
    echo "$who: RabbitMQ is not reachable: it did not come up on 127.0.0.1:$RABBITMQ_PORT within" \
        "${RABBITMQ_START_WAIT} s (see /var/log/rabbitmq)" >&2
    return 1
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
