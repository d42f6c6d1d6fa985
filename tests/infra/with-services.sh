#!/usr/bin/env bash
# Run a command with REDIS_URL and DATABASE_URL pointing at real, reachable servers.
#
#   tests/infra/with-services.sh [--] COMMAND [ARGS...]
#
# For each of Redis and PostgreSQL, in this order:
#   1. the variable is already set (CI services, your own servers): it is used as it is;
#   2. the usual local server answers (Redis PING on 127.0.0.1:6379, pg_isready on
#      127.0.0.1:5432): it is used, with a dedicated Redis db index and the `test` database;
#   3. the server binaries are installed: a throwaway instance is started on a free port in a
#      temporary directory and stopped and deleted when COMMAND ends, whatever its outcome;
#   4. otherwise: stop with the one install command. Tests never skip for a missing service.
#
# The exit status is COMMAND's own. Overridable (mostly to exercise the fallback path):
#   REDIS_PROBE_HOST/REDIS_PROBE_PORT (127.0.0.1/6379), REDIS_TEST_DB (15),
#   PG_PROBE_HOST/PG_PROBE_PORT (127.0.0.1/5432), PG_TEST_DB (test).
set -euo pipefail

REDIS_PROBE_HOST=${REDIS_PROBE_HOST:-127.0.0.1}
REDIS_PROBE_PORT=${REDIS_PROBE_PORT:-6379}
REDIS_TEST_DB=${REDIS_TEST_DB:-15}
PG_PROBE_HOST=${PG_PROBE_HOST:-127.0.0.1}
PG_PROBE_PORT=${PG_PROBE_PORT:-5432}
PG_TEST_DB=${PG_TEST_DB:-test}

if [[ ${1:-} == "--" ]]; then shift; fi
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [--] COMMAND [ARGS...]" >&2
    exit 2
fi

say() { echo "with-services: $*" >&2; }

# --- teardown of whatever this script started -------------------------------------------------
redis_pid=""
redis_dir=""
pg_data=""
as_pg=()
pg_bin=""

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    if [[ -n $redis_pid ]]; then
        kill "$redis_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
        say "stopped throwaway redis-server (pid $redis_pid)"
    fi
    if [[ -n $redis_dir ]]; then rm -rf "$redis_dir"; fi
    if [[ -n $pg_data ]]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$pg_data"
        say "stopped throwaway PostgreSQL cluster"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- probes -----------------------------------------------------------------------------------
redis_answers() { # host port -> success when the server replies PONG
    local reply
    if command -v redis-cli >/dev/null 2>&1; then
        reply=$(timeout 3 redis-cli -h "$1" -p "$2" ping 2>/dev/null) || return 1
    else
        # shellcheck disable=SC2016  # $0/$1 expand in the inner shell
        reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 && head -c 5 <&3' \
            "$1" "$2" 2>/dev/null) || return 1
    fi
    [[ $reply == *PONG* ]]
}

pg_answers() { # host port -> success when the server accepts connections
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -t 3 -h "$1" -p "$2"
    else
        # shellcheck disable=SC2016  # $0/$1 expand in the inner shell
        timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
    fi
}

pg_test_db_usable() { # the `test` database accepts user postgres (created when missing)
    local base="postgresql://postgres@$PG_PROBE_HOST:$PG_PROBE_PORT"
    psql -w -qAtX -d "$base/$PG_TEST_DB" -c 'SELECT 1' >/dev/null 2>&1 && return 0
    psql -w -qAtX -d "$base/postgres" -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE \"$PG_TEST_DB\"" >/dev/null 2>&1 || return 1
    say "created database '$PG_TEST_DB' on $PG_PROBE_HOST:$PG_PROBE_PORT"
}

free_port() { # a port nobody listens on right now
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

redact() { sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#'; } # hide a password inside a URL

# --- decide what is needed, and fail early with one install command ---------------------------
need_redis=""
need_pg=""
if [[ -z ${REDIS_URL:-} ]] && ! redis_answers "$REDIS_PROBE_HOST" "$REDIS_PROBE_PORT"; then
    need_redis=1
fi
if [[ -z ${DATABASE_URL:-} ]]; then
    if ! pg_answers "$PG_PROBE_HOST" "$PG_PROBE_PORT"; then
        need_pg=1
    elif command -v psql >/dev/null 2>&1 && ! pg_test_db_usable; then
        say "PostgreSQL on $PG_PROBE_HOST:$PG_PROBE_PORT answers but database" \
            "'$PG_TEST_DB' is not usable as user postgres without a password"
        need_pg=1
    fi
fi

pg_bindir() { # the directory holding initdb, pg_ctl and createdb of the newest PostgreSQL
    local dir
    # shellcheck disable=SC2012  # Debian's versioned directories: plain names
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -z $dir ]] && command -v initdb >/dev/null 2>&1; then
        dir=$(dirname "$(readlink -f "$(command -v initdb)")")
    fi
    [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/createdb ]] && echo "$dir"
}

missing=()
if [[ -n $need_redis ]] && ! command -v redis-server >/dev/null 2>&1; then
    missing+=("Redis (nothing answers on $REDIS_PROBE_HOST:$REDIS_PROBE_PORT, no redis-server)")
fi
if [[ -n $need_pg ]]; then
    pg_bin=$(pg_bindir || true)
    if [[ -z $pg_bin ]]; then
        missing+=("PostgreSQL (nothing answers on $PG_PROBE_HOST:$PG_PROBE_PORT, no initdb/pg_ctl)")
    fi
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    sudo=""
    if [[ $(id -u) != 0 ]]; then sudo="sudo "; fi
    {
        echo "with-services: the tests need real Redis and PostgreSQL servers; missing:"
        printf '  - %s\n' "${missing[@]}"
        echo "Install both with:"
        echo "  ${sudo}apt-get install -y redis-server postgresql"
        echo "or point REDIS_URL / DATABASE_URL at servers you already run."
    } >&2
    exit 3
fi

# --- Redis ------------------------------------------------------------------------------------
if [[ -n ${REDIS_URL:-} ]]; then
    say "REDIS_URL=$(redact <<<"$REDIS_URL") (given)"
elif [[ -z $need_redis ]]; then
    export REDIS_URL="redis://$REDIS_PROBE_HOST:$REDIS_PROBE_PORT/$REDIS_TEST_DB"
    say "REDIS_URL=$REDIS_URL (running server)"
else
    redis_port=$(free_port)
    redis_dir=$(mktemp -d /tmp/ci-redis.XXXXXX)
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --dir "$redis_dir" --daemonize yes --pidfile "$redis_dir/redis.pid" \
        --logfile "$redis_dir/redis.log" >/dev/null
    for _ in $(seq 100); do
        if [[ -s $redis_dir/redis.pid ]] && redis_answers 127.0.0.1 "$redis_port"; then break; fi
        sleep 0.1
    done
    redis_pid=$(cat "$redis_dir/redis.pid" 2>/dev/null || true)
    if [[ -z $redis_pid ]] || ! redis_answers 127.0.0.1 "$redis_port"; then
        say "throwaway redis-server did not come up; its log:"
        cat "$redis_dir/redis.log" >&2 || true
        exit 3
    fi
    export REDIS_URL="redis://127.0.0.1:$redis_port/$REDIS_TEST_DB"
    say "REDIS_URL=$REDIS_URL (throwaway redis-server, pid $redis_pid)"
fi

# --- PostgreSQL -------------------------------------------------------------------------------
if [[ -n ${DATABASE_URL:-} ]]; then
    say "DATABASE_URL=$(redact <<<"$DATABASE_URL") (given)"
elif [[ -z $need_pg ]]; then
    export DATABASE_URL="postgresql://postgres@$PG_PROBE_HOST:$PG_PROBE_PORT/$PG_TEST_DB"
    say "DATABASE_URL=$DATABASE_URL (running server)"
else
    # initdb and postgres refuse to run as root: run them as the `postgres` user (ops-notes 4.1).
    if [[ $(id -u) == 0 ]]; then as_pg=(runuser -u postgres --); else as_pg=(env); fi
    pg_port=$(free_port)
    pg_data=$(mktemp -d /tmp/ci-pg.XXXXXX)
    if [[ $(id -u) == 0 ]]; then chown postgres:postgres "$pg_data"; fi
    "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 \
        --no-instructions >/dev/null
    # Unix socket in the data directory; fsync off: a throwaway cluster needs no durability.
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_data -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$PG_TEST_DB"
    export DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/$PG_TEST_DB"
    say "DATABASE_URL=$DATABASE_URL (throwaway cluster in $pg_data)"
fi

# Not `exec`: the traps above must run after COMMAND to tear down what was started.
status=0
"$@" || status=$?
exit "$status"
