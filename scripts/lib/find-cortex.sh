# Sourced by the cron-facing scripts (backup.sh, restore-from-backup.sh, emit-event.sh, create-task.sh,
# health-check.sh): defines find_cortex, which prints the cortex binary to use: $CORTEX_BIN, else
# `cortex` on PATH, else the checkout's release or debug build, ~/.cargo/bin, /usr/local/bin.
# Exits 127 with a message when none is found. (Cron runs with a minimal PATH, hence the
# explicit fallbacks.) And set_home_args, for the home those scripts act on, and help_if_asked,
# for their --help.
find_cortex() {
    local checkout
    checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    if [[ -n "${CORTEX_BIN:-}" ]]; then echo "$CORTEX_BIN"; return; fi
    if command -v cortex >/dev/null 2>&1; then command -v cortex; return; fi
    for c in "$checkout/target/release/cortex" "$checkout/target/debug/cortex" \
             "$HOME/.cargo/bin/cortex" /usr/local/bin/cortex; do
        if [[ -x "$c" ]]; then echo "$c"; return; fi
    done
    echo "$(basename "$0"): cannot find the cortex binary (set CORTEX_BIN or put cortex on PATH)" >&2
    exit 127
}

# Sets the array home_args to `--home <dir>` when neither CORTEX_HOME nor COMMIT_RELAY_HOME is set
# and the script (in $1, its directory) is kept in <dir>/scripts/ of a home: under cron the home
# variables are often unset, and such a script acts on the home it is kept in. Else empty: cortex
# finds the home as usual.
set_home_args() {
    local script_dir="$1"
    home_args=()
    if [[ -z "${CORTEX_HOME:-}" && -z "${COMMIT_RELAY_HOME:-}" ]] &&
       [[ -f "$script_dir/../cortex.toml" || -d "$script_dir/../coordination" ]]; then
        home_args=(--home "$(cd "$script_dir/.." && pwd)")
    fi
}

# When the script's first argument ($2 here) is -h or --help: prints lines 2 to $1 of the script
# (its header comment, without the leading "# ") and exits 0. Else returns.
help_if_asked() {
    case "${2:-}" in
        -h|--help)
            sed -n "2,${1}p" "${BASH_SOURCE[1]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
    esac
}
