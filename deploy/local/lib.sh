# shellcheck shell=bash
# Shared by deploy/local/*.sh: installs what is missing, starts and stops the local stack.
#
# The stack is real, on loopback: a throwaway Postgres cluster (the Debian server, run as the
# `postgres` user) and tansu, a Kafka-protocol broker built once with cargo and cached under
# $CALLGATE_CACHE (default ~/.cache/callgate). Each stack ("dev", "test") has its own ports
# and state directory under .local/.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CALLGATE_CACHE="${CALLGATE_CACHE:-$HOME/.cache/callgate}"
TANSU_VERSION="0.6.0"
TANSU_BIN="${CALLGATE_TANSU_BIN:-$CALLGATE_CACHE/tansu-$TANSU_VERSION/bin/tansu}"
# Partitions of call-events.v1: the ceiling on worker parallelism; 12 splits evenly over
# 1, 2, 3, 4 or 6 workers.
EVENTS_PARTITIONS="${CALLGATE_EVENTS_PARTITIONS:-12}"
# librdkafka settings for tansu 0.6.0 (README, "Two quirks of the local broker"); real Kafka
# needs neither. It cannot serve a fetch that starts inside a record batch, so producers send
# one record per batch. And it holds a fetch for the whole fetch.wait.max.ms even when records
# arrive meanwhile: the default 500 ms would be most of the end-to-end latency, 10 ms loads it
# so much that the gateway's acks slow down (BENCHMARKS.md, "fetch wait").
# Each kind of client gets only its own (librdkafka warns about the others at every start).
TANSU_PRODUCER_PROPERTIES="batch.num.messages=1"
TANSU_CONSUMER_PROPERTIES="fetch.wait.max.ms=100"

log() { printf '\033[1;34m[callgate]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[callgate]\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root (or sudo) to run: $*"
    fi
}

# Debian packages the build and the stack need; installed only when missing.
ensure_packages() {
    local missing=()
    command -v cc >/dev/null || missing+=(build-essential)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
    command -v curl >/dev/null || missing+=(curl)
    pg_bindir >/dev/null 2>&1 || missing+=(postgresql)
    command -v runuser >/dev/null || missing+=(util-linux)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    pg_bindir >/dev/null || die "PostgreSQL server binaries not found after install"
}

# Runs a Postgres tool as `postgres`, from a directory that user can enter.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

pg_bindir() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

# Builds tansu once (about 7 minutes on 2 cores) and caches the binary.
ensure_tansu() {
    if [ -x "$TANSU_BIN" ]; then return; fi
    log "building tansu $TANSU_VERSION once (about 7 minutes; cached in $CALLGATE_CACHE)"
    mkdir -p "$CALLGATE_CACHE"
    cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore \
        --root "$CALLGATE_CACHE/tansu-$TANSU_VERSION" >"$CALLGATE_CACHE/tansu-build.log" 2>&1 \
        || die "tansu build failed; see $CALLGATE_CACHE/tansu-build.log"
}

# stack_env NAME PG_PORT KAFKA_PORT: sets the variables describing one stack. Ports are kept
# below Linux's ephemeral range (32768+), where an outgoing connection could be holding them.
stack_env() {
    STACK="$1"
    PG_PORT="$2"
    KAFKA_PORT="$3"
    STATE="$ROOT/.local/$STACK"
    # Postgres runs as `postgres`, which must be able to reach its data directory; a checkout
    # under a private directory (mktemp -d) is not, so the cluster then lives in /var/tmp.
    PG_DATA="$STATE/pg"
    if ! as_postgres test -x "$ROOT" 2>/dev/null; then
        PG_DATA="/var/tmp/callgate-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)-$STACK/pg"
    fi
    DATABASE_ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/callgate"
    KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_state() { if port_open "$1"; then echo open; else echo free; fi; }

# wait_port open|free PORT WHAT: waits up to 30 s for PORT to reach that state.
wait_port() {
    local want="$1" port="$2" what="$3" tries=0
    until [ "$(port_state "$port")" = "$want" ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 150 ] || die "port $port of $what is not $want after 30 s"
        sleep 0.2
    done
}

# A fresh cluster each start: local state is disposable, tests want a clean slate.
# pg_stat_statements is loaded so the benchmarks can say which statements took the time.
start_postgres() {
    local bin
    bin="$(pg_bindir)"
    stop_postgres
    wait_port free "$PG_PORT" "Postgres"
    as_root rm -rf "$PG_DATA"
    as_root mkdir -p "$PG_DATA"
    as_root chown postgres:postgres "$PG_DATA"
    as_root chmod 700 "$PG_DATA"
    as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >/dev/null
    as_postgres "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DATA -c fsync=off -c synchronous_commit=off -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" \
        start >/dev/null || { cat "$PG_DATA/server.log" >&2 || true; die "Postgres did not start"; }
    as_postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt \
        -c "CREATE DATABASE callgate" >/dev/null
    log "Postgres on 127.0.0.1:$PG_PORT (data $PG_DATA)"
}

stop_postgres() {
    local bin
    bin="$(pg_bindir)" || return 0
    if [ -f "$PG_DATA/postmaster.pid" ]; then
        as_postgres "$bin/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
    fi
}

# A cluster kept in /var/tmp (checkout not reachable by `postgres`) belongs to no checkout that
# would clean it; each fresh clone would leave hundreds of MB behind. One inside .local/ stays
# until the next start, so its server.log can be read after a failure.
remove_stray_postgres() {
    case "$PG_DATA" in
    /var/tmp/callgate-*) as_root rm -rf "$(dirname "$PG_DATA")" ;;
    esac
}

start_tansu() {
    stop_tansu
    wait_port free "$KAFKA_PORT" "the broker"
    mkdir -p "$STATE"
    # Its own session: a Ctrl-C at the terminal reaches the whole foreground group, and the
    # broker must outlive the gateway and worker while they drain; stop_stack stops it last.
    setsid nohup "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "memory://tansu/" >"$STATE/tansu.log" 2>&1 &
    echo $! >"$STATE/tansu.pid"
    wait_port open "$KAFKA_PORT" "tansu"
    log "Kafka-protocol broker (tansu) on 127.0.0.1:$KAFKA_PORT"
}

stop_tansu() {
    if [ -f "$STATE/tansu.pid" ]; then
        kill "$(cat "$STATE/tansu.pid")" 2>/dev/null || true
        rm -f "$STATE/tansu.pid"
    fi
}

create_topic() {
    "$TANSU_BIN" topic create "$1" --partitions "$2" --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null
}

create_topics() {
    create_topic call-events.v1 "$EVENTS_PARTITIONS"
    create_topic call-events.dlq.v1 1
    log "topics call-events.v1 ($EVENTS_PARTITIONS partitions) and call-events.dlq.v1"
}

# The master key that seals provider secrets: generated once per checkout, kept in .local/.
ensure_secret_key() {
    local file="$ROOT/.local/secret-key"
    mkdir -p "$ROOT/.local"
    if [ ! -s "$file" ]; then
        head -c 32 /dev/urandom | base64 >"$file"
        chmod 600 "$file"
    fi
    CALLGATE_SECRET_KEY="$(cat "$file")"
    export CALLGATE_SECRET_KEY
}

# Processes a script starts beside its stack: on exit they are stopped and waited for (each by
# its PID, never a bare `wait`, which would also wait for tansu), then the stack goes.
STACK_PIDS=()
track() { STACK_PIDS+=("$1"); }

stop_stack() {
    local pid
    # A second Ctrl-C or TERM must not cut the cleanup short (a gateway still loading its
    # directory takes a few seconds to stop, and Postgres would be left running).
    trap '' INT TERM HUP
    for pid in "${STACK_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STACK_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_tansu
    stop_postgres
    remove_stray_postgres
}

# start_stack NAME PG_PORT KAFKA_PORT: installs what is missing, starts a throwaway Postgres
# and tansu, and stops them (after the tracked processes) on exit, including an exit by
# Ctrl-C, TERM or a closed terminal.
start_stack() {
    ensure_packages
    ensure_tansu
    stack_env "$1" "$2" "$3"
    trap stop_stack EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    start_postgres
    start_tansu
}

# start_test_stack NAME PG_PORT KAFKA_PORT: start_stack, and exports what the test harness reads.
start_test_stack() {
    start_stack "$1" "$2" "$3"
    export CALLGATE_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"
    export CALLGATE_TEST_KAFKA_BROKERS="$KAFKA_BROKERS"
    export CALLGATE_TANSU_BIN="$TANSU_BIN"
}
