#!/usr/bin/env bash
# Replication on three local nodes (b1, b2, b3 on 127.0.58.1-3, each with
# its own data directory and the default ports):
#
#  1. fio through its nbd engine (one connection, queue depth 32) against
#     volumes with 1, 2 and 3 replicas, the engine on b1: 4 KiB random
#     write, 4 KiB random read, 1 MiB sequential write. Each round runs
#     every job on the three volumes back to back, in an order that rotates
#     from round to round; the tables give medians over the rounds, the
#     ratios to repl 1 (target >= 0.8), the replicas in sync before and
#     after every run, and the CPU the nodes, fio and the rest of the
#     machine used.
#  2. Rebuild: a volume with one replica on b1, written in full, gets a
#     second one (volume ha-update --repl 2); the time until it is in sync,
#     against nbdcopy copying as much from nbdkit's file plugin to a file.
#  3. The catch-up copy ratio of the fault test that measures it
#     (test/e2e TestReplCatchUpCopiesOnlyWhatWasMissed; target <= 1.5).
#
#   bash bench/repl.sh
#
# Environment: SIZE_GIB=2 (each volume of part 1), RUNTIME=10 (seconds per
# run, after a 2 s ramp), ROUNDS=3 (0 skips part 1), REBUILD_GIB=4 (0 skips
# part 2), CATCHUP=1 (0 skips part 3), KEEP=1 keeps the nodes' data and logs
# under .run/bench/repl. It needs fio, nbdkit, nbdcopy and python3 (make
# test-deps), and bin/strata (make build).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need fio nbdkit nbdcopy nbdinfo python3

SIZE_GIB=${SIZE_GIB:-2}
RUNTIME=${RUNTIME:-10}
ROUNDS=${ROUNDS:-3}
REBUILD_GIB=${REBUILD_GIB:-4}
CATCHUP=${CATCHUP:-1}
KEEP=${KEEP:-0}
NBDKIT_PORT=${NBDKIT_PORT:-10911}
DIR=$BENCH_DIR/repl
OUT=$DIR/out
NODES=(b1 b2 b3)
PIDS=()

# stop_nodes: SIGTERM to every process started here (the nodes stop
# together: one by one, the last would lose etcd's quorum), SIGKILL to
# those still running after 60 s; then the scratch data goes (unless KEEP=1).
stop_nodes() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$p" 2>/dev/null; then
			echo "bench: process $p did not stop within 60 s: killed" >&2
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	PIDS=()
	if [ "$KEEP" = 1 ]; then
		echo "bench: the nodes' data and logs are in $DIR" >&2
	else
		rm -rf "$DIR"
	fi
}
trap stop_nodes EXIT

rm -rf "$DIR" && mkdir -p "$OUT"

# free_gib: GiB available on the filesystem of the bench directory.
free_gib() { df -P --block-size=1G "$DIR" | awk 'NR == 2 {print $4}'; }
need_gib=$((SIZE_GIB * 6 + 1)) # volumes of 1, 2 and 3 replicas, all written
if [ "$(free_gib)" -lt "$need_gib" ]; then
	echo "bench/repl.sh: needs $need_gib GiB free under $DIR for SIZE_GIB=$SIZE_GIB, has $(free_gib) GiB" >&2
	exit 1
fi

ip_of() { echo "127.0.58.${1#b}"; }
TOKEN=
cli() { "$STRATA" --api 127.0.58.1:7420 --token "$TOKEN" "$@"; }

# start_repl_node N [TOKEN]: start node bN on 127.0.58.N, joining b1 when a
# join token is given, and wait until its API answers (as make cluster does).
start_repl_node() {
	local n=$1 join_token=${2:-} ip d join=()
	ip=$(ip_of "$n")
	d=$DIR/$n
	mkdir -p "$d"
	[ -z "$join_token" ] || join=(--join 127.0.58.1:7420)
	STRATA_JOIN_TOKEN=$join_token "$STRATA" up --ip "$ip" --node-name "$n" --label "zone=z${n#b}" \
		--data-dir "$d/data" --config "$d/config.yaml" --debug-addr "$ip:7429" "${join[@]}" \
		>"$d/node.log" 2>&1 </dev/null &
	PIDS+=($!)
	for _ in $(seq 1 1200); do
		if [ -s "$DIR/b1/data/admin.token" ] &&
			"$STRATA" --api "$ip:7420" --token "$(cat "$DIR/b1/data/admin.token")" status >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "bench: node $n exited:" >&2; tail -20 "$d/node.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "bench: node $n is not up after 120 s: see $d/node.log" >&2
	exit 1
}

start_repl_node b1
TOKEN=$(cat "$DIR/b1/data/admin.token")
join_token=$(cli cluster token)
start_repl_node b2 "$join_token"
start_repl_node b3 "$join_token"
for _ in $(seq 1 300); do
	[ "$(cli node list -o json | python3 -c 'import json,sys; print(sum(n.get("state") == "online" for n in json.load(sys.stdin).get("nodes", [])))')" = 3 ] && break
	sleep 0.1
done
cli node list

# sync_state VOL: "in-sync/wanted" replicas of VOL, e.g. 2/2.
sync_state() {
	cli volume inspect "$1" -o json | python3 -c '
import json, sys
v = json.load(sys.stdin)
n = sum(r.get("mode") == "in-sync" for r in v.get("replicas", []))
print(str(n) + "/" + str(v.get("replicasWanted", 1)))'
}
in_sync() { local s; s=$(sync_state "$1"); [ "${s%/*}" = "${s#*/}" ]; }

uri() { echo "nbd://127.0.58.1:10809/$1"; }

# replicas_bench: part 1.
replicas_bench() {
	# A volume per replica count, its replicas on b1 (where its engine runs)
	# and the next nodes, written in full so that reads find data (not measured).
	for n in 1 2 3; do
		nodes=$(IFS=,; echo "${NODES[*]:0:n}")
		cli volume create "r$n" --size "${SIZE_GIB}GiB" --repl "$n" --nodes "$nodes" >/dev/null
		cli volume attach "r$n" --node b1 >/dev/null
		fio --name=fill --ioengine=nbd --uri="$(uri "r$n")" --rw=write --bs=1m --iodepth=8 --size="${SIZE_GIB}g" \
			--output="$OUT/r$n-fill.txt" >/dev/null
		in_sync "r$n" || echo "bench: warning: r$n has $(sync_state "r$n") replicas in sync after its fill" >&2
	done
	cli volume list

	# cpu_sample: wall seconds, CPU clock ticks used so far by b1, b2 and b3,
	# busy ticks of the whole machine (all CPUs, from /proc/stat), and
	# sectors written to the disk under the bench directory (0 if unknown).
	local disk
	disk=$(basename "$(df -P "$DIR" | awk 'NR == 2 {print $1}')")
	cpu_sample() {
		local p out
		out=$(date +%s.%N)
		for p in "${PIDS[@]:0:3}"; do out="$out $(awk '{print $14 + $15}' "/proc/$p/stat")"; done
		out="$out $(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)"
		echo "$out $(awk -v d="$disk" '$3 == d {s = $10} END {print s + 0}' /proc/diskstats)"
	}

	JOBS="randwrite-4k:randwrite:4k randread-4k:randread:4k seqwrite-1m:write:1m"
	VOLS=(r1 r2 r3)
	for round in $(seq 1 "$ROUNDS"); do
		# Rotate the order from round to round, so that no replica count
		# always runs first after the previous job.
		order=()
		for i in 0 1 2; do order+=("${VOLS[$(((i + round - 1) % 3))]}"); done
		for j in $JOBS; do
			IFS=: read -r job rw bs <<<"$j"
			for v in "${order[@]}"; do
				before=$(sync_state "$v")
				c0=$(cpu_sample)
				fio --name="$job" --ioengine=nbd --uri="$(uri "$v")" --rw="$rw" --bs="$bs" --iodepth=32 \
					--size="${SIZE_GIB}g" --time_based --runtime="$RUNTIME" --ramp_time=2 --norandommap --randrepeat=0 \
					--output-format=json --output="$OUT/$v-$job-$round.json" >/dev/null
				c1=$(cpu_sample)
				echo "$c0 $c1" >"$OUT/$v-$job-$round.cpu"
				echo "$before $(sync_state "$v")" >"$OUT/$v-$job-$round.sync"
			done
		done
	done

	echo
	echo "== fio through NBD, engine on b1, $(nproc) cores; SIZE_GIB=$SIZE_GIB RUNTIME=$RUNTIME ROUNDS=$ROUNDS"
	python3 - "$OUT" "$ROUNDS" "$(getconf CLK_TCK)" $JOBS <<'PY'
import json, statistics, sys
out, rounds, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jobs = [j.split(":")[0] for j in sys.argv[4:]]
vols = ("r1", "r2", "r3")
med = statistics.median
R = range(1, rounds + 1)

def run(v, job, r):
    d = json.load(open(f"{out}/{v}-{job}-{r}.json"))["jobs"][0]
    side = d["write"] if d["write"]["io_bytes"] else d["read"]
    c = list(map(float, open(f"{out}/{v}-{job}-{r}.cpu").read().split()))
    wall = c[6] - c[0]
    nodes = [(c[7 + i] - c[1 + i]) / tck / wall for i in range(3)]   # cores
    busy = (c[10] - c[4]) / tck / wall
    disk = (c[11] - c[5]) * 512 / wall / (1 << 20)                   # MiB/s written
    fio = (d["usr_cpu"] + d["sys_cpu"]) / 100.0                     # of its runtime
    before, after = open(f"{out}/{v}-{job}-{r}.sync").read().split()
    return dict(iops=side["iops"], mib=side["bw"] / 1024.0, nodes=nodes, fio=fio,
                rest=max(0.0, busy - sum(nodes) - fio), busy=busy, disk=disk,
                # CPU microseconds the three nodes spent per I/O
                us_per_io=sum(nodes) * 1e6 / side["iops"],
                sync=(before, after))

runs = {(v, job): [run(v, job, r) for r in R] for v in vols for job in jobs}
print(f"median of {rounds} rounds (IOPS and MiB/s); ratios: median of the per-round ratios, min-max in brackets; target >= 0.8")
print(f"{'job':<14}{'repl 1':>19}{'repl 2':>19}{'repl 3':>19}{'repl2/repl1':>20}{'repl3/repl1':>20}  {'>= 0.8':<9} in sync")
for job in jobs:
    def cell(v):
        rs = runs[(v, job)]
        return f"{med(x['iops'] for x in rs):>9.0f} {med(x['mib'] for x in rs):>5.0f} MiB/s"
    ratios = {}
    for v in ("r2", "r3"):
        ratios[v] = [a["iops"] / b["iops"] for a, b in zip(runs[(v, job)], runs[("r1", job)])]
    rtxt = {v: f"{med(rs):.2f} [{min(rs):.2f}-{max(rs):.2f}]" for v, rs in ratios.items()}
    met = "/".join("yes" if med(ratios[v]) >= 0.8 else "no" for v in ("r2", "r3"))
    bad = [f"{v} round {r}: {x['sync'][0]} before, {x['sync'][1]} after"
           for v in vols for r, x in zip(R, runs[(v, job)])
           if any(s.split("/")[0] != s.split("/")[1] for s in x["sync"])]
    warn = "all" if not bad else "WARNING " + "; ".join(bad)
    print(f"{job:<14}{cell('r1'):>19}{cell('r2'):>19}{cell('r3'):>19}{rtxt['r2']:>20}{rtxt['r3']:>20}  {met:<9} {warn}")
print("(>= 0.8: repl 2 / repl 3, on the median ratio)")
print()
print("CPU during the runs (median; cores used over the run's wall time): the nodes, fio,")
print("the rest of the machine, and the whole machine (busy); the nodes' CPU microseconds")
print("per I/O; and the MiB/s written to the disk (the kernel's writeback of all the pools)")
print(f"{'job':<14}{'repl':>5}{'b1':>7}{'b2':>7}{'b3':>7}{'fio':>7}{'rest':>7}{'busy':>7}{'us/io':>9}{'disk':>8}")
for job in jobs:
    for v in vols:
        rs = runs[(v, job)]
        n = [med(x["nodes"][i] for x in rs) for i in range(3)]
        print(f"{job:<14}{v[1]:>5}{n[0]:>7.2f}{n[1]:>7.2f}{n[2]:>7.2f}{med(x['fio'] for x in rs):>7.2f}"
              f"{med(x['rest'] for x in rs):>7.2f}{med(x['busy'] for x in rs):>7.2f}{med(x['us_per_io'] for x in rs):>9.0f}"
              f"{med(x['disk'] for x in rs):>8.0f}")
PY
	for n in 1 2 3; do cli volume delete "r$n" >/dev/null; done
}

if [ "$ROUNDS" -gt 0 ]; then
	replicas_bench
else
	echo "== fio through NBD: skipped (ROUNDS=0)"
fi

# Rebuild: a volume written in full with one replica on b1 gets a second
# one; the time from ha-update until inspect shows it in sync gives the
# throughput. The peer copies as much over loopback: nbdcopy (default
# connections and requests in flight) from nbdkit's file plugin serving a
# file written in full, to a file; the sync after it is timed too.
echo
if [ "$REBUILD_GIB" = 0 ]; then
	echo "== rebuild: skipped (REBUILD_GIB=0)"
elif [ "$(free_gib)" -lt $((REBUILD_GIB * 2 + 4)) ]; then
	echo "== rebuild: skipped: it needs $((REBUILD_GIB * 2 + 4)) GiB free under $DIR (two replicas of ${REBUILD_GIB} GiB, then the peer's two files), has $(free_gib) GiB"
else
	echo "== rebuild of a new replica of a ${REBUILD_GIB} GiB volume written in full"
	cli volume create rebuild --size "${REBUILD_GIB}GiB" --repl 1 --nodes b1 >/dev/null
	cli volume attach rebuild --node b1 >/dev/null
	fio --name=fill --ioengine=nbd --uri="$(uri rebuild)" --rw=write --bs=1m --iodepth=32 --size="${REBUILD_GIB}g" \
		--output="$OUT/rebuild-fill.txt" >/dev/null
	sync
	bytes=$(cli volume inspect rebuild -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["sizeBytes"])')
	t0=$(date +%s.%N)
	cli volume ha-update rebuild --repl 2 >/dev/null
	until in_sync rebuild; do
		kill -0 "${PIDS[0]}" 2>/dev/null || { echo "bench: b1 exited" >&2; exit 1; }
		sleep 0.2
	done
	t1=$(date +%s.%N)
	new=$(cli volume inspect rebuild -o json | python3 -c 'import json,sys; print(",".join(r["node"] for r in json.load(sys.stdin)["replicas"] if r["node"] != "b1"))')
	logged=$(grep -h 'volume=rebuild ' "$DIR/b1/node.log" || true)
	cli volume delete rebuild >/dev/null
	# The peer, on the same filesystem, with as much data.
	src=$DIR/peer-src.img
	dst=$DIR/peer-dst.img
	fio --name=fill --ioengine=psync --filename="$src" --rw=write --bs=1m --size="${REBUILD_GIB}g" \
		--output="$OUT/peer-fill.txt" >/dev/null
	sync
	nbdkit --exit-with-parent -f -i 127.0.0.1 -p "$NBDKIT_PORT" file "$src" &
	PIDS+=($!)
	for _ in $(seq 1 100); do nbdinfo --size "nbd://127.0.0.1:$NBDKIT_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
	t2=$(date +%s.%N)
	nbdcopy "nbd://127.0.0.1:$NBDKIT_PORT/" "$dst"
	sync
	t3=$(date +%s.%N)
	rm -f "$src" "$dst"
	python3 - "$bytes" "$t0" "$t1" "$t2" "$t3" "$new" <<'PY'
import sys
n, t0, t1, t2, t3 = int(sys.argv[1]), *map(float, sys.argv[2:6])
s, p = n / (1 << 20) / (t1 - t0), n / (1 << 20) / (t3 - t2)
print(f"{'':<46}{'bytes':>12}{'seconds':>9}{'MiB/s':>8}")
print(f"{'strata volume ha-update --repl 2 (b1 -> ' + sys.argv[6] + ')':<46}{n:>12}{t1 - t0:>9.1f}{s:>8.0f}")
print(f"{'nbdcopy, nbdkit file -> file, then sync':<46}{n:>12}{t3 - t2:>9.1f}{p:>8.0f}")
print(f"ratio strata/nbdcopy: {s / p:.2f}")
PY
	[ -z "$logged" ] || { echo "b1's log about it:"; echo "$logged"; }
fi

echo
if [ "$CATCHUP" = 0 ]; then
	echo "== catch-up copy ratio: skipped (CATCHUP=0)"
else
	echo "== catch-up copy ratio (go test ./test/e2e -run TestReplCatchUpCopiesOnlyWhatWasMissed; target <= 1.5)"
	# The test starts its own three nodes on 127.0.57.x.
	(cd "$ROOT" && go test ./test/e2e -run 'TestReplCatchUpCopiesOnlyWhatWasMissed$' -count=1 -v 2>&1) |
		grep -E "written while r3 was out|SKIP|^(--- |ok|FAIL)" | sed 's/^ *//' || true
fi
