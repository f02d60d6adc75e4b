#!/usr/bin/env bash
# scripts/fuzz.sh [--build] SECONDS — runs every fuzz target for SECONDS each (default 10): the Gravitee
# definition parser, JOLT chains, the xml-json converter, the JavaScript engine and JSON Schemas
# (agent/fuzz), and the EL and FreeMarker parsers (hgw-el). `--build` only builds them (CI starts that in
# the background while the tests run). Installs cargo-fuzz when missing. On the stable toolchain
# cargo-fuzz's nightly flags are unlocked with RUSTC_BOOTSTRAP=1 (no nightly download); set
# FUZZ_TOOLCHAIN=nightly to use an installed nightly. Exits non-zero when a fuzzer finds a crash (the
# input lands in artifacts/).
#
# Built without optimisation by default (`cargo fuzz --dev`: AddressSanitizer and debug assertions on, no
# debug info), measured on a fresh 2-core machine: every dependency built in 6 minutes instead of 15
# (cargo-fuzz's release build has one codegen unit per crate; opt-level 1 with 256 took 15½ too), for
# a tenth to a twentieth of the executions per second. A smoke pass replays the seeds and mutates them a
# few thousand times; for a campaign, FUZZ_RELEASE=1 builds cargo-fuzz's optimised way.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=no
if [ "${1:-}" = --build ]; then build_only=yes; shift; fi
seconds="${1:-10}"
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 [--build] SECONDS" >&2; exit 64 ;;
esac
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/tools.sh cargo-fuzz
# One target directory for both fuzz projects, kept where the machine keeps caches: the fuzz build
# (every dependency again, with coverage instrumentation) is the slowest step of a CI run on a fresh
# clone, and only this project's crates change between runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hgw-fuzz-target}"
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then toolchain=("+${FUZZ_TOOLCHAIN}"); else export RUSTC_BOOTSTRAP=1; fi
# How both fuzz projects build (el/fuzz/run.sh reads FUZZ_BUILD_FLAGS too), the same for --build and a run.
if [ "${FUZZ_RELEASE:-}" = 1 ]; then
  export FUZZ_BUILD_FLAGS="-O"
else
  export FUZZ_BUILD_FLAGS="--dev" CARGO_PROFILE_DEV_DEBUG=0
fi
read -ra build_flags <<<"$FUZZ_BUILD_FLAGS"

if [ "$build_only" = yes ]; then
  echo "==> fuzz: building the targets ($FUZZ_BUILD_FLAGS)"
  (cd agent/fuzz && cargo "${toolchain[@]}" fuzz build "${build_flags[@]}")
  (cd el/fuzz && cargo "${toolchain[@]}" fuzz build "${build_flags[@]}")
  exit 0
fi

# agent/fuzz targets: name, what it fuzzes, largest input.
agent_targets=(
  "definition|agent definition parser|65536"
  "jolt|JOLT specifications of json-to-json|4096"
  "orgjson|XML <-> JSON conversion of xml-json / json-xml|16384"
  "javascript|JavaScript engine of the js / javascript policies|4096"
  "json_schema|JSON Schemas of json-validation, and documents validated against them|8192"
)
for entry in "${agent_targets[@]}"; do
  IFS='|' read -r target what max_len <<<"$entry"
  echo "==> fuzz: $what (${seconds}s)"
  (
    cd agent/fuzz
    mkdir -p "corpus/$target"
    cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -print_final_stats=1 2>&1 | tail -n 15
    exit "${PIPESTATUS[0]}"
  )
done
echo "==> fuzz: EL and FreeMarker parsers (${seconds}s each)"
bash el/fuzz/run.sh "$seconds" 2>&1 | tail -n 30
exit "${PIPESTATUS[0]}"
