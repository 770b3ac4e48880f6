#!/usr/bin/env bash
# Reproduces the server comparison in docs/benchmarks.md: examples/longpoll
# (cometkit, serving with detaching) against bench/naive, driven by
# cmd/cometload with the same load, one after the other, on this machine;
# the server pinned to one core and the load generator to another (taskset).
# For each size, each server is started afresh and measured in two phases:
#   fanout: every subscriber waiting, then 10 single broadcasts, each once
#           all have re-polled: memory per held request (RSS loaded − idle),
#           fan-out time p50/p99, CPU per delivery;
#   steady: a publish every 200 ms for 20 s, clients re-polling with since=:
#           delivered fraction, latency p99, CPU per delivery.
# After each phase, with every client waiting again, the RSS per client
# (after − idle); at the end of the steady phase the server gets SIGQUIT and
# its goroutines are counted from the stacks it prints.
# HTTP/1.1 at 1k, 10k and 19k held (a process may hold 20,000 files), and
# h2c at 100k (HTTP/2, 250 streams per connection). Writes
# bench/results/{results.jsonl,table.md,plot.dat} and docs/img/benchmarks.png.
#
# Each server is measured REPEAT times, the repetitions interleaved (the
# machine's load drifts); the table has the medians.
#
#   bench/run.sh                      # the whole run: an hour and a half
#   SIZES="1000" H2C_SIZES="" REPEAT=1 bench/run.sh   # a quick look
#   OUT=bench/results/other PLOT=docs/img/other.png bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES-"1000 10000 19000"}
H2C_SIZES=${H2C_SIZES-"100000"}
ROUNDS=${ROUNDS:-10}
STEADY=${STEADY:-20s}
REPEAT=${REPEAT:-3}
OUT=${OUT:-bench/results}
PLOT=${PLOT:-docs/img/benchmarks.png}
BIN=$(mktemp -d)
server_pid=""
trap 'if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi; rm -rf "$BIN"' EXIT

if ! command -v gnuplot >/dev/null; then
	echo "run.sh: installing gnuplot (Debian package) for the plot" >&2
	sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get install -y -qq gnuplot-nox >/dev/null
fi
go build -o "$BIN/" ./examples/longpoll ./bench/naive ./cmd/cometload ./bench/report
mkdir -p "$OUT" "$(dirname "$PLOT")"
: >"$OUT/results.jsonl"
# One core for the server, another for the load generator, where there are two.
SERVER_CPU=() LOAD_CPU=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then SERVER_CPU=(taskset -c 0) LOAD_CPU=(taskset -c 1); fi

# measure SERVER N TRANSPORT: one fresh server, both phases.
measure() {
	local server=$1 n=$2 transport=$3 port=9370 args=()
	# Clients wait up to 60 s, so none times out during a phase. The queue
	# holds every re-poll of a broadcast to all (see docs/operations.md).
	local stacks="$BIN/stacks"
	case $server in
	cometkit) "${SERVER_CPU[@]}" "$BIN/longpoll" -addr 127.0.0.1:$port -timeout 60s -queue "$n" 2>"$stacks" & ;;
	naive) "${SERVER_CPU[@]}" "$BIN/naive" -addr 127.0.0.1:$port -timeout 60s 2>"$stacks" & ;;
	esac
	local pid=$!
	server_pid=$pid
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
	local load=(-target http://127.0.0.1:$port -n "$n" -pid "$pid" -quiet -warmup 3m -grace 90s)
	if [ "$transport" = h2c ]; then load+=(-h2c); else load+=(-source-ips 4); fi
	# Time for the server to hold the last re-polls once the clients have
	# sent them: more for more clients.
	local settle=$((200 + n / 100))ms
	for phase in fanout steady; do
		local goroutines=0
		if [ $phase = fanout ]; then args=(-rounds "$ROUNDS" -settle "$settle"); else args=(-rate 5 -duration "$STEADY" -settle "$settle" -sigquit); fi
		echo "run.sh: $server, $n over $transport, $phase" >&2
		line=$("${LOAD_CPU[@]}" "$BIN/cometload" "${load[@]}" "${args[@]}" | tail -1)
		if [ $phase = steady ]; then
			wait "$pid" 2>/dev/null || true # dead of the SIGQUIT, its goroutines printed
			goroutines=$(grep -c '^goroutine [0-9]' "$stacks" || true)
		fi
		echo "{\"server\":\"$server\",\"phase\":\"$phase\",\"transport\":\"$transport\",\"goroutines\":$goroutines,\"result\":$line}" >>"$OUT/results.jsonl"
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	server_pid=""
}

for _ in $(seq "$REPEAT"); do
	for n in $SIZES; do for s in cometkit naive; do measure $s "$n" http1; done; done
	for n in $H2C_SIZES; do for s in cometkit naive; do measure $s "$n" h2c; done; done
done

"$BIN/report" -in "$OUT/results.jsonl" -out "$OUT"
gnuplot -c bench/plot.gp "$OUT/plot.dat" "$PLOT"
cat "$OUT/table.md"
