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

from .batch import PreprocessRecord, iter_clips, output_name, preprocess_files
from .clip import Clip, load_clip, read_frames
from .discover import find_inputs

__all__ = [
    "Clip",
    "PreprocessRecord",
    "find_inputs",
    "iter_clips",
    "load_clip",
    "output_name",
    "preprocess_files",
    "read_frames",
]
