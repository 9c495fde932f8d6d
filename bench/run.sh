#!/usr/bin/env bash
# Runs every benchmark in turn and prints their tables. Results are recorded
# by hand in docs/benchmarks.md with the date and the machine.
set -euo pipefail
cd "$(dirname "$0")"
echo "== fio: Strata vs nbdkit vs plain file"; ./fio.sh
echo; echo "== snapshot and clone time"; ./snapclone.sh
echo; echo "== extent index memory"; (cd .. && go run ./bench/indexmem)
echo; echo "== QoS: production with four throttled clones"; ./qos.sh
echo; echo "== replication: repl 1, 2 and 3 on three local nodes, rebuild, catch-up"; ./repl.sh

# clonetime_skipped says why bench/clonetime.sh cannot run here, or nothing:
# it needs root and PostgreSQL's server binaries (the newest
# /usr/lib/postgresql/VERSION/bin, pgbench included), as the script checks.
clonetime_skipped() {
	if [ "$(id -u)" != 0 ]; then
		echo "it needs root (loop devices, FUSE, PostgreSQL started as its own user): run make bench as root"
		return
	fi
	local bin
	bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1) || true
	if [ -z "$bin" ] || [ ! -x "$bin/postgres" ] || [ ! -x "$bin/pgbench" ]; then
		echo "PostgreSQL's server binaries are missing (/usr/lib/postgresql/VERSION/bin/postgres and pgbench; make test-deps installs them)"
	fi
}
echo; echo "== clone time of masked PostgreSQL templates"
why=$(clonetime_skipped)
if [ -n "$why" ]; then
	echo "skipped: bench/clonetime.sh: $why"
else
	./clonetime.sh
fi
