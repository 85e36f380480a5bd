"""``echoclip info``: versions, device, weights home and installed bundles."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

from .common import JsonOpt, out_console

_PACKAGES = ("echoclip", "torch", "torchvision", "numpy", "pydicom", "pylibjpeg", "av", "tokenizers", "safetensors",
             "typer", "rich", "onnxruntime")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def collect() -> dict:
    import torch

    from .. import weights as w
    from ..media.jpeg_device import backend, unavailable_reason
    from ..pipeline import resolve_jpeg_decode

    cuda = torch.cuda.is_available()
    default = torch.device("cuda" if cuda else "cpu")
    try:
        jpeg_on = resolve_jpeg_decode(None, default)
        jpeg = f"{backend(default)} on {default}" if jpeg_on is not None else "CPU workers (Pillow)"
        why = unavailable_reason(default)
        if why:  # e.g. torchvision built for another torch, or without nvJPEG
            jpeg += f"; no JPEG decoding on {default}: {why}"
    except Exception as exc:  # an invalid ECHOCLIP_JPEG_DECODE: say so rather than fail
        jpeg = f"invalid setting ({exc})"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "device": {
            "cuda_available": cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "cpu_threads": torch.get_num_threads(),
            "default": "cuda" if cuda else "cpu",
            "jpeg_decode": jpeg,
            "nvjpeg": backend(default) == "nvjpeg" if cuda else False,
        },
        "weights_home": str(w.weights_home()),
        "bundles": [
            _bundle(b, w.is_verified(b)) for b in w.installed_bundles()
        ],
    }


def _bundle(b, verified: bool) -> dict:  # type: ignore[no-untyped-def]
    from ..optimising import cpu_path

    chosen, speeds = cpu_path(b)
    return {"name": b.name, "tokenizer": b.tokenizer_kind, "sha256": b.weights_sha256, "verified": verified,
            "cpu_backend": " ".join(p for p in chosen if p),  # what --backend auto runs on this CPU
            "cpu_speed": speeds}  # each built path against eager torch, as auto compared them


def info(as_json: JsonOpt = False) -> None:
    """Show versions, the compute device, the weights home and installed weights.

    Examples:

        echoclip info

        echoclip info --json | jq .device
    """
    data = collect()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    console = out_console()
    console.print(f"python        {data['python']}  ({data['platform']})")
    for name, version in data["packages"].items():
        console.print(f"{name:<13} {version or 'not installed'}")
    dev = data["device"]
    gpus = ", ".join(dev["gpus"]) or "none"
    console.print(f"device        {dev['default']}  (GPUs: {gpus}; CPU threads: {dev['cpu_threads']})")
    hint = "" if dev["nvjpeg"] or not dev["gpus"] else "  (GPU decoding: pip install 'echoclip[gpu]')"
    console.print(f"JPEG decode   {dev['jpeg_decode']}{hint}")
    console.print(f"weights home  {data['weights_home']}")
    if not data["bundles"]:
        console.print("bundles       none installed (echoclip weights pull echo-clip)")
    for b in data["bundles"]:
        state = "verified" if b["verified"] else "not verified"
        measured = ", ".join(f"{name} {gain:.2f}×" for name, gain in b["cpu_speed"].items() if name != "torch")
        console.print(f"bundle        {b['name']}  tokenizer={b['tokenizer']}  {state}  sha256={b['sha256'][:12]}…  "
                      f"CPU path: {b['cpu_backend']}" + (f" (against eager torch: {measured})" if measured else ""))
