#!/usr/bin/env bash
# One script for a lent GPU machine: GPU tests, then GPU timings, in about 6 minutes.
# Prepare here with `bash bench/gpu_wheels.sh`, then run there with carry [".whl"]:
#   bash bench/gpu_check.sh            (results in $OUT or ./gpu-results)
# The machine has no network: the project runs from src/ on its own torch/torchvision, with the
# missing packages installed from the carried wheels. A dry run of the flow on a CPU machine:
#   DEVICE=cpu PRECISION=fp32 VIDEOS=4 UNIQUE=2 BATCH=8 NO_WHEELS=1 bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
device=${DEVICE:-cuda} precision=${PRECISION:-bf16} videos=${VIDEOS:-640} unique=${UNIQUE:-24} batch=${BATCH:-256}
workers=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
mkdir -p "$out"
if [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD
else
  export PYTHONPATH=$PWD/src:$PWD
fi
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
$py -m echoclip_cli info 2>&1 | tee -a "$out/gpu.txt"
timeout 150 $py -m pytest -m gpu -q -rs -p no:cacheprovider 2>&1 | tee "$out/pytest-gpu.txt"
# End to end from compressed DICOM: JPEG decoded by CPU workers, then on the GPU (nvJPEG).
timeout 240 $py bench/bench_embed.py --videos "$videos" --unique "$unique" --frames 60 --batch-size "$batch" \
  --device "$device" --precision "$precision" --workers "$workers" --jpeg-decode workers,device --upstream-videos 8 \
  2>&1 | tee "$out/bench_embed.txt"
# GPU memory (device decode): the peak should follow the batch size, not the number of inputs.
for run in "64 $(( videos / 2 ))" "512 $(( videos / 2 ))" "512 $(( videos / 8 ))"; do
  set -- $run
  timeout 60 $py bench/bench_embed.py --videos "$2" --unique 8 --frames 60 --batch-size "$1" \
    --device "$device" --precision "$precision" --workers "$workers" --jpeg-decode device --upstream-videos 1 \
    2>&1 | tee -a "$out/bench_memory_gpu.txt"
done
timeout 60 $py bench/bench_search.py --rows 1000000 --queries 20 2>&1 | tee "$out/bench_search.txt"
