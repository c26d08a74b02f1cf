#!/usr/bin/env bash
# A private Kafka-protocol broker for one test or check: Tansu (SQLite) on its own port and
# folder, optionally with SASL/SCRAM authentication and a TLS listener in front.
#
#   PORT=19200 [TLS_PORT=19201] [SASL_USERS="user:password[:scram256|scram512] ..."] \
#       [TOPICS="name:partitions ..."] scripts/test-broker.sh start DIR
#   scripts/test-broker.sh stop DIR       # the broker and its TLS listener
#   scripts/test-broker.sh down DIR       # the broker only (a broker outage; `up` restarts it)
#   scripts/test-broker.sh up DIR
#   PORT=19200 PROXY_PORT=19202 scripts/test-broker.sh start DIR   # clients go through a proxy
#   scripts/test-broker.sh cut DIR        # the proxy stops: the broker is unreachable
#   scripts/test-broker.sh mend DIR       # reachable again (the broker itself never stopped)
#
# TLS: Tansu 0.6.0 accepts --cert/--key but never uses them (its TLS acceptor is built and
# dropped), so TLS is terminated by socat (OpenSSL) on TLS_PORT, forwarding to the broker,
# which then advertises TLS_PORT: every client connection goes through TLS. A throwaway CA is
# made in DIR (DIR/ca.crt; the server certificate is for localhost and 127.0.0.1).
# SASL: Tansu 0.6.0 supports SCRAM-SHA-256 and SCRAM-SHA-512 (not PLAIN), over TLS or not.
# Its user tool cannot authenticate, so users are created on the broker before it is
# restarted with --authentication (the credentials stay in its database).
# Prints nothing on success but the addresses: `plain=127.0.0.1:PORT tls=localhost:TLS_PORT`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd="${1:-}"
DIR="${2:-}"
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop|down|up DIR" >&2; exit 2; }
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pid() {
    local file="$1" pid
    if pid_alive "$file"; then
        pid="$(cat "$file")"
        # setsid made it a process-group leader: the group holds socat's forked children.
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

# Starts Tansu on $PORT advertising $1; extra broker arguments follow.
start_tansu() {
    local advertised="$1"
    shift
    (
        cd "$DIR"
        setsid "$TANSU" broker \
            --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "$advertised" \
            --storage-engine "sqlite://tansu.db" "$@" \
            >>"$DIR/tansu.log" 2>&1 </dev/null &
        echo $! >"$DIR/tansu.pid"
    )
    # Ready once the port accepts connections (an authenticating broker answers nothing
    # else to a client without credentials).
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        pid_alive "$DIR/tansu.pid" || break
        sleep 0.1
    done
    echo "broker did not start on $PORT; see $DIR/tansu.log:" >&2
    tail -20 "$DIR/tansu.log" >&2 || true
    exit 1
}

make_certs() {
    [ -f "$DIR/server.pem" ] && return 0
    (
        cd "$DIR"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.crt -days 2 -subj "/CN=anomalyd test CA" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -out server.crt -days 2 -extfile server.ext 2>/dev/null
        cat server.crt server.key >server.pem
    )
}

# Starts socat listening with address $1 on port $2 (forwarding to the broker), its pid in
# DIR/$3; waits until the port accepts connections.
start_socat() {
    local listen="$1" port="$2" pidfile="$3"
    setsid socat "$listen" "TCP:127.0.0.1:$PORT" >>"$DIR/socat.log" 2>&1 </dev/null &
    echo $! >"$DIR/$pidfile"
    for _ in $(seq 1 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "socat did not start listening on $port" >&2
    exit 1
}

# A plain TCP forwarder on PROXY_PORT: stopping it makes the broker unreachable (refused
# connections, open ones dropped) while the broker and its state stay as they are.
start_proxy() {
    start_socat "TCP-LISTEN:$PROXY_PORT,bind=127.0.0.1,reuseaddr,fork" "$PROXY_PORT" proxy.pid
}

start_tls() {
    start_socat "OPENSSL-LISTEN:$TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$DIR/server.pem,verify=0" \
        "$TLS_PORT" socat.pid
}

# The settings of this broker, saved at start for `up`.
broker_args() {
    local advertised="tcp://127.0.0.1:$PORT"
    [ -n "${TLS_PORT:-}" ] && advertised="tcp://localhost:$TLS_PORT"
    [ -n "${PROXY_PORT:-}" ] && advertised="tcp://127.0.0.1:$PROXY_PORT"
    echo "$advertised"
}

case "$cmd" in
start)
    [ -x "$TANSU" ] || { echo "tansu is not installed: run scripts/setup.sh" >&2; exit 1; }
    [ -n "${PORT:-}" ] || { echo "PORT is required" >&2; exit 2; }
    printf 'PORT=%q\nTLS_PORT=%q\nPROXY_PORT=%q\nSASL_USERS=%q\n' "$PORT" "${TLS_PORT:-}" \
        "${PROXY_PORT:-}" "${SASL_USERS:-}" >"$DIR/settings"
    auth=()
    if [ -n "${SASL_USERS:-}" ] || [ -n "${TOPICS:-}" ]; then
        # Users and topics are made before authentication is on (Tansu's own client
        # cannot authenticate).
        start_tansu "tcp://127.0.0.1:$PORT"
        for spec in ${TOPICS:-}; do
            "$TANSU" topic create "${spec%%:*}" --partitions "${spec##*:}" \
                --broker "tcp://127.0.0.1:$PORT" >>"$DIR/tansu.log" 2>&1
        done
        for spec in ${SASL_USERS:-}; do
            IFS=: read -r user password mechanism <<<"$spec"
            "$TANSU" user create --broker "tcp://127.0.0.1:$PORT" \
                --mechanism "${mechanism:-scram512}" "$user" "$password" >>"$DIR/tansu.log" 2>&1
        done
        stop_pid "$DIR/tansu.pid"
        [ -n "${SASL_USERS:-}" ] && auth=(--authentication)
    fi
    if [ -n "${TLS_PORT:-}" ]; then
        make_certs
        start_tls
    fi
    [ -n "${PROXY_PORT:-}" ] && start_proxy
    start_tansu "$(broker_args)" "${auth[@]}"
    echo "plain=127.0.0.1:$PORT${TLS_PORT:+ tls=localhost:$TLS_PORT}"
    ;;
down)
    stop_pid "$DIR/tansu.pid"
    ;;
up)
    # shellcheck disable=SC1091 # written by `start`
    source "$DIR/settings"
    auth=()
    [ -n "${SASL_USERS:-}" ] && auth=(--authentication)
    # Tansu 0.6 sometimes comes back from a restart accepting connections but resetting
    # every one of them: check that it answers a request (without authentication on only),
    # and start it again if it does not.
    for attempt in 1 2 3; do
        start_tansu "$(broker_args)" "${auth[@]}"
        [ -n "${SASL_USERS:-}" ] && break
        answered=0
        for _ in $(seq 1 50); do
            if "$TANSU" topic list --broker "tcp://127.0.0.1:$PORT" >/dev/null 2>&1; then
                answered=1
                break
            fi
            sleep 0.2
        done
        [ "$answered" = 1 ] && break
        echo "broker on $PORT does not answer after a restart (attempt $attempt); restarting it" >&2
        stop_pid "$DIR/tansu.pid"
    done
    ;;
cut)
    stop_pid "$DIR/proxy.pid"
    ;;
mend)
    # shellcheck disable=SC1091 # written by `start`
    source "$DIR/settings"
    start_proxy
    ;;
stop)
    stop_pid "$DIR/tansu.pid"
    stop_pid "$DIR/socat.pid"
    stop_pid "$DIR/proxy.pid"
    ;;
*)
    echo "usage: $0 start|stop|down|up|cut|mend DIR" >&2
    exit 2
    ;;
esac
