#!/usr/bin/env bash
# Runs the hgw-el fuzz targets for SECONDS each (default 10), e.g. from CI: el/fuzz/run.sh 10: `parse`
# (Gravitee EL) and `freemarker` (the FreeMarker subset of assign-content).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes `-Z` sanitizer flags that only
# a nightly compiler accepts; by default the active (stable) toolchain is unlocked with
# RUSTC_BOOTSTRAP=1 so no nightly download is needed. Set FUZZ_TOOLCHAIN=nightly to use an
# installed nightly instead. New corpus entries go to corpus/<target> (git-ignored), crashes to
# artifacts/<target>; the exit status is non-zero when the fuzzer finds a crash.
set -euo pipefail

seconds="${1:-10}"
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 SECONDS" >&2; exit 64 ;;
esac
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed; run: cargo install cargo-fuzz" >&2
  exit 1
fi

toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  toolchain=("+${FUZZ_TOOLCHAIN}")
else
  export RUSTC_BOOTSTRAP=1
fi

# How to build: scripts/fuzz.sh sets FUZZ_BUILD_FLAGS (e.g. --dev) for both fuzz projects; cargo-fuzz's
# default (an optimised build) otherwise.
read -ra build_flags <<<"${FUZZ_BUILD_FLAGS:-}"
mkdir -p corpus/parse corpus/freemarker
# -max_len above the 4 KiB expression limit so the length checks are exercised too.
cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" parse corpus/parse seeds/parse -- \
  -max_total_time="$seconds" -max_len=8192 -timeout=10 -dict=el.dict -print_final_stats=1
exec cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" freemarker corpus/freemarker seeds/freemarker -- \
  -max_total_time="$seconds" -max_len=8192 -timeout=10 -print_final_stats=1
