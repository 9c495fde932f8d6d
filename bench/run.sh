#!/usr/bin/env bash
# Runs every benchmark in turn and prints their tables. Results are recorded
# by hand in docs/benchmarks.md with the date and the machine.
set -euo pipefail
cd "$(dirname "$0")"
echo "== fio: Strata vs nbdkit vs plain file"; ./fio.sh
echo; echo "== snapshot and clone time"; ./snapclone.sh
echo; echo "== extent index memory"; (cd .. && go run ./bench/indexmem)
echo; echo "== QoS: production with four throttled clones"; ./qos.sh
