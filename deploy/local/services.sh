#!/usr/bin/env bash
#
# services.sh brings up, on this one machine, the services Puntos needs: PostgreSQL,
# ClickHouse and, when asked for, an external NATS server. Everything listens on
# 127.0.0.1 only and keeps its files under the data directory.
#
# Usage: deploy/local/services.sh up|down|status|env|test-tools
#
#   up      start what is missing, reuse what already answers; safe to run again
#   down    stop what `up` started; leave alone what it found running
#   status  say what answers where; exit 1 when a needed service does not answer
#   env     print export lines for the Puntos process and its tests:
#           eval "$(deploy/local/services.sh env)"
#   test-tools  install what the tests drive: xmllint, node and npm, chromium
#
# Settings, from the environment:
#   PUNTOS_DATA_DIR       data directory (default: <repo>/.data)
#   PUNTOS_PG_HOST        PostgreSQL host (default 127.0.0.1)
#   PUNTOS_PG_PORT        PostgreSQL port (default 5432)
#   PUNTOS_PG_DB          database of the service (default puntos); tests use puntos_test
#   PUNTOS_CH_PORT        ClickHouse native port (default 19000)
#   PUNTOS_CH_HTTP_PORT   ClickHouse HTTP port (default 18123)
#   PUNTOS_CH_DB          ClickHouse database of the service (default: PUNTOS_PG_DB)
#   PUNTOS_NATS_EXTERNAL  1: make sure a nats-server with JetStream answers on
#                         127.0.0.1:4222 (default: none; `puntos run` embeds NATS)
#
# As root it installs what is missing from Debian's packages (postgresql,
# clickhouse-server, clickhouse-client, nats-server, curl). It never uses the network
# for anything else, and it never starts a server on an address other than 127.0.0.1.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DATA=${PUNTOS_DATA_DIR:-$REPO/.data}
case $DATA in
/*) ;;
*) DATA=$PWD/$DATA ;;
esac

PG_HOST=${PUNTOS_PG_HOST:-127.0.0.1}
PG_PORT=${PUNTOS_PG_PORT:-5432}
PG_DB=${PUNTOS_PG_DB:-puntos}
PG_TEST_DB=puntos_test
PG_DIR=$DATA/pg
PG_DEBIAN_MARK=$DATA/pg-debian-cluster.started

CH_HOST=127.0.0.1
CH_PORT=${PUNTOS_CH_PORT:-19000}
CH_HTTP_PORT=${PUNTOS_CH_HTTP_PORT:-18123}
CH_DB=${PUNTOS_CH_DB:-$PG_DB} # one ledger, one reporting database
CH_TEST_DB=puntos_test
CH_DIR=$DATA/clickhouse
CH_PIDFILE=$CH_DIR/clickhouse-server.pid
CH_BIN=/usr/sbin/clickhouse-server

NATS_EXTERNAL=${PUNTOS_NATS_EXTERNAL:-0}
NATS_PORT=4222
NATS_BIN=/usr/sbin/nats-server
NATS_PIDFILE=$DATA/nats/nats-server.pid

# ---------------------------------------------------------------------------------------
# Small helpers.

log() { printf 'services: %s\n' "$*" >&2; }
die() {
	printf 'services: error: %s\n' "$*" >&2
	exit 1
}
is_root() { [[ $(id -u) -eq 0 ]]; }

is_loopback() {
	case $1 in
	127.* | localhost | ::1) return 0 ;;
	*) return 1 ;;
	esac
}

# quote prints its argument in single quotes, for the export lines of `env`.
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# apt_install installs Debian packages, refreshing the package lists first when one of
# them is unknown, and once more when the install fails on stale lists.
apt_install() {
	is_root || die "$* missing; install them (apt-get install -y $*) or run this as root"
	export DEBIAN_FRONTEND=noninteractive
	mkdir -p "$DATA/log"
	local aptlog=$DATA/log/apt.log p
	local -a opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

	for p in "$@"; do
		if ! apt-cache show "$p" >/dev/null 2>&1; then
			log "apt-get update (no package $p in the lists)"
			unlocked apt-get update -q >>"$aptlog" 2>&1 || {
				tail -n 20 "$aptlog" >&2
				die "apt-get update failed (log: $aptlog)"
			}
			break
		fi
	done

	log "installing $* from Debian (log: $aptlog)"
	if ! unlocked apt-get install "${opts[@]}" "$@" >>"$aptlog" 2>&1; then
		log "apt-get install failed; updating the package lists and trying again"
		unlocked apt-get update -q >>"$aptlog" 2>&1 || true
		unlocked apt-get install "${opts[@]}" "$@" >>"$aptlog" 2>&1 || {
			tail -n 20 "$aptlog" >&2
			die "apt-get install $* failed (log: $aptlog)"
		}
	fi
}

# unlocked runs a command without the lock file descriptor of `lock`, so that no
# server started from it holds the lock after this script exits.
unlocked() { "$@" 9>&-; }

# need_cmd installs package $2 unless command $1 is on PATH.
need_cmd() {
	command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

# wait_for runs "$@" every half second until it succeeds or $1 seconds pass.
wait_for() {
	local secs=$1
	shift
	local deadline=$((SECONDS + secs))
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

# ---------------------------------------------------------------------------------------
# PostgreSQL.

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

# pg_sql runs SQL as the postgres user over TCP, never prompting for a password.
pg_sql() {
	PGCONNECT_TIMEOUT=5 psql -X -q -A -t -w -v ON_ERROR_STOP=1 \
		-h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_login_ok() { pg_sql -c 'SELECT 1' >/dev/null 2>&1; }

# pg_bindir prints the bin directory of the newest installed PostgreSQL server.
pg_bindir() {
	local d
	d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	[[ -n $d && -x $d/initdb ]] && printf '%s\n' "$d"
}

# pg_debian_cluster prints "VERSION NAME" of the Debian cluster configured on our port.
pg_debian_cluster() {
	command -v pg_lsclusters >/dev/null 2>&1 || return 1
	pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print $1, $2; exit }' |
		grep .
}

# as_pg runs a command as the postgres user when we are root (initdb refuses root).
as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

pg_private_running() {
	[[ -f $PG_DIR/data/postmaster.pid ]] &&
		as_pg "$(pg_bindir)/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

# pg_start_private starts (creating it first if need be) a cluster of our own under
# $PG_DIR, listening on 127.0.0.1:$PG_PORT with trust auth.
pg_start_private() {
	local bin
	bin=$(pg_bindir) || die "no PostgreSQL server binaries under /usr/lib/postgresql"
	if is_root; then
		id postgres >/dev/null 2>&1 || die "no postgres user (is the postgresql package installed?)"
		install -d -m 0700 -o postgres -g postgres "$PG_DIR"
		runuser -u postgres -- test -w "$PG_DIR" ||
			die "the postgres user cannot reach $PG_DIR; set PUNTOS_DATA_DIR to a place it can"
	else
		install -d -m 0700 "$PG_DIR"
	fi

	if [[ ! -s $PG_DIR/data/PG_VERSION ]]; then
		log "postgresql: creating a private cluster in $PG_DIR/data"
		as_pg "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 \
			--locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 || {
			tail -n 20 "$PG_DIR/initdb.log" >&2
			die "initdb failed (log: $PG_DIR/initdb.log)"
		}
		printf "\n# Added by deploy/local/services.sh\ninclude_if_exists = 'puntos.conf'\n" |
			as_pg tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
	fi

	# Written at every start, so that a changed PUNTOS_PG_PORT takes effect. TCP only:
	# a socket path under a deep data directory can pass the kernel's length limit.
	printf "# Written by deploy/local/services.sh at each start.\n%s\n%s\n%s\n" \
		"listen_addresses = '127.0.0.1'" \
		"port = $PG_PORT" \
		"unix_socket_directories = ''" |
		as_pg tee "$PG_DIR/data/puntos.conf" >/dev/null

	log "postgresql: starting the private cluster on 127.0.0.1:$PG_PORT"
	unlocked as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgresql.log" -w -t 60 start \
		>/dev/null || {
		tail -n 20 "$PG_DIR/postgresql.log" >&2
		die "the private PostgreSQL cluster did not start (log: $PG_DIR/postgresql.log)"
	}
}

# pg_trust_loopback makes a Debian cluster accept passwordless logins from the loopback
# addresses, as PUNTOS_DATABASE_URL expects. Debian's own default asks for a password.
pg_trust_loopback() {
	local cluster ver name hba tmp
	cluster=$(pg_debian_cluster) || return 1
	read -r ver name <<<"$cluster"
	hba=/etc/postgresql/$ver/$name/pg_hba.conf
	is_root && [[ -w $hba ]] || return 1

	if ! grep -q '^# puntos: loopback trust' "$hba"; then
		log "postgresql: allowing passwordless logins from 127.0.0.1 and ::1 in $hba"
		tmp=$(mktemp)
		{
			printf '# puntos: loopback trust, added by deploy/local/services.sh\n'
			printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n\n'
			cat "$hba"
		} >"$tmp"
		cat "$tmp" >"$hba"
		rm -f "$tmp"
	fi
	pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload >/dev/null
	wait_for 10 pg_login_ok
}

pg_ensure_db() {
	local db=$1
	[[ $(pg_sql -c "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 ]] && return 0
	log "postgresql: creating database $db"
	createdb -w -h "$PG_HOST" -p "$PG_PORT" -U postgres "$db" 2>/dev/null ||
		[[ $(pg_sql -c "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 ]] ||
		die "createdb $db failed"
}

pg_up() {
	need_cmd pg_isready postgresql-client
	need_cmd psql postgresql-client

	# A server that is starting up rejects connections (exit 1): wait for it.
	local rc=0
	pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1 || rc=$?
	((rc != 1)) || wait_for 60 pg_ready || true

	if pg_ready; then
		log "postgresql: answering at $PG_HOST:$PG_PORT"
	else
		is_loopback "$PG_HOST" ||
			die "nothing answers at $PG_HOST:$PG_PORT, and only 127.0.0.1 is started here"
		pg_bindir >/dev/null || apt_install postgresql

		# The package may have created and started Debian's cluster just now.
		local cluster
		if pg_ready; then
			log "postgresql: answering at $PG_HOST:$PG_PORT"
		elif cluster=$(pg_debian_cluster); then
			log "postgresql: starting Debian's cluster $cluster on port $PG_PORT"
			# shellcheck disable=SC2086 # "VERSION NAME" splits on purpose.
			unlocked pg_ctlcluster --skip-systemctl-redirect $cluster start ||
				die "pg_ctlcluster $cluster start failed (logs in /var/log/postgresql)"
			mkdir -p "$DATA"
			printf '%s\n' "$cluster" >"$PG_DEBIAN_MARK"
		else
			pg_start_private
		fi
		wait_for 60 pg_ready || die "PostgreSQL does not answer at $PG_HOST:$PG_PORT"
	fi

	if ! pg_login_ok; then
		pg_trust_loopback ||
			die "cannot log in as postgres without a password at $PG_HOST:$PG_PORT;" \
				"PUNTOS_DATABASE_URL expects trust auth on loopback"
	fi
	pg_ensure_db "$PG_DB"
	pg_ensure_db "$PG_TEST_DB"
}

pg_down() {
	if pg_private_running; then
		log "postgresql: stopping the private cluster"
		as_pg "$(pg_bindir)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
	fi
	if [[ -f $PG_DEBIAN_MARK ]]; then
		local cluster
		cluster=$(<"$PG_DEBIAN_MARK")
		log "postgresql: stopping Debian's cluster $cluster (up started it)"
		# shellcheck disable=SC2086
		pg_ctlcluster --skip-systemctl-redirect $cluster stop || true
		rm -f "$PG_DEBIAN_MARK"
	fi
}

pg_status() {
	local how=reused
	if pg_private_running; then
		how="private cluster in $PG_DIR/data"
	elif [[ -f $PG_DEBIAN_MARK ]]; then
		how="Debian cluster $(<"$PG_DEBIAN_MARK"), started by up"
	fi
	if command -v pg_isready >/dev/null 2>&1 && pg_ready; then
		printf '%-11s %-5s %s (%s)\n' postgresql up "$PG_HOST:$PG_PORT" "$how"
	else
		printf '%-11s %-5s %s\n' postgresql down "$PG_HOST:$PG_PORT"
		return 1
	fi
}

# ---------------------------------------------------------------------------------------
# ClickHouse.

ch_ping() {
	[[ $(curl -s --max-time 2 "http://$CH_HOST:$CH_HTTP_PORT/ping" 2>/dev/null) == Ok.* ]]
}

# ch_sql runs one statement over the HTTP interface.
ch_sql() {
	local out
	out=$(curl -sS --max-time 30 --data-binary "$1" "http://$CH_HOST:$CH_HTTP_PORT/" \
		-w '\n%{http_code}' 2>&1) || die "clickhouse: $1: $out"
	[[ ${out##*$'\n'} == 200 ]] || die "clickhouse: $1: ${out%$'\n'*}"
}

# ch_pid prints the pid of the server that up started, if it still runs.
ch_pid() {
	local pid
	[[ -s $CH_PIDFILE ]] || return 1
	pid=$(<"$CH_PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$CH_BIN"* ]] || return 1
	printf '%s\n' "$pid"
}

# ch_settled succeeds once the server answers or the process that up started is gone.
ch_settled() {
	ch_ping && return 0
	[[ -s $CH_PIDFILE ]] && ! ch_pid >/dev/null
}

ch_log_tail() {
	local f
	for f in "$CH_DIR/log/clickhouse-server.err.log" "$CH_DIR/log/clickhouse-server.log" \
		"$CH_DIR/log/stderr.log"; do
		[[ -s $f ]] || continue
		printf -- '--- %s (last lines)\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

# ch_render writes our config and users files, with paths under $CH_DIR.
ch_render() {
	local t dir=$CH_DIR
	dir=${dir//\\/\\\\}
	dir=${dir//&/\\&}
	dir=${dir//|/\\|}
	mkdir -p "$CH_DIR"/{etc,data,tmp,user_files,format_schemas,log}
	for t in config.xml users.xml; do
		sed -e "s|@CH_DIR@|$dir|g" -e "s|@TCP_PORT@|$CH_PORT|g" \
			-e "s|@HTTP_PORT@|$CH_HTTP_PORT|g" \
			"$REPO/deploy/local/clickhouse/$t" >"$CH_DIR/etc/$t.new"
		mv "$CH_DIR/etc/$t.new" "$CH_DIR/etc/$t"
	done
}

ch_start() {
	local -a missing=()
	[[ -x $CH_BIN ]] || missing+=(clickhouse-server)
	command -v clickhouse-client >/dev/null 2>&1 || missing+=(clickhouse-client)
	((${#missing[@]} == 0)) || apt_install "${missing[@]}"
	ch_render
	rm -f "$CH_PIDFILE"

	# Debian's 18.16 runs as root without complaint; start-stop-daemon detaches it
	# from this shell and writes the pid file that `down` uses.
	log "clickhouse: starting on $CH_HOST:$CH_PORT (http $CH_HTTP_PORT), data in $CH_DIR"
	unlocked start-stop-daemon --start --background --make-pidfile --pidfile "$CH_PIDFILE" \
		--chdir "$CH_DIR" --output "$CH_DIR/log/stderr.log" --exec "$CH_BIN" -- \
		--config-file="$CH_DIR/etc/config.xml"
}

ch_up() {
	need_cmd curl curl

	if ch_ping; then
		log "clickhouse: answering at $CH_HOST:$CH_HTTP_PORT"
	else
		ch_pid >/dev/null || ch_start
		wait_for 60 ch_settled || true
		if ! ch_ping; then
			ch_log_tail
			if ch_pid >/dev/null; then
				die "ClickHouse runs but does not answer http://$CH_HOST:$CH_HTTP_PORT/ping"
			fi
			die "ClickHouse did not start (logs in $CH_DIR/log)"
		fi
		log "clickhouse: ready"
	fi
	ch_sql "CREATE DATABASE IF NOT EXISTS $CH_DB"
	ch_sql "CREATE DATABASE IF NOT EXISTS $CH_TEST_DB"
}

ch_down() {
	local pid
	pid=$(ch_pid) || {
		rm -f "$CH_PIDFILE"
		return 0
	}
	log "clickhouse: stopping pid $pid"
	start-stop-daemon --stop --quiet --pidfile "$CH_PIDFILE" --exec "$CH_BIN" \
		--retry TERM/30/KILL/5 || true
	rm -f "$CH_PIDFILE"
}

ch_status() {
	local how=reused pid
	pid=$(ch_pid) && how="pid $pid, data in $CH_DIR"
	if command -v curl >/dev/null 2>&1 && ch_ping; then
		printf '%-11s %-5s %s (http %s, %s)\n' clickhouse up "$CH_HOST:$CH_PORT" \
			"$CH_HTTP_PORT" "$how"
	else
		printf '%-11s %-5s %s (http %s)\n' clickhouse down "$CH_HOST:$CH_PORT" "$CH_HTTP_PORT"
		return 1
	fi
}

# ---------------------------------------------------------------------------------------
# NATS: embedded in `puntos run` unless PUNTOS_NATS_EXTERNAL=1.

# nats_info prints the INFO line that a NATS server sends first on a new connection.
nats_info() {
	# shellcheck disable=SC2016 # $1 expands in the inner shell.
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && head -n 1 <&3' _ "$NATS_PORT" \
		2>/dev/null | grep '^INFO '
}

nats_js_ok() { nats_info | grep -q '"jetstream":true'; }

nats_up() {
	[[ $NATS_EXTERNAL == 1 ]] || return 0

	if nats_info >/dev/null; then
		nats_js_ok || die "a NATS server answers on 127.0.0.1:$NATS_PORT without JetStream"
		log "nats: answering at 127.0.0.1:$NATS_PORT with JetStream"
		return 0
	fi

	is_root || die "no NATS server on 127.0.0.1:$NATS_PORT; starting one needs root"
	need_cmd "$NATS_BIN" nats-server
	mkdir -p /var/lib/nats-server "$(dirname "$NATS_PIDFILE")"
	log "nats: starting nats-server with JetStream on 127.0.0.1:$NATS_PORT"
	unlocked start-stop-daemon --start --oknodo --background --make-pidfile \
		--pidfile "$NATS_PIDFILE" \
		--exec "$NATS_BIN" -- -a 127.0.0.1 -p "$NATS_PORT" -js -sd /var/lib/nats-server \
		-l /var/log/nats-server.log
	wait_for 20 nats_js_ok || {
		tail -n 20 /var/log/nats-server.log >&2 || true
		die "nats-server does not answer on 127.0.0.1:$NATS_PORT"
	}
}

nats_down() {
	[[ -s $NATS_PIDFILE ]] || return 0
	log "nats: stopping the nats-server that up started"
	start-stop-daemon --stop --quiet --oknodo --pidfile "$NATS_PIDFILE" --exec "$NATS_BIN" \
		--retry TERM/15/KILL/5 || true
	rm -f "$NATS_PIDFILE"
}

nats_status() {
	if [[ $NATS_EXTERNAL != 1 ]]; then
		printf '%-11s %-5s %s\n' nats - "embedded in puntos run (PUNTOS_NATS_EXTERNAL=1 for a server)"
	elif nats_js_ok; then
		printf '%-11s %-5s %s\n' nats up "127.0.0.1:$NATS_PORT (JetStream)"
	else
		printf '%-11s %-5s %s\n' nats down "127.0.0.1:$NATS_PORT"
		return 1
	fi
}

# ---------------------------------------------------------------------------------------
# Commands.

# lock serialises up and down, so that two `make test` at once do not race.
lock() {
	mkdir -p "$DATA"
	exec 9>"$DATA/.services.lock"
	flock -n 9 && return 0
	log "waiting for another services.sh to finish (lock: $DATA/.services.lock)"
	flock -w 600 9 || die "another services.sh still holds $DATA/.services.lock"
}

cmd_up() {
	lock
	pg_up
	ch_up
	nats_up
	log "up (data in $DATA); load the settings with: eval \"\$($0 env)\""
}

# cmd_test_tools installs what the test suite drives besides the services:
# xmllint validates SOAP answers against our XSD, node and npm run the
# node-soap interoperability client, chromium runs the back-office tests.
cmd_test_tools() {
	lock
	need_cmd xmllint libxml2-utils
	need_cmd node nodejs
	need_cmd npm npm
	need_cmd chromium chromium
	log "test tools ready"
}

cmd_down() {
	lock
	ch_down
	pg_down
	nats_down
	log "down"
}

cmd_status() {
	local rc=0
	pg_status || rc=1
	ch_status || rc=1
	nats_status || rc=1
	return "$rc"
}

# cmd_env prints the settings of the services it manages. A setting the
# caller already exported is kept, so `PUNTOS_DATABASE_URL=... make run`
# means what it says.
cmd_env() {
	local pg="postgres://postgres@$PG_HOST:$PG_PORT"
	emit() { printf 'export %s=%s\n' "$1" "$(quote "${!1:-$2}")"; }
	emit PUNTOS_DATA_DIR "$DATA"
	emit PUNTOS_DATABASE_URL "$pg/$PG_DB?sslmode=disable"
	emit PUNTOS_CLICKHOUSE_ADDR "$CH_HOST:$CH_PORT"
	emit PUNTOS_CLICKHOUSE_DB "$CH_DB"
	emit PUNTOS_TEST_DATABASE_URL "$pg/$PG_TEST_DB?sslmode=disable"
	emit PUNTOS_TEST_CLICKHOUSE_ADDR "$CH_HOST:$CH_PORT"
	emit PUNTOS_TEST_CLICKHOUSE_DB "$CH_TEST_DB"
	if [[ $NATS_EXTERNAL == 1 ]]; then
		emit NATS_URL "nats://127.0.0.1:$NATS_PORT"
		emit PUNTOS_TEST_NATS_URL "nats://127.0.0.1:$NATS_PORT"
	fi
}

usage() {
	sed -n '3,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
test-tools) cmd_test_tools ;;
*) usage ;;
esac
