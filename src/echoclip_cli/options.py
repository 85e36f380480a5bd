"""How a use case runs, as one frozen value shared by every call (whisper's ``DecodingOptions``):

    >>> from echoclip_cli import RunOptions, Sampling
    >>> options = RunOptions(batch_size=32, sampling=Sampling(frames=10))
    >>> faster = options.replace(workers=8)          # a changed copy; the original stays as it was

What belongs to one use case only (the EF aggregation, device thresholds, a store to write) is an
argument of that call, not an option here. The model (weights, device, precision, backend) is
chosen once when it is loaded (``echoclip_cli.load_model``) and passed to every call first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from .defaults import DEFAULT_BATCH_SIZE
from .errors import UsageError
from .preprocess_config import Sampling


@dataclass(frozen=True)
class RunOptions:
    """Options every embedding use case shares.

    sampling: frames, stride, start and mask where they depart from the weights' own settings.
    batch_size: frames per model batch (None: the device's default). workers: decoding processes
    (None: one per core). clip_types: which clip types are scored or embedded (None: the use case's
    own default, e.g. 2-D only for EF). cache: reuse and keep frame embeddings
    (``echoclip cache info``). jpeg_decode: auto, workers or device (None: ``ECHOCLIP_JPEG_DECODE``,
    else auto). keep_phi: keep patient names and IDs in records (off: a salted key only).
    """

    sampling: Sampling | None = None
    batch_size: int | None = DEFAULT_BATCH_SIZE
    workers: int | None = None
    clip_types: tuple[str, ...] | None = None
    cache: bool = True
    jpeg_decode: str | None = None
    keep_phi: bool = False

    def __post_init__(self) -> None:
        if self.clip_types is not None and not isinstance(self.clip_types, tuple):
            object.__setattr__(self, "clip_types", tuple(self.clip_types))

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes`` (the fields as above)."""
        return dataclasses.replace(self, **changes)

    def types(self, default: Sequence[str]) -> tuple[str, ...]:
        """The clip types this run uses: the chosen ones, else ``default``."""
        return tuple(self.clip_types) if self.clip_types is not None else tuple(default)

    def sampled(self) -> Sampling:
        return self.sampling or Sampling()


DEFAULT = RunOptions()


@dataclass(frozen=True)
class LabelOptions:
    """How labels are harvested from an archive (``echoclip_cli.harvest_labels``).

    tolerance: EF points two values of one study may differ by before they are a conflict (then
    the study gets no label: reported, never averaged). keep_phi: keep patient names and IDs in
    records (off: a salted key only). salt: the patient-key salt (None: ``$ECHOCLIP_SALT``, else
    the per-home salt).
    """

    tolerance: float = 5.0
    keep_phi: bool = False
    salt: str | None = None

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise UsageError(f"tolerance must be 0 or more EF points, not {self.tolerance!r}")

    def replace(self, **changes: Any) -> "LabelOptions":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FitOptions:
    """How a head is fitted on a site's embeddings (``echoclip_cli.fit``).

    coverage: the split-conformal intervals' (or prediction sets') coverage. calibration: the share
    of labelled studies held out to calibrate them (and the abstention distance). folds: the
    cross-validation folds that choose the regularisation. abstain_quantile: an input whose
    distance to the training embeddings lies beyond this quantile of the calibration set's
    abstains. zero_shot: add the zero-shot score as one more feature (needs the model). seed:
    the study splits' random seed. components: principal components of the distance model.
    """

    coverage: float = 0.9
    calibration: float = 0.25
    folds: int = 5
    abstain_quantile: float = 0.99
    zero_shot: bool = True
    seed: int = 0
    components: int = 32

    def __post_init__(self) -> None:
        for name in ("coverage", "calibration", "abstain_quantile"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise UsageError(f"{name} must lie between 0 and 1, not {value!r}")
        if self.folds < 2:
            raise UsageError(f"folds must be 2 or more, not {self.folds}")
        if self.components < 1:
            raise UsageError(f"components must be 1 or more, not {self.components}")

    def replace(self, **changes: Any) -> "FitOptions":
        return dataclasses.replace(self, **changes)
