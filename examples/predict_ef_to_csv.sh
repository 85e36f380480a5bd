#!/usr/bin/env bash
# Predict EF for every echo in a folder, keep a CSV, and list the studies with reduced EF.
#   examples/predict_ef_to_csv.sh [FOLDER]    (default: a demo archive made from pydicom's echo cine)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${WORKDIR:-$(mktemp -d)}
folder=${1:-$(python "$here/_demo_data.py" "$work/archive" 4)}
weights=${ECHOCLIP_WEIGHTS:-echo-clip}

echoclip predict-ef --dir "$folder" --weights "$weights" --format csv > "$work/ef.csv"
echo "wrote $work/ef.csv ($(($(wc -l < "$work/ef.csv") - 1)) records)" >&2

# Studies with EF below 50 %: the CSV has a header row; column 1 is the level, 4 the EF.
awk -F, 'NR > 1 && $1 == "study" && $4 < 50 { print $3 "," $4 }' "$work/ef.csv"
