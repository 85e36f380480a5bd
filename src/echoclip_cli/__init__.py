"""echoclip: the EchoCLIP echocardiography foundation models as a library and a command.

One import gives the whole API::

    import echoclip_cli
    model = echoclip_cli.load_model("echo-clip")            # strict, verified weights
    model.encode_image(images), model.encode_text(ids)      # unnormalised N×512 embeddings

Heavy modules (torch, model code) load on first use, so ``echoclip --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "inference",
    "EchoClip": "inference",
    "PreprocessConfig": "preprocess_config",
    "build_model": "model",
    "import_openclip": "weights",
    "EchoclipError": "errors",
    "embed_texts": "text_embed",
    "get_tokenizer": "tokenizer",
    "load_prompts": "prompts",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
