#!/usr/bin/env bash
# One script for a lent GPU machine: GPU tests, then GPU timings, in about 6 minutes.
# Prepare here with `bash bench/gpu_wheels.sh`, then run there with carry [".whl"]:
#   bash bench/gpu_check.sh            (results in $OUT or ./gpu-results)
# The machine has no network: the project runs from src/ on its own torch/torchvision, with the
# missing packages installed from the carried wheels.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())" \
  | tee -a "$out/gpu.txt"
nproc | tee -a "$out/gpu.txt"
timeout 150 python3 -m pytest -m gpu -q -rs -p no:cacheprovider 2>&1 | tee "$out/pytest-gpu.txt"
# End to end from compressed DICOM, bf16: JPEG decoded by 15 CPU workers, then on the GPU (nvJPEG).
timeout 240 python3 bench/bench_embed.py --videos 640 --unique 24 --frames 60 --batch-size 256 --device cuda \
  --precision bf16 --workers "$(( $(nproc) - 1 ))" --jpeg-decode workers,device --upstream-videos 8 2>&1 \
  | tee "$out/bench_embed.txt"
# GPU memory by batch size (device decode): peak should follow the batch size, not the input count.
for b in 64 512; do
  timeout 60 python3 bench/bench_embed.py --videos 320 --unique 8 --frames 60 --batch-size $b --device cuda \
    --precision bf16 --workers "$(( $(nproc) - 1 ))" --jpeg-decode device --upstream-videos 1 2>&1 \
    | tee -a "$out/bench_memory_gpu.txt"
done
timeout 60 python3 bench/bench_search.py --rows 1000000 --queries 20 2>&1 | tee "$out/bench_search.txt"
