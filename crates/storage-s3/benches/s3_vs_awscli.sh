#!/usr/bin/env bash
# 100 MiB upload + download through S3Storage vs `aws s3 cp`, both against one local moto_server
# started by the bench, in the same run. Prints both timings and the ratio.
# Needs: moto_server and aws on PATH (pip install 'moto[server]' awscli).
# Knobs: NODETOOL_BENCH_S3_MIB (default 100), NODETOOL_BENCH_S3_ROUNDS (default 3, medians).
set -euo pipefail
cd "$(dirname "$0")/../../.."
for bin in moto_server aws; do
  command -v "$bin" >/dev/null || { echo "s3_vs_awscli: $bin not found (pip install 'moto[server]' awscli)" >&2; exit 1; }
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(aws --version 2>&1); moto $(python3 -c 'import moto; print(moto.__version__)')"
cargo bench -p nodetool-storage-s3 --bench s3_vs_awscli
