#!/usr/bin/env bash
# Build a video index with EchoCLIP-R and search it with report-style text.
#   examples/index_and_search.sh [FOLDER]
# EchoCLIP-R needs its template vocabulary once:
#   echoclip weights import FOLDER --name echo-clip-r --template-vocab template_vocab.txt
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${WORKDIR:-$(mktemp -d)}
folder=${1:-$(python "$here/_demo_data.py" "$work/archive" 4)}
weights=${ECHOCLIP_WEIGHTS_R:-echo-clip-r}

echoclip embed --dir "$folder" --weights "$weights" --out "$work/index" --format csv > /dev/null
echoclip search "severe MR" --store "$work/index" --weights "$weights" --explain --top-k 3 --format csv
