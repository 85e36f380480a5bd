"""echoclip: the EchoCLIP echocardiography foundation models as a library and a command.

One import gives the whole API: load a model once, then one call per use case, each taking the
model first and streaming typed records::

    import echoclip_cli
    model = echoclip_cli.load_model("echo-clip")                 # strict, verified weights
    for r in echoclip_cli.predict_ef(model, ["study/"]):         # EFVideo…, then EFStudy
        print(r.level, r.ef)
    echoclip_cli.detect_devices(model, ...), echoclip_cli.zero_shot(model, "tavr", ...)
    echoclip_cli.embed(model, ["study/"], out="archive.store")
    options = echoclip_cli.RunOptions(batch_size=32)             # one frozen value of run options

    retrieval = echoclip_cli.load_model(store="archive.store")   # the weights that made a store
    echoclip_cli.search(retrieval, "severe MR", "archive.store")
    echoclip_cli.search(retrieval, "severe MR")                  # every store embed --out wrote, and the cache
    echoclip_cli.match_patients(retrieval, store="archive.store")

    echoclip_cli.explain(model, "a4c.avi", task="pacemaker")     # PromptCAM maps, one record per frame

    labels = echoclip_cli.harvest_labels(["archive/"])           # EF (and devices) from SRs and reports
    head = echoclip_cli.fit(model, "ef", labels=labels, store="archive.store").head   # a site's own head
    head.save("ef.head")
    echoclip_cli.predict_ef(model, store="archive.store", heads="ef.head")   # head_ef, ef_low/high, abstain

    model.encode_image(images), model.encode_text(ids)           # unnormalised N×512 embeddings

    records = echoclip_cli.predict_ef(model, ["study/"])         # results back to the hospital:
    echoclip_cli.with_sr(records, "sr/")                         # + one DICOM SR per study (echoclip[pacs])
    echoclip_cli.fhir_bundles(records)                           # one FHIR R4 Bundle per study

Heavy modules (torch, model code) load on first use, so ``echoclip --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "api",
    "embed": "api",
    "predict_ef": "api",
    "detect_devices": "api",
    "zero_shot": "api",
    "match_patients": "api",
    "search": "api",
    "search_reports": "api",
    "holdings": "api",
    "remember_store": "api",
    "forget_store": "api",
    "report": "api",
    "explain": "api",
    "harvest_labels": "api",
    "fit": "api",
    "load_head": "api",
    "LabelOptions": "options",
    "FitOptions": "options",
    "ReportContent": "api",
    "find": "api",
    "optimise": "optimising",
    "RunOptions": "options",
    "Archive": "dicomweb",
    "Sampling": "preprocess_config",
    "MatchSettings": "patients",
    "EchoClip": "inference",
    "PreprocessConfig": "preprocess_config",
    "build_model": "model",
    "import_openclip": "weights",
    "EchoclipError": "errors",
    "embed_texts": "text_embed",
    "get_tokenizer": "tokenizer",
    "load_prompts": "prompts",
    "with_sr": "exchange",
    "with_fhir": "exchange",
    "group_by_study": "exchange",
    "build_sr": "exchange",
    "write_sr": "exchange",
    "fhir_bundle": "exchange",
    "fhir_bundles": "exchange",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
