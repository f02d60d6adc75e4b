#!/usr/bin/env bash
# scripts/fuzz.sh [--build] [--el] SECONDS — runs every fuzz target for SECONDS each (default 10): the
# Gravitee definition parser, JOLT chains, the xml-json converter, the JavaScript engine and JSON Schemas
# (agent/fuzz), and the EL and FreeMarker parsers (el/fuzz). `--build` only builds them; `--el` takes the
# EL and FreeMarker targets only (CI's pass: see .ci/run). Installs cargo-fuzz when missing. On the stable
# toolchain cargo-fuzz's nightly flags are unlocked with RUSTC_BOOTSTRAP=1 (no nightly download); set
# FUZZ_TOOLCHAIN=nightly to use an installed nightly. Exits non-zero when a fuzzer finds a crash (the
# input lands in artifacts/).
#
# Built without optimisation by default (`cargo fuzz --dev`: AddressSanitizer and debug assertions on, no
# debug info), measured on a fresh 2-core machine: the agent targets' dependencies built in 6 minutes
# instead of 15 (cargo-fuzz's release build has one codegen unit per crate; opt-level 1 with 256 took 15½
# too), for a tenth to a twentieth of the executions per second. For a campaign, FUZZ_RELEASE=1 builds
# cargo-fuzz's optimised way.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=no; el_only=no
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build_only=yes ;;
    --el) el_only=yes ;;
    *) break ;;
  esac
  shift
done
seconds="${1:-10}"
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 [--build] [--el] SECONDS" >&2; exit 64 ;;
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
  [ "$el_only" = yes ] || (cd agent/fuzz && cargo "${toolchain[@]}" fuzz build "${build_flags[@]}")
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
# Two fuzzers at a time, one per core of the machines CI runs on; each one's output is kept and shown
# once all have ended, in order, with its exit status (a crash fails the run).
logs=$(mktemp -d); trap 'rm -rf "$logs"' EXIT
names=()
start_fuzzer() { # start_fuzzer WHAT COMMAND...
  local n=${#names[@]}
  names+=("$1"); shift
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || true; done
  ( rc=0; "$@" >"$logs/$n.out" 2>&1 || rc=$?; echo "$rc" >"$logs/$n.rc" ) &
}
agent_fuzzer() { # agent_fuzzer TARGET MAX_LEN
  cd agent/fuzz && mkdir -p "corpus/$1" &&
    cargo "${toolchain[@]}" fuzz run "${build_flags[@]}" "$1" "corpus/$1" "seeds/$1" -- \
      -max_total_time="$seconds" -max_len="$2" -timeout=10 -print_final_stats=1
}
[ "$el_only" = yes ] && agent_targets=()
for entry in "${agent_targets[@]}"; do
  IFS='|' read -r target what max_len <<<"$entry"
  start_fuzzer "$what (${seconds}s)" agent_fuzzer "$target" "$max_len"
done
start_fuzzer "EL and FreeMarker parsers (${seconds}s each)" bash el/fuzz/run.sh "$seconds"
wait
failed=0
for n in "${!names[@]}"; do
  rc=$(cat "$logs/$n.rc" 2>/dev/null || echo 1)
  echo "==> fuzz: ${names[$n]}: exit $rc"
  grep -v '^ *\(Compiling\|Finished\|Running\)' "$logs/$n.out" | tail -n 20
  [ "$rc" -eq 0 ] || failed=1
done
exit "$failed"
