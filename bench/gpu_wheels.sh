#!/usr/bin/env bash
# Fetch, here, the wheels the lent GPU machine lacks (it has no network; its image holds Python
# 3.12 with torch, torchvision, typer, rich, tokenizers, safetensors, pillow, opencv, pytest).
#   bash bench/gpu_wheels.sh        → .whl/ (ignored by git; name it in the device call's carry)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for pkg in pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle av ftfy wcwidth typer; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pkg"
done
du -sh .whl
