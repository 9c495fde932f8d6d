#!/usr/bin/env bash
# fio through its nbd engine against a Strata export and against nbdkit's
# file plugin serving a file in the same directory, and fio on a plain file
# there (the limit). Prints a table of IOPS / MiB/s and the Strata/nbdkit ratios.
#
#   bench/fio.sh            (SIZE=1g RUNTIME=15 by default)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need fio nbdkit python3

SIZE=${SIZE:-1g}
RUNTIME=${RUNTIME:-15}
NBDKIT_PORT=${NBDKIT_PORT:-10910}
OUT=$BENCH_DIR/fio
rm -rf "$BENCH_DIR" && mkdir -p "$OUT"

start_node "$BENCH_DIR/node"
"$STRATA" volume create fio --size "$SIZE" >/dev/null
POOL=$BENCH_DIR/node/data/pool

truncate -s "$SIZE" "$POOL/nbdkit.img"
nbdkit --exit-with-parent -f -i 127.0.0.1 -p "$NBDKIT_PORT" file "$POOL/nbdkit.img" &
NBDKIT_PID=$!
trap 'kill $NBDKIT_PID 2>/dev/null; stop_node' EXIT
truncate -s "$SIZE" "$POOL/plain.img"

JOBS="seqwrite-1m:write:1m randwrite-4k:randwrite:4k randread-4k:randread:4k seqread-1m:read:1m"

run() { # run TARGET JOB RW BS ENGINE-ARGS...
	local target=$1 job=$2 rw=$3 bs=$4; shift 4
	fio --name="$job" --rw="$rw" --bs="$bs" --iodepth=32 --size="$SIZE" \
		--time_based --runtime="$RUNTIME" --ramp_time=2 --norandommap --randrepeat=0 \
		--output-format=json --output="$OUT/$target-$job.json" "$@" >/dev/null
}

for target in strata nbdkit file; do
	case $target in
	strata) args=(--ioengine=nbd --uri="nbd://$BENCH_NBD/fio") ;;
	nbdkit) args=(--ioengine=nbd --uri="nbd://127.0.0.1:$NBDKIT_PORT/") ;;
	file) args=(--ioengine=io_uring --filename="$POOL/plain.img") ;;
	esac
	# Fill the whole device first so reads find data everywhere (not measured).
	fio --name=fill --rw=write --bs=1m --iodepth=8 --size="$SIZE" --output="$OUT/$target-fill.txt" "${args[@]}" >/dev/null
	for j in $JOBS; do
		IFS=: read -r job rw bs <<<"$j"
		run "$target" "$job" "$rw" "$bs" "${args[@]}"
	done
done

python3 - "$OUT" $JOBS <<'PY'
import json, sys
out, jobs = sys.argv[1], [j.split(":")[0] for j in sys.argv[2:]]
def load(target, job):
    d = json.load(open(f"{out}/{target}-{job}.json"))["jobs"][0]
    side = d["write"] if d["write"]["io_bytes"] else d["read"]
    return side["iops"], side["bw"] / 1024.0
print(f"{'job':<14}{'strata':>18}{'nbdkit':>18}{'plain file':>18}{'strata/nbdkit':>15}{'strata/file':>13}")
for job in jobs:
    s, n, f = load("strata", job), load("nbdkit", job), load("file", job)
    cell = lambda v: f"{v[0]:>9.0f} {v[1]:>6.0f}M/s"
    print(f"{job:<14}{cell(s):>18}{cell(n):>18}{cell(f):>18}{s[0]/n[0]:>15.2f}{s[0]/f[0]:>13.2f}")
PY
