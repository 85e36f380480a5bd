#!/usr/bin/env bash
# One script for a lent GPU machine: what only a GPU can tell, most valuable first, in under 5 minutes.
# Prepare here with `bash bench/gpu_wheels.sh`, then run there with carry [".whl"]:
#   bash bench/gpu_check.sh            (results in $OUT, else ./gpu-results; one file per step + summary.txt)
# Steps, each under its own `timeout` (on the GPU they add up to 290 s, under the 600 s a command
# may run; a rerun on the warm machine reuses the wheels, cines and weights and is quicker):
#   wheels (install, then bench/wheels_smoke.py) 20 | nvidia-smi 10 | versions 25 | info 20 | pytest -m gpu 45
#   | embed: end to end from JPEG DICOM, workers vs nvJPEG, model only, cosine between the two 110
#   | memory: GPU memory by batch size, one process 45 | search: the vector index on the GPU 15
# A failed or timed-out step is recorded and the next one runs; the exit status is 1 if any failed.
# Then, on the warm machine with the same cines and weights, time each stage alone:
#   PYTHONPATH=/tmp/site:$PWD/src:$PWD python3 bench/gpu_probe.py --pipeline 640 --precision-study 8 --out "${OUT:-gpu-results}/probe.md"
#
# The machine has no network: the project runs from src/ on the image's Python 3.12, torch and
# torchvision, with the packages it lacks installed from the carried wheels (bench/gpu_wheels.sh:
# cp312 manylinux x86_64, pinned). Simulated here: `PY312=... bash bench/gpu_wheels.sh check` installs
# them into a fresh Python 3.12 venv and runs bench/wheels_smoke.py; and this whole script passed as a
# CPU dry run (with the wheels step) under PYTHON= a Python 3.12.1 venv holding the image's torch
# 2.11.0 (+cu130, on the CPU), torchvision 0.26.0, numpy 2.5.2, safetensors 0.8.0, tokenizers 0.23.2,
# rich, pillow, pytest and opencv from PyPI, and no pydantic, typer, pydicom or av of its own.
#
# Dry run of the whole flow on a CPU (timeouts x4, the upstream loop on 1 video, 100,000 vectors),
# with a venv holding the project's dependencies on PATH or PYTHON=/path/to/python:
#   DEVICE=cpu PRECISION=fp32 VIDEOS=4 UNIQUE=2 BATCH=8 NO_WHEELS=1 bash bench/gpu_check.sh
# Knobs: DEVICE PRECISION VIDEOS UNIQUE BATCH WORKERS UPSTREAM ROWS WEIGHTS (a checkpoint instead of
# random full-size weights) CACHE (cines and weights, kept between runs) OUT PYTHON TIME_SCALE
# SITE (where the carried wheels go, /tmp/site) NO_WHEELS.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
out=${OUT:-gpu-results}
cache=${CACHE:-/tmp/echoclip-gpu-cache}
device=${DEVICE:-cuda} precision=${PRECISION:-bf16} videos=${VIDEOS:-640} unique=${UNIQUE:-24} batch=${BATCH:-256}
cores=$(nproc)
workers=${WORKERS:-$(( cores > 17 ? 16 : (cores > 1 ? cores - 1 : 1) ))}
if [ "$device" = cpu ]; then  # a dry run: slower steps, less work
  scale=${TIME_SCALE:-4} upstream=${UPSTREAM:-1} rows=${ROWS:-100000}
else
  scale=${TIME_SCALE:-1} upstream=${UPSTREAM:-8} rows=${ROWS:-1000000}
fi
weights=()
[ -n "${WEIGHTS:-}" ] && weights=(--weights "$WEIGHTS")
mkdir -p "$out" "$cache"
: > "$out/summary.txt"
export PYTHONUNBUFFERED=1
failed=0

step() {  # step NAME SECONDS COMMAND...: run it under its own timeout, show its output as it comes, keep it
  local name=$1 limit=$(( $2 * scale )) began=$SECONDS rc why
  shift 2
  echo "## $name (limit $limit s)" | tee "$out/$name.txt"
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) why=ok ;;
    124|137) why="FAILED: timed out after $limit s (or killed)" ;;
    *) why="FAILED: exit $rc" ;;
  esac
  [ "$rc" -eq 0 ] || failed=$(( failed + 1 ))
  echo "## $name: $why ($(( SECONDS - began )) s)" | tee -a "$out/summary.txt"
}

install_wheels() {  # the carried wheels into $site (unless the same ones are there already), then try them
  if [ "$(cat "$site/.carried" 2>/dev/null)" = "$(ls .whl)" ]; then
    echo "carried wheels already installed in $site"
  else
    if "$py" -m pip --version >/dev/null 2>&1; then
      "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
        || return 1
    else  # a venv made without pip: a wheel is a zip of what goes into site-packages
      echo "no pip for $py: unpacking the wheels into $site"
      rm -rf "$site" && for wheel in .whl/*.whl; do "$py" -m zipfile -e "$wheel" "$site/" || return 1; done
    fi
    ls .whl > "$site/.carried"
  fi
  "$py" bench/wheels_smoke.py
}
site=${SITE:-/tmp/site}
export -f install_wheels
export py site

if [ -z "${NO_WHEELS:-}" ]; then
  export PYTHONPATH=$site:$PWD/src:$PWD
  step wheels 20 bash -c install_wheels
else
  export PYTHONPATH=$PWD/src:$PWD
fi
echo "# $device, $precision, $videos videos ($unique distinct), batch $batch, $workers decode workers of $cores cores;" \
  "cache $cache; results in $out"

# (a) What the machine is.
if [ "$device" != cpu ]; then
  step nvidia-smi 10 nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
fi
step versions 25 "$py" -c "import importlib.metadata as m, importlib.util, sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, 'CUDA', torch.version.cuda,
      'available', torch.cuda.is_available(), '| torchvision', m.version('torchvision')
      if importlib.util.find_spec('torchvision') else 'not installed')"
step info 20 "$py" -m echoclip_cli info
# (b) The GPU tests.
step pytest-gpu 45 "$py" -m pytest -m gpu -q -rs -p no:cacheprovider
# (c) End to end from compressed DICOM: JPEG decoded by CPU workers, then on the GPU (nvJPEG); the model
# alone beside each; the cosine between the two decoders' embeddings. Inputs and weights are cached.
embed=("$py" bench/bench_embed.py --frames 60 --device "$device" --precision "$precision" --workers "$workers"
       --cache "$cache" "${weights[@]}")
step embed 110 "${embed[@]}" --videos "$videos" --unique "$unique" --batch-size "$batch" \
  --jpeg-decode workers,device --upstream-videos "$upstream"
# (d) GPU memory by batch size (device decode), one process: the peak should follow the batch, not the inputs.
step memory 45 "${embed[@]}" --videos $(( videos / 2 > 0 ? videos / 2 : 1 )) --unique "$unique" \
  --batch-size "$batch" --jpeg-decode device --sweep-batch "$(( batch / 4 > 0 ? batch / 4 : 1 )),$batch,$(( batch * 2 ))"
# (e) Exact top-k over a million vectors held on the GPU.
step search 15 "$py" bench/bench_search.py --rows "$rows" --queries 20 --device "$device"

echo "# summary" && cat "$out/summary.txt"
[ "$failed" -eq 0 ] || { echo "# $failed step(s) failed"; exit 1; }
