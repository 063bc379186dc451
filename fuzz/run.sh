#!/usr/bin/env bash
# Seeds the fuzz corpora and runs every fuzz target for a while (libFuzzer via cargo fuzz).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      default: 60 s, every target
#
# Needs `cargo install cargo-fuzz`. cargo fuzz wants a nightly compiler for its sanitizer flags;
# on a stable toolchain RUSTC_BOOTSTRAP=1 lets it through (set below). Built optimised (-O) with
# debug assertions and overflow checks on (-a), so an arithmetic overflow is a finding too. Corpora grow under
# fuzz/corpus/<target>/ (git-ignored; committed seeds live in fuzz/seeds/); a crash or timeout
# leaves its input under fuzz/artifacts/<target>/ and this script exits non-zero.
# Prints one line per target: executions, corpus size, and whether it found anything.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR=$PWD
ROOT=$(cd .. && pwd)
SECONDS_PER_TARGET=${1:-60}
shift || true
ALL_TARGETS=(coord_files jsonl http_request backup_manifest backup_archive schedule_expr config_toml router intake)
TARGETS=("${@:-${ALL_TARGETS[@]}}")
[ $# -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")
export RUSTC_BOOTSTRAP=1

seed() {
    local t
    for t in "${ALL_TARGETS[@]}"; do
        mkdir -p "corpus/$t"
        if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
    done
    # Each JSON coordination file's default, prefixed with its selector byte (its index among the
    # JSON entries of files::ALL, in that order).
    local i=0 f
    for f in task-queue.json token-budget.json scheduler-state.json config/worker-types.json \
        config/heartbeat-policy.json config/worker-restart-policy.json moe/router-config.json \
        schedules.json circuit-breakers.json config/auto-fix-registry.json; do
        { printf "\\x$(printf %02x $i)"; cat "$ROOT/coordination/defaults/$f"; } > "corpus/coord_files/default-$i"
        i=$((i + 1))
    done
    cp "$ROOT/config/cortex.toml" corpus/config_toml/shipped.toml
    # The shipped router config followed by descriptions (NUL separates them).
    { cat "$ROOT/coordination/defaults/moe/router-config.json"; printf '\0Implement the login page\nfix a bug\nwrite a report'; } \
        > corpus/router/shipped
    # A real archive of a fresh home: gzipped (mode byte 0) and as a bare tar (mode byte 1).
    local cortex="$ROOT/target/debug/cortex"
    if [ ! -x "$cortex" ]; then (cd "$ROOT" && cargo build --quiet --bin cortex); fi
    local tmp
    tmp=$(mktemp -d)
    "$cortex" --home "$tmp/home" init >/dev/null
    "$cortex" --home "$tmp/home" backup --dest "$tmp/b" >/dev/null
    local archive
    archive=$(find "$tmp" -name '*.tar.gz' | head -1)
    if [ -n "$archive" ]; then
        { printf '\x00'; cat "$archive"; } > corpus/backup_archive/fresh-home.tgz
        { printf '\x01'; gzip -dc "$archive"; } > corpus/backup_archive/fresh-home.tar
        tar -xzOf "$archive" MANIFEST.json > corpus/backup_manifest/fresh-home.json
    fi
    rm -rf "$tmp"
}

seed
cargo fuzz build -O -a
status=0
for t in "${TARGETS[@]}"; do
    log="artifacts/$t.log"
    mkdir -p "artifacts/$t"
    if cargo fuzz run -O -a "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        found=none
    else
        found="FOUND (see $log and artifacts/$t/)"
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    corpus=$(find "corpus/$t" -type f | wc -l)
    printf '%-16s %6ss  executions %-10s corpus %-6s findings: %s\n' "$t" "$SECONDS_PER_TARGET" "${execs:-?}" "$corpus" "$found"
done
exit $status
