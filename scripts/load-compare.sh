#!/usr/bin/env bash
# Run the loopback load benchmark (581-byte echo, one process, 2 runtime threads) for
# tokio, smol and std in one go, and print calls/s and p99 side by side with the ratio
# to tokio. std runs twice: one blocked thread per caller ("std"), and the same number
# of calls in flight from 2 threads with `go_raw` ("std-go", see the std load example).
# Usage: scripts/load-compare.sh [SECONDS] [LEVELS] [CONNS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-2}"
levels="${2:-1,100,1000}"
conns="${3:-1,4}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
run() { # name crate extra-args...
    local name="$1" crate="$2"
    shift 2
    cargo build -q --release -p "$crate" --example load
    cargo run -q --release -p "$crate" --example load -- --secs "$secs" --levels "$levels" --conns "$conns" "$@" \
        >"$out/$name.txt"
    cat "$out/$name.txt" >&2
}
run tokio rpcx-tokio
run smol rpcx-smol
run std rpcx-std
run std-go rpcx-std --threads 2
# Rows: conns concurrency calls/s p50 p99 p99.9 (after two header lines).
awk '
    FNR <= 2 { next }
    { key = $1 " " $2; rt = FILENAME; sub(/.*\//, "", rt); sub(/\.txt$/, "", rt)
      calls[rt, key] = $3; p99[rt, key] = $5; if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
    END {
      printf "%5s %5s | %9s %9s |", "conns", "c", "tokio c/s", "p99"
      for (j = 1; j <= 3; j++) printf " %9s %9s %5s |", rts[j] = (j == 1 ? "smol" : j == 2 ? "std" : "std-go"), "p99", "ratio"
      printf "\n"
      for (i = 0; i < n; i++) { k = order[i]; split(k, a, " ")
        printf "%5s %5s | %9.0f %9s |", a[1], a[2], calls["tokio", k], p99["tokio", k]
        for (j = 1; j <= 3; j++) { r = rts[j]
          printf " %9.0f %9s %5.2f |", calls[r, k], p99[r, k], calls[r, k] / calls["tokio", k] }
        printf "\n" }
    }' "$out/tokio.txt" "$out/smol.txt" "$out/std.txt" "$out/std-go.txt"
