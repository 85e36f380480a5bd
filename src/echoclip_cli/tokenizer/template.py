"""The EchoCLIP-R "template tokenizer", reimplemented from its description and golden ids.

EchoCLIP-R does not read reports word by word. Its tokenizer knows 770 report-template phrases
(``template_vocab.txt``, one per line, ``<#>`` marking a slot) and encodes a report as the
sequence of phrases it contains, each followed by the values of its slots.

How a text is encoded (checked against the golden rows made by the upstream implementation: the
107 of ``tokens.json`` and the 34 report-style rows of ``tokens-cleaning.json`` all match id for
id):

1. **Clean** (:func:`~echoclip_cli.tokenizer.cleaning.clean_report`, the released 11 steps):
   upper case, export debris, dates, ICD-10 codes and brackets out, ``WAS`` -> ``IS``,
   ``MILDLY`` -> ``MILD``, ``PULMONARY ARTERY`` -> ``PA``, a space after each sentence's period,
   one space per whitespace run, none before a unit, the period a measurement lacks added, and
   one space at the end. :attr:`Encoding.cleaned` holds the result.
2. **Pull out variables**: every severity (``MODERATE/SEVERE``, ``MILD/MODERATE``,
   ``VERY SEVERE``, ``MODERATE``, ``SEVERE``, ``MILD``, longest first) that no letter stands right
   before, and every number (``[0-9]+`` with an optional ``.[0-9]+``, also inside words: ``A2``,
   ``3D``, ``G/M2``, ``4.0CM``) is replaced by ``<#>``. A severity may be followed by letters: in
   ``IS MODERATEMMHG.`` the released tokenizer reads the phrase ``IS <#>MMHG.`` with the value
   ``MODERATE``, and ``MODERATED`` is ``<#>D``; but in ``NONSEVERE`` (a letter before) it stays
   text. A slot takes whichever kind of value fills it: a severity where the phrase means a
   number, a number where it means a severity (``INDICATING 4.8 MITRAL REGURGITATION.`` -> the
   phrase, then ``4 .8``). Other grading words (``TRACE``, ``TRIVIAL``, ``SMALL``, ``LARGE``) stay
   text. A range ``55-60`` or ``MILD-MODERATE`` is two variables around a literal ``-`` (the
   vocabulary has ``<#>-<#>`` slots); ``%``, ``MM``, ``MMHG`` and ``CM`` are literal phrase text.
3. **Rewrite** ``RESTING SEGMENTAL WALL MOTION ANALYSIS.:`` without its colon (released; the
   other released rewrite, of an IVC sentence's long form, is not documented and not done here).
4. **Match phrases**: scan the text left to right; at each position take the longest phrase that
   starts there (leftmost-longest, non-overlapping, anywhere in the text, even mid-word: this is
   how ``tokenizers`` matches added tokens). Phrases are matched as exact strings, closing
   period and space included (cleaning ends every sentence with them): ``"...HAS WORSENED "``
   matches ``"...HAS WORSENED THE ..."`` but not ``"...HAS WORSENED. "``. Text between matches is
   dropped and reported in :attr:`Encoding.unmatched` (as cleaned); a sentence that is not
   exactly a phrase (``"THERE IS TRACE PARAVALVULAR AORTIC REGURGITATION."``, ``"severe MR"``)
   therefore encodes to nothing.
5. **Emit ids**: ``BOS``, then for each phrase its id (5 + line index) followed by the tokens of
   its variables. A phrase's variables are joined with the separator ``‡`` and split greedily,
   longest piece first, against the variable vocabulary: ``20.0`` -> ``20 .0``;
   ``2.29`` -> ``2 .2 9``; ``50%``, ``(8MMHG)`` in one phrase -> ``50 ‡ 8``; ``MILD TO MODERATE``
   -> ``MILD ‡ MODERATE``; ``123`` -> ``12 3``; ``2005`` -> ``20 05``. Then ``EOS``, then 0s.
6. **Truncate**: keep ``context_length`` ids and make the last kept one ``EOS``.

``VERY SEVERE`` is one variable but the variable vocabulary has no ``VERY``: it is written as the
vocabulary's unknown token and ``SEVERE`` (a WordPiece vocabulary's way with an unknown word). No
golden row has it, so these two ids are our reading, not checked against the released code.

Variables are given to the phrase whose matched text holds their ``<#>`` (by position), so
numbers in dropped text never shift onto a later phrase. The golden rows cannot tell this apart
from a plain in-order hand-out (none of them has a number in dropped text); by position is the
behaviour that keeps every phrase's values its own.

Why plain Python and not the ``tokenizers`` library: the whole algorithm is one leftmost-longest
phrase scan plus a greedy split of short number strings. Written out it is easier to read and
test, reports unmatched text, needs no per-call tokenizer construction and runs in well under a
millisecond per report (phrases are bucketed by their first characters, so each text position
costs one dict lookup).
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from echoclip_cli.errors import TokenizerError
from echoclip_cli.tokenizer.base import Encoding
from echoclip_cli.tokenizer.cleaning import clean_report

if TYPE_CHECKING:
    import torch

# --- Id layout -------------------------------------------------------------------------------
# Derived from the golden ids (tokens.json): the phrase on line i (0-based) of template_vocab.txt
# has id 5 + i (e.g. "NORMAL LEFT VENTRICULAR SIZE." is line 629 -> 634), so ids 0-4 are five
# special tokens, of which only the pad (0) is ever emitted. Variable tokens follow the phrases:
# id = 5 + n_phrases + index in VARIABLE_VOCAB (775 + index for the released 770 phrases).
# Golden values pin the order: "8" -> 788, "20" -> 800, "50" -> 830 (so 0..100 start at index 5),
# "‡" -> 881, MILD 882, MODERATE 883, SEVERE 884, ".0" -> 887, ".2" -> 889, and BOS 907 /
# EOS 908 come right after the 132 variable entries. MILD/MODERATE (885), MODERATE/SEVERE (886)
# and "00".."09" (897-906) are not in the golden rows; their places follow from the documented
# order and from BOS being 907.

N_SPECIAL_TOKENS = 5
PAD_ID = 0
SEPARATOR = "‡"
SEVERITIES: tuple[str, ...] = ("MILD", "MODERATE", "SEVERE", "MILD/MODERATE", "MODERATE/SEVERE")
VARIABLE_VOCAB: tuple[str, ...] = (
    # five reserved special slots (never emitted; their names are not observable)
    "<v-pad>", "<v-unk>", "<v-start>", "<v-end>", "<v-mask>",
    *(str(n) for n in range(101)),
    SEPARATOR,
    *SEVERITIES,
    *(f".{d}" for d in range(10)),
    *(f"0{d}" for d in range(10)),
)  # fmt: skip
VARIABLE_INDEX: dict[str, int] = {token: i for i, token in enumerate(VARIABLE_VOCAB)}
# A variable word no vocabulary piece can spell (only the VERY of VERY SEVERE) becomes this token:
# WordPiece's way with an unknown word; not pinned by any golden row (see the module doc).
UNKNOWN_VARIABLE = VARIABLE_VOCAB[1]

# The released vocabulary (shipped with the upstream repository, never with echoclip).
RELEASED_PHRASE_COUNT = 770
RELEASED_VOCAB_SHA256 = "44b66106ad1193e52cb3dfa0ff13094d3bc55c9d9d9f0c37d032e600bbaaaae0"
VARIABLE_OFFSET = N_SPECIAL_TOKENS + RELEASED_PHRASE_COUNT  # 775
BOS_ID = VARIABLE_OFFSET + len(VARIABLE_VOCAB)  # 907
EOS_ID = BOS_ID + 1  # 908

SLOT = "<#>"
BOS_PIECE = "<start>"
EOS_PIECE = "<end>"

_WHITESPACE_RE = re.compile(r"\s+")
# Longer severities first so that MILD/MODERATE is one variable, not MILD + "/" + MODERATE. As
# released, a severity counts only when no letter stands right before it (NONSEVERE stays text);
# letters after it do not matter (MODERATED is <#>D). Numbers count wherever they stand. The
# released pattern is "(?<![A-Z])(?:MODERATE/SEVERE|MILD/MODERATE|VERY SEVERE|MODERATE|SEVERE|MILD)"
# or a number; written here to open with the character class [MSV0-9], so that re skips ahead to
# the next candidate instead of trying every alternative at every character (2x faster; the same
# matches, checked against the plain pattern in the tests).
VARIABLE_PATTERN = (
    r"[MSV0-9](?:(?<=[0-9])[0-9]*(?:\.[0-9]+)?"
    r"|(?<![A-Z]M)(?<=M)(?:ODERATE/SEVERE|ILD/MODERATE|ODERATE|ILD)"
    r"|(?<![A-Z]V)(?<=V)ERY SEVERE"
    r"|(?<![A-Z]S)(?<=S)EVERE)"
)
_VARIABLE_RE = re.compile(VARIABLE_PATTERN)
# The released tokenizer's phrase rewrites that we can do (module doc, rule 3).
_PHRASE_REWRITES: tuple[tuple[str, str], ...] = (
    ("RESTING SEGMENTAL WALL MOTION ANALYSIS.:", "RESTING SEGMENTAL WALL MOTION ANALYSIS."),
)
_SEVERITY_WORD_RE = re.compile(r"MILD|MODERATE|SEVERE")
_ALNUM_RE = re.compile(r"[^\W_]")
_MAX_VARIABLE_PIECE = max(len(token) for token in VARIABLE_VOCAB)


def normalise(text: str) -> str:
    """Upper-case ``text``, turn each whitespace run into one space and strip the ends."""
    return _WHITESPACE_RE.sub(" ", text.upper()).strip()


def rewrite_phrases(cleaned: str) -> str:
    """Apply the released phrase rewrites to a cleaned text (module doc, rule 3).

    Done before the variables are pulled out, which gives the same result: no rewrite touches a
    number or a severity.
    """
    for old, new in _PHRASE_REWRITES:
        cleaned = cleaned.replace(old, new)
    return cleaned


@functools.lru_cache(maxsize=4096)
def split_variable(value: str) -> tuple[str, ...]:
    """Split one variable value greedily (longest piece first) into variable-vocabulary pieces.

    ``"20.0"`` -> ``("20", ".0")``, ``"2.29"`` -> ``("2", ".2", "9")``, ``"MILD"`` -> ``("MILD",)``.
    A value is split word by word; a word with a character no piece covers is one
    :data:`UNKNOWN_VARIABLE` (``"VERY SEVERE"`` -> ``("<v-unk>", "SEVERE")``).
    """
    return tuple(piece for word in value.split(" ") for piece in _split_word(word))


def _split_word(word: str) -> tuple[str, ...]:
    pieces: list[str] = []
    i = 0
    while i < len(word):
        for size in range(min(_MAX_VARIABLE_PIECE, len(word) - i), 0, -1):
            piece = word[i : i + size]
            if piece in VARIABLE_INDEX:
                pieces.append(piece)
                i += size
                break
        else:
            return (UNKNOWN_VARIABLE,)
    return tuple(pieces)


def variable_pieces(values: Sequence[str]) -> list[str]:
    """Pieces for one phrase's variables: each value split, values separated by ``‡``."""
    pieces: list[str] = []
    for k, value in enumerate(values):
        if k:
            pieces.append(SEPARATOR)
        pieces.extend(split_variable(value))
    return pieces


@dataclass(frozen=True)
class _Templated:
    """A normalised text with its variables replaced by ``<#>``."""

    text: str
    slot_starts: tuple[int, ...]  # where each <#> starts in ``text``
    values: tuple[str, ...]  # the variable each <#> stands for, same order

    def _slots_in(self, start: int, end: int) -> range:
        """Indices of the ``<#>`` lying wholly inside ``text[start:end]`` (slots are sorted)."""
        first = bisect.bisect_left(self.slot_starts, start)
        stop = bisect.bisect_right(self.slot_starts, end - len(SLOT), lo=first)
        return range(first, stop)

    def values_in(self, start: int, end: int) -> list[str]:
        """The variables whose ``<#>`` lies wholly inside ``text[start:end]``."""
        return [self.values[k] for k in self._slots_in(start, end)]

    def restore(self, start: int, end: int) -> str:
        """``text[start:end]`` with each ``<#>`` put back to the value it replaced."""
        out: list[str] = []
        pos = start
        for k in self._slots_in(start, end):
            out.append(self.text[pos : self.slot_starts[k]])
            out.append(self.values[k])
            pos = self.slot_starts[k] + len(SLOT)
        out.append(self.text[pos:end])
        return "".join(out)


def templatise(normalised: str) -> _Templated:
    """Replace every severity word and number in ``normalised`` by ``<#>``, remembering them.

    ``normalised`` is upper case (a cleaned report, or :func:`normalise`'s output).
    """
    parts: list[str] = []
    starts: list[int] = []
    values: list[str] = []
    pos = 0
    length = 0
    for m in _VARIABLE_RE.finditer(normalised):
        chunk = normalised[pos : m.start()]
        parts.append(chunk)
        length += len(chunk)
        starts.append(length)
        values.append(m.group())
        parts.append(SLOT)
        length += len(SLOT)
        pos = m.end()
    parts.append(normalised[pos:])
    return _Templated("".join(parts), tuple(starts), tuple(values))


class _PhraseMatcher:
    """Leftmost-longest, non-overlapping search for a fixed set of phrases."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self._key_len = min(len(p) for p in phrases)
        buckets: dict[str, list[tuple[str, int]]] = {}
        for index, phrase in enumerate(phrases):
            buckets.setdefault(phrase[: self._key_len], []).append((phrase, index))
        for bucket in buckets.values():
            bucket.sort(key=lambda item: -len(item[0]))
        self._buckets = buckets

    def matches(self, text: str) -> Iterable[tuple[int, int, int]]:
        """Yield ``(start, end, phrase_index)`` for each match, left to right."""
        i = 0
        last = len(text) - self._key_len
        buckets = self._buckets
        key_len = self._key_len
        while i <= last:
            bucket = buckets.get(text[i : i + key_len])
            if bucket is not None:
                for phrase, index in bucket:
                    if text.startswith(phrase, i):
                        yield i, i + len(phrase), index
                        i += len(phrase)
                        break
                else:
                    i += 1
            else:
                i += 1


def _check_phrases(phrases: Sequence[str]) -> None:
    """Raise :class:`TokenizerError` when ``phrases`` cannot make a working vocabulary."""
    if not phrases:
        raise TokenizerError("the template vocabulary has no phrases")
    seen: dict[str, int] = {}
    for line, phrase in enumerate(phrases, start=1):
        if not phrase:
            raise TokenizerError(f"the template vocabulary has an empty phrase on line {line}")
        if phrase in seen:
            raise TokenizerError(
                f"the template vocabulary repeats a phrase on lines {seen[phrase]} and {line}"
            )
        if _SEVERITY_WORD_RE.search(phrase) or any(c in "0123456789" for c in phrase):
            raise TokenizerError(
                f"template phrase on line {line} holds a number or severity word; "
                f"those must be written as {SLOT}"
            )
        seen[phrase] = line


def read_phrases(vocab_path: str | os.PathLike[str]) -> list[str]:
    """Read a ``template_vocab.txt``: one phrase per line, the last line may lack a newline.

    Raises :class:`TokenizerError` when the file is missing, unreadable, not UTF-8 or empty.
    """
    path = Path(vocab_path)
    hint = "the EchoCLIP-R weights bundle ships template_vocab.txt; pass its path"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"template vocabulary not found: {path}", hint=hint) from None
    except OSError as exc:
        raise TokenizerError(f"cannot read template vocabulary {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TokenizerError(f"template vocabulary {path} is not UTF-8 text") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not any(line.strip() for line in lines):
        raise TokenizerError(f"template vocabulary {path} is empty", hint=hint)
    return lines


class TemplateTokenizer:
    """EchoCLIP-R's template tokenizer: reports -> phrase ids + variable ids (see module doc)."""

    kind = "template"
    context_length: int = 77

    def __init__(self, vocab_path: str | os.PathLike[str], context_length: int = 77) -> None:
        """Load the phrases from ``vocab_path`` (raises :class:`TokenizerError` if unusable)."""
        self._init(read_phrases(vocab_path), context_length)

    @classmethod
    def from_phrases(cls, phrases: Sequence[str], context_length: int = 77) -> TemplateTokenizer:
        """Build a tokenizer from phrases in memory (phrase ``i`` gets id ``5 + i``)."""
        tokenizer = cls.__new__(cls)
        tokenizer._init(list(phrases), context_length)
        return tokenizer

    def _init(self, raw_phrases: list[str], context_length: int) -> None:
        if context_length < 2:
            raise TokenizerError(f"context_length must be at least 2, not {context_length}")
        phrases = [normalise(p) for p in raw_phrases]
        _check_phrases(phrases)
        self.context_length = context_length
        # For display (pieces, search); matching uses the phrases exactly as written (rule 4).
        self.phrases: tuple[str, ...] = tuple(phrases)
        self.variable_offset = N_SPECIAL_TOKENS + len(phrases)
        self.bos_id = self.variable_offset + len(VARIABLE_VOCAB)
        self.eos_id = self.bos_id + 1
        self.vocab_size = self.eos_id + 1
        self._matcher = _PhraseMatcher(raw_phrases)

    def __repr__(self) -> str:
        return (
            f"TemplateTokenizer(phrases={len(self.phrases)}, "
            f"context_length={self.context_length})"
        )

    def encode(self, text: str) -> Encoding:
        """Encode one text to exactly ``context_length`` ids (see the module doc for the rules)."""
        cleaned = rewrite_phrases(clean_report(text))
        templated = templatise(cleaned)
        ids = [self.bos_id]
        pieces = [BOS_PIECE]
        unmatched: list[str] = []
        pos = 0
        for start, end, index in self._matcher.matches(templated.text):
            self._note_unmatched(templated, pos, start, unmatched)
            ids.append(N_SPECIAL_TOKENS + index)
            pieces.append(self.phrases[index])
            for piece in variable_pieces(templated.values_in(start, end)):
                ids.append(self.variable_offset + VARIABLE_INDEX[piece])
                pieces.append(piece)
            pos = end
        self._note_unmatched(templated, pos, len(templated.text), unmatched)
        ids.append(self.eos_id)
        pieces.append(EOS_PIECE)
        return self._fit(text, cleaned, ids, pieces, unmatched)

    @staticmethod
    def _note_unmatched(templated: _Templated, start: int, end: int, out: list[str]) -> None:
        """Add ``text[start:end]`` (values restored) to ``out`` if it holds a letter or digit."""
        if end > start:
            fragment = templated.restore(start, end).strip()
            if _ALNUM_RE.search(fragment):
                out.append(fragment)

    def _fit(
        self, text: str, cleaned: str, ids: list[int], pieces: list[str], unmatched: list[str]
    ) -> Encoding:
        """Truncate (last kept id becomes EOS) or pad with 0 to ``context_length``."""
        n = self.context_length
        n_truncated = 0
        if len(ids) > n:
            n_truncated = len(ids) - n  # content ids lost (the end token is kept)
            ids = ids[:n]
            pieces = pieces[:n]
            ids[-1] = self.eos_id
            pieces[-1] = EOS_PIECE
        padded = ids + [PAD_ID] * (n - len(ids))
        return Encoding(
            text=text,
            ids=padded,
            pieces=pieces,
            n_truncated=n_truncated,
            unmatched=unmatched,
            cleaned=cleaned,
        )

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Encode one text or several into a ``LongTensor`` of shape ``(N, context_length)``."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode(t).ids for t in texts]
        if not rows:
            return torch.zeros((0, self.context_length), dtype=torch.long)
        return torch.tensor(rows, dtype=torch.long)
