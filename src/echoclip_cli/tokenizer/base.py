"""What every echoclip text tokenizer returns for one text."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Encoding:
    """One text tokenised to a fixed context length.

    Attributes:
        text: the text as given (before any cleaning).
        ids: exactly ``context_length`` token ids, padded with 0.
        pieces: a human-readable string for each id before the padding, special tokens included.
        n_truncated: how many tokens were cut to fit the context length (0 if none).
        unmatched: parts of the text the tokenizer could not represent (always ``[]`` for BPE).
        cleaned: the text after the tokenizer's report cleaning, the one it matched phrases in
            (template tokenizer); ``None`` for BPE.
    """

    text: str
    ids: list[int]
    pieces: list[str]
    n_truncated: int = 0
    unmatched: list[str] = field(default_factory=list)
    cleaned: str | None = None
