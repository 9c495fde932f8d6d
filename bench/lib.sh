# Shared helpers of the benchmark scripts: start a Strata node on ports of its
# own under a scratch directory, and stop it when the script exits.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA=${STRATA:-$ROOT/bin/strata}
BENCH_DIR=${BENCH_DIR:-$ROOT/.run/bench}
BENCH_API=${BENCH_API:-127.0.0.1:7520}
BENCH_NBD=${BENCH_NBD:-127.0.0.1:10909}
BENCH_ETCD_CLIENT=${BENCH_ETCD_CLIENT:-127.0.0.1:7521}
BENCH_ETCD_PEER=${BENCH_ETCD_PEER:-127.0.0.1:7522}

need() {
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || { echo "bench: $c is missing (make test-deps installs it)" >&2; exit 1; }
	done
}

# start_node DIR: start `strata up` with its data in DIR and wait for its API.
start_node() {
	local dir=$1
	mkdir -p "$dir"
	XDG_CONFIG_HOME=$dir/config "$STRATA" up --data-dir "$dir/data" \
		--api-addr "$BENCH_API" --nbd-addr "$BENCH_NBD" \
		--etcd-client-url "http://$BENCH_ETCD_CLIENT" --etcd-peer-url "http://$BENCH_ETCD_PEER" \
		>"$dir/node.log" 2>&1 &
	NODE_PID=$!
	trap stop_node EXIT
	export XDG_CONFIG_HOME=$dir/config
	export STRATA_API=$BENCH_API
	for _ in $(seq 1 300); do
		"$STRATA" status >/dev/null 2>&1 && return 0
		kill -0 "$NODE_PID" 2>/dev/null || { echo "bench: strata up exited:" >&2; tail -20 "$dir/node.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "bench: strata up did not answer in 30 s" >&2
	tail -20 "$dir/node.log" >&2
	exit 1
}

stop_node() {
	[ -n "${NODE_PID:-}" ] || return 0
	kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
	NODE_PID=
}
