"""Which released weights each use case runs by default (no imports: the CLI reads these while
building ``--help``, before torch loads).

EchoCLIP (CLIP BPE text) is the zero-shot model; EchoCLIP-R (template tokenizer) is the retrieval
model, poor at zero-shot EF (MAE 16.9 in the paper) and right for patients and search.
"""

ZERO_SHOT_WEIGHTS = "echo-clip"  # predict-ef, detect-devices, zero-shot
RETRIEVAL_WEIGHTS = "echo-clip-r"  # match-patients, search
DEFAULT_WEIGHTS = ZERO_SHOT_WEIGHTS  # embed, and anything that names no use case
