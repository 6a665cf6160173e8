#!/usr/bin/env bash
# Benchmark `firma monitor` against named baselines in the same run (docs/performance.md,
# "Monitor"):
#   1. --decision deny --format json over a generated audit log vs `jq -c 'select(...)'`,
#      plus peak RSS (/usr/bin/time -v) on the log and on one 10x smaller;
#   2. --since on the log vs on one 10x smaller (seek: time must not grow with file size),
#      against a full read of the same file as the baseline;
#   3. follow latency, append -> line on stdout, vs `tail -F` measured the same way.
# Needs jq, hyperfine and GNU time. RECORDS (default 1000000, ~0.6 GB), DENY_PERCENT (10),
# SAMPLES (500). The generated files live in a temp dir that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-1000000}
DENY_PERCENT=${DENY_PERCENT:-10}
SAMPLES=${SAMPLES:-500}
WORK=$(mktemp -d /tmp/firma-monitor-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --quiet --release --bin firma --example monitor-bench
FIRMA=$PWD/target/release/firma
HELPER=$PWD/target/release/examples/monitor-bench
BIG=$WORK/big
SMALL=$WORK/small
mkdir -p "$BIG" "$SMALL" "$WORK/follow"

echo "== generating $RECORDS records ($DENY_PERCENT% deny) and $((RECORDS / 10))"
"$HELPER" gen "$BIG/audit.jsonl" "$RECORDS" "$DENY_PERCENT"
"$HELPER" gen "$SMALL/audit.jsonl" "$((RECORDS / 10))" "$DENY_PERCENT"
ls -l "$BIG/audit.jsonl" "$SMALL/audit.jsonl"

mean() { jq -r ".results[$2].mean" "$1"; }

echo
echo "== 1. deny filter: firma monitor vs jq"
deny_firma="$FIRMA monitor --state-dir $BIG --no-follow --source audit --decision deny --format json"
deny_jq="jq -c 'select(.decision==\"deny\")' $BIG/audit.jsonl"
firma_count=$($deny_firma | wc -l)
jq_count=$(jq -c 'select(.decision=="deny")' "$BIG/audit.jsonl" | wc -l)
echo "records out: firma $firma_count, jq $jq_count"
[[ "$firma_count" == "$jq_count" ]] || { echo "MISMATCH"; exit 1; }
hyperfine -N --warmup 1 --runs 3 --export-json "$WORK/deny.json" "$deny_jq" "$deny_firma"
ratio=$(jq -r '(.results[0].mean / .results[1].mean * 10 | round) / 10' "$WORK/deny.json")
echo "RESULT deny-filter: jq $(mean "$WORK/deny.json" 0) s, firma $(mean "$WORK/deny.json" 1) s, firma is ${ratio}x faster (target >= 20x)"
for dir in "$SMALL" "$BIG"; do
  /usr/bin/time -v $FIRMA monitor --state-dir "$dir" --no-follow --source audit --decision deny \
    --format json 2>"$WORK/time.txt" >/dev/null
  rss=$(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  echo "RESULT peak-rss $(stat -c %s "$dir/audit.jsonl") bytes of log: $((rss / 1024)) MiB (target <= 64 MiB, flat)"
done

echo
echo "== 2. --since on a 10x bigger file (baseline: reading the whole big file)"
for window in 15m 1m; do
  hyperfine -N --warmup 2 --runs 15 --export-json "$WORK/since.json" \
    "$FIRMA monitor --state-dir $SMALL --no-follow --source audit --since $window --format json" \
    "$FIRMA monitor --state-dir $BIG --no-follow --source audit --since $window --format json" \
    "$FIRMA monitor --state-dir $BIG --no-follow --source audit --decision deny --action-class none --format json"
  echo "RESULT since-$window: small $(mean "$WORK/since.json" 0) s, 10x file $(mean "$WORK/since.json" 1) s, full read of the 10x file $(mean "$WORK/since.json" 2) s"
done

echo
echo "== 3. follow latency, append -> stdout ($SAMPLES appends)"
: >"$WORK/follow/audit.jsonl"
firma_lat=$("$HELPER" latency "$WORK/follow/audit.jsonl" "$SAMPLES" -- \
  "$FIRMA" monitor --state-dir "$WORK/follow" --source audit --format json)
tail_lat=$("$HELPER" latency "$WORK/follow/audit.jsonl" "$SAMPLES" -- \
  tail -n0 -F "$WORK/follow/audit.jsonl")
echo "RESULT follow firma monitor: $firma_lat (target p99 <= 5000 us)"
echo "RESULT follow tail -F:       $tail_lat"
