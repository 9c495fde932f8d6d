#!/usr/bin/env bash
# fio through its nbd engine against a Strata export and against nbdkit's
# file plugin serving a file in the same directory, and fio on a plain file
# there (the limit). Prints a table of IOPS / MiB/s and the Strata/nbdkit ratios.
#
#   bench/fio.sh            (SIZE=1g RUNTIME=15 ROUNDS=3 by default)
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
ROUNDS=${ROUNDS:-3}

args_of() { # args_of TARGET: fio's engine arguments for a target
	case $1 in
	strata) echo "--ioengine=nbd --uri=nbd://$BENCH_NBD/fio" ;;
	nbdkit) echo "--ioengine=nbd --uri=nbd://127.0.0.1:$NBDKIT_PORT/" ;;
	file) echo "--ioengine=io_uring --filename=$POOL/plain.img" ;;
	esac
}

# Fill every target first so reads find data everywhere (not measured).
for target in strata nbdkit file; do
	# shellcheck disable=SC2046
	fio --name=fill --rw=write --bs=1m --iodepth=8 --size="$SIZE" --output="$OUT/$target-fill.txt" $(args_of $target) >/dev/null
done

# Each round runs every job on the three targets back to back, so that a
# load that changes during the run (these machines are shared) weighs on
# Strata and its peers alike; the table gives the median over the rounds.
for round in $(seq 1 "$ROUNDS"); do
	for j in $JOBS; do
		IFS=: read -r job rw bs <<<"$j"
		for target in strata nbdkit file; do
			# shellcheck disable=SC2046
			fio --name="$job" --rw="$rw" --bs="$bs" --iodepth=32 --size="$SIZE" \
				--time_based --runtime="$RUNTIME" --ramp_time=2 --norandommap --randrepeat=0 \
				--output-format=json --output="$OUT/$target-$job-$round.json" $(args_of $target) >/dev/null
		done
	done
done

python3 - "$OUT" "$ROUNDS" $JOBS <<'PY'
import json, statistics, sys
out, rounds, jobs = sys.argv[1], int(sys.argv[2]), [j.split(":")[0] for j in sys.argv[3:]]
def load(target, job, r):
    d = json.load(open(f"{out}/{target}-{job}-{r}.json"))["jobs"][0]
    side = d["write"] if d["write"]["io_bytes"] else d["read"]
    return side["iops"], side["bw"] / 1024.0
med = statistics.median
print(f"median of {rounds} rounds (IOPS, MiB/s); ratios are medians of the per-round ratios, min-max in brackets")
print(f"{'job':<14}{'strata':>18}{'nbdkit':>18}{'plain file':>18}{'strata/nbdkit':>22}{'strata/file':>13}")
for job in jobs:
    runs = {t: [load(t, job, r) for r in range(1, rounds + 1)] for t in ("strata", "nbdkit", "file")}
    cell = lambda t: f"{med(v[0] for v in runs[t]):>9.0f} {med(v[1] for v in runs[t]):>6.0f}M/s"
    rn = [s[0] / n[0] for s, n in zip(runs["strata"], runs["nbdkit"])]
    rf = [s[0] / f[0] for s, f in zip(runs["strata"], runs["file"])]
    spread = f"{med(rn):.2f} [{min(rn):.2f}-{max(rn):.2f}]"
    print(f"{job:<14}{cell('strata'):>18}{cell('nbdkit'):>18}{cell('file'):>18}{spread:>22}{med(rf):>13.2f}")
PY
