#!/usr/bin/env bash
# Fetch, here, the wheels the lent GPU machine lacks (it has no network; its image holds Python
# 3.12 with torch, torchvision, typer, rich, tokenizers, safetensors, pillow, opencv, pytest).
#   bash bench/gpu_wheels.sh        → .whl/ (ignored by git; name it in the device call's carry)
#   PY312=python3.12 bash bench/gpu_wheels.sh check   → also install them, as bench/gpu_check.sh
#       does, into a fresh Python 3.12 venv and import and exercise each one there
# Wheels for the image, not for this machine: CPython 3.12 (cp312, abi3 or pure Python), manylinux
# x86_64 up to glibc 2.34 (the device notes allow manylinux_2_N up to 39 there; this machine has 2.36,
# so the same wheels install in the check below).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${WHEELS:-.whl}
mkdir -p "$dest"
# Pinned to the versions CI runs, but typer: 0.29 added a pydantic dependency the image lacks, 0.28.0
# is the newest without it (it needs annotated-doc and shellingham, carried too; carried, our pin
# wins over the image's typer). pylibjpeg-libjpeg 2.5.0 is built for manylinux_2_31/2_34 only.
pins=(pydicom==3.0.2 pylibjpeg==2.1.0 pylibjpeg-libjpeg==2.5.0 pylibjpeg-openjpeg==2.6.0 pylibjpeg-rle==2.2.0
      av==18.1.0 ftfy==6.3.1 wcwidth==0.9.4 typer==0.28.0 annotated-doc==0.0.7 shellingham==1.5.4)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${pins[@]}" 2>&1 | grep -v '^WARNING: Location' || true
missing=0
for pin in "${pins[@]}"; do  # one wheel per pin, or say which is missing
  name=${pin%%==*} version=${pin#*==}
  ls "$dest/${name//-/_}-$version-"*.whl >/dev/null 2>&1 || { echo "missing: $pin" >&2; missing=1; }
done
for wheel in "$dest"/*.whl; do  # another version left there would stop the whole install on the machine
  base=${wheel##*/} && stem=${base%%-*} && rest=${base#*-} && version=${rest%%-*}
  [[ " ${pins[*],,} " == *" ${stem//_/-}==$version "* ]] || { echo "not pinned, remove it: $wheel" >&2; missing=1; }
done
[ "$missing" -eq 0 ] || exit 1
ls -s --block-size=K "$dest"
du -sh "$dest"

[ "${1:-}" = check ] || exit 0
# The install as bench/gpu_check.sh does it, in a fresh venv of another Python 3.12 (the image's is
# 3.12.3); numpy and pillow at the image's versions where they are on PyPI. No torch: see gpu_check.sh.
venv=$(mktemp -d /tmp/echoclip-wheels-check.XXXXXX)
"${PY312:-python3.12}" -m venv "$venv"
"$venv/bin/python" -m pip install -q numpy==2.5.2 pillow rich 2>&1 | grep -v '^WARNING: Location' || true
"$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$venv/site" \
  "$dest"/*.whl
"$venv/bin/python" -c "import numpy, PIL, sys; print(sys.version.split()[0], 'numpy', numpy.__version__, 'pillow', PIL.__version__)"
PYTHONPATH=$venv/site "$venv/bin/python" bench/wheels_smoke.py
rm -rf "$venv"
