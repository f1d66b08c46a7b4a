#!/usr/bin/env bash
# File backend throughput and memory, side by side with cp/cat on the same disk, in one run.
#   [BENCH_DIR=/dev/shm] benches/file_storage.sh [SIZE_MIB]   (default 1024)
# Prints a Markdown table for BENCHMARKS.md. Each figure is the best of ROUNDS (default 5)
# interleaved rounds (warm page cache for every contender alike; a fresh target and `sync`
# before each run, untimed).
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

# Contenders: NAME -> command, and the untimed step that gives it a fresh target (every
# contender creates its output file anew in every run, so none pays for freeing another's
# file, or for truncating its own, inside its timing).
declare -A cmd prep best rss
names=(info cp dd put cat catmv get getnull catnull)
obj=$work/config/assets/bench/obj.bin
cmd[info]="'$bin' storage info";                                 prep[info]=":"
cmd[cp]="cp '$src' '$work/cp.bin'";                              prep[cp]="rm -f '$work/cp.bin'"
cmd[dd]="dd if='$src' of='$work/dd.bin' bs=1M conv=fsync status=none"; prep[dd]="rm -f '$work/dd.bin'"
cmd[put]="'$bin' storage put bench/obj.bin '$src'";              prep[put]="rm -f '$obj'"
cmd[cat]="cat '$src' > '$work/cat.out'";                         prep[cat]="rm -f '$work/cat.out'"
cmd[catmv]="cat '$src' > '$work/cm.tmp' && mv '$work/cm.tmp' '$work/cm.out'"; prep[catmv]="rm -f '$work/cm.out'"
cmd[get]="'$bin' storage get bench/obj.bin '$work/get.out'";     prep[get]="rm -f '$work/get.out'"
cmd[getnull]="'$bin' storage get bench/obj.bin - > /dev/null";   prep[getnull]=":"
cmd[catnull]="cat '$src' > /dev/null";                           prep[catnull]=":"
for n in "${names[@]}"; do best[$n]=999999; done

# The object every download reads (put's own runs replace it).
"$bin" storage put bench/obj.bin "$src" >/dev/null 2>&1

# ROUNDS rounds (default 5); each runs every contender once, in an order rotated by one per
# round so that no contender always follows the same one. A contender's figure is its best
# round; peak RSS is from its last run.
rounds=${ROUNDS:-5}
count=${#names[@]}
for ((r = 0; r < rounds; r++)); do
  for ((i = 0; i < count; i++)); do
    n=${names[$(((i + r) % count))]}
    sh -c "${prep[$n]}"
    # Start clean: no contender pays for the previous one's dirty pages.
    sync
    /usr/bin/time -f '%e %M' -o "$work/time" sh -c "${cmd[$n]}" >/dev/null 2>&1 </dev/null
    read -r t m < "$work/time"
    best[$n]=$(awk -v a="$t" -v b="${best[$n]}" 'BEGIN{print (a<b)?a:b}')
    rss[$n]=$m
  done
done
cmp "$src" "$work/get.out"
base_rss=${rss[info]} put_rss=${rss[put]} get_rss=${rss[get]}
cp_t=${best[cp]} dd_t=${best[dd]} put_t=${best[put]} cat_t=${best[cat]} catmv_t=${best[catmv]}
get_t=${best[get]} getout_t=${best[getnull]} catnull_t=${best[catnull]}

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
