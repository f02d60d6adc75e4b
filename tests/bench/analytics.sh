#!/usr/bin/env bash
# Analytics throughput of hgw-agent: records pushed on the Analytics gRPC stream the way dataplanes do
# (batches of 500), acknowledged once spooled (fsync per group commit), uploaded as gzip NDJSON to the
# Cloud Gate emulator. Prints records/s ingested and delivered, and gzip bytes per record on the wire.
#
#   bash tests/bench/analytics.sh [RECORDS] [STREAMS] [-- extra hgw-agent flags]
#   e.g. bash tests/bench/analytics.sh 200000 2 -- --spool-fsync never
#
# Release build by default; PROFILE=debug uses the debug binaries. A benchmark, not a test.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p hgw-agent -p hgw-tests --bin hgw-agent --bin hgw-cloudgate-sim --bin hgw-bench-analytics
else
  cargo build -q -p hgw-agent -p hgw-tests --bin hgw-agent --bin hgw-cloudgate-sim --bin hgw-bench-analytics
fi
HGW_BIN_DIR="$TARGET/$PROFILE" RUST_LOG="${RUST_LOG:-warn}" exec "$TARGET/$PROFILE/hgw-bench-analytics" "$@"
