#!/usr/bin/env bash
# Builds the Pulumi engine from Go modules (no registry these machines reach ships the CLI),
# or reuses a `pulumi` already on PATH. Prints the bin folder on its last stdout line.
#
# Built, into ${NATSTOPO_CACHE:-$HOME/.cache/natstopo}/pulumi/<key>/bin (outside the work
# tree, so every clone on the machine shares it):
#   pulumi                         github.com/pulumi/pulumi/pkg/v3/cmd/pulumi   (cli/go.mod)
#   pulumi-language-python         natstopo's own minimal host (language-python/main.go):
#                                  upstream's host module is not served by the Go proxy
#   pulumi-language-python-exec    script from the sdk/v3 module, beside the host
#   pulumi-resource-pulumi-python  dynamic-provider plugin script from the sdk/v3 module
#   pulumi-resource-kubernetes     github.com/pulumi/pulumi-kubernetes/provider/v4 (kubernetes/)
# <key> changes whenever a version below, RECIPE, a go.mod, go.sum or main.go, or the Go
# version changes; a stamp file makes a second run return at once. Only Go modules are
# downloaded.
#
# Usage: build.sh            build if needed, print the bin folder
#        build.sh --locate   print the bin folder if the engine is there, else exit 1 (no build)
# NATSTOPO_BUILD_PULUMI=1 builds even when a `pulumi` is on PATH.
# NATSTOPO_PULUMI_KUBERNETES=0 leaves out the Kubernetes provider, about two thirds of a cold
# build (the render-mode smoke test then skips).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${NATSTOPO_CACHE:-$HOME/.cache/natstopo}
# Versions: the CLI and the host's SDK are the release nearest above the Python pin
# (pulumi==3.272.0; pkg/v3 v3.272.0 and v3.273.0 are not served, and sdk/v3 v3.272.0 needs a
# pulumi-cloud-sdk version that is not served). The provider module has only pseudo-versions.
PULUMI_VERSION=3.274.1
K8S_PROVIDER_VERSION=4.0.0-20260115033456-f47bc2d6f199
# Bump when the build steps change what is built (log output and comments do not count).
RECIPE=1
WITH_KUBERNETES=${NATSTOPO_PULUMI_KUBERNETES:-1}
BINARIES="pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python"
if [ "$WITH_KUBERNETES" = 1 ]; then BINARIES="$BINARIES pulumi-resource-kubernetes"; fi

START=$SECONDS
log() { echo "[pulumi-engine +$((SECONDS - START))s] $*" >&2; }
# Runs a go command with its hundreds of "go: downloading" lines left out (errors stay).
quiet_go() { "$@" 2>&1 | { grep -v '^go: downloading ' || true; } >&2; }

mode=build
if [ "${1:-}" = "--locate" ]; then mode=locate; fi

if [ "${NATSTOPO_BUILD_PULUMI:-0}" != 1 ] && command -v pulumi >/dev/null 2>&1; then
    bin=$(dirname "$(command -v pulumi)")
    log "using pulumi on PATH: $bin/pulumi ($(pulumi version 2>/dev/null || echo '?'))"
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    log "error: no pulumi on PATH and no Go toolchain to build it"
    exit 1
fi

key_input() {
    go env GOVERSION GOOS GOARCH
    echo "$PULUMI_VERSION $K8S_PROVIDER_VERSION $RECIPE"
    (cd "$HERE" && cat ./*/go.mod ./*/go.sum ./*/main.go ./*/*/main.go)
}
KEY="v${PULUMI_VERSION}-$(key_input | sha256sum | cut -c1-12)"
ROOT="$CACHE/pulumi/$KEY"
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
    log "not built: run tools/pulumi-engine/build.sh (make pulumi-engine)"
    exit 1
fi

# Build into a scratch folder and move it into place at the end, so an interrupted build
# never leaves a half-filled bin folder behind a stamp.
mkdir -p "$CACHE/pulumi"
WORK=$(mktemp -d "$CACHE/pulumi/.build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin"
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
LDFLAGS_COMMON="-s -w"

log "building on $(go env GOVERSION), $(nproc 2>/dev/null || echo ?) cores, into $BIN"

log "step 1/4: pulumi CLI (pkg/v3 v$PULUMI_VERSION)"
(cd "$HERE/cli" && quiet_go go build -trimpath \
    -ldflags "$LDFLAGS_COMMON -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
    -o "$WORK/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
log "step 1/4: done"

log "step 2/4: Python language host (sdk/v3 v$PULUMI_VERSION)"
(cd "$HERE/language-python" && quiet_go go build -trimpath \
    -ldflags "$LDFLAGS_COMMON -X main.version=$PULUMI_VERSION" \
    -o "$WORK/bin/pulumi-language-python" .)
log "step 2/4: done"

log "step 3/4: exec and dynamic-provider scripts from the sdk/v3 module"
# `go mod download` rather than `go list -m`: the latter reports no folder for a module that
# is not in the module cache yet.
sdk_dir=$(cd "$HERE/language-python" &&
    go mod download -json github.com/pulumi/pulumi/sdk/v3 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$sdk_dir" ] || [ ! -d "$sdk_dir/python" ]; then
    log "error: no sdk/v3 module folder found"
    exit 1
fi
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$WORK/bin/"
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$WORK/bin/"
log "step 3/4: done"

if [ "$WITH_KUBERNETES" = 1 ]; then
    log "step 4/4: Kubernetes provider (provider/v4 $K8S_PROVIDER_VERSION)"
    # The provider's main embeds files that its `go generate` writes; write them beside a copy
    # of the wrapper package (the work tree stays untouched).
    cp -R "$HERE/kubernetes" "$WORK/kubernetes"
    (cd "$WORK/kubernetes" && quiet_go go run ./embedgen -version "$K8S_PROVIDER_VERSION" -out . &&
        quiet_go go build -trimpath \
        -ldflags "$LDFLAGS_COMMON -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$K8S_PROVIDER_VERSION" \
        -o "$WORK/bin/pulumi-resource-kubernetes" .)
    log "step 4/4: done"
else
    log "step 4/4: Kubernetes provider left out (NATSTOPO_PULUMI_KUBERNETES=0)"
fi

"$WORK/bin/pulumi" version >/dev/null
rm -rf "$BIN"
mkdir -p "$ROOT"
mv "$WORK/bin" "$BIN"
date -u +%Y-%m-%dT%H:%M:%SZ >"$STAMP"
log "built in $((SECONDS - START))s: $BIN"
echo "$BIN"
