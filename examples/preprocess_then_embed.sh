#!/usr/bin/env bash
# Decode on CPU nodes, embed on a GPU node: `preprocess` writes frame files once, `embed` reads
# them without decoding again and appends to a resumable store (rerun it after a crash).
#   examples/preprocess_then_embed.sh [FOLDER]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${WORKDIR:-$(mktemp -d)}
folder=${1:-$(python "$here/_demo_data.py" "$work/archive" 4)}
weights=${ECHOCLIP_WEIGHTS:-echo-clip}

# CPU node(s): decode + crop + mask + resize in parallel, with the settings of the weights used later.
echoclip preprocess "$folder" --weights "$weights" --out "$work/frames" --workers 2 --format jsonl > "$work/preprocess.jsonl"

# GPU node: embed the frame files (use --device cuda --batch-size 256 there).
echoclip embed --dir "$work/frames" --weights "$weights" --out "$work/store" --keep-frames --format csv > "$work/embedded.csv"
echoclip embed --dir "$work/frames" --weights "$weights" --out "$work/store" --keep-frames --format csv > /dev/null  # resumes: nothing left to do

python - "$work/store" <<'PY'
import sys
from echoclip_cli.store import read_store
store = read_store(sys.argv[1])
print(f"{len(store)} videos, {store.embeddings.shape[1]}-d, weights {store.header['weights']['name']}")
PY
