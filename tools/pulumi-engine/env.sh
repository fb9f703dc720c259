# Source this file (bash or zsh): it builds the Pulumi engine if needed (tools/pulumi-engine/
# build.sh; seconds once built) and sets up this shell to run it with no download at all.
#   . tools/pulumi-engine/env.sh
# Stacks still need a backend and a passphrase, e.g.
#   export PULUMI_BACKEND_URL=file://$PWD/.pulumi-state PULUMI_CONFIG_PASSPHRASE=...
_natstopo_engine_dir=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
if _natstopo_bin=$(bash "$_natstopo_engine_dir/build.sh" | tail -n 1) && [ -n "$_natstopo_bin" ]; then
    case ":$PATH:" in
        *":$_natstopo_bin:"*) ;;
        *) PATH="$_natstopo_bin:$PATH" ;;
    esac
    export PATH
    export PULUMI_SKIP_UPDATE_CHECK=true
    # A plugin that is missing is an error, never a download from the vendor's site.
    export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
    export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING=true
    case "$_natstopo_bin" in
        "${NATSTOPO_CACHE:-$HOME/.cache/natstopo}"/pulumi/*)
            # Our own build: the language host and the Kubernetes provider are found on PATH
            # ("ambient" plugins), so ambient plugins must stay allowed; and a PULUMI_HOME of
            # its own keeps a user's plugin cache and credentials out of the picture. This CLI
            # version has no telemetry switch: with a file:// backend it sends nothing.
            unset PULUMI_IGNORE_AMBIENT_PLUGINS
            export PULUMI_HOME="${NATSTOPO_CACHE:-$HOME/.cache/natstopo}/pulumi/home"
            ;;
    esac
else
    echo "tools/pulumi-engine/env.sh: the Pulumi engine is not available" >&2
fi
unset _natstopo_engine_dir _natstopo_bin
