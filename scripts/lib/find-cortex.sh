# Sourced by the cron-facing scripts (backup.sh, restore-from-backup.sh): defines find_cortex,
# which prints the cortex binary to use: $CORTEX_BIN, else `cortex` on PATH, else the checkout's
# release or debug build, ~/.cargo/bin, /usr/local/bin. Exits 127 with a message when none is
# found. (Cron runs with a minimal PATH, hence the explicit fallbacks.)
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
