#!/usr/bin/env bash
# Where a call's CPU goes, user space or kernel, on the server or on the client: per
# call, the watched process's system calls and context switches (`perf stat`
# raw_syscalls:sys_enter and context-switches) and its user and system CPU time
# (utime and stime from /proc/PID/stat), over a 2 s sample in the middle of a 4 s
# closed-loop run of Arith.Mul msgpack. Server on core $SERVER_CPU (default 0, one
# thread), load generator on core $BENCH_CPU (default 1).
#
# Usage: scripts/kernel-share.sh server SERVER LOADGEN C CONNS
#        scripts/kernel-share.sh client CLIENT SERVER C CONNS
#   SERVER: go | tokio | smol | std     LOADGEN, CLIENT: go (interop/go cmd/bench) | rpcx
#   e.g. `scripts/kernel-share.sh server tokio go 100 1` (our tokio server under Go's
#   load client) or `scripts/kernel-share.sh client rpcx go 1000 4` (`rpcx bench`
#   against Go's server). `rpcx bench` runs with `-t 0s` (no `__ServerTimeout`, as
#   Go's load client).
# Needs go, cargo, perf, taskset, python3. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
(($# == 5)) || {
    sed -n '2,17p' "$0" >&2
    exit 2
}
side="$1" who="$2" other="$3" c="$4" conns="$5"
server_cpu="${SERVER_CPU:-0}"
bench_cpu="${BENCH_CPU:-1}"
target="${CARGO_TARGET_DIR:-$root/target}"
die() {
    echo "kernel-share: $*" >&2
    exit 1
}
case "$side" in
server) server="$who" loadgen="$other" ;;
client) server="$other" loadgen="$who" ;;
*) die "first argument: server or client" ;;
esac
[[ "$server" =~ ^(go|tokio|smol|std)$ ]] || die "server '$server': go, tokio, smol or std"
[[ "$loadgen" =~ ^(go|rpcx)$ ]] || die "load generator '$loadgen': go or rpcx"
[[ "$c" =~ ^[0-9]+$ && "$conns" =~ ^[0-9]+$ ]] || die "C and CONNS: whole numbers"
for tool in go cargo perf taskset python3 timeout getconf; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
tck="$(getconf CLK_TCK)"

tmp="$(mktemp -d /tmp/kernel-share.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

(cd interop/go && GONOSUMDB="${GONOSUMDB:-github.com/rpcxio/*}" timeout 900 go build -o "$tmp/" ./cmd/server ./cmd/bench) ||
    die "go build failed"
if [[ "$server" != go ]]; then
    timeout 2400 cargo build -q --release -p "rpcx-$server" --example arith_server || die "build of rpcx-$server failed"
    cp "$target/release/examples/arith_server" "$tmp/arith_server"
fi
if [[ "$loadgen" == rpcx ]]; then
    timeout 2400 cargo build -q --release -p rpcx-cli || die "build of rpcx-cli failed"
    cp "$target/release/rpcx" "$tmp/rpcx"
fi

# shellcheck source=scripts/pinned-server.sh
source "$root/scripts/pinned-server.sh"
bin="$tmp/arith_server"
[[ "$server" == go ]] && bin="$tmp/server"
start_pinned_server "$server" "$bin" "$tmp/server" 1
spid="$server_pid"
pids+=("$spid")
addr="$server_addr"

if [[ "$loadgen" == go ]]; then
    timeout 120 taskset -c "$bench_cpu" "$tmp/bench" -addr "$addr" -c "$c" -conns "$conns" -d 4s -warmup 1s \
        >"$tmp/run.json" 2>"$tmp/run.err" &
else
    timeout 120 taskset -c "$bench_cpu" "$tmp/rpcx" bench "$addr" Arith.Mul -c "$c" --conns "$conns" -d 4s \
        --warmup 1s -t 0s --json >"$tmp/run.json" 2>"$tmp/run.err" &
fi
bpid=$!
pids+=("$bpid")
sleep 2.5
# `timeout` forks the load generator (taskset execs it): watch the child.
if [[ "$side" == server ]]; then
    watch="$spid"
else
    watch="$(pgrep -P "$bpid" | head -1)"
    [[ -n "$watch" ]] || die "load generator not found"
fi
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$watch/stat")
perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$watch" -- sleep 2 2>"$tmp/stat"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$watch/stat")
wait "$bpid" || die "load run failed: $(cat "$tmp/run.err")"
python3 - "$tmp/run.json" "$tmp/stat" "$side" "$who" "$other" "$c" "$conns" "$u1" "$u0" "$s1" "$s0" "$tck" <<'EOF'
import json, sys
j, stat, side, who, other, c, conns, u1, u0, s1, s0, tck = sys.argv[1:]
d = json.load(open(j))
if d.get("errors", 0):
    sys.exit(f"kernel-share: {d['errors']} calls failed")
counts = {}
for line in open(stat):
    f = line.strip().split(",")
    if len(f) > 2:
        counts[f[2]] = float(f[0])
n = d["calls_per_s"] * 2.0
us = lambda t: float(t) * 1e6 / float(tck) / n
user, sys_ = us(int(u1) - int(u0)), us(int(s1) - int(s0))
print(f"{side} {who} ({'load ' + other if side == 'server' else 'server ' + other}) c={c} conns={conns}: "
      f"{d['calls_per_s']:.0f} calls/s, p99 {d['p99_us']:.0f} us; per call: "
      f"{counts.get('raw_syscalls:sys_enter', 0) / n:.2f} syscalls, "
      f"{counts.get('context-switches', 0) / n:.3f} context switches, "
      f"user {user:.2f} us, system {sys_:.2f} us, total {user + sys_:.2f} us")
EOF
