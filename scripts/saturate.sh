#!/usr/bin/env bash
# Saturated throughput on one core: Go rpcx's server (interop/go cmd/server,
# GOMAXPROCS=1) and our arith_server on tokio, smol and std (--threads 1), each pinned
# to core $SERVER_CPU (default 0), driven as hard as one load-generator core
# ($BENCH_CPU, default 1) can: `rpcx bench` Arith.Mul msgpack, closed loop, no per-call
# timeout (`-t 0s`: no `__ServerTimeout`, so Go's server makes no timer per call, as
# with Go's own load client), at each LOAD (c/conns, default 100/1 1000/4). Go's server
# is also driven by Go's load client (interop/go cmd/bench), and the best of Go's rows
# is the reference of the ratio column.
#
# Printed per run: calls/s, p99, the server's CPU per call and how busy its core was
# (utime+stime over the window / the window: 100% means the server was the limit) and
# how busy the load generator was over its whole run (task-clock / elapsed, from
# `perf stat`: near 100% means the client was the limit, so the server's figure is a
# lower bound of what it can serve).
#
# Usage: scripts/saturate.sh [SECONDS] [LOADS...]     (defaults 3 100/1 1000/4)
#   SERVERS="go tokio smol std"   which servers (go is always run first).
# Needs go, cargo, perf, taskset, python3. CARGO_TARGET_DIR is honoured. Exits non-zero
# if a build fails, a server does not start or dies, or a run reports errors.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

secs="${1:-3}"
shift || true
loads=("$@")
((${#loads[@]})) || loads=(100/1 1000/4)
warmup="${WARMUP:-1}"
server_cpu="${SERVER_CPU:-0}"
bench_cpu="${BENCH_CPU:-1}"
servers="${SERVERS:-go tokio smol std}"
target="${CARGO_TARGET_DIR:-$root/target}"

die() {
    echo "saturate: $*" >&2
    exit 1
}
log() { echo "saturate: $*" >&2; }

for tool in go cargo perf taskset python3 timeout getconf; do
    command -v "$tool" >/dev/null || die "$tool not found (perf is Debian's linux-perf)"
done
[[ "$secs" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SECONDS '$secs' is not a number"
for l in "${loads[@]}"; do
    [[ "$l" =~ ^[0-9]+/[0-9]+$ ]] || die "LOAD '$l': want CONCURRENCY/CONNS, e.g. 1000/4"
done
clk_tck="$(getconf CLK_TCK)"

# shellcheck source=scripts/pinned-server.sh
source "$root/scripts/pinned-server.sh"
tmp="$(mktemp -d /tmp/saturate.XXXXXX)"
cleanup() {
    stop_pinned_server
    rm -rf "$tmp"
}
trap cleanup EXIT

log "building the Go server and load client"
(cd interop/go && GONOSUMDB="${GONOSUMDB:-github.com/rpcxio/*}" timeout 900 go build -o "$tmp/bin/" ./cmd/server ./cmd/bench) ||
    die "go build failed"
log "building rpcx and the arith_servers (CARGO_TARGET_DIR=$target)"
timeout 2400 cargo build -q --release -p rpcx-cli || die "cargo build -p rpcx-cli failed"
cp "$target/release/rpcx" "$tmp/bin/rpcx"
for s in $servers; do
    [[ "$s" == go ]] && continue
    timeout 2400 cargo build -q --release -p "rpcx-$s" --example arith_server || die "build of rpcx-$s arith_server failed"
    cp "$target/release/examples/arith_server" "$tmp/bin/arith_$s"
done

start_server() { # name
    local bin="$tmp/bin/arith_$1"
    [[ "$1" == go ]] && bin="$tmp/bin/server"
    start_pinned_server "$1" "$bin" "$tmp/$1.server" 1
    addr="$server_addr"
}


rows="$tmp/rows"
: >"$rows"
run() { # server client c conns
    local name="$1" client="$2" c="$3" conns="$4" json="$tmp/run.json" stat="$tmp/run.stat"
    local bound=$((${secs%.*} + ${warmup%.*} + 60))
    if [[ "$client" == rpcx ]]; then
        timeout "$bound" perf stat -x, -e task-clock -o "$stat" taskset -c "$bench_cpu" "$tmp/bin/rpcx" bench "$addr" \
            Arith.Mul -c "$c" --conns "$conns" -d "${secs}s" --warmup "${warmup}s" -t 0s --json --pid "$server_pid" \
            >"$json" 2>"$json.err" || die "$name/$client c=$c conns=$conns failed: $(cat "$json.err")"
    else
        timeout "$bound" perf stat -x, -e task-clock -o "$stat" taskset -c "$bench_cpu" "$tmp/bin/bench" -addr "$addr" \
            -c "$c" -conns "$conns" -d "${secs}s" -warmup "${warmup}s" -pid "$server_pid" \
            >"$json" 2>"$json.err" || die "$name/$client c=$c conns=$conns failed: $(cat "$json.err")"
    fi
    kill -0 "$server_pid" 2>/dev/null || die "$name died during c=$c conns=$conns"
    python3 - "$json" "$stat" "$name" "$client" "$c" "$conns" "$secs" "$clk_tck" >>"$rows" <<'EOF'
import json, sys
j, stat, name, client, c, conns, secs, tck = sys.argv[1:]
d = json.load(open(j))
if d.get("errors", 0):
    sys.exit(f"{name}/{client}: {d['errors']} errors")
clock = None
for line in open(stat):
    f = line.strip().split(",")
    if len(f) > 2 and f[2].startswith("task-clock"):
        clock = float(f[0])
calls = d["calls"]
ticks = d.get("server_ticks", -1)
window = float(secs)
server_busy = ticks / float(tck) / window if ticks >= 0 else float("nan")
server_us = ticks / float(tck) * 1e6 / calls if calls and ticks >= 0 else float("nan")
print(name, client, c, conns, round(d["calls_per_s"]), round(d["p99_us"]), f"{server_us:.2f}", f"{server_busy:.2f}", f"{clock or 0:.1f}")
EOF
}

for s in go $servers; do
    [[ "$s" == go && -s "$rows" ]] && continue
    start_server "$s"
    log "$s: pid $server_pid on core $server_cpu, $addr"
    for l in "${loads[@]}"; do
        c="${l%/*}"
        n="${l#*/}"
        start=$(date +%s.%N)
        run "$s" rpcx "$c" "$n"
        # The client's busy share: task-clock over the wall time of its run.
        end=$(date +%s.%N)
        sed -i "\$s/\$/ $(python3 -c "print(f'{$end - $start:.3f}')")/" "$rows"
        if [[ "$s" == go ]]; then
            start=$(date +%s.%N)
            run "$s" go "$c" "$n"
            end=$(date +%s.%N)
            sed -i "\$s/\$/ $(python3 -c "print(f'{$end - $start:.3f}')")/" "$rows"
        fi
    done
    stop_pinned_server
done

echo "saturated throughput; server on core $server_cpu (1 thread), load generator on core $bench_cpu; ${secs}s window after ${warmup}s warm-up; Arith.Mul msgpack, no per-call timeout"
python3 - "$rows" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
best_go = max(float(r[4]) for r in rows if r[0] == "go")
print(f"{'server':8} {'client':7} {'c':>5} {'conns':>5} {'calls/s':>9} {'p99 us':>8} {'srv us/call':>11} {'srv busy':>8} {'client busy':>11} {'x go best':>9}")
for name, client, c, conns, rate, p99, us, busy, clock, wall in rows:
    cbusy = float(clock) / 1000.0 / float(wall)
    print(f"{name:8} {client:7} {c:>5} {conns:>5} {float(rate):>9.0f} {p99:>8} {us:>11} {float(busy)*100:>7.0f}% {cbusy*100:>10.0f}% {float(rate)/best_go:>9.2f}")
print(f"x go best: calls/s over the best of Go's server's rows ({best_go:.0f} calls/s)")
EOF
