#!/usr/bin/env bash
# Run the loopback load benchmark (581-byte echo, one process, 2 runtime threads) for
# tokio, smol and std in one go, and print calls/s and p99 side by side with the ratio
# to tokio. Usage: scripts/load-compare.sh [SECONDS] [LEVELS] [CONNS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-2}"
levels="${2:-1,100,1000}"
conns="${3:-1,4}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for rt in tokio smol std; do
    cargo build -q --release -p "rpcx-$rt" --example load
    cargo run -q --release -p "rpcx-$rt" --example load -- --secs "$secs" --levels "$levels" --conns "$conns" \
        >"$out/$rt.txt"
    cat "$out/$rt.txt" >&2
done
# Rows: conns concurrency calls/s p50 p99 p99.9 (after two header lines).
awk '
    FNR <= 2 { next }
    { key = $1 " " $2; rt = FILENAME; sub(/.*\//, "", rt); sub(/\.txt$/, "", rt)
      calls[rt, key] = $3; p99[rt, key] = $5; if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
    END {
      printf "%6s %11s | %12s %10s | %12s %10s %6s | %12s %10s %6s\n", "conns", "concurrency",
             "tokio c/s", "p99", "smol c/s", "p99", "ratio", "std c/s", "p99", "ratio"
      for (i = 0; i < n; i++) { k = order[i]; split(k, a, " ")
        printf "%6s %11s | %12.0f %10s | %12.0f %10s %6.2f | %12.0f %10s %6.2f\n", a[1], a[2],
               calls["tokio", k], p99["tokio", k], calls["smol", k], p99["smol", k], calls["smol", k] / calls["tokio", k],
               calls["std", k], p99["std", k], calls["std", k] / calls["tokio", k] }
    }' "$out/tokio.txt" "$out/smol.txt" "$out/std.txt"
