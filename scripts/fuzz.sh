#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10): the Gravitee definition parser, JOLT chains, the
# xml-json converter, the JavaScript engine and JSON Schemas (agent/fuzz), and the
# EL parser (hgw-el). Installs cargo-fuzz when missing. On the stable toolchain cargo-fuzz's nightly
# flags are unlocked with RUSTC_BOOTSTRAP=1 (no nightly download); set FUZZ_TOOLCHAIN=nightly to use
# an installed nightly. Exits non-zero when a fuzzer finds a crash (the input lands in artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-10}"
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 SECONDS" >&2; exit 64 ;;
esac
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
# One target directory for both fuzz projects, kept where the machine keeps caches: the fuzz build
# (every dependency again, with coverage instrumentation) is the slowest step of a CI run on a fresh
# clone, and only this project's crates change between runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hgw-fuzz-target}"
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then toolchain=("+${FUZZ_TOOLCHAIN}"); else export RUSTC_BOOTSTRAP=1; fi

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
    cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -print_final_stats=1 2>&1 | tail -n 15
    exit "${PIPESTATUS[0]}"
  )
done
echo "==> fuzz: EL and FreeMarker parsers (${seconds}s each)"
bash el/fuzz/run.sh "$seconds" 2>&1 | tail -n 30
exit "${PIPESTATUS[0]}"
