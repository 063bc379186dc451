# Sourced by the operator scripts: finds the checkout, the home and the `cortex` binary once.
#   checkout  the directory holding scripts/ (this file is scripts/lib/cortex.sh)
#   home      $CORTEX_HOME, else $COMMIT_RELAY_HOME, else the checkout (a checkout is a home)
#   bin_dir   $CORTEX_BIN_DIR, else target/release
#   cortex    $bin_dir/cortex, else `cortex` on PATH (exits with a message when there is none)
checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
home="${CORTEX_HOME:-${COMMIT_RELAY_HOME:-$checkout}}"
bin_dir="${CORTEX_BIN_DIR:-$checkout/target/release}"
cortex="$bin_dir/cortex"
if [[ ! -x "$cortex" ]]; then
    cortex="$(command -v cortex || true)"
    [[ -n "$cortex" ]] || { echo "ERROR: no cortex binary in $bin_dir or on PATH" >&2; exit 1; }
fi
c() { "$cortex" --home "$home" "$@"; }
