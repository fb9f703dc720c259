#!/usr/bin/env bash
# Builds a Kubernetes API server and its etcd from Go modules for the tests (no registry these
# machines reach ships either as a binary of these versions). Prints the bin folder on its
# last stdout line.
#
# Built, into ${NATSTOPO_CACHE:-$HOME/.cache/natstopo}/kube-test-cluster/<key>/bin (outside
# the work tree, so every clone on the machine shares it):
#   kube-apiserver   k8s.io/kubernetes/cmd/kube-apiserver/app v1.36.3   (apiserver/main.go)
#   etcd             go.etcd.io/etcd/server/v3 v3.6.8                   (etcd/go.mod)
# <key> changes whenever a version below, RECIPE, a go.mod, go.sum or main.go, or the Go
# version changes; a stamp file makes a second run return at once. Only Go modules are
# downloaded. The Go module and build caches are the user's own (go env GOMODCACHE GOCACHE),
# shared with tools/pulumi-engine/build.sh.
#
# Usage: build.sh            build if needed, print the bin folder
#        build.sh --locate   print the bin folder if both binaries are there, else exit 1
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${NATSTOPO_CACHE:-$HOME/.cache/natstopo}
# Versions: the API server is the one the issue asks for; etcd is the release that
# k8s.io/kubernetes v1.36.3 itself tests with and pins its etcd client modules at
# (hack/lib/etcd.sh ETCD_VERSION, kubeadm's DefaultEtcdVersion).
KUBE_VERSION=1.36.3
ETCD_VERSION=3.6.8
# Bump when the build steps change what is built (log output and comments do not count).
RECIPE=1
BINARIES="kube-apiserver etcd"

START=$SECONDS
log() { echo "[kube-test-cluster +$((SECONDS - START))s] $*" >&2; }
# Runs a go command with its hundreds of "go: downloading" lines left out (errors stay).
quiet_go() { "$@" 2>&1 | { grep -v '^go: downloading ' || true; } >&2; }

mode=build
if [ "${1:-}" = "--locate" ]; then mode=locate; fi

if ! command -v go >/dev/null 2>&1; then
    log "error: no Go toolchain to build kube-apiserver and etcd"
    exit 1
fi

key_input() {
    go env GOVERSION GOOS GOARCH
    echo "$KUBE_VERSION $ETCD_VERSION $RECIPE"
    (cd "$HERE" && cat ./*/go.mod ./*/go.sum ./*/main.go)
}
KEY="v${KUBE_VERSION}-$(key_input | sha256sum | cut -c1-12)"
ROOT="$CACHE/kube-test-cluster/$KEY"
BIN="$ROOT/bin"
STAMP="$ROOT/.built"

complete() {
    [ -f "$STAMP" ] || return 1
    for b in $BINARIES; do [ -x "$BIN/$b" ] || return 1; done
}

if complete; then
    log "reusing $BIN (built $(cat "$STAMP"))"
    echo "$BIN"
    exit 0
fi
if [ "$mode" = locate ]; then
    log "not built: run tools/kube-test-cluster/build.sh (make kube-test-cluster)"
    exit 1
fi

# Build into a scratch folder and move it into place at the end, so an interrupted build
# never leaves a half-filled bin folder behind a stamp.
mkdir -p "$CACHE/kube-test-cluster"
WORK=$(mktemp -d "$CACHE/kube-test-cluster/.build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin"
# The Go environment is left as it is (cgo included), as for the Pulumi engine, so that a
# package both build at the same version is compiled once (few are: see README.md).
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

log "building on $(go env GOVERSION), $(nproc 2>/dev/null || echo ?) cores, into $BIN"

log "step 1/2: etcd (go.etcd.io/etcd/server/v3 v$ETCD_VERSION)"
(cd "$HERE/etcd" && quiet_go go build -trimpath -ldflags "-s -w" \
    -o "$WORK/bin/etcd" go.etcd.io/etcd/server/v3)
log "step 1/2: done"

log "step 2/2: kube-apiserver (k8s.io/kubernetes v$KUBE_VERSION; cold: about 3.5 min on 2 idle cores)"
# The version variables that Kubernetes' own build sets (hack/lib/version.sh), so that
# `/version` and `--version` report the release rather than v0.0.0-master.
kv=k8s.io/component-base/version
minor=${KUBE_VERSION#*.}
minor=${minor%%.*}
(cd "$HERE/apiserver" && quiet_go go build -trimpath \
    -ldflags "-s -w -X $kv.gitVersion=v$KUBE_VERSION -X $kv.gitMajor=${KUBE_VERSION%%.*} -X $kv.gitMinor=$minor -X $kv.gitTreeState=clean" \
    -o "$WORK/bin/kube-apiserver" .)
log "step 2/2: done"

log "$("$WORK/bin/etcd" --version | head -n 1); $("$WORK/bin/kube-apiserver" --version)"
rm -rf "$BIN"
mkdir -p "$ROOT"
mv "$WORK/bin" "$BIN"
date -u +%Y-%m-%dT%H:%M:%SZ >"$STAMP"
log "built in $((SECONDS - START))s: $BIN"
echo "$BIN"
