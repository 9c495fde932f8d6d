#!/usr/bin/env bash
# Clone time of masked templates of PostgreSQL databases of 1 GiB and 8 GiB
# (pgbench data, plus a small customers table the rules mask), end to end:
#
#   clone   `strata clone create NAME --template T` (the CLI process, start to exit)
#   mount   `strata volume mount NAME DIR` (FUSE file, loop device, ext4)
#   ready   PostgreSQL started on the clone until it answers a query
#   total   the three: from nothing to a database a developer can query
#
# Each figure is the median of ROUNDS clones (each deleted after). The
# template's build time is printed too. Needs root and PostgreSQL.
#
#   sudo bench/clonetime.sh            (SIZES="1 8" ROUNDS=5 by default)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need python3 curl
[ "$(id -u)" = 0 ] || { echo "bench: run as root (loop devices, FUSE, PostgreSQL as its user)" >&2; exit 1; }
PGBIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")
[ -x "$PGBIN/pgbench" ] || { echo "bench: PostgreSQL is missing (make test-deps installs it)" >&2; exit 1; }

SIZES=${SIZES:-"1 8"}   # GiB of database
ROUNDS=${ROUNDS:-5}
rm -rf "$BENCH_DIR" && mkdir -p "$BENCH_DIR"
# The database's user must reach the mounts and the socket.
WORK=$(mktemp -d /tmp/strata-clonetime.XXXXXX)
chmod 711 "$WORK"
start_node "$BENCH_DIR/node"
trap 'stop_pg; stop_node; rm -rf "$WORK"' EXIT

SOCK=$WORK/sock
mkdir -p "$SOCK" && chown postgres: "$SOCK"
PGDATA_RUNNING=
asdb() { runuser -u postgres -- "$@"; }
start_pg() { # start_pg DATADIR
	asdb "$PGBIN/pg_ctl" -D "$1" -w -s -l "$SOCK/log" -o "-c listen_addresses= -c unix_socket_directories=$SOCK" start
	PGDATA_RUNNING=$1
}
stop_pg() {
	[ -n "$PGDATA_RUNNING" ] || return 0
	asdb "$PGBIN/pg_ctl" -D "$PGDATA_RUNNING" -w -s -m fast stop || true
	PGDATA_RUNNING=
}
psql_() { "$PGBIN/psql" -h "$SOCK" -U postgres -X -q -t -A "$@"; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

openssl rand -hex 32 | "$STRATA" secret set bench-mask >/dev/null
cat >"$WORK/rules.yaml" <<'EOF'
engine: postgres
data_dir: pgdata
salt_secret: bench-mask
database: bench
tables:
  public.customers:
    full_name: fake_name
    email: fake_email
EOF

for gib in $SIZES; do
	vol=db${gib}g
	scale=$(( gib * 68 ))  # pgbench: about 15 MiB per scale unit
	"$STRATA" volume create "$vol" --size "$(( gib * 2 + 2 ))GiB" >/dev/null
	dir=$WORK/$vol
	"$STRATA" volume mount "$vol" "$dir" >/dev/null
	chmod 755 "$dir"
	install -d -o postgres -g postgres -m 700 "$dir/pgdata"
	asdb "$PGBIN/initdb" -D "$dir/pgdata" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
	start_pg "$dir/pgdata"
	echo "loading a $gib GiB database (pgbench scale $scale) into $vol ..." >&2
	t=$(date +%s%N)
	psql_ -c 'CREATE DATABASE bench' postgres
	asdb "$PGBIN/pgbench" -h "$SOCK" -U postgres -i -q -s "$scale" -I dtGvp bench >/dev/null 2>&1
	psql_ bench -c "CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text);
		INSERT INTO customers SELECT g, 'Customer ' || g, 'c' || g || '@corp.example' FROM generate_series(1, 10000) g"
	size=$(psql_ bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
	echo "  loaded in $(ms "$t") ms: $size" >&2
	stop_pg
	"$STRATA" volume unmount "$dir" >/dev/null
	t=$(date +%s%N)
	"$STRATA" template create "t$vol" --from "$vol" --mask "$WORK/rules.yaml" >&2
	echo "$vol template_ms $(ms "$t") size $size" >>"$BENCH_DIR/times.txt"

	for i in $(seq 1 "$ROUNDS"); do
		c=c$vol-$i cdir=$WORK/c$vol-$i
		t0=$(date +%s%N)
		"$STRATA" clone create "$c" --template "t$vol" --ttl 1h >/dev/null
		t1=$(date +%s%N)
		"$STRATA" volume mount "$c" "$cdir" >/dev/null
		t2=$(date +%s%N)
		start_pg "$cdir/pgdata"
		psql_ bench -c 'SELECT count(*) FROM pgbench_branches' >/dev/null
		t3=$(date +%s%N)
		echo "$vol round $(( (t1 - t0) / 1000000 )) $(( (t2 - t1) / 1000000 )) $(( (t3 - t2) / 1000000 ))" >>"$BENCH_DIR/times.txt"
		stop_pg
		"$STRATA" volume unmount "$cdir" >/dev/null
		"$STRATA" clone delete "$c" >/dev/null
	done
done

python3 - "$BENCH_DIR/times.txt" <<'PY'
import statistics, sys
rounds, info = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[1] == "round":
        rounds.setdefault(f[0], []).append([int(x) for x in f[2:5]])
    else:
        info[f[0]] = (int(f[2]), " ".join(f[4:]))
print(f"{'database':<10}{'size':>10}{'template s':>12}{'clone ms':>10}{'mount ms':>10}{'ready ms':>10}{'total ms':>10}")
for vol, rs in rounds.items():
    med = [statistics.median(r[i] for r in rs) for i in range(3)]
    total = statistics.median(sum(r) for r in rs)
    tpl, size = info[vol]
    print(f"{vol:<10}{size:>10}{tpl/1000:>12.1f}{med[0]:>10.0f}{med[1]:>10.0f}{med[2]:>10.0f}{total:>10.0f}")
PY
