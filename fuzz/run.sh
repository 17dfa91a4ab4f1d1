#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS seconds each (default 30), after seeding the
# corpora from core/tests/fixtures/vectors.txt. Prints one summary line per target and
# exits non-zero if any target crashes. Works from any directory.
#
#   fuzz/run.sh 30
#
# Needs cargo-fuzz (installed if missing); uses RUSTC_BOOTSTRAP=1 so a stable toolchain
# can build with the flags cargo-fuzz passes.
#
# Sanitizer: none by default (FUZZ_SANITIZER=address to turn AddressSanitizer on).
# rpcx-core forbids unsafe code, so ASan finds nothing there that the bounds and
# overflow checks of this build (debug assertions on) would not; it made every target
# two to three times slower (measured: server_conn 1,050 -> 3,500 exec/s on the same
# corpus).
set -euo pipefail

sanitizer="${FUZZ_SANITIZER:-none}"

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vectors="$fuzz_dir/../core/tests/fixtures/vectors.txt"
cd "$fuzz_dir"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

# Write the bytes of a hex string (no separators) to a file.
hex_to_file() {
    local hex="$1" out="$2" esc=""
    local i
    for ((i = 0; i < ${#hex}; i += 2)); do
        esc+="\\x${hex:i:2}"
    done
    printf '%b' "$esc" >"$out"
}

seed_frame_decode() {
    local dir="$fuzz_dir/corpus/frame_decode" all="" name hex
    mkdir -p "$dir"
    # Prefixes: control byte (chunk-size count - 1 and mode bits), then chunk sizes.
    #   00 ff     one chunk size: 1 + 255^2/16 = 4065 bytes (whole frames)
    #   00 00     one-byte chunks
    #   02 04 00 10   chunks of 2, 1 and 17 bytes, cycled
    #   08 ff     lenient payloadLen, whole frames
    #   10 ff     at most 8 metadata pairs
    while read -r name hex _; do
        [[ -z "$name" || "$name" == \#* ]] && continue
        all+="$hex"
        hex_to_file "00ff$hex" "$dir/vector-$name"
        hex_to_file "0000$hex" "$dir/vector-$name-bytewise"
        hex_to_file "02040010$hex" "$dir/vector-$name-chunked"
    done <"$vectors"
    hex_to_file "00ff$all" "$dir/all-vectors"
    hex_to_file "02040010$all" "$dir/all-vectors-chunked"
    hex_to_file "08ff$all" "$dir/all-vectors-lenient"
    hex_to_file "10ff$all" "$dir/all-vectors-few-pairs"
}

seed_decompress() {
    local dir="$fuzz_dir/corpus/decompress"
    mkdir -p "$dir"
    # control, limit (u16 LE, shifted by 4 * (control % 5)), then the gzip bytes (or, with
    # control >= 128, any bytes to round-trip).
    # The gzip payload of vector V8 (written by Go's compress/gzip), at byte 39 of the frame.
    local v8
    v8="$(awk '$1 == "V8" { print $2 }' "$vectors")"
    hex_to_file "01ff00${v8:78}" "$dir/go-gzip-v8"
    hex_to_file "00ff00${v8:78}" "$dir/go-gzip-v8-small-limit"
    # `gzip -n` of "hello", of "", and two members back to back.
    local hello="1f8b0800000000000003cb48cdc9c9070086a6103605000000"
    local empty="1f8b080000000000000303000000000000000000"
    hex_to_file "02ffff$hello" "$dir/hello"
    hex_to_file "02ffff$empty" "$dir/empty"
    hex_to_file "02ffff$hello$hello" "$dir/two-members"
    hex_to_file "000500$hello" "$dir/hello-limit-5"
    hex_to_file "000400$hello" "$dir/hello-limit-4"
    # control >= 128: round trips through gzip (level control / 5 % 10).
    hex_to_file "80ffff$hello" "$dir/round-trip-level-5"
    hex_to_file "b4ffff$hello$hello" "$dir/round-trip-level-6"
    # A bomb: 1 MiB of zeros compresses to about 1 KiB.
    if command -v gzip >/dev/null; then
        head -c 1048576 /dev/zero | gzip -9 -n >"$dir/.bomb.gz"
        { printf '\x04\x10\x00'; cat "$dir/.bomb.gz"; } >"$dir/bomb-1mib"
        rm -f "$dir/.bomb.gz"
    fi
}

seed_http_conn() {
    local dir="$fuzz_dir/corpus/http_conn"
    mkdir -p "$dir"
    # flags (bit 0: gateway off, 1: JSON-RPC off, 2: CORS), the first bytes (an index),
    # then operations: 02 ARG a gateway request, 03 ARG a JSON-RPC one, 04 ID answer,
    # 05 T time, 00 N BYTES raw input. First bytes: 00 a WebSocket upgrade, 01 none, 02 `POST / HTTP/1.1`.
    hex_to_file "0001020804000400" "$dir/gateway-call-answered"
    hex_to_file "000102c804000401" "$dir/gateway-chunked-pipelined"
    hex_to_file "0001030204000401040205ff" "$dir/jsonrpc-batch"
    hex_to_file "04010328040005ff" "$dir/jsonrpc-cors"
    # Start 00 is a WebSocket upgrade; 07 00 ARG sends a frame (ARG % 4: text or binary
    # request, ping, close; ARG & 4: masked).
    hex_to_file "00000700050400070002070007" "$dir/websocket-frames"
    local raw
    raw="$(printf 'X-RPCX-ServicePath: Arith\r\nX-RPCX-ServiceMethod: Mul\r\nX-RPCX-SerializeType: 1\r\nContent-Length: 2\r\n\r\n{}' | od -An -tx1 | tr -d ' \n')"
    hex_to_file "0002007f$raw" "$dir/raw-head"
}

seed_frame_decode
seed_decompress
seed_http_conn

status=0
summary=()
for target in ${FUZZ_TARGETS:-$(cargo fuzz list)}; do
    log="$fuzz_dir/artifacts/$target.log"
    mkdir -p "$fuzz_dir/artifacts/$target" "$fuzz_dir/corpus/$target"
    echo "=== fuzz $target for ${seconds}s" >&2
    if RUSTC_BOOTSTRAP=1 cargo fuzz run -s "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        result="ok"
    else
        result="FAILED (see $log and $fuzz_dir/artifacts/$target/)"
        status=1
        tail -n 40 "$log" >&2
    fi
    done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
    if [[ -n "$done_line" ]]; then
        runs="$(awk '{ print $2 }' <<<"$done_line")"
        secs="$(awk '{ print $5 }' <<<"$done_line")"
    else
        runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1 || true)"
        runs="${runs:-?}"
        secs="?"
    fi
    rate="?"
    if [[ "$runs" =~ ^[0-9]+$ && "$secs" =~ ^[0-9]+$ && "$secs" -gt 0 ]]; then
        rate="$((runs / secs))"
    fi
    summary+=("fuzz $target: $runs execs in $secs s ($rate exec/s): $result")
done

printf '%s\n' "${summary[@]}"
exit "$status"
