#!/usr/bin/env bash
# Sidecar vs Squid: allowed-request throughput (wrk, 16 connections) and added p50 latency
# (1 connection) through each proxy to the same local upstream, in the same run.
# Needs: wrk and Debian's squid (apt-get install -y squid wrk). Results: docs/performance.md.
#   BENCH_SECS=10 BENCH_ROUNDS=3 benches/proxy-vs-squid.sh
#   BENCH_PIN=1 benches/proxy-vs-squid.sh   # a core for the proxies, one for wrk + upstream
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk squid; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y squid wrk" >&2; exit 2; }
done
exec cargo bench --bench proxy
