#!/usr/bin/env bash
# Self-test of the Go interop harness: Go client vs Go server on loopback.
#
# Builds both binaries into a temp dir, starts servers, runs every scenario
# (individually and as "all"), the auth scenarios against a server started
# with -auth, failover against two servers (one SIGKILLed mid-run), "all"
# over a unix socket, and a few negative checks proving failures are
# reported. Every step is time-bounded. Exits non-zero on any failure.
#
# Usage: ./selftest.sh          (from anywhere; needs go and coreutils timeout)
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rpcx-interop-selftest.XXXXXX")
PIDS=()
FAILED=()

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -9 "$p" 2>/dev/null
	done
	{ wait; } 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "selftest: interrupted"; exit 130' INT TERM

note() { echo "== $*"; }
bad() {
	echo "!! $*"
	FAILED+=("$*")
}

# start_server NAME ARGS... : starts a server, sets SERVER_PID and SERVER_ADDR.
start_server() {
	local name=$1
	shift
	local out="$TMP/$name.out" line i
	"$TMP/server" "$@" >"$out" 2>"$TMP/$name.err" &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	for i in $(seq 100); do
		line=$(head -n 1 "$out" 2>/dev/null)
		case $line in
		"LISTENING "*)
			SERVER_ADDR=${line#LISTENING }
			note "server $name (pid $SERVER_PID) listening on $SERVER_ADDR"
			return 0
			;;
		esac
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	bad "server $name did not print LISTENING within 10s"
	cat "$TMP/$name.err"
	return 1
}

# expect_client WANT SCENARIO ARGS... : runs the client; WANT is pass or fail.
expect_client() {
	local want=$1 scen=$2
	shift 2
	local rc last
	timeout 150 "$TMP/client" -scenario "$scen" "$@" >"$TMP/client.out" 2>"$TMP/client.err"
	rc=$?
	sed 's/^/   /' "$TMP/client.out"
	last=$(tail -n 1 "$TMP/client.out")
	if [ "$want" = pass ]; then
		if [ $rc -ne 0 ] || [ "$last" != "PASS $scen" ]; then
			bad "scenario $scen: exit $rc, last line '$last'"
			sed 's/^/   stderr: /' "$TMP/client.err" | tail -n 20
		fi
	else
		if [ $rc -ne 1 ] || [ "${last#FAIL "$scen": }" = "$last" ]; then
			bad "negative check $scen $*: expected exit 1 and 'FAIL $scen: ...', got exit $rc, '$last'"
		fi
	fi
}

note "build"
cd "$HERE" || exit 1
if ! timeout 600 go build -o "$TMP/" ./cmd/server ./cmd/client; then
	echo "selftest: build failed"
	exit 1
fi
timeout 300 go vet ./... || bad "go vet"
timeout 300 go test ./... >"$TMP/gotest.out" 2>&1 || {
	cat "$TMP/gotest.out"
	bad "go test"
}

SCENARIOS="json msgpack protobuf raw gzip_small gzip_large metadata error unknown_service unknown_method oneway heartbeat deadline push big concurrent slow_deadline"

note "plain server: every scenario individually, then all"
if start_server main; then
	MAIN=$SERVER_ADDR
	for s in $SCENARIOS; do
		expect_client pass "$s" -addr "$MAIN"
	done
	expect_client pass all -addr "$MAIN"
	note "negative checks (the FAIL lines below are expected)"
	expect_client fail auth_fail -addr "$MAIN"           # no -auth on the server: the call succeeds
	expect_client fail msgpack -addr 127.0.0.1:1         # nothing listening
	expect_client fail no_such_scenario -addr "$MAIN"
fi

note "auth server (-auth secret); the last two FAIL lines of this block are expected"
if start_server auth -auth secret; then
	AUTH=$SERVER_ADDR
	expect_client pass auth_ok -addr "$AUTH" -auth secret
	expect_client pass auth_fail -addr "$AUTH"
	expect_client fail auth_ok -addr "$AUTH" -auth not-the-secret
	expect_client fail msgpack -addr "$AUTH"             # no token at all
fi

note "failover: two servers, the second one SIGKILLed after 2s of a 5s run"
if start_server fo1 && F1=$SERVER_ADDR && start_server fo2; then
	F2=$SERVER_ADDR
	F2PID=$SERVER_PID
	(sleep 2 && kill -9 "$F2PID" 2>/dev/null && echo "   (killed server fo2 pid $F2PID)") 2>/dev/null &
	KILLER=$!
	expect_client pass failover -addr "$F1" -addr2 "$F2" -duration 5s
	wait "$KILLER" 2>/dev/null
	if kill -0 "$F2PID" 2>/dev/null; then
		bad "server fo2 was not killed"
	fi
fi

note "unix socket server: all"
if start_server unix -network unix -addr "$TMP/rpcx.sock"; then
	expect_client pass all -network unix -addr "$TMP/rpcx.sock"
fi

echo
if [ ${#FAILED[@]} -ne 0 ]; then
	echo "SELFTEST FAILED (${#FAILED[@]}):"
	printf '  %s\n' "${FAILED[@]}"
	exit 1
fi
echo "SELFTEST PASSED"
