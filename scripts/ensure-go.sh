#!/usr/bin/env bash
# Make a Go toolchain available for the interop suite (interop/go). Prints the
# directory to prepend to PATH (empty when the `go` already on PATH will do).
#
# A `go` of 1.21 or newer on PATH is used as it is: it fetches the version interop/go's
# go.mod asks for by itself (GOTOOLCHAIN). Otherwise the toolchain is downloaded once
# from the Go module proxy (the same archive GOTOOLCHAIN would fetch) into
# ~/.cache/rpcx-go.
set -euo pipefail
want="1.26.8"
if command -v go >/dev/null 2>&1; then
    have="$(go env GOVERSION 2>/dev/null || true)"
    have="${have#go}"
    major="${have%%.*}"
    rest="${have#*.}"
    minor="${rest%%.*}"
    if [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] && ((major > 1 || minor >= 21)); then
        exit 0
    fi
fi
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "no Go toolchain download for $(uname -m)" >&2; exit 1 ;;
esac
dest="${HOME}/.cache/rpcx-go/go${want}"
if [[ ! -x "$dest/bin/go" ]]; then
    proxy="${GOPROXY:-https://proxy.golang.org}"
    proxy="${proxy%%,*}"
    url="$proxy/golang.org/toolchain/@v/v0.0.1-go${want}.linux-${arch}.zip"
    echo "downloading Go ${want} from $url" >&2
    tmp="$(mktemp -d)"
    python3 - "$url" "$tmp" <<'PY'
import sys, urllib.request, zipfile, io, os, stat
url, out = sys.argv[1], sys.argv[2]
data = urllib.request.urlopen(url, timeout=300).read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    for info in z.infolist():
        # Entries are golang.org/toolchain@v0.0.1-go.../<path>; keep <path>.
        rel = info.filename.split("/", 2)[-1] if info.filename.count("/") >= 2 else ""
        if not rel or info.is_dir():
            continue
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(z.read(info))
        mode = (info.external_attr >> 16) & 0o777
        os.chmod(target, mode or 0o644)
PY
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest"
    mv "$tmp" "$dest"
fi
echo "$dest/bin"
