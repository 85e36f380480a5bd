"""Domain errors: each carries a one-line message, an optional hint and an exit code.

The CLI has one error boundary (``echoclip_cli.cli.main``) that turns these into a single line on
stderr and the exit code; library callers catch them like any exception. Messages never include
DICOM header values other than the file path, so they are safe to log.
"""

from __future__ import annotations


class EchoclipError(Exception):
    """Base class for every error echoclip reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(EchoclipError):
    """The command line or API call is wrong (exit code 2)."""

    exit_code = 2


class ConfigError(EchoclipError):
    """A model or preprocess config is missing a field or holds an impossible value."""


class WeightsError(EchoclipError):
    """Weights cannot be found, read, verified or loaded."""


class WeightsNotFoundError(WeightsError):
    """No installed bundle or file answers to the name or path given."""


class ChecksumError(WeightsError):
    """A file's sha256 differs from the one recorded for it."""


class StateDictError(WeightsError):
    """A checkpoint's tensors do not match the architecture (missing, unexpected, wrong shape)."""


class NetworkError(WeightsError):
    """The model hub cannot be reached."""


class TokenizerError(EchoclipError):
    """A tokenizer vocabulary is missing or malformed."""


class DeviceError(EchoclipError):
    """The requested device or precision is not available."""


class MediaError(EchoclipError):
    """An input file cannot be read or decoded (one input; the batch goes on)."""


class NothingHeldError(EchoclipError):
    """A call that searches what echoclip holds found nothing to search (no store, empty cache)."""


class EchoclipWarning(UserWarning):
    """A warning of echoclip's own (``warnings.warn``): its text never quotes header values, so
    the CLI shows it whole (other libraries' warnings it shows by category only)."""
