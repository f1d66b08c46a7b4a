#!/usr/bin/env bash
# File backend throughput and memory, side by side with cp/cat on the same disk, in one run.
#   [BENCH_DIR=/dev/shm] benches/file_storage.sh [SIZE_MIB]   (default 1024)
# Prints a Markdown table for BENCHMARKS.md. Each figure is the best of 3 runs (warm page cache
# for every contender alike; `sync` before each run, untimed).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
cargo build --release -q -p nodetool-cli
bin=$PWD/target/release/nodetool
# BENCH_DIR picks the filesystem (default: target/ on the project's disk); e.g. /dev/shm takes
# the disk's own run-to-run noise out and leaves the software cost of each contender.
mkdir -p "${BENCH_DIR:-$PWD/target}"
work=$(mktemp -d "${BENCH_DIR:-$PWD/target}/bench-file.XXXXXX")
trap 'rm -rf "$work"' EXIT
export NODETOOL_CONFIG_DIR=$work/config HOME=$work
unset ENV S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY SUPABASE_URL SUPABASE_KEY
mkdir -p "$work/config"
src=$work/src.bin
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$src"

# best_of CMD...: seconds (best of 3) and peak RSS in KiB of the last run.
best_of() {
  local best=999999 t rss
  for _ in 1 2 3; do
    # Start clean: no contender pays for the previous one's dirty pages (writeback and
    # dirty-page throttling otherwise penalise whichever runs after the most writing).
    sync
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1 </dev/null
    read -r t rss < "$work/time"
    best=$(awk -v a="$t" -v b="$best" 'BEGIN{print (a<b)?a:b}')
  done
  echo "$best $rss"
}

read -r base_t base_rss < <(best_of "$bin" storage info)
read -r cp_t _ < <(best_of cp "$src" "$work/cp.bin")
read -r dd_t _ < <(best_of dd if="$src" of="$work/dd.bin" bs=1M conv=fsync status=none)
read -r put_t put_rss < <(best_of "$bin" storage put bench/obj.bin "$src")
read -r cat_t _ < <(best_of sh -c "cat '$src' > '$work/cat.out'")
read -r catmv_t _ < <(best_of sh -c "cat '$src' > '$work/cm.tmp' && rm -f '$work/cm.out' && mv '$work/cm.tmp' '$work/cm.out'")
read -r get_t get_rss < <(best_of "$bin" storage get bench/obj.bin "$work/get.out")
read -r getout_t _ < <(best_of sh -c "'$bin' storage get bench/obj.bin - > /dev/null")
read -r catnull_t _ < <(best_of sh -c "cat '$src' > /dev/null")
cmp "$src" "$work/get.out"

mibs() { awk -v s="$size_mib" -v t="$1" 'BEGIN{ if (t<=0) t=0.001; printf "%.0f", s/t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a<=0) a=0.001; printf "%.2f", b/a }'; }

echo "| operation (${size_mib} MiB) | nodetool | baseline | ratio (nodetool speed / baseline speed) |"
echo "|---|---|---|---|"
echo "| upload (put file) vs \`cp\` | $(mibs "$put_t") MiB/s | $(mibs "$cp_t") MiB/s | $(ratio "$put_t" "$cp_t") |"
echo "| upload (put file, fsync) vs \`dd conv=fsync\` | $(mibs "$put_t") MiB/s | $(mibs "$dd_t") MiB/s | $(ratio "$put_t" "$dd_t") |"
echo "| download to file vs \`cat > file\` | $(mibs "$get_t") MiB/s | $(mibs "$cat_t") MiB/s | $(ratio "$get_t" "$cat_t") |"
echo "| download to file vs \`cat > tmp && mv tmp file\` (the same never-partial replace) | $(mibs "$get_t") MiB/s | $(mibs "$catmv_t") MiB/s | $(ratio "$get_t" "$catmv_t") |"
echo "| download to /dev/null vs \`cat > /dev/null\` | $(mibs "$getout_t") MiB/s | $(mibs "$catnull_t") MiB/s | $(ratio "$getout_t" "$catnull_t") |"
echo
echo "Peak RSS: idle \`storage info\` ${base_rss} KiB; put ${put_rss} KiB (growth $(( (put_rss - base_rss) / 1024 )) MiB); get ${get_rss} KiB (growth $(( (get_rss - base_rss) / 1024 )) MiB)."
