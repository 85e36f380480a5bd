"""Text tokenizers: CLIP BPE (EchoCLIP) and the report-template tokenizer (EchoCLIP-R).

:func:`tokenizer_for` gives the tokenizer a weights bundle was trained with; :func:`get_tokenizer`
one by kind. Both return objects with ``encode(text) -> Encoding`` and ``__call__(texts) -> ids``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, Union

from ..defaults import TEMPLATE_VOCAB_FILE
from ..errors import TokenizerError, UsageError
from .base import Encoding
from .bpe import ClipBpeTokenizer
from .template import TemplateTokenizer



class TokenizerSource(Protocol):
    """What :func:`tokenizer_for` needs of a weights bundle (:class:`echoclip_cli.weights.Bundle`)."""

    config: dict[str, Any]

    @property
    def tokenizer_kind(self) -> str: ...

    @property
    def files_dir(self) -> Path | None: ...

Tokenizer = Union[ClipBpeTokenizer, TemplateTokenizer]
KINDS = ("clip", "template")
TEMPLATE_VOCAB_ENV = "ECHOCLIP_TEMPLATE_VOCAB"
TEMPLATE_VOCAB_HINT = (
    "EchoCLIP-R's tokenizer needs template_vocab.txt (770 report phrases, from the EchoCLIP authors' "
    "repository, academic licence, so echoclip cannot ship it): pass --template-vocab FILE, set "
    f"{TEMPLATE_VOCAB_ENV}=FILE, or store it once with "
    "`echoclip weights add-template-vocab echo-clip-r FILE`"
)

__all__ = ["ClipBpeTokenizer", "Encoding", "TemplateTokenizer", "Tokenizer", "get_tokenizer", "tokenizer_for"]


def get_tokenizer(
    kind: str,
    *,
    template_vocab: str | os.PathLike[str] | None = None,
    files_dir: Path | None = None,
    context_length: int = 77,
) -> Tokenizer:
    """A tokenizer by kind; ``files_dir`` may hold vocab.json + merges.txt or template_vocab.txt."""
    if kind == "clip":
        if files_dir is not None:
            return ClipBpeTokenizer.from_dir(files_dir, context_length)
        return ClipBpeTokenizer(context_length=context_length)
    if kind == "template":
        vocab = Path(template_vocab) if template_vocab else None
        if vocab is None and files_dir is not None and (files_dir / TEMPLATE_VOCAB_FILE).is_file():
            vocab = files_dir / TEMPLATE_VOCAB_FILE
        if vocab is None and os.environ.get(TEMPLATE_VOCAB_ENV):
            vocab = Path(os.environ[TEMPLATE_VOCAB_ENV]).expanduser()
        if vocab is None:
            raise TokenizerError("the template vocabulary is not available", hint=TEMPLATE_VOCAB_HINT)
        return TemplateTokenizer(vocab, context_length)
    raise UsageError(f"unknown tokenizer {kind!r}: use {' or '.join(KINDS)}")


def tokenizer_for(bundle: TokenizerSource, *, template_vocab: str | os.PathLike[str] | None = None) -> Tokenizer:
    """The tokenizer ``bundle`` was trained with, from its own files where it has them."""
    return get_tokenizer(
        bundle.tokenizer_kind,
        template_vocab=template_vocab,
        files_dir=bundle.files_dir,
        context_length=int(bundle.config["tokenizer"].get("context_length", 77)),
    )
