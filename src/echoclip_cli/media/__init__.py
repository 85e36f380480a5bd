"""Reading echo inputs: DICOM, video files and our preprocessed files → prepared :class:`Clip` s.

    >>> from echoclip_cli.media import find_inputs, load_clip
    >>> from echoclip_cli.preprocess_config import PreprocessConfig
    >>> files, skipped = find_inputs(["study_folder/"])
    >>> clip = load_clip(files[0], PreprocessConfig())
    >>> clip.frames.shape, clip.meta["frame_indices"]      # (20, 3, 224, 224) uint8 RGB, [0, 2, ...]

Modules, one per stage: :mod:`.discover` (which files are inputs), :mod:`.dicom` (header and
frame decoding), :mod:`.colour` (pixel values → uint8 RGB), :mod:`.video` (PyAV),
:mod:`.store_file` (our safetensors files), :mod:`.phi` (patient data and the salted key),
:mod:`.clip` (one input → one Clip), :mod:`.batch` (many inputs, in parallel, to files).
Geometry and normalisation live in :mod:`echoclip_cli.preprocess`.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; imported on first use, so finding inputs (discover) costs no torch import
# and a command can check its arguments before the model stack loads.
_LAZY = {
    "Clip": "clip",
    "PreprocessRecord": "batch",
    "find_inputs": "discover",
    "iter_clips": "batch",
    "load_clip": "clip",
    "load_frames": "clip",
    "output_name": "batch",
    "preprocess_files": "batch",
    "read_frames": "clip",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
