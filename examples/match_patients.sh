#!/usr/bin/env bash
# Find studies that look like the same patient across an archive, flag key conflicts, and
# follow each patient's studies over time.
#   examples/match_patients.sh [FOLDER]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${WORKDIR:-$(mktemp -d)}
folder=${1:-$(python "$here/_demo_data.py" "$work/archive" 6)}
weights=${ECHOCLIP_WEIGHTS_R:-echo-clip-r}

echoclip embed --dir "$folder" --weights "$weights" --out "$work/store" --format csv > /dev/null
echoclip match-patients --store "$work/store" --weights "$weights" --timeline --format jsonl > "$work/matches.jsonl"

# One line per level of finding (neighbour, group, conflict, timeline).
python -c 'import collections, json, sys; print(dict(collections.Counter(json.loads(l)["level"] for l in open(sys.argv[1]))))' "$work/matches.jsonl"
