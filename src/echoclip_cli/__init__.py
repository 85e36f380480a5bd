"""echoclip: the EchoCLIP echocardiography foundation models as a library and a command.

One import gives the whole API: one call per use case, each streaming typed records::

    import echoclip_cli
    for r in echoclip_cli.predict_ef(["study/"], weights="echo-clip"):   # EFVideo…, then EFStudy
        print(r.level, r.ef)
    echoclip_cli.detect_devices(...), echoclip_cli.zero_shot("tavr", ...), echoclip_cli.embed(...)
    echoclip_cli.match_patients(store="archive.store"), echoclip_cli.search("severe MR", "archive.store")

    model = echoclip_cli.load_model("echo-clip")            # strict, verified weights
    model.encode_image(images), model.encode_text(ids)      # unnormalised N×512 embeddings

Heavy modules (torch, model code) load on first use, so ``echoclip --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "embed": "api",
    "predict_ef": "api",
    "detect_devices": "api",
    "zero_shot": "api",
    "match_patients": "api",
    "search": "api",
    "search_reports": "api",
    "report": "api",
    "find": "api",
    "Sampling": "preprocess_config",
    "MatchSettings": "patients",
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
