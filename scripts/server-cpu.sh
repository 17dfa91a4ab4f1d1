#!/usr/bin/env bash
# Server CPU per call: drive Go rpcx's server (interop/go cmd/server, GOMAXPROCS=1) and
# our arith_server on tokio, smol and std (one runtime thread, --threads 1) with the
# same Go load generator (interop/go cmd/bench, closed loop, Arith.Mul, msgpack), and
# print per server and load level: calls/s, p50/p99, the server's CPU per call in us
# (utime+stime of the server process from /proc/<pid>/stat, read by the bench at the
# start and the end of the measured window, over the calls completed in it) and its
# ratio to Go's server at the same level.
#
# The server runs on core $SERVER_CPU (default 0), the load generator on $BENCH_CPU
# (default 1), both with taskset. Each (conns, c) run has a warm-up of $WARMUP seconds
# (default 1) on the same connections before the window.
#
# Usage: scripts/server-cpu.sh [SECONDS] [LEVELS] [CONNS]        (defaults 3 1,100,1000 1,4)
#   BASE_REV=<rev>  also build tokio/smol/std arith_server at <rev> (temporary git
#                   worktree, own CARGO_TARGET_DIR under the temp dir, both removed at
#                   the end; BASE_TARGET_DIR=<dir> reuses a kept target dir instead) and
#                   add them as tokio@base, smol@base, std@base.
#   SERVERS="go tokio smol std"   which of the current servers to run (go is always run
#                   first: it is the reference of the ratio column).
#   OBSERVE="hooks trace=info"   also run each of our servers with RPCX_OBSERVE set to
#                   each of these (see rpcx_examples_common::observed: hooks, trace=FILTER,
#                   metrics), as <server>+<value>: what observing a server costs, in the
#                   same run.
#   THREADS=1       --threads for our servers (also TOKIO_WORKER_THREADS and
#                   ASYNC_GLOBAL_EXECUTOR_THREADS, so a base build without the flag is
#                   sized the same).
#   LOADGEN=rpcx    drive every server with `rpcx bench` (this tree's, Arith.Mul msgpack,
#                   `-t 0s`: no `__ServerTimeout`, as Go's load client sends none) instead
#                   of Go's load client.
#   CARGO_TARGET_DIR is honoured for the current tree's builds.
# Exits non-zero if a build fails, a server does not start (or dies), or a bench run
# reports any error. Every step is bounded by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

secs="${1:-3}"
levels="${2:-1,100,1000}"
conns_list="${3:-1,4}"
warmup="${WARMUP:-1}"
threads="${THREADS:-1}"
server_cpu="${SERVER_CPU:-0}"
bench_cpu="${BENCH_CPU:-1}"
servers="${SERVERS:-go tokio smol std}"
observe_list="${OBSERVE:-}"
base_rev="${BASE_REV:-}"
loadgen="${LOADGEN:-go}"
build_timeout="${BUILD_TIMEOUT:-2400}"
target="${CARGO_TARGET_DIR:-$root/target}"

die() {
    echo "server-cpu: $*" >&2
    exit 1
}
log() { echo "server-cpu: $*" >&2; }

for tool in taskset getconf go cargo git timeout awk; do
    command -v "$tool" >/dev/null || die "$tool not found (taskset is in util-linux)"
done
[[ "$secs" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SECONDS '$secs' is not a number"
[[ "$warmup" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "WARMUP '$warmup' is not a number"
[[ "$levels" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "LEVELS '$levels': want e.g. 1,100,1000"
[[ "$conns_list" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "CONNS '$conns_list': want e.g. 1,4"
[[ "$loadgen" == go || "$loadgen" == rpcx ]] || die "LOADGEN '$loadgen': go or rpcx"
clk_tck="$(getconf CLK_TCK)"
ncpu="$(getconf _NPROCESSORS_ONLN)"
((server_cpu < ncpu && bench_cpu < ncpu)) || die "need cores $server_cpu and $bench_cpu, have $ncpu"
taskset -c "$server_cpu" true || die "taskset -c $server_cpu does not work here"

# shellcheck source=scripts/pinned-server.sh
source "$root/scripts/pinned-server.sh"
tmp="$(mktemp -d /tmp/server-cpu.XXXXXX)"
worktree=""
cleanup() {
    stop_pinned_server
    if [[ -n "$worktree" ]]; then
        git -C "$root" worktree remove --force "$worktree" 2>/dev/null || true
        git -C "$root" worktree prune 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$tmp/bin"

# build_rust SRC_DIR TARGET_DIR CRATE DEST: one arith_server, copied away at once
# (examples of the same name in different packages overwrite each other).
build_rust() {
    local src="$1" tdir="$2" crate="$3" dest="$4"
    log "building $crate arith_server in $src (CARGO_TARGET_DIR=$tdir)"
    (cd "$src" && CARGO_TARGET_DIR="$tdir" timeout "$build_timeout" \
        cargo build -q --release -p "$crate" --example arith_server) ||
        die "build of $crate arith_server in $src failed"
    cp "$tdir/release/examples/arith_server" "$dest"
}

log "building Go server and bench"
(cd interop/go && timeout "$build_timeout" go build -o "$tmp/bin/" ./cmd/server ./cmd/bench) ||
    die "go build failed"
mv "$tmp/bin/server" "$tmp/bin/go-server"
bench="$tmp/bin/bench"
if [[ "$loadgen" == rpcx ]]; then
    log "building rpcx (the load generator)"
    (cd "$root" && CARGO_TARGET_DIR="$target" timeout "$build_timeout" cargo build -q --release -p rpcx-cli) ||
        die "build of rpcx-cli failed"
    cp "$target/release/rpcx" "$tmp/bin/rpcx"
fi

# Entries "name kind binary": kind go or rust.
entries=("go go $tmp/bin/go-server")
for s in $servers; do
    case "$s" in
    go) ;;
    tokio | smol | std)
        build_rust "$root" "$target" "rpcx-$s" "$tmp/bin/$s"
        entries+=("$s rust $tmp/bin/$s")
        for o in $observe_list; do
            entries+=("$s+$o rust $tmp/bin/$s $o")
        done
        ;;
    *) die "SERVERS: unknown server '$s' (go, tokio, smol, std)" ;;
    esac
done
if [[ -n "$base_rev" ]]; then
    base_commit="$(git -C "$root" rev-parse --verify --quiet "$base_rev^{commit}")" ||
        die "BASE_REV '$base_rev' is not a commit"
    worktree="$tmp/base-worktree"
    log "base: worktree of $base_rev ($base_commit) in $worktree"
    git -C "$root" worktree add --detach --quiet "$worktree" "$base_commit" || die "git worktree add failed"
    base_target="${BASE_TARGET_DIR:-$tmp/base-target}"
    for s in tokio smol std; do
        build_rust "$worktree" "$base_target" "rpcx-$s" "$tmp/bin/$s@base"
        entries+=("$s@base rust $tmp/bin/$s@base")
    done
fi


results="$tmp/results.txt" # name threads conns c calls/s p50 p99 us/call
: >"$results"
IFS=, read -r -a level_arr <<<"$levels"
IFS=, read -r -a conns_arr <<<"$conns_list"
bench_timeout="$(awk -v s="$secs" -v w="$warmup" 'BEGIN { printf "%d", s + w + 60 }')"

for entry in "${entries[@]}"; do
    read -r name kind bin observe <<<"$entry"
    start_pinned_server "$kind" "$bin" "$tmp/$name" "$threads" "$observe"
    log "$name: pid $server_pid on core $server_cpu, $server_addr"
    for nc in "${conns_arr[@]}"; do
        for c in "${level_arr[@]}"; do
            json="$tmp/$name.$nc.$c.json"
            # Thread count of the server in the middle of the window.
            (
                sleep "$(awk -v s="$secs" -v w="$warmup" 'BEGIN { print w + s / 2 }')"
                awk '/^Threads:/ { print $2 }' "/proc/$server_pid/status" >"$json.threads" 2>/dev/null
            ) &
            sampler=$!
            if [[ "$loadgen" == rpcx ]]; then
                bench_cmd=("$tmp/bin/rpcx" bench "$server_addr" Arith.Mul --conns "$nc" -c "$c" -d "${secs}s"
                    --warmup "${warmup}s" -t 0s --json --pid "$server_pid")
            else
                bench_cmd=("$bench" -addr "$server_addr" -conns "$nc" -c "$c" -d "${secs}s" -warmup "${warmup}s"
                    -pid "$server_pid")
            fi
            if ! timeout "$bench_timeout" taskset -c "$bench_cpu" "${bench_cmd[@]}" >"$json" 2>"$json.stderr"; then
                kill "$sampler" 2>/dev/null || true
                cat "$json" "$json.stderr" >&2 || true
                die "$name conns=$nc c=$c: bench failed or reported errors"
            fi
            wait "$sampler" || true
            kill -0 "$server_pid" 2>/dev/null || die "$name died during conns=$nc c=$c"
            nthr="$(cat "$json.threads" 2>/dev/null || true)"
            nthr="${nthr:-?}"
            # One JSON line of numbers and strings without commas inside values.
            row="$(awk -v name="$name" -v thr="$nthr" -v tck="$clk_tck" '
                {
                    gsub(/[{}"]/, "")
                    n = split($0, kv, ",")
                    for (i = 1; i <= n; i++) { split(kv[i], p, ":"); v[p[1]] = p[2] }
                }
                END {
                    if (v["calls"] <= 0 || v["server_ticks"] < 0) exit 1
                    if (v["c"] == "") v["c"] = v["concurrency"]
                    printf "%s %s %s %s %.0f %.1f %.1f %.2f\n", name, thr, v["conns"], v["c"],
                        v["calls_per_s"], v["p50_us"], v["p99_us"],
                        v["server_ticks"] * 1e6 / tck / v["calls"]
                }' "$json")" || die "$name conns=$nc c=$c: cannot read $(cat "$json")"
            echo "$row" >>"$results"
            log "$row"
        done
    done
    stop_pinned_server
done

echo "server CPU per call; server on core $server_cpu, load generator ($loadgen) on core $bench_cpu;" \
    "${secs}s window after ${warmup}s warm-up; Arith.Mul msgpack; CLK_TCK=$clk_tck;" \
    "thr = server threads in the middle of the window"
# Grouped by load level (conns, c), servers in run order; ratio = cpu us/call / Go's.
awk '
    { k = $3 " " $4; if (!(k in nk)) { keys[++nkeys] = k; nk[k] = 0 }
      row[k, ++nk[k]] = $0; if ($1 == "go") gous[k] = $8 }
    END {
        printf "%-11s %4s %5s %5s %10s %9s %9s %11s %6s\n", "server", "thr", "conns", "c",
            "calls/s", "p50 us", "p99 us", "cpu us/call", "vs go"
        for (j = 1; j <= nkeys; j++) {
            k = keys[j]
            for (i = 1; i <= nk[k]; i++) {
                split(row[k, i], f, " ")
                g = gous[k]
                printf "%-11s %4s %5s %5s %10s %9s %9s %11s %6s\n", f[1], f[2], f[3], f[4],
                    f[5], f[6], f[7], f[8], (g > 0 ? sprintf("%.2f", f[8] / g) : "-")
            }
        }
    }' "$results"
