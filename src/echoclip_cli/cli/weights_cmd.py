"""``echoclip weights``: pull, import, list and verify model weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import FormatOpt, OutputFormat, emit_records, info, resolve_format, warn

app = typer.Typer(
    help="Install, list and verify model weights (bundles live in $ECHOCLIP_HOME).",
    no_args_is_help=True,
)


@app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(help="Released weights: echo-clip or echo-clip-r.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an installed bundle.")] = False,
) -> None:
    """Download released weights from the Hugging Face hub and install them.

    Without network this fails within seconds and says how to import the files by hand.

    Examples:

        echoclip weights pull echo-clip

        echoclip weights pull echo-clip-r --force
    """
    from .. import weights as w

    bundle = w.pull(name, force=force)
    info(f"installed {bundle.name} at {bundle.root}")


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="OpenCLIP folder (open_clip_config.json + weights) or checkpoint file.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name to install under (echo-clip, echo-clip-r or your own).")],
    tokenizer: Annotated[
        Optional[str], typer.Option("--tokenizer", help="clip or template (default: from the name, else clip).")
    ] = None,
    template_vocab: Annotated[
        Optional[Path], typer.Option("--template-vocab", help="template_vocab.txt for EchoCLIP-R's tokenizer.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an installed bundle of that name.")] = False,
) -> None:
    """Import an OpenCLIP checkpoint as an echoclip bundle (strictly checked, converted to safetensors).

    Pickled .bin checkpoints are read with weights_only=True; tokenizer files beside the
    checkpoint are kept.

    Examples:

        echoclip weights import ~/Downloads/echo-clip --name echo-clip

        echoclip weights import ./echo-clip-r --name echo-clip-r --template-vocab template_vocab.txt
    """
    from .. import weights as w

    bundle = w.import_openclip(path, name, tokenizer=tokenizer, template_vocab=template_vocab, force=force)
    info(f"installed {bundle.name} at {bundle.root} (sha256 {bundle.weights_sha256[:12]}…)")
    if w.release_status(name, bundle.config["source"]["sha256"]) == "unpinned":
        warn(f"echoclip does not pin the released {name} sha256, so this file could not be checked against "
             f"it; `weights list` says so and records carry the sha256 that ran")


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Installed weights name.")],
) -> None:
    """Delete an installed bundle from the weights home.

    Stores made with it keep their vectors; commands that need the model again say how to
    reinstall it.

    Examples:

        echoclip weights remove echo-clip

        echoclip weights remove my-finetune
    """
    from .. import weights as w

    root = w.remove(name)
    info(f"removed {name} ({root})")


@app.command("add-template-vocab")
def add_template_vocab(
    name: Annotated[str, typer.Argument(help="Installed weights (normally echo-clip-r).")],
    vocab: Annotated[Path, typer.Argument(help="template_vocab.txt (770 report phrases).")],
) -> None:
    """Store EchoCLIP-R's template vocabulary in an installed bundle, checked before it is kept.

    The vocabulary is under the EchoCLIP authors' academic licence, so echoclip cannot ship it;
    get template_vocab.txt from their repository once and store it here.

    Examples:

        echoclip weights add-template-vocab echo-clip-r ~/Downloads/template_vocab.txt
    """
    from .. import weights as w
    from ..tokenizer import TemplateTokenizer

    tokenizer = TemplateTokenizer(vocab)  # refuses a missing, empty or malformed file
    bundle = w.add_template_vocab(name, vocab)
    info(f"{bundle.name}: template vocabulary stored ({len(tokenizer.phrases)} phrases)")


TABLE_COLUMNS = ["name", "installed", "verified", "size_mb", "tokenizer", "tasks"]


def _rows(separator: str = ",") -> list[dict]:
    from .. import weights as w

    installed = {b.name: b for b in w.installed_bundles()}
    rows = []
    for name in sorted({*w.REGISTRY, *installed}):
        bundle, known = installed.get(name), w.REGISTRY.get(name)
        tasks = (bundle.config.get("tasks") if bundle else None) or (known.tasks if known else ())
        rows.append(
            {
                "name": name,
                "installed": bundle is not None,
                "verified": w.is_verified(bundle) if bundle else None,
                "size_mb": round(bundle.size_bytes() / 2**20, 1) if bundle else None,
                "tokenizer": bundle.tokenizer_kind if bundle else known.tokenizer,
                "tasks": separator.join(tasks),
                "source": _source(bundle, known),
                "licence": known.licence if known else "",
                "path": str(bundle.root) if bundle else "",
            }
        )
    return rows


def _source(bundle, known) -> str:  # type: ignore[no-untyped-def]
    """Where the weights came from, as far as echoclip can tell: never a released repository for a
    file that is not known to be the released one."""
    from .. import weights as w

    if bundle is None:
        return known.repo if known else ""
    source = bundle.config.get("source") or {}
    release = w.release_status(bundle.name, str(source.get("sha256", "")))
    if source.get("registry") and (release == "released" or "release" in source):  # older bundles named it always
        return f"{source['registry']} ({'sha256 pinned' if release == 'released' else 'downloaded'})"
    if known is not None:
        return f"imported {source.get('file', '')}: not checked against a pinned release sha256"
    return f"imported {source.get('file', '')}".strip()


@app.command("list")
def list_(fmt: FormatOpt = OutputFormat.auto) -> None:
    """List released and installed weights, with size and verification state.

    Examples:

        echoclip weights list

        echoclip weights list --format jsonl | jq .name
    """
    from .. import weights as w

    if resolve_format(fmt) is OutputFormat.table:  # the columns that fit a terminal; JSONL/CSV have all
        emit_records(_rows(", "), fmt, columns=TABLE_COLUMNS, title=f"weights in {w.weights_home()}",
                     caption="source, licence and path: --format jsonl")
        return
    emit_records(_rows(), fmt)


@app.command("verify")
def verify(
    name: Annotated[Optional[str], typer.Argument(help="Installed weights name or bundle path (default: all).")] = None,
    fmt: FormatOpt = OutputFormat.auto,
) -> None:
    """Re-hash installed weights against their recorded sha256; exit 1 on any mismatch.

    Examples:

        echoclip weights verify

        echoclip weights verify echo-clip-r
    """
    from .. import weights as w

    bundles = [w.resolve(name, auto_pull=False)] if name else w.installed_bundles()
    if not bundles:
        info(f"no weights installed in {w.weights_home()}")
        return
    records, failures = [], []
    for bundle in bundles:
        try:
            records.append({"name": bundle.name, "ok": True, "sha256": w.verify(bundle), "problem": None})
        except w.WeightsError as exc:
            failures.append(exc)
            records.append({"name": bundle.name, "ok": False, "sha256": None, "problem": exc.message})
    emit_records(records, fmt)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        bad = ", ".join(r["name"] for r in records if not r["ok"])
        raise w.ChecksumError(f"{len(failures)} of {len(records)} bundles failed verification: {bad}")


@app.command("optimise")
def optimise(
    name: Annotated[str, typer.Argument(help="Installed weights name or bundle path.")] = "echo-clip",
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also export and check the ONNX backend "
                                       "(when echoclip[cpu-fast] is installed).")] = True,
    force: Annotated[bool, typer.Option("--force", help="Compile and check again what is already built and "
                                        "checked on this CPU, e.g. after measuring on a busy machine (the ONNX "
                                        "export, the same on every CPU, is kept).")] = False,
) -> None:
    """Build the fast CPU paths of some weights for this machine.

    Each is checked against eager torch fp32 and timed, once per machine: about 6 minutes in all at
    full size on a 2-core CPU (compiling 1–2 min, the ONNX exports and int8 quantisation the rest).
    Prints what each path measured: frame/video cosine against torch fp32, EF and device-score
    differences (ONNX), frames/s; then times the built paths and eager torch against each other
    on one batch, interleaved. A path already built and checked on this CPU is not redone
    (its numbers are printed again) unless --force. Afterwards `--backend auto` runs the fastest exact path this
    CPU measured (at least 5 % faster than eager torch); `--backend onnx --precision int8` is there for you to choose.

    Examples:

        echoclip weights optimise echo-clip

        echoclip weights optimise echo-clip-r --no-onnx

        echoclip weights optimise echo-clip --force
    """
    from ..optimising import optimise as build_and_race

    report = build_and_race(name, onnx=onnx, force=force, note=info)
    for message in report.failed.values():
        warn(message)
    if report.failed:
        raise typer.Exit(1)
