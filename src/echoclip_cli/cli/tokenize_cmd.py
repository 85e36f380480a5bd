"""``echoclip tokenize``: show the token ids a model will see for a text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from .common import json_line, out_console, warn

if TYPE_CHECKING:
    from rich.console import Console

    from ..tokenizer import Encoding, Tokenizer


def _texts(args: list[str]) -> list[str]:
    texts: list[str] = []
    for arg in args:
        if arg == "-":
            texts.extend(line.rstrip("\n") for line in sys.stdin if line.strip())
        else:
            texts.append(arg)
    return texts


def _tokenizer(weights: Optional[str], kind: Optional[str], template_vocab: Optional[Path]) -> "Tokenizer":
    from .. import weights as w
    from ..tokenizer import get_tokenizer, tokenizer_for

    if weights:
        bundle = w.resolve(weights, auto_pull=False)
        context = int(bundle.config["tokenizer"].get("context_length", 77))
        return get_tokenizer(kind or bundle.tokenizer_kind, template_vocab=template_vocab, files_dir=bundle.files_dir,
                             context_length=context)
    if kind == "template" and template_vocab is None:
        installed = {b.name: b for b in w.installed_bundles() if b.tokenizer_kind == "template"}
        bundle = installed.get("echo-clip-r") or next(iter(installed.values()), None)
        if bundle is not None and bundle.file(w.TEMPLATE_VOCAB):
            return tokenizer_for(bundle)
    return get_tokenizer(kind or "clip", template_vocab=template_vocab)


def _warn_about(enc: "Encoding", tok: "Tokenizer", label: str) -> None:
    if enc.n_truncated:
        warn(f"{label}: truncated to fit the context, {enc.n_truncated} tokens cut")
    if tok.kind == "template" and len([i for i in enc.ids if i]) <= 2 and enc.text.strip():
        warn(f"{label}: nothing matched the report-template vocabulary; as a report this embeds an empty report"
             + _as_a_query(enc.text, tok))
    elif enc.unmatched:
        warn(f"{label}: dropped (matched no template phrase): " + " | ".join(enc.unmatched))


def _as_a_query(text: str, tok: "Tokenizer") -> str:
    """What ``search`` makes of ``text`` (it rewrites free text into template sentences), as the
    end of the warning: a text that is an empty report may still be a query that finds videos."""
    from ..query import QueryNotUnderstood, understand_query

    try:
        plan = understand_query(text, tok)
    except QueryNotUnderstood:
        return ""
    shown = text if len(text) <= 60 else text[:57] + "..."
    return (f"; as a search query it becomes {plan.texts[0]!r}: `echoclip search --explain {shown!r}` "
            "shows how")


def tokenize(
    texts: Annotated[list[str], typer.Argument(help="Texts to tokenize; '-' reads one text per line from stdin.")],
    weights: Annotated[
        Optional[str], typer.Option("--weights", "-w", help="Use the tokenizer of these installed weights.")
    ] = None,
    tokenizer: Annotated[
        Optional[str], typer.Option("--tokenizer", "-t", help="clip (EchoCLIP BPE) or template (EchoCLIP-R).")
    ] = None,
    template_vocab: Annotated[
        Optional[Path], typer.Option("--template-vocab", help="template_vocab.txt for the template tokenizer.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per text: text, cleaned, ids (all 77), pieces.")
    ] = False,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Also show the cleaned text (template tokenizer) and what was dropped."),
    ] = False,
) -> None:
    """Show the token ids and pieces a model will see for each text.

    Warns on stderr when a report is cut to the context length and, for the template tokenizer,
    which parts of the text matched no phrase (they are dropped). The template tokenizer cleans a
    report first (upper case; WAS -> IS, MILDLY -> MILD; dates, ICD-10 codes and brackets out; the
    period a measurement lacks added); --explain shows the cleaned text the phrases were sought in.

    Examples:

        echoclip tokenize "LV EJECTION FRACTION IS 35%. "

        echoclip tokenize -t template --template-vocab template_vocab.txt --explain "The LA was mildly dilated"

        cut -f2 reports.tsv | echoclip tokenize --json - > ids.jsonl
    """
    tok = _tokenizer(weights, tokenizer, template_vocab)
    items = _texts(texts)
    console = out_console()
    for n, text in enumerate(items, 1):
        enc = tok.encode(text)
        _warn_about(enc, tok, f"text {n}" if len(items) > 1 else "text")
        if as_json:
            record = {"text": text, "tokenizer": tok.kind, "cleaned": enc.cleaned, "ids": enc.ids,
                      "pieces": enc.pieces, "n_tokens": len(enc.pieces), "n_truncated": enc.n_truncated,
                      "unmatched": enc.unmatched}
            sys.stdout.write(json_line(record))
            continue
        _print_encoding(console, enc, tok.kind, explain)


def _print_encoding(console: "Console", enc: "Encoding", kind: str, explain: bool) -> None:
    used = enc.ids[: len(enc.pieces)]
    pieces = " ".join(f"[cyan]{escape(p)}[/cyan]" + f"[dim]:{i}[/dim]" for p, i in zip(enc.pieces, used))
    console.print(f"[bold]{escape(enc.text)}[/bold]")
    if explain and enc.cleaned is not None:
        console.print(f"  cleaned: {escape(enc.cleaned.rstrip())}")
    console.print(f"  {len(enc.pieces)} tokens ({kind}): {pieces}")
    if explain and enc.unmatched:
        console.print("  dropped (no phrase): " + " | ".join(escape(u) for u in enc.unmatched))
