"""Weights: the registry of released checkpoints, our bundle format, import, pull, verify, load.

A *bundle* is a folder in the weights home (``$ECHOCLIP_HOME``, else ``$XDG_CACHE_HOME/echoclip``,
else ``~/.cache/echoclip``) or anywhere a user keeps it::

    echo-clip/
      echoclip.json        model_cfg, preprocess_cfg, tokenizer kind, sha256 of source and weights
      model.safetensors    the tensors, under the OpenCLIP key names
      vocab.json, merges.txt, tokenizer.json, template_vocab.txt   (when the source had them)

Bundles are made from OpenCLIP checkpoints (``open_clip_config.json`` + ``open_clip_pytorch_model.bin``
or ``open_clip_model.safetensors``) by :func:`import_openclip`. Pickled checkpoints are read with
``torch.load(weights_only=True)`` only. Loading is strict: :func:`check_state_dict` names every
missing, unexpected or misshapen tensor, so results never come from random weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from . import preprocess_config
from .defaults import DEFAULT_WEIGHTS, TEMPLATE_VOCAB_FILE
from .files import atomic_write, sha256_file, staging_dir
from .files import home as weights_home  # where bundles are installed: the echoclip home
from .errors import ChecksumError, ConfigError, NetworkError, StateDictError, UsageError, WeightsError, WeightsNotFoundError
from .preprocess_config import PreprocessConfig

BUNDLE_CONFIG = "echoclip.json"
BUNDLE_WEIGHTS = "model.safetensors"
BUNDLE_FORMAT_VERSION = 1
OPENCLIP_CONFIG = "open_clip_config.json"
OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
TEMPLATE_VOCAB = TEMPLATE_VOCAB_FILE
_STAMP = ".verified"


@dataclass(frozen=True)
class KnownWeights:
    """A released checkpoint: where it lives, how to check it, what it is for."""

    name: str
    repo: str
    revision: str
    files: tuple[str, ...]
    sha256: str | None  # of the checkpoint file (files[1]); None where not published
    licence: str
    tokenizer: str  # "clip" (BPE) or "template"
    tasks: tuple[str, ...]
    description: str


REGISTRY: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        KnownWeights(
            name="echo-clip",
            repo="mkaichristensen/echo-clip",
            revision="main",
            files=(OPENCLIP_CONFIG, "open_clip_pytorch_model.bin", *TOKENIZER_FILES),
            sha256=None,
            licence="MIT (model card)",
            tokenizer="clip",
            tasks=("predict-ef", "detect-devices", "zero-shot"),
            description="EchoCLIP, 77-token CLIP BPE text: zero-shot EF and device detection",
        ),
        KnownWeights(
            name="echo-clip-r",
            repo="mkaichristensen/echo-clip-r",
            revision="main",
            files=(OPENCLIP_CONFIG, "open_clip_pytorch_model.bin", *TOKENIZER_FILES),
            sha256="5212c42fab82d4b2dd0a3196058d192bb91bc35c33633bf0ca01cae76d09e1cd",
            licence="MIT (model card)",
            tokenizer="template",
            tasks=("match-patients", "search", "timeline"),
            description="EchoCLIP-R, long-context template tokenizer: retrieval, patient matching, change",
        ),
    )
}


# --------------------------------------------------------------------------- hashing


# --------------------------------------------------------------------------- state dicts

# Other spellings of our keys met in checkpoints written by older OpenCLIP / timm or by the original
# ConvNeXt code, mapped explicitly (pattern → replacement, applied in order).
_KEY_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^module\.", ""),  # saved from DistributedDataParallel
        (r"^visual\.trunk\.downsample_layers\.0\.", "visual.trunk.stem."),
        (r"^visual\.trunk\.downsample_layers\.(\d)\.", r"visual.trunk.stages.\1.downsample."),
        (r"^(visual\.trunk\.stages\.\d+)\.(\d+)\.", r"\1.blocks.\2."),
        (r"\.dwconv\.", ".conv_dw."),
        (r"\.pwconv1\.", ".mlp.fc1."),
        (r"\.pwconv2\.", ".mlp.fc2."),
        (r"^visual\.trunk\.norm\.", "visual.trunk.head.norm."),
    )
)
# Non-parameter buffers some OpenCLIP versions saved; the causal mask is rebuilt, never loaded.
_IGNORED_KEYS = frozenset({"attn_mask"})


def normalize_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map historical key spellings onto ours and drop saved buffers we rebuild."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        for pattern, repl in _KEY_RENAMES:
            key = pattern.sub(repl, key)
        if key in _IGNORED_KEYS:
            continue
        if key in out:
            raise StateDictError(f"checkpoint holds two tensors for {key} under different spellings")
        out[key] = tensor
    return out


def _preview(keys: Iterable[str], limit: int = 4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`StateDictError` naming missing, unexpected and misshapen tensors."""
    problems = []
    if missing := set(expected) - set(state_dict):
        problems.append(f"missing {len(missing)}: {_preview(missing)}")
    if unexpected := set(state_dict) - set(expected):
        problems.append(f"unexpected {len(unexpected)}: {_preview(unexpected)}")
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(shape)}"
        for k, shape in sorted(expected.items())
        if k in state_dict and tuple(state_dict[k].shape) != tuple(shape)
    ]
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {'; '.join(wrong[:3])}{' …' if len(wrong) > 3 else ''}")
    if problems:
        raise StateDictError(
            "checkpoint does not match the architecture in its config: " + " | ".join(problems),
            hint="the weights and open_clip_config.json must come from the same model",
        )


def expected_shapes(model_cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes the config's architecture has (built on the meta device: no memory)."""
    from .model import build_skeleton

    model = build_skeleton(model_cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an OpenCLIP checkpoint (.safetensors, or .bin/.pt read with weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsNotFoundError(f"{path}: no such file") from None
    except Exception as exc:  # torch and safetensors raise many types for a damaged file
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            raise WeightsError(
                f"{path}: cannot read checkpoint (it holds Python objects besides tensors, which are never "
                "unpickled: a checkpoint can run code when loaded that way)",
                hint="save the state dict alone (torch.save(model.state_dict(), ...)) or as .safetensors",
            ) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(reason) > 160:
            reason = reason[:157].rsplit(" ", 1)[0] + " …"
        raise WeightsError(
            f"{path}: cannot read checkpoint ({reason})",
            hint="the file may be truncated or not a checkpoint; pickles are read with weights_only=True only",
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return normalize_keys(state)


# --------------------------------------------------------------------------- bundles


@dataclass
class Bundle:
    """An installed (or in-memory) model: its config, preprocessing and where its tensors are."""

    name: str
    root: Path | None
    config: dict[str, Any]
    state_dict_override: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    source_dir: Path | None = None  # an OpenCLIP folder read in place: its tokenizer files count

    @property
    def files_dir(self) -> Path | None:
        """Folder holding the bundle's tokenizer files."""
        return self.root or self.source_dir

    @property
    def model_cfg(self) -> dict[str, Any]:
        return self.config["model_cfg"]

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.config["preprocess_cfg"])

    @property
    def tokenizer_kind(self) -> str:
        return self.config["tokenizer"]["kind"]

    @property
    def weights_sha256(self) -> str:
        return self.config["weights_sha256"]

    @property
    def weights_path(self) -> Path | None:
        return self.root / BUNDLE_WEIGHTS if self.root else None

    def file(self, name: str) -> Path | None:
        """A tokenizer file kept in the bundle, if present."""
        folder = self.files_dir
        return folder / name if folder and (folder / name).is_file() else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.state_dict_override is not None:
            return self.state_dict_override
        assert self.weights_path is not None
        return read_checkpoint(self.weights_path)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file()) if self.root else 0


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def read_bundle(root: Path) -> Bundle:
    config = _load_json(root / BUNDLE_CONFIG)
    if config.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ConfigError(f"{root}: bundle format {config.get('format_version')!r} is not {BUNDLE_FORMAT_VERSION}")
    for key in ("model_cfg", "preprocess_cfg", "tokenizer", "weights_sha256"):
        if key not in config:
            raise ConfigError(f"{root / BUNDLE_CONFIG}: missing {key!r}")
    return Bundle(name=config.get("name", root.name), root=root, config=config)


def installed_bundles() -> list[Bundle]:
    home = weights_home()
    if not home.is_dir():
        return []
    found = []
    for child in sorted(home.iterdir()):
        if (child / BUNDLE_CONFIG).is_file():
            try:
                found.append(read_bundle(child))
            except (WeightsError, ConfigError):
                continue  # a damaged bundle is reported by `weights list`, not fatal here
    return found


def _openclip_files(path: Path) -> tuple[Path, Path]:
    """(config, checkpoint) of an OpenCLIP folder, or of a checkpoint file with its config beside it."""
    folder = path if path.is_dir() else path.parent
    config = folder / OPENCLIP_CONFIG
    if path.is_dir():
        candidates = [folder / name for name in OPENCLIP_WEIGHTS if (folder / name).is_file()]
        if not candidates:
            raise WeightsNotFoundError(
                f"{path}: no {' or '.join(OPENCLIP_WEIGHTS)} in this folder",
                hint="point at an OpenCLIP checkpoint folder (as downloaded from the model hub)",
            )
        checkpoint = candidates[0]
    else:
        checkpoint = path
    if not config.is_file():
        raise WeightsNotFoundError(f"{folder}: no {OPENCLIP_CONFIG} next to the checkpoint")
    return config, checkpoint


def _is_openclip(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    return (folder / OPENCLIP_CONFIG).is_file()


def resolve(spec: str | os.PathLike[str] | None = None, *, auto_pull: bool = True) -> Bundle:
    """Find the bundle a ``--weights NAME|PATH`` names; pull a released one on first use.

    A bare name of an installed bundle wins over a same-named folder in the working directory
    (``-w bench`` run from a checkout must not read ``./bench``); write ``./NAME`` for the folder.
    """
    spec = str(spec or DEFAULT_WEIGHTS)
    if os.sep not in spec and not spec.startswith((".", "~")) and (weights_home() / spec / BUNDLE_CONFIG).is_file():
        return read_bundle(weights_home() / spec)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.name == BUNDLE_CONFIG:
            path = path.parent
        if (path / BUNDLE_CONFIG).is_file():
            return read_bundle(path)
        if _is_openclip(path):
            return openclip_bundle(path, name=path.stem)
        raise WeightsNotFoundError(f"{path}: neither an echoclip bundle nor an OpenCLIP checkpoint")
    root = weights_home() / spec
    if (root / BUNDLE_CONFIG).is_file():
        return read_bundle(root)
    if spec in REGISTRY:
        if auto_pull:
            return pull(spec)
        raise WeightsNotFoundError(f"weights {spec!r} are not installed", hint=manual_import_hint(spec))
    known = ", ".join(sorted({*REGISTRY, *(b.name for b in installed_bundles())}))
    raise WeightsNotFoundError(f"no weights named {spec!r} and no such path", hint=f"known names: {known}")


def installed_by_sha256(sha256: str, prefer: str | None = None) -> Bundle | None:
    """The installed bundle whose weights hash is ``sha256`` (``prefer``'s name first), if any.

    This is how a store's recorded weights are found: by hash among installed bundles, never by
    treating the recorded name as a path.
    """
    matches = [b for b in installed_bundles() if b.weights_sha256 == sha256]
    matches.sort(key=lambda b: b.name != prefer)
    return matches[0] if matches else None


def manual_import_hint(name: str) -> str:
    known = REGISTRY[name]
    files = " and ".join(known.files[:2])
    return (
        f"download {files} (plus tokenizer files) from the Hugging Face repo {known.repo} on a machine "
        f"with network, then run: echoclip weights import FOLDER --name {name}"
    )


# --------------------------------------------------------------------------- import


def release_status(name: str, source_sha256: str) -> str:
    """Whether a checkpoint under ``name`` is the released one: ``released`` (its sha256 is the
    pinned release hash), ``unpinned`` (a released name whose hash echoclip has not pinned, so it
    cannot tell) or ``own`` (not a released name)."""
    known = REGISTRY.get(name)
    if known is None:
        return "own"
    if known.sha256 is None:
        return "unpinned"
    return "released" if known.sha256 == source_sha256 else "different"


def _bundle_config(
    name: str,
    openclip_cfg: Mapping[str, Any],
    source: Path,
    source_sha256: str,
    tokenizer_kind: str,
    downloaded_from: str | None = None,
) -> dict[str, Any]:
    model_cfg = openclip_cfg.get("model_cfg")
    if not isinstance(model_cfg, dict):
        raise ConfigError(f"{OPENCLIP_CONFIG} has no model_cfg object")
    image_size = int(model_cfg.get("vision_cfg", {}).get("image_size", 224))
    preprocess = preprocess_config.from_openclip(openclip_cfg.get("preprocess_cfg"), image_size)
    known = REGISTRY.get(name)
    return {
        "format": "echoclip-bundle",
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": name,
        "model_cfg": model_cfg,
        "preprocess_cfg": preprocess.to_dict(),
        "tokenizer": {"kind": tokenizer_kind, "context_length": int(model_cfg.get("text_cfg", {}).get("context_length", 77))},
        "tasks": list(known.tasks) if known else [],
        # The released repository is named only where it is true: the file's hash is the pinned
        # release hash, or it was downloaded from that repository just now.
        "source": {"file": source.name, "sha256": source_sha256, "release": release_status(name, source_sha256),
                   "registry": known.repo if known and (downloaded_from or release_status(name, source_sha256) == "released") else None},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _tokenizer_kind(name: str, requested: str | None, template_vocab: Path | None) -> str:
    if requested:
        if requested not in ("clip", "template"):
            raise UsageError(f"tokenizer must be 'clip' or 'template', not {requested!r}")
        return requested
    if name in REGISTRY:
        return REGISTRY[name].tokenizer
    return "template" if template_vocab else "clip"


def _check_source_hash(name: str, sha: str) -> None:
    known = REGISTRY.get(name)
    if known and known.sha256 and known.sha256 != sha:
        raise ChecksumError(
            f"checkpoint sha256 {sha[:12]}… differs from the released {name} ({known.sha256[:12]}…)",
            hint=f"import a different or fine-tuned checkpoint under another --name than {name!r}",
        )


def openclip_bundle(path: Path, name: str, tokenizer: str | None = None) -> Bundle:
    """Read an OpenCLIP checkpoint into an in-memory bundle (checked, nothing written)."""
    config_path, checkpoint = _openclip_files(path)
    openclip_cfg = _load_json(config_path)
    state = read_checkpoint(checkpoint)
    config = _bundle_config(name, openclip_cfg, checkpoint, sha256_file(checkpoint), _tokenizer_kind(name, tokenizer, None))
    check_state_dict(expected_shapes(config["model_cfg"]), state)
    config["weights_sha256"] = config["source"]["sha256"]
    return Bundle(name=name, root=None, config=config, state_dict_override=state, source_dir=config_path.parent)


def import_openclip(
    path: str | os.PathLike[str],
    name: str,
    *,
    tokenizer: str | None = None,
    template_vocab: str | os.PathLike[str] | None = None,
    force: bool = False,
    downloaded_from: str | None = None,
) -> Bundle:
    """Convert an OpenCLIP checkpoint into an installed bundle named ``name`` (strictly checked).

    A released name (``echo-clip-r``) is refused for a checkpoint whose sha256 is not the released
    one; the bundle records where it came from only when that is known (module doc of
    :func:`release_status`)."""
    path = Path(path).expanduser()
    vocab = Path(template_vocab).expanduser() if template_vocab else None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"bundle name {name!r} must be letters, digits, '.', '_' or '-'")
    if not path.exists():
        raise WeightsNotFoundError(f"{path}: no such file or folder")
    if vocab is not None and not vocab.is_file():
        raise WeightsNotFoundError(f"{vocab}: no such template vocabulary file")
    root = weights_home() / name
    if (root / BUNDLE_CONFIG).exists() and not force:
        raise WeightsError(f"weights {name!r} are already installed at {root}", hint="pass --force to replace them")

    config_path, checkpoint = _openclip_files(path)
    openclip_cfg = _load_json(config_path)
    source_sha = sha256_file(checkpoint)
    _check_source_hash(name, source_sha)
    config = _bundle_config(name, openclip_cfg, checkpoint, source_sha, _tokenizer_kind(name, tokenizer, vocab),
                            downloaded_from)
    state = read_checkpoint(checkpoint)
    check_state_dict(expected_shapes(config["model_cfg"]), state)
    extras = [config_path.parent / f for f in TOKENIZER_FILES if (config_path.parent / f).is_file()]
    if vocab is not None:
        extras.append(vocab)
    return _install(root, config, state, extras)


def _install(root: Path, config: dict[str, Any], state: dict[str, torch.Tensor], extras: list[Path]) -> Bundle:
    """Write a bundle into a fresh folder beside ``root`` and swap it in whole."""
    from safetensors.torch import save_file

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(root, ".partial")
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        atomic_write(staging / BUNDLE_WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        config["weights_sha256"] = sha256_file(staging / BUNDLE_WEIGHTS)
        for extra in extras:
            target = TEMPLATE_VOCAB if extra.name not in TOKENIZER_FILES else extra.name
            shutil.copyfile(extra, staging / target)
        (staging / BUNDLE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        _write_stamp(staging)
        if root.exists():
            old = root.with_name(f".{root.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(root, old)
            os.replace(staging, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_bundle(root)


def remove(name: str) -> Path:
    """Delete the installed bundle ``name`` (only a bundle folder inside the weights home)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"{name!r} is not a bundle name", hint="see `echoclip weights list`")
    root = weights_home() / name
    if not (root / BUNDLE_CONFIG).is_file():
        installed = ", ".join(b.name for b in installed_bundles()) or "none"
        raise UsageError(f"no installed weights named {name!r}", hint=f"installed: {installed}")
    sha = read_bundle(root).weights_sha256
    # Rename first so a half-deleted folder is never mistaken for a bundle.
    doomed = staging_dir(root, ".removing")
    os.replace(root, doomed / name)
    shutil.rmtree(doomed)
    if installed_by_sha256(sha) is None:  # no other name holds the same weights
        for path in derived_files(sha):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return root


DERIVED = ("compiled", "onnx", "race", "cache/frames")  # what is built from weights, under the home


def derived_files(weights_sha256: str) -> list[Path]:
    """What echoclip built from these weights in the home (compiled and ONNX towers, races, cached
    frame embeddings; ~1 GB at full size): each is named after the first 16 hex digits of the
    weights' sha256."""
    prefix = f"{weights_sha256[:16]}-"
    found: list[Path] = []
    for folder in DERIVED:
        base = weights_home() / folder
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if p.name.startswith(prefix))
    return found


def add_template_vocab(name: str, vocab: str | os.PathLike[str]) -> Bundle:
    """Store a template vocabulary in an installed bundle (EchoCLIP-R's tokenizer needs it)."""
    bundle = resolve(name, auto_pull=False)
    if bundle.root is None:
        raise UsageError("a template vocabulary can only be added to an installed bundle")
    source = Path(vocab).expanduser()
    if not source.is_file():
        raise WeightsNotFoundError(f"{source}: no such template vocabulary file")
    atomic_write(bundle.root / TEMPLATE_VOCAB, lambda tmp: shutil.copyfile(source, tmp))
    return bundle


# --------------------------------------------------------------------------- verify


def _stamp_of(root: Path) -> str:
    """What the verified stamp trusts: size, mtime, and inode and ctime, which no user can set
    back (restoring an mtime after editing the file in place changes the ctime), so a changed
    file is hashed again and records print the sha256 that really ran."""
    st = (root / BUNDLE_WEIGHTS).stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def _write_stamp(root: Path) -> None:
    try:
        (root / _STAMP).write_text(_stamp_of(root))
    except OSError:
        pass  # a read-only home: verified now, hashed again next time (never trusted unread)


def is_verified(bundle: Bundle) -> bool:
    """True when the weights file is unchanged since its sha256 was last checked."""
    if bundle.root is None:
        return True
    stamp = bundle.root / _STAMP
    try:
        return stamp.read_text() == _stamp_of(bundle.root)
    except (FileNotFoundError, OSError):
        return False


def verify(bundle: Bundle) -> str:
    """Re-hash the bundle's weights; raise :class:`ChecksumError` if they changed. Returns the sha256."""
    if bundle.root is None:
        return bundle.weights_sha256
    path = bundle.root / BUNDLE_WEIGHTS
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: weights file missing", hint=f"reinstall {bundle.name!r}")
    actual = sha256_file(path)
    if actual != bundle.weights_sha256:
        (bundle.root / _STAMP).unlink(missing_ok=True)
        raise ChecksumError(
            f"{bundle.name}: {BUNDLE_WEIGHTS} sha256 {actual[:12]}… != recorded {bundle.weights_sha256[:12]}…",
            hint="the file was modified or damaged; import or pull it again",
        )
    _write_stamp(bundle.root)
    return actual


def ensure_verified(bundle: Bundle) -> None:
    if not is_verified(bundle):
        verify(bundle)


# --------------------------------------------------------------------------- pull


def _hub_reachable(timeout: float) -> bool:
    """Whether the hub answers a TCP connection within ``timeout`` (DNS included)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def pull(name: str, *, force: bool = False, timeout: float = 5.0) -> Bundle:
    """Download a released checkpoint from the Hugging Face hub and install it as a bundle."""
    if name not in REGISTRY:
        raise UsageError(f"unknown weights {name!r}; released ones: {', '.join(REGISTRY)}")
    known = REGISTRY[name]
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or not _hub_reachable(timeout):
        raise NetworkError(f"cannot reach the model hub to download {name!r}", hint=manual_import_hint(name))
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise WeightsError(
            "downloading needs huggingface_hub", hint="pip install 'echoclip[hub]', or import manually"
        ) from None
    with tempfile.TemporaryDirectory(prefix="echoclip-pull-") as tmp:
        for filename in known.files:
            try:
                hf_hub_download(known.repo, filename, revision=known.revision, local_dir=tmp)
            except Exception as exc:  # the hub client raises many types; optional tokenizer files may be absent
                if filename in known.files[:2]:
                    raise NetworkError(f"download of {known.repo}/{filename} failed: {type(exc).__name__}",
                                       hint=manual_import_hint(name)) from None
        return import_openclip(tmp, name, force=force, downloaded_from=known.repo)
