#!/usr/bin/env bash
# Benchmark: `settlegate verify` of a 1 GiB card-settlement file against
# `openssl dgst -sha256` of the same file, in the same run.
# Usage: benches/verify.sh [SIZE] [RUNS]     (defaults: 1GiB, 3)
# Prints each run and the median wall times, their ratio and verify's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1GiB}
runs=${2:-3}
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"
file="$dir/CSTL_031_20261121_0001.dat"
cargo build --release --quiet --bins
if [ ! -s "$file" ] || [ "$(cat "$dir/.size" 2>/dev/null)" != "$size" ]; then
  target/release/settlegate-generate card-settlement --size "$size" "$file"
  echo "$size" > "$dir/.size"
fi
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)"; exit 2; }
cat "$file" > /dev/null   # warm the page cache for both tools alike

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ssl=(); sg=(); rss=()
for i in $(seq "$runs"); do
  t=$( { /usr/bin/time -f "%e %M" openssl dgst -sha256 "$file" >/dev/null; } 2>&1 | tail -1)
  ssl+=("${t% *}")
  t=$( { /usr/bin/time -f "%e %M" target/release/settlegate verify --format card-settlement "$file" >/dev/null; } 2>&1 | tail -1)
  sg+=("${t% *}"); rss+=("${t#* }")
  echo "run $i: openssl ${ssl[-1]} s, settlegate verify ${sg[-1]} s, peak RSS ${rss[-1]} KiB"
done
a=$(printf '%s\n' "${ssl[@]}" | median); b=$(printf '%s\n' "${sg[@]}" | median)
m=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
echo "file: $(stat -c %s "$file") bytes, $(( $(stat -c %s "$file") / 202 - 2 )) records"
echo "median: openssl ${a} s, verify ${b} s, ratio $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", b/a}')x, peak RSS $((m / 1024)) MiB"
