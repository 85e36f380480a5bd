#!/usr/bin/env bash
# Fetch, here, the wheels the lent GPU machine lacks (it has no network; its image holds Python
# 3.12 with torch, torchvision, typer, rich, tokenizers, safetensors, pillow, opencv, pytest).
#   bash bench/gpu_wheels.sh        → .whl/ (ignored by git; name it in the device call's carry)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
# Pinned to the versions CI runs. typer 0.29 added a pydantic dependency the image lacks: 0.28.0 is
# the newest without it (it needs annotated-doc and shellingham, carried too).
for pkg in pydicom==3.0.2 pylibjpeg==2.1.0 pylibjpeg-libjpeg==2.5.0 pylibjpeg-openjpeg==2.6.0 pylibjpeg-rle==2.2.0 \
           av==18.1.0 ftfy==6.3.1 wcwidth==0.9.4 typer==0.28.0 annotated-doc==0.0.7 shellingham==1.5.4; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pkg"
done
du -sh .whl
