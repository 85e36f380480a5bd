#!/usr/bin/env bash
# One script for a lent GPU machine: GPU tests, then GPU timings, in well under 10 minutes.
#   bash bench/gpu_check.sh            (results in $OUT or ./gpu-results)
# Installs echoclip (and the test extra) into a fresh venv first; torch comes with its CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
python3 -m venv /tmp/gpu-venv && . /tmp/gpu-venv/bin/activate
pip install --quiet --upgrade pip && pip install --quiet -e '.[dev]'
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python -m pytest -m gpu -q -rs 2>&1 | tee "$out/pytest-gpu.txt"
# End to end from compressed DICOM, bf16, against upstream's loop and the model alone.
python bench/bench_embed.py --videos 64 --frames 60 --batch-size 256 --device cuda --precision bf16 \
  --workers 0,"$(( $(nproc) - 1 ))" 2>&1 | tee "$out/bench_embed.txt"
python bench/bench_search.py --rows 1000000 --queries 20 2>&1 | tee "$out/bench_search.txt" || true
