#!/usr/bin/env bash
# Benchmark: `settlegate verify` of a 1 GiB card-settlement file against
# `openssl dgst -sha256` of the same file, in the same run, on two files:
#   mixed   a third of the records with one Hangul merchant name, every 17th a cancel
#   hangul  95 % of the merchants named in Hangul (50 000 names of 3 to 18
#           syllables), a tenth of the records cancels or refunds
# Usage: benches/verify.sh [SIZE] [RUNS] [FILES]   (defaults: 1GiB, 3, "mixed hangul")
# Prints each run and, per file, the median wall times, their ratio and
# verify's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1GiB}
runs=${2:-3}
files=${3:-mixed hangul}
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"
cargo build --release --quiet --bins
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)"; exit 2; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for kind in $files; do
  case $kind in
    mixed) file="$dir/CSTL_031_20261121_0001.dat"; mix=() ;;
    hangul) file="$dir/hangul/CSTL_031_20261121_0001.dat"; mix=(--hangul 95 --cancels 10) ;;
    *) echo "unknown file kind $kind (mixed or hangul)"; exit 2 ;;
  esac
  mkdir -p "$(dirname "$file")"
  stamp="$(dirname "$file")/.size-$kind"
  if [ ! -s "$file" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$size" ]; then
    target/release/settlegate-generate card-settlement --size "$size" "${mix[@]}" "$file"
    echo "$size" > "$stamp"
  fi
  cat "$file" > /dev/null   # warm the page cache for both tools alike
  ssl=(); sg=(); rss=()
  for i in $(seq "$runs"); do
    t=$( { /usr/bin/time -f "%e %M" openssl dgst -sha256 "$file" >/dev/null; } 2>&1 | tail -1)
    ssl+=("${t% *}")
    t=$( { /usr/bin/time -f "%e %M" target/release/settlegate verify --format card-settlement "$file" >/dev/null; } 2>&1 | tail -1)
    sg+=("${t% *}"); rss+=("${t#* }")
    echo "$kind run $i: openssl ${ssl[-1]} s, settlegate verify ${sg[-1]} s, ratio $(awk -v a="${ssl[-1]}" -v b="${sg[-1]}" 'BEGIN{printf "%.2f", b/a}')x, peak RSS ${rss[-1]} KiB"
  done
  a=$(printf '%s\n' "${ssl[@]}" | median); b=$(printf '%s\n' "${sg[@]}" | median)
  m=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
  echo "$kind file: $(stat -c %s "$file") bytes, $(( $(stat -c %s "$file") / 202 - 2 )) records"
  echo "$kind median: openssl ${a} s, verify ${b} s, ratio $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", b/a}')x, peak RSS $((m / 1024)) MiB"
done
