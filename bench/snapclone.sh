#!/usr/bin/env bash
# Snapshot and clone time of a volume holding 4 GiB of 4 KiB random writes,
# against an empty volume of the same size. Each figure is the median of
# ROUNDS REST calls timed by curl (the call returns once the snapshot or the
# clone exists and the clone is open, ready for I/O), after the fill has been
# written back (sync).
#
#   bench/snapclone.sh      (WRITE=4g ROUNDS=7 by default)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need fio curl python3

WRITE=${WRITE:-4g}
ROUNDS=${ROUNDS:-7}
rm -rf "$BENCH_DIR" && mkdir -p "$BENCH_DIR"
start_node "$BENCH_DIR/node"
TOKEN=$(sed -n 's/^token: *//p' "$XDG_CONFIG_HOME/strata/config.yaml" | tr -d '"')

"$STRATA" volume create empty --size 8GiB >/dev/null
"$STRATA" volume create full --size 8GiB >/dev/null
echo "writing $WRITE of 4 KiB random writes to 'full' through NBD..." >&2
fio --name=fill --ioengine=nbd --uri="nbd://$BENCH_NBD/full" --rw=randwrite --bs=4k \
	--iodepth=32 --size=8g --io_size="$WRITE" --norandommap --randrepeat=0 \
	--output="$BENCH_DIR/fill.txt" >/dev/null
"$STRATA" volume inspect full >&2
# Let writeback of the fill finish: on ext4 (data=ordered) the first fsync
# after it would otherwise pay for flushing gigabytes of dirty pages, whatever
# volume it belongs to.
sync

call() { # call METHOD PATH BODY -> seconds
	curl -sS -o /dev/null -w '%{time_total}\n' -X "$1" -H "Authorization: Bearer $TOKEN" \
		-H 'Content-Type: application/json' --data "$3" "http://$BENCH_API$2"
}

results=()
for vol in empty full; do
	snaps=() clones=()
	for i in $(seq 1 "$ROUNDS"); do
		snaps+=("$(call POST "/v1/volumes/$vol/snapshots" "{\"name\":\"s$i\"}")")
		clones+=("$(call POST "/v1/volumes:clone" "{\"source\":\"$vol@s$i\",\"name\":\"$vol-c$i\"}")")
	done
	results+=("$vol ${snaps[*]} | ${clones[*]}")
done
"$STRATA" volume inspect full-c1 >&2

printf '%s\n' "${results[@]}" >"$BENCH_DIR/times.txt"
python3 - "$BENCH_DIR/times.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rest = line.split(" ", 1)
    s, c = rest.split("|")
    ms = lambda xs: statistics.median(float(x) for x in xs.split()) * 1000
    rows[name] = (ms(s), ms(c))
label = {"empty": "empty 8 GiB", "full": "8 GiB, 4 GiB random 4 KiB"}
print(f"{'volume':<28}{'snapshot ms':>14}{'clone ms':>12}")
for name, (s, c) in rows.items():
    print(f"{label[name]:<28}{s:>14.1f}{c:>12.1f}")
print(f"{'full/empty ratio':<28}{rows['full'][0]/rows['empty'][0]:>14.2f}{rows['full'][1]/rows['empty'][1]:>12.2f}")
PY
