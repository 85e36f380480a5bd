"""Library defaults the command line shows in ``--help``: which released weights each use case
runs, patient-matching thresholds, batch size. No imports here: ``--help`` is built before torch
loads.

EchoCLIP (CLIP BPE text) is the zero-shot model; EchoCLIP-R (template tokenizer) is the retrieval
model, poor at zero-shot EF (MAE 16.9 in the paper) and right for patients and search.
"""

ZERO_SHOT_WEIGHTS = "echo-clip"  # predict-ef, detect-devices, zero-shot
RETRIEVAL_WEIGHTS = "echo-clip-r"  # match-patients, search
DEFAULT_WEIGHTS = ZERO_SHOT_WEIGHTS  # embed, and anything that names no use case
RESULT_MANUFACTURER = "echoclip"  # the Manufacturer of the DICOM SRs echoclip writes: never read back as labels

# Patient matching (EchoCLIP-R), from the paper's mean cosines (Christensen et al. 2024).
DIFFERENT_PATIENT_MEAN = 0.40  # different patients
SAME_PATIENT_MEAN = 0.64  # the same patient, another study
SAME_PATIENT_THRESHOLD = round((DIFFERENT_PATIENT_MEAN + SAME_PATIENT_MEAN) / 2, 2)  # 0.52, their midpoint
MISLABEL_THRESHOLD = DIFFERENT_PATIENT_MEAN  # own key's best match below this: possible mislabel
DUPLICATE_THRESHOLD = SAME_PATIENT_MEAN  # two keys this similar: possible duplicate patient
DROP_THRESHOLD = SAME_PATIENT_THRESHOLD  # timeline: below this against the reference study
DEFAULT_K = 5  # nearest studies listed per study

DEVICE_TASKS = ("pacemaker", "tavr", "mitraclip", "impella")  # what detect-devices scores by default
# Frames per model batch when the caller does not say (measured: docs/BENCHMARKS.md, "Batch size
# on the CPU"): on a 2-core AMD EPYC batch 16 ran 4.9 frames/s and 64 ran 3.4-3.9; the Intel
# AVX-512 figures were taken at 20. Small CPU batches also let progress and Ctrl-C see whole
# videos finish every few seconds. GPUs want larger batches.
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 64
DEFAULT_BATCH_SIZE = None  # None: CPU_BATCH_SIZE or GPU_BATCH_SIZE by the model's device


def batch_size_for(device_type: str, batch_size: int | None) -> int:
    """``batch_size`` as given, else the default for a model on ``device_type``."""
    if batch_size is not None:
        return batch_size
    return GPU_BATCH_SIZE if device_type == "cuda" else CPU_BATCH_SIZE

TEMPLATE_VOCAB_FILE = "template_vocab.txt"  # EchoCLIP-R's template vocabulary, by this name in a weights bundle
