#!/usr/bin/env bash
# The frame codec on one core, ours and Go rpcx's in one run (issue 18, target 1):
#   1. criterion `wire` bench, encode and decode groups (benches/benches/wire.rs);
#   2. `wire_allocs` (benches/benches/wire_allocs.rs): heap allocations and bytes per
#      decoded and encoded frame under a counting global allocator, with the best and
#      mean of 2000 rounds of 1000 frames;
#   3. Go rpcx v1.9.4's protocol package on the same frames (interop/go cmd/codecbench),
#      best and mean round and allocations per frame.
# Everything runs pinned to core $CPU (default 1).
#
# Usage: scripts/codec-bench.sh   (needs cargo, go, taskset; CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
cpu="${CPU:-1}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd interop/go && GONOSUMDB="${GONOSUMDB:-github.com/rpcxio/*}" go build -o "$out/codecbench" ./cmd/codecbench)
cargo bench -q -p rpcx-benches --bench wire --bench wire_allocs --no-run
echo "== criterion wire (encode, decode, decode_with_copy), core $cpu"
taskset -c "$cpu" cargo bench -q -p rpcx-benches --bench wire -- '^(encode|decode|decode_with_copy)/' 2>/dev/null |
    grep -E '^(encode|decode)|thrpt:  \[.*elem/s' | sed 's/^ *thrpt:/    thrpt:/'
echo "== wire_allocs, core $cpu"
taskset -c "$cpu" cargo bench -q -p rpcx-benches --bench wire_allocs 2>/dev/null
echo "== Go rpcx protocol codec, core $cpu"
taskset -c "$cpu" "$out/codecbench"
