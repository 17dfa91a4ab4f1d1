# Sourced by the benchmark scripts (server-cpu.sh, saturate.sh, kernel-share.sh): start
# a Go or Rust Arith server pinned to one core and learn its address.
#
#   start_pinned_server KIND BINARY OUT THREADS [OBSERVE]
#       KIND: go (interop/go cmd/server) or anything else (an arith_server example).
#       Pinned to $server_cpu with taskset; GOMAXPROCS=1 for Go, THREADS runtime
#       threads for ours (RPCX_OBSERVE=OBSERVE passed on). Output in OUT.stdout and
#       OUT.stderr. Sets server_pid and server_addr (127.0.0.1:PORT) once it accepts;
#       calls die (the caller's) if it does not within 10 s.
#   stop_pinned_server
#       Kills and reaps it; clears server_pid.
# shellcheck shell=bash

server_pid=""
server_addr=""

start_pinned_server() {
    local kind="$1" bin="$2" out="$3" threads="$4" observe="${5:-}" line="" i
    : >"$out.stdout"
    if [[ "$kind" == go ]]; then
        GOMAXPROCS=1 taskset -c "$server_cpu" "$bin" -addr 127.0.0.1:0 >"$out.stdout" 2>"$out.stderr" &
    else
        RPCX_OBSERVE="$observe" TOKIO_WORKER_THREADS="$threads" ASYNC_GLOBAL_EXECUTOR_THREADS="$threads" \
            taskset -c "$server_cpu" "$bin" --addr 127.0.0.1:0 --threads "$threads" >"$out.stdout" 2>"$out.stderr" &
    fi
    server_pid=$!
    for ((i = 0; i < 100; i++)); do
        kill -0 "$server_pid" 2>/dev/null || break
        line="$(grep -m1 -E '^(LISTENING |arith_server listening on )' "$out.stdout" || true)"
        [[ -n "$line" ]] && break
        sleep 0.1
    done
    if [[ -z "$line" ]]; then
        cat "$out.stderr" >&2 || true
        die "$bin did not start within 10 s (or exited)"
    fi
    server_addr="${line##* }"
    server_addr="${server_addr#tcp@}"
    [[ "$server_addr" =~ ^127\.0\.0\.1:[0-9]+$ ]] || die "$bin: unexpected address line '$line'"
    # It printed its address; check it accepts.
    # shellcheck disable=SC2016 # expanded by the inner bash, from "$1"
    timeout 5 bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}"' _ "$server_addr" ||
        die "$bin does not accept on $server_addr"
}

stop_pinned_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
