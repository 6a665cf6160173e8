#!/usr/bin/env bash
# Benchmark `firma monitor` against named baselines in the same run (docs/performance.md,
# "Monitor"), in alternating rounds, printing every round's ratio and the median:
#   1. --decision deny --format json over a generated audit log vs `grep -F '"decision":"deny"'`
#      (target: firma <= 1.5x grep's time) and vs `jq -c 'select(...)'` (target: >= 30x faster),
#      plus peak RSS (/usr/bin/time -v) on the log and on one 10x smaller;
#   2. --since on the log vs on one 10x smaller, for windows ending at the last record (none,
#      1 minute = 6,000 records, 15 minutes = 90,000; target: <= 10 ms, not growing with file
#      size), against a full read of the same file;
#   3. follow latency, append -> line on stdout, vs `tail -F` measured the same way
#      (target: firma's p99 <= 2x tail's);
#   4. the log rotated into 10 files (audit.jsonl.9 ... .1, audit.jsonl) vs the one file: the
#      deny filter and the --since seek (target: unchanged).
# Every command's output goes through a pipe (hyperfine --output=pipe): GNU grep stops at the
# first match when it sees stdout is /dev/null, which would make it no baseline at all.
# Needs jq, hyperfine and GNU time. RECORDS (default 1000000, ~0.6 GB), DENY_PERCENT (10),
# SAMPLES (500), ROUNDS (3), SECTIONS ("1 2 3 4": which comparisons to run). The generated files
# live in a temp dir that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-1000000}
DENY_PERCENT=${DENY_PERCENT:-10}
SAMPLES=${SAMPLES:-500}
ROUNDS=${ROUNDS:-3}
SECTIONS=${SECTIONS:-1 2 3 4}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
WORK=$(mktemp -d /tmp/firma-monitor-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --quiet --release --bin firma --example monitor-bench
FIRMA=$PWD/target/release/firma
HELPER=$PWD/target/release/examples/monitor-bench
BIG=$WORK/big
SMALL=$WORK/small
mkdir -p "$BIG" "$SMALL" "$WORK/follow"

if want 1 || want 2 || want 4; then
  echo "== generating $RECORDS records ($DENY_PERCENT% deny) and $((RECORDS / 10))"
  "$HELPER" gen "$BIG/audit.jsonl" "$RECORDS" "$DENY_PERCENT"
  "$HELPER" gen "$SMALL/audit.jsonl" "$((RECORDS / 10))" "$DENY_PERCENT"
  ls -l "$BIG/audit.jsonl" "$SMALL/audit.jsonl"
fi

# hyperfine <runs> <json> <command>...: every output through a pipe.
bench() {
  local runs=$1 json=$2
  shift 2
  hyperfine -N --output=pipe --warmup 1 --runs "$runs" --export-json "$json" "$@" >/dev/null
}
# Field of result i: mean, user, system (seconds).
field() { jq -r ".results[$2].$3" "$1"; }
# CPU seconds (user + system) of result i.
cpu() { jq -r "(.results[$2].user + .results[$2].system)" "$1"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# Windows relative to each log's last record (the logs end when they were generated, not now).
last_ts() { tail -n 1 "$1/audit.jsonl" | jq -r .ts; }
before() { date -u -d "$1 - $2" +%Y-%m-%dT%H:%M:%S.%NZ; }
deny_firma="$FIRMA monitor --state-dir $BIG --no-follow --source audit --decision deny --format json"

if want 1; then
echo
echo "== 1. deny filter, --format json: firma monitor vs grep -F and jq ($ROUNDS rounds)"
deny_grep="grep -F \"decision\\\":\\\"deny\" $BIG/audit.jsonl"
deny_jq="jq -c 'select(.decision==\"deny\")' $BIG/audit.jsonl"
firma_count=$($deny_firma | wc -l)
grep_count=$(grep -cF '"decision":"deny"' "$BIG/audit.jsonl")
jq_count=$(jq -c 'select(.decision=="deny")' "$BIG/audit.jsonl" | wc -l)
echo "records out: firma $firma_count, grep $grep_count, jq $jq_count"
[[ "$firma_count" == "$jq_count" && "$firma_count" == "$grep_count" ]] || { echo "MISMATCH"; exit 1; }
: >"$WORK/grep.ratios"; : >"$WORK/grep.cpu"; : >"$WORK/jq.ratios"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which command runs first.
  if (( round % 2 )); then
    bench 5 "$WORK/d.json" "$deny_grep" "$deny_firma"; g=0; f=1
  else
    bench 5 "$WORK/d.json" "$deny_firma" "$deny_grep"; g=1; f=0
  fi
  r=$(ratio "$(field "$WORK/d.json" $f mean)" "$(field "$WORK/d.json" $g mean)")
  c=$(ratio "$(cpu "$WORK/d.json" $f)" "$(cpu "$WORK/d.json" $g)")
  echo "$r" >>"$WORK/grep.ratios"; echo "$c" >>"$WORK/grep.cpu"
  echo "round $round: grep $(ms "$(field "$WORK/d.json" $g mean)"), firma $(ms "$(field "$WORK/d.json" $f mean)"): firma/grep ${r}x wall, ${c}x CPU"
  bench 1 "$WORK/j.json" "$deny_jq" "$deny_firma"
  r=$(ratio "$(field "$WORK/j.json" 0 mean)" "$(field "$WORK/j.json" 1 mean)")
  echo "$r" >>"$WORK/jq.ratios"
  echo "round $round: jq $(ms "$(field "$WORK/j.json" 0 mean)"), firma $(ms "$(field "$WORK/j.json" 1 mean)"): firma ${r}x faster than jq"
done
echo "RESULT deny-filter vs grep -F: median firma/grep $(median <"$WORK/grep.ratios")x wall, $(median <"$WORK/grep.cpu")x CPU (target <= 1.5x)"
echo "RESULT deny-filter vs jq: median firma $(median <"$WORK/jq.ratios")x faster (target >= 30x)"
for dir in "$SMALL" "$BIG"; do
  /usr/bin/time -v $FIRMA monitor --state-dir "$dir" --no-follow --source audit --decision deny \
    --format json 2>"$WORK/time.txt" >/dev/null
  rss=$(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$WORK/time.txt")
  echo "RESULT peak-rss $(stat -c %s "$dir/audit.jsonl") bytes of log: $((rss / 1024)) MiB (target <= 64 MiB, flat)"
done

fi

if want 2; then
echo
echo "== 2. --since on a 10x bigger file (baseline: reading the whole big file)"
# "end" holds no record (the seek alone), "1m" 6,000 records, "15m" 90,000.
# A registered action class the generated log never holds: a full read that outputs nothing.
full_read="$FIRMA monitor --state-dir $BIG --no-follow --source audit --action-class system.install --format json"
for window in end 1m 15m; do
  case $window in
    end) big_since=$(before "$(last_ts "$BIG")" "-1 second"); small_since=$(before "$(last_ts "$SMALL")" "-1 second") ;;
    1m) big_since=$(before "$(last_ts "$BIG")" "1 minute"); small_since=$(before "$(last_ts "$SMALL")" "1 minute") ;;
    15m) big_since=$(before "$(last_ts "$BIG")" "15 minutes"); small_since=$(before "$(last_ts "$SMALL")" "15 minutes") ;;
  esac
  out=$($FIRMA monitor --state-dir "$BIG" --no-follow --source audit --since "$big_since" --format json | wc -l)
  bench 15 "$WORK/since.json" \
    "$FIRMA monitor --state-dir $SMALL --no-follow --source audit --since $small_since --format json" \
    "$FIRMA monitor --state-dir $BIG --no-follow --source audit --since $big_since --format json" \
    "$full_read"
  echo "RESULT since-$window ($out records out): small $(ms "$(field "$WORK/since.json" 0 mean)"), 10x file $(ms "$(field "$WORK/since.json" 1 mean)") ($(ms "$(cpu "$WORK/since.json" 1)") CPU), full read of the 10x file $(ms "$(field "$WORK/since.json" 2 mean)"): 10x/small $(ratio "$(field "$WORK/since.json" 1 mean)" "$(field "$WORK/since.json" 0 mean)")x"
done
echo "(target: --since on the big file <= 10 ms)"

fi

if want 3; then
echo
echo "== 3. follow latency, append -> stdout ($SAMPLES appends a round, $ROUNDS rounds)"
: >"$WORK/follow.ratios"; : >"$WORK/follow50.ratios"
firma_follow() {
  "$HELPER" latency "$WORK/follow/audit.jsonl" "$SAMPLES" -- \
    "$FIRMA" monitor --state-dir "$WORK/follow" --source audit --format json -n 0
}
tail_follow() { "$HELPER" latency "$WORK/follow/audit.jsonl" "$SAMPLES" -- tail -n0 -F "$WORK/follow/audit.jsonl"; }
for round in $(seq 1 "$ROUNDS"); do
  : >"$WORK/follow/audit.jsonl"
  # Alternate which follower runs first.
  if (( round % 2 )); then
    firma_lat=$(firma_follow); tail_lat=$(tail_follow)
  else
    tail_lat=$(tail_follow); firma_lat=$(firma_follow)
  fi
  r=$(ratio "$(jq -r .p99_us <<<"$firma_lat")" "$(jq -r .p99_us <<<"$tail_lat")")
  r50=$(ratio "$(jq -r .p50_us <<<"$firma_lat")" "$(jq -r .p50_us <<<"$tail_lat")")
  echo "$r" >>"$WORK/follow.ratios"; echo "$r50" >>"$WORK/follow50.ratios"
  echo "round $round: firma $firma_lat, tail -F $tail_lat: p99 firma/tail ${r}x, p50 ${r50}x"
done
echo "RESULT follow p99: median firma/tail -F $(median <"$WORK/follow.ratios")x (target <= 2x); p50 median $(median <"$WORK/follow50.ratios")x"

fi

if want 4; then
echo
echo "== 4. the same log rotated into 10 files vs one file ($ROUNDS rounds)"
ROT=$WORK/rotated
mkdir -p "$ROT"
split -n l/10 -d -a 1 "$BIG/audit.jsonl" "$ROT/part."
# part.0 holds the oldest records: audit.jsonl.9; part.9 the newest: the live file.
for k in $(seq 0 8); do mv "$ROT/part.$k" "$ROT/audit.jsonl.$((9 - k))"; done
mv "$ROT/part.9" "$ROT/audit.jsonl"
rot_deny="$FIRMA monitor --state-dir $ROT --no-follow --source audit --decision deny --format json"
[[ "$($rot_deny | wc -l)" == "$($deny_firma | wc -l)" ]] || { echo "MISMATCH on the rotated log"; exit 1; }
seek_since=$(before "$(last_ts "$BIG")" "-1 second")
one_seek="$FIRMA monitor --state-dir $BIG --no-follow --source audit --since $seek_since --format json"
rot_seek="$FIRMA monitor --state-dir $ROT --no-follow --source audit --since $seek_since --format json"
: >"$WORK/rot.ratios"; : >"$WORK/rotseek.ratios"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then
    bench 5 "$WORK/r.json" "$deny_firma" "$rot_deny"; o=0; t=1
  else
    bench 5 "$WORK/r.json" "$rot_deny" "$deny_firma"; o=1; t=0
  fi
  r=$(ratio "$(field "$WORK/r.json" $t mean)" "$(field "$WORK/r.json" $o mean)")
  echo "$r" >>"$WORK/rot.ratios"
  bench 15 "$WORK/s.json" "$one_seek" "$rot_seek"
  s=$(ratio "$(field "$WORK/s.json" 1 mean)" "$(field "$WORK/s.json" 0 mean)")
  echo "$s" >>"$WORK/rotseek.ratios"
  echo "round $round: deny filter one file $(ms "$(field "$WORK/r.json" $o mean)"), 10 files $(ms "$(field "$WORK/r.json" $t mean)"): ${r}x; --since seek one file $(ms "$(field "$WORK/s.json" 0 mean)"), 10 files $(ms "$(field "$WORK/s.json" 1 mean)"): ${s}x"
done
echo "RESULT rotated/one file: deny filter median $(median <"$WORK/rot.ratios")x, --since seek median $(median <"$WORK/rotseek.ratios")x (target: about 1x)"
fi
