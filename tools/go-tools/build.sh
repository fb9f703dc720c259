#!/usr/bin/env bash
# Builds the small Go command-line tools the tests run, from Go modules (no registry these
# machines reach ships them as binaries). Prints the bin folder on its last stdout line.
#
# Each tool has a wrapper module of its own here (go.mod, go.sum, tools.go pinning the
# version), so that the tools' dependency versions never mix:
#   actionlint   github.com/rhysd/actionlint v1.7.12    lints .github/workflows
#   nats         github.com/nats-io/natscli v0.5.0      `nats bench`, the Go client reference
#                (folder natscli/; v0.5.1 is skipped: see the runtime benchmark issue)
# Built into ${NATSTOPO_CACHE:-$HOME/.cache/natstopo}/go-tools/<key>/bin; <key> changes with
# RECIPE, any wrapper file or the Go version; a stamp makes a second run return at once.
#
# Usage: build.sh            build if needed, print the bin folder
#        build.sh --locate   print the bin folder if every tool is there, else exit 1
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${NATSTOPO_CACHE:-$HOME/.cache/natstopo}
RECIPE=1
# binary : wrapper folder : main package
TOOLS="actionlint:actionlint:github.com/rhysd/actionlint/cmd/actionlint nats:natscli:github.com/nats-io/natscli/nats"

START=$SECONDS
log() { echo "[go-tools +$((SECONDS - START))s] $*" >&2; }
quiet_go() { "$@" 2>&1 | { grep -v '^go: downloading ' || true; } >&2; }

mode=build
if [ "${1:-}" = "--locate" ]; then mode=locate; fi
if ! command -v go >/dev/null 2>&1; then
    log "error: no Go toolchain to build ${TOOLS//:*/}"
    exit 1
fi

KEY="r${RECIPE}-$( (go env GOVERSION GOOS GOARCH; cd "$HERE" && cat ./*/go.mod ./*/go.sum ./*/tools.go) | sha256sum | cut -c1-12)"
ROOT="$CACHE/go-tools/$KEY"
BIN="$ROOT/bin"
STAMP="$ROOT/.built"

complete() {
    [ -f "$STAMP" ] || return 1
    for t in $TOOLS; do [ -x "$BIN/${t%%:*}" ] || return 1; done
}
if complete; then
    log "reusing $BIN (built $(cat "$STAMP"))"
    echo "$BIN"
    exit 0
fi
if [ "$mode" = locate ]; then
    log "not built: run tools/go-tools/build.sh (make go-tools)"
    exit 1
fi

mkdir -p "$CACHE/go-tools"
WORK=$(mktemp -d "$CACHE/go-tools/.build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin"
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
n=0
for t in $TOOLS; do
    n=$((n + 1))
    name=${t%%:*}
    rest=${t#*:}
    folder=${rest%%:*}
    pkg=${rest#*:}
    log "step $n: $name ($pkg)"
    (cd "$HERE/$folder" && quiet_go go build -trimpath -ldflags "-s -w" -o "$WORK/bin/$name" "$pkg")
done
rm -rf "$BIN"
mkdir -p "$ROOT"
mv "$WORK/bin" "$BIN"
date -u +%Y-%m-%dT%H:%M:%SZ >"$STAMP"
log "built in $((SECONDS - START))s: $BIN"
echo "$BIN"
