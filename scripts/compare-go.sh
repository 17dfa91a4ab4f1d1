#!/usr/bin/env bash
# Go's rpcx server (interop/go cmd/server, smallnest/rpcx v1.9.4) and ours on tokio
# (`rpcx serve`) side by side, under the same loads from two load generators:
#   * `rpcx bench` Echo.Raw with rpcx-benchmark's 581-byte protobuf BenchmarkMessage
#     (sent as raw bytes, echoed back) and Arith.Mul in msgpack;
#   * Go's closed-loop load client (interop/go cmd/bench), Arith.Mul in msgpack.
# Prints, per load and server: calls/s, p99, the server's CPU per call (utime+stime
# from /proc/PID/stat over the measured window, divided by the calls completed in it)
# and each figure's ratio to Go's server; then each server's memory per idle
# connection (RSS growth over IDLE_CONNS connections that made one call each, measured
# on the fresh server before any load).
#
# The server runs on core $SERVER_CPU (default 0) with $THREADS threads (default 1:
# GOMAXPROCS / TOKIO_WORKER_THREADS), the load generator on core $BENCH_CPU (default 1).
# Every run has a warm-up of $WARMUP seconds (default 1) before its window.
#
# Usage: scripts/compare-go.sh [SECONDS] [CONCURRENCY] [CONNS] [IDLE_CONNS]   (defaults 3 100 4 1000)
# Needs go, cargo, python3, taskset. CARGO_TARGET_DIR is honoured. Exits non-zero if a
# build fails, a server does not start, or a load run reports an error.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

secs="${1:-3}"
conc="${2:-100}"
conns="${3:-4}"
idle="${4:-1000}"
warmup="${WARMUP:-1}"
threads="${THREADS:-1}"
server_cpu="${SERVER_CPU:-0}"
bench_cpu="${BENCH_CPU:-1}"
target="${CARGO_TARGET_DIR:-$root/target}"

die() {
    echo "compare-go: $*" >&2
    exit 1
}
log() { echo "compare-go: $*" >&2; }

for tool in go cargo python3 taskset timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ "$secs" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SECONDS '$secs' is not a number"
[[ "$warmup" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "WARMUP '$warmup' is not a number"
[[ "$conc" =~ ^[0-9]+$ && "$conns" =~ ^[0-9]+$ && "$idle" =~ ^[0-9]+$ ]] || die "CONCURRENCY, CONNS, IDLE_CONNS: whole numbers"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$out"
}
trap cleanup EXIT

log "building the Go server and load client"
(cd interop/go && GONOSUMDB="${GONOSUMDB:-github.com/rpcxio/*}" timeout 900 go build -o "$out/" ./cmd/server ./cmd/bench) ||
    die "go build failed"
log "building rpcx (release)"
timeout 2400 cargo build -q --release -p rpcx-cli || die "cargo build failed"
rpcx="$target/release/rpcx"
[[ -x "$rpcx" ]] || die "$rpcx not found"

# start_server NAME: sets server_pid and addr (host:port).
start_server() {
    local name="$1"
    case "$name" in
        go) GOMAXPROCS="$threads" taskset -c "$server_cpu" "$out/server" -addr 127.0.0.1:0 >"$out/$name.out" 2>"$out/$name.err" & ;;
        tokio) taskset -c "$server_cpu" "$rpcx" serve --threads "$threads" --addr tcp@127.0.0.1:0 \
            >"$out/$name.out" 2>"$out/$name.err" & ;;
    esac
    server_pid=$!
    addr=""
    for _ in $(seq 100); do
        addr="$(sed -n -e 's/^LISTENING //p' -e 's/^listening on tcp@//p' "$out/$name.out" | head -n1)"
        [[ -n "$addr" ]] && break
        kill -0 "$server_pid" 2>/dev/null || die "$name server died: $(cat "$out/$name.err")"
        sleep 0.1
    done
    [[ -n "$addr" ]] || die "$name server printed no address"
    log "$name server pid $server_pid on $addr"
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# Memory per idle connection: RSS before and after IDLE_CONNS connections that each
# made one Arith.Mul call (Go vector V2) and then stay open, idle.
idle_memory() { # name
    python3 - "$addr" "$server_pid" "$idle" >"$out/$1.idle.json" <<'EOF'
import json, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
pid, n = int(sys.argv[2]), int(sys.argv[3])
req = bytes.fromhex("0800003000000000000000000000001f000000054172697468000000034d756c000000000000000782a1410aa14214")
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def read_exact(s, k):
    b = b""
    while len(b) < k:
        chunk = s.recv(k - len(b))
        if not chunk:
            raise SystemExit("server closed a connection")
        b += chunk
    return b
time.sleep(0.5)
before = rss_kib()
socks = []
for _ in range(n):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(req)
    head = read_exact(s, 16)
    read_exact(s, int.from_bytes(head[12:16], "big"))
    socks.append(s)
time.sleep(1.0)
after = rss_kib()
print(json.dumps({"conns": n, "rss_before_kib": before, "rss_after_kib": after,
                  "bytes_per_conn": (after - before) * 1024 / n}))
for s in socks:
    s.close()
EOF
}

run_loads() { # name
    local name="$1"
    local common=(-c "$conc" --conns "$conns" -d "${secs}s" --warmup "${warmup}s" --pid "$server_pid" --json)
    timeout 600 taskset -c "$bench_cpu" "$rpcx" bench "$addr" Echo.Raw --bench-message "${common[@]}" \
        >"$out/$name.rpcx-echo581.json" || die "rpcx bench Echo.Raw against $name failed"
    timeout 600 taskset -c "$bench_cpu" "$rpcx" bench "$addr" Arith.Mul -s msgpack "${common[@]}" \
        >"$out/$name.rpcx-mul.json" || die "rpcx bench Arith.Mul against $name failed"
    timeout 600 taskset -c "$bench_cpu" "$out/bench" -addr "$addr" -conns "$conns" -c "$conc" -d "${secs}s" \
        -warmup "${warmup}s" -method Arith.Mul -serialize msgpack -pid "$server_pid" \
        >"$out/$name.go-mul.json" || die "Go bench against $name failed"
}

for name in go tokio; do
    start_server "$name"
    idle_memory "$name"
    run_loads "$name"
    stop_server
done

python3 - "$out" "$secs" "$conc" "$conns" "$threads" <<'EOF'
import json, os, sys
out, secs, conc, conns, threads = sys.argv[1:6]
HZ = os.sysconf("SC_CLK_TCK")
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.loads(f.read().strip().splitlines()[-1])
loads = [("rpcx bench  Echo.Raw 581 B proto", "rpcx-echo581"),
         ("rpcx bench  Arith.Mul msgpack", "rpcx-mul"),
         ("Go bench    Arith.Mul msgpack", "go-mul")]
print(f"closed loop, {conc} callers over {conns} conns, {secs} s per run; server {threads} thread(s) on its own core")
print(f"{'load':34} {'server':6} {'calls/s':>9} {'p99':>9} {'cpu/call':>9} | {'x calls/s':>9} {'x p99':>6} {'x cpu':>6}")
for label, key in loads:
    rows = {}
    for srv in ("go", "tokio"):
        r = load(f"{srv}.{key}.json")
        calls = r["calls"]
        cps = r["calls_per_s"]
        p99 = r["p99_us"]
        ticks = r.get("server_ticks") or 0
        cpu = ticks / HZ * 1e6 / calls if calls else float("nan")
        rows[srv] = (cps, p99, cpu)
    for srv in ("go", "tokio"):
        cps, p99, cpu = rows[srv]
        g = rows["go"]
        print(f"{label if srv == 'go' else '':34} {srv:6} {cps:9.0f} {p99:7.0f}us {cpu:7.2f}us | "
              f"{cps / g[0]:9.2f} {p99 / g[1]:6.2f} {cpu / g[2] if g[2] else float('nan'):6.2f}")
print()
print(f"{'idle connections':34} {'server':6} {'bytes/conn':>10} | {'x':>6}")
idle = {srv: load(f"{srv}.idle.json") for srv in ("go", "tokio")}
for srv in ("go", "tokio"):
    b = idle[srv]["bytes_per_conn"]
    g = idle["go"]["bytes_per_conn"]
    label = f"{idle[srv]['conns']} conns, one call each" if srv == "go" else ""
    print(f"{label:34} {srv:6} {b:10.0f} | {b / g if g else float('nan'):6.2f}")
EOF
