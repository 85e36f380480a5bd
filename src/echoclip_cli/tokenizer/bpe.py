"""OpenAI CLIP byte-level BPE, giving the ids OpenCLIP's tokenizer gives.

EchoCLIP's text encoder was trained on OpenCLIP's tokenisation of report text, so this module
reproduces it id for id:

1. cleaning (in Python): ``ftfy.fix_text``, HTML entities unescaped twice, surrounding space
   stripped, every run of whitespace made one space, then lower case;
2. pre-tokenisation (in ``tokenizers``): the text is cut into runs of letters, single digits,
   runs of other non-space characters and the English contractions ``'s 't 're 've 'm 'll 'd``;
   spaces are dropped; each piece's UTF-8 bytes are written with CLIP's 256-character alphabet;
3. byte-level BPE (in ``tokenizers``) with ``</w>`` marking the end of each piece;
4. framing (in Python): start id, the ids, end id, cut to the context length so that the end id
   stays last, padded with 0.

OpenCLIP's regex is case-insensitive and also holds its special tokens' texts; three quirks follow,
reproduced here so that even odd texts get the same ids (:func:`split_text`):

- the literal texts ``<start_of_text>`` / ``<end_of_text>`` become the start / end ids wherever the
  regex starts a piece on them;
- U+017F (long s) counts as ``s``: ``'ſ`` is a contraction piece and ``<ſtart_of_text>`` is one
  piece (BPE-encoded as an ordinary word);
- U+0345 (combining ypogegrammeni) case-folds to a letter, so neither the letter class nor its
  negation matches it: it is dropped like a space.

What remains different: OpenCLIP's ``regex`` module may know newer Unicode than the Oniguruma
tables inside ``tokenizers``, so a letter or digit assigned after Unicode 14 (rare scripts,
recent CJK extensions) can be split differently. No clinical text contains one.

The vocabulary comes from a model bundle's ``vocab.json`` + ``merges.txt`` (Hugging Face CLIP
format) or, by default, from the CLIP merge list shipped in ``data/``.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

from echoclip_cli.errors import TokenizerError
from echoclip_cli.tokenizer.base import Encoding

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from tokenizers import Tokenizer

PathLike = Union[str, Path]

DEFAULT_CONTEXT_LENGTH = 77
PAD_ID = 0
END_OF_WORD = "</w>"

#: The BPE merge list shipped with the package (OpenAI CLIP, MIT licence: see data/).
PACKAGED_MERGES = Path(__file__).resolve().parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
#: CLIP uses the first 49152 - 256 - 2 merges of that file (after its header line).
N_PACKAGED_MERGES = 49152 - 256 - 2

#: The texts OpenCLIP reads as its start and end tokens.
START_TEXT = "<start_of_text>"
END_TEXT = "<end_of_text>"
#: Names the start/end tokens may have in a ``vocab.json`` (Hugging Face's first).
_START_NAMES = ("<|startoftext|>", START_TEXT)
_END_NAMES = ("<|endoftext|>", END_TEXT)

#: CLIP's pre-tokenisation: contractions, letter runs, single digits, other non-space runs.
#: Only U+0020 is left as whitespace after cleaning; the spaces between matches are dropped.
#: (``ſ`` is listed because OpenCLIP's case-insensitive ``'s`` also matches ``'ſ``.)
PIECE_PATTERN = r"'[sſ]|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"

#: Pieces OpenCLIP's regex takes whole: its special texts, case-insensitively (``ſ`` ~ ``s``).
_SPECIAL_TEXT_RE = re.compile(r"<[sſ]tart_of_text>|<end_of_text>")
#: A substring every such piece has (fast path: most texts have none).
_SPECIAL_TEXT_TAIL = "_of_text>"
#: Characters OpenCLIP's regex skips although they are not whitespace.
_DROPPED_CHARS = str.maketrans({"\u0345": " "})

#: Kinds of :func:`split_text` segments.
TEXT, SPECIAL, WORD = "text", "special", "word"


# --------------------------------------------------------------------------------------------
# Text cleaning
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _fix_text():
    """``ftfy.fix_text``, imported on first use."""
    try:
        import ftfy
    except ImportError as exc:  # pragma: no cover - ftfy is a declared dependency
        raise TokenizerError(
            "the CLIP tokenizer needs the 'ftfy' package",
            hint="pip install ftfy",
        ) from exc
    return ftfy.fix_text


def clean_text(text: str) -> str:
    """Clean ``text`` the way OpenCLIP does before tokenising (its default, ``clean='lower'``).

    Repairs mojibake and other Unicode damage with ftfy, unescapes HTML entities twice, makes
    every whitespace run one space, strips the ends and lower-cases.
    """
    fixed = _fix_text()(text)
    unescaped = html.unescape(html.unescape(fixed))
    return " ".join(unescaped.split()).lower()


def _starts_no_piece(char: str) -> bool:
    """Whether ``char`` belongs to CLIP's "other symbols" class (not space, letter or digit).

    A run of such characters swallows a following ``<``, so no special token can start there.
    """
    return not char.isspace() and unicodedata.category(char)[0] not in "LN"


def split_text(text: str) -> list[tuple[str, str]]:
    """Cut cleaned ``text`` where OpenCLIP's regex would take a special-token text whole.

    Returns ``(kind, part)`` segments: ``(TEXT, part)`` for ordinary text, ``(SPECIAL, START_TEXT)``
    or ``(SPECIAL, END_TEXT)`` for a start / end token, and ``(WORD, part)`` for a piece to be
    BPE-encoded as one word (``<ſtart_of_text>``). The regex only takes such a text where a new
    piece starts: at the beginning, after a space, letter or digit, or right after another such
    piece, never inside a run of symbols such as ``!<start_of_text>``. Characters the regex skips
    (U+0345) are turned into spaces.
    """
    text = text.translate(_DROPPED_CHARS)
    if _SPECIAL_TEXT_TAIL not in text:
        return [(TEXT, text)] if text else []
    segments: list[tuple[str, str]] = []
    start = 0
    for match in _SPECIAL_TEXT_RE.finditer(text):
        pos = match.start()
        if pos > 0 and pos != start and _starts_no_piece(text[pos - 1]):
            continue
        if pos > start:
            segments.append((TEXT, text[start:pos]))
        piece = match.group()
        segments.append((SPECIAL, piece) if piece in (START_TEXT, END_TEXT) else (WORD, piece))
        start = match.end()
    if start < len(text):
        segments.append((TEXT, text[start:]))
    return segments


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def byte_alphabet() -> tuple[tuple[int, str], ...]:
    """CLIP's stand-in character for each byte, in vocabulary order.

    Bytes that print as themselves in Latin-1 (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) come
    first and stand for themselves; the other 68 bytes (space, controls, NBSP, soft hyphen)
    follow in byte order, written with the characters U+0100, U+0101, ...
    """

    def prints_as_itself(byte: int) -> bool:
        return 0x21 <= byte <= 0x7E or 0xA1 <= byte <= 0xAC or 0xAE <= byte <= 0xFF

    printable = [(b, chr(b)) for b in range(256) if prints_as_itself(b)]
    others = [b for b in range(256) if not prints_as_itself(b)]
    return tuple(printable + [(b, chr(0x100 + i)) for i, b in enumerate(others)])


@functools.lru_cache(maxsize=1)
def _char_to_byte() -> dict[str, int]:
    """Inverse of :func:`byte_alphabet`."""
    return {char: byte for byte, char in byte_alphabet()}


def vocab_from_merges(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Build CLIP's vocabulary from its merge list.

    Ids run: the 256 byte characters, the same with ``</w>``, one token per merge (the pair
    joined), then the start and end tokens.
    """
    chars = [char for _, char in byte_alphabet()]
    tokens = chars + [char + END_OF_WORD for char in chars] + [a + b for a, b in merges]
    tokens += [START_TEXT, END_TEXT]
    return {token: i for i, token in enumerate(tokens)}


def _parse_merge_lines(lines: Sequence[str], source: Path) -> list[tuple[str, str]]:
    """Turn ``"a b"`` lines into pairs; raise :class:`TokenizerError` on any other line."""
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(
                f"malformed BPE merge list {source}: line {number} is not two symbols: {line!r}",
                hint="use the merges.txt/vocabulary shipped with the model",
            )
        merges.append((parts[0], parts[1]))
    return merges


def read_packaged_merges(path: Path = PACKAGED_MERGES) -> list[tuple[str, str]]:
    """Read the merges CLIP uses from a ``bpe_simple_vocab_16e6.txt.gz``-style file.

    The file's first line is a header; CLIP takes the next :data:`N_PACKAGED_MERGES` lines.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TokenizerError(
            f"cannot read the CLIP BPE vocabulary {path}: {exc}",
            hint="reinstall echoclip; the file ships inside the package",
        ) from exc
    selected = lines[1 : 1 + N_PACKAGED_MERGES]
    if len(selected) != N_PACKAGED_MERGES:
        raise TokenizerError(f"the CLIP BPE vocabulary {path} is truncated")
    return _parse_merge_lines(selected, path)


def read_vocab_json(path: Path) -> dict[str, int]:
    """Read a Hugging Face ``vocab.json`` (token -> id)."""
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TokenizerError(f"cannot read tokenizer vocabulary {path}: {exc}") from exc
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()
    ):
        raise TokenizerError(f"tokenizer vocabulary {path} is not a JSON object of token ids")
    return vocab


def read_merges_txt(path: Path) -> list[tuple[str, str]]:
    """Read a Hugging Face ``merges.txt`` (optional ``#version`` header, one pair a line)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"cannot read tokenizer merges {path}: {exc}") from exc
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return _parse_merge_lines([line for line in lines if line.strip()], path)


def _special_id(vocab: dict[str, int], names: Sequence[str], source: Path) -> int:
    """The id of the first of ``names`` found in ``vocab``."""
    for name in names:
        if name in vocab:
            return vocab[name]
    raise TokenizerError(f"tokenizer vocabulary {source} has none of {', '.join(names)}")


# --------------------------------------------------------------------------------------------
# The fast backend
# --------------------------------------------------------------------------------------------


def build_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` doing CLIP's pre-tokenisation and BPE on cleaned text.

    It adds no special tokens: framing is done by :class:`ClipBpeTokenizer`.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    try:
        model = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix=END_OF_WORD)
    except Exception as exc:  # the Rust side rejects merges whose parts are not in vocab
        raise TokenizerError(f"inconsistent BPE vocabulary and merges: {exc}") from exc
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # keep each regex match as a piece, drop what lies between (the spaces)
            pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="removed", invert=True),
            # bytes -> CLIP's byte alphabet, no further splitting
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return backend


class _Vocabulary:
    """A loaded vocabulary: the backend plus the ids and names of its tokens."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], source: Path):
        self.backend = build_backend(vocab, merges)
        self.start_id = _special_id(vocab, _START_NAMES, source)
        self.end_id = _special_id(vocab, _END_NAMES, source)
        self.id_to_token = {i: token for token, i in vocab.items()}
        self.source = source


@functools.lru_cache(maxsize=1)
def _packaged_vocabulary() -> _Vocabulary:
    """The vocabulary shipped in ``data/``, built once per process."""
    merges = read_packaged_merges()
    return _Vocabulary(vocab_from_merges(merges), merges, PACKAGED_MERGES)


def _files_vocabulary(vocab_json: Path, merges_txt: Path) -> _Vocabulary:
    """A vocabulary from Hugging Face CLIP tokenizer files."""
    return _Vocabulary(read_vocab_json(vocab_json), read_merges_txt(merges_txt), vocab_json)


# --------------------------------------------------------------------------------------------
# Public tokenizer
# --------------------------------------------------------------------------------------------


class ClipBpeTokenizer:
    """CLIP BPE tokenizer giving OpenCLIP's ids (start 49406, end 49407, pad 0).

    Args:
        vocab_json: a Hugging Face CLIP ``vocab.json``; with ``merges_txt``. Both ``None`` (the
            default) selects the vocabulary shipped with echoclip.
        merges_txt: the matching ``merges.txt``.
        context_length: ids per text (77 for every CLIP model).

    The vocabulary is read on first use and, for the shipped one, shared by all instances.
    """

    kind = "clip"

    def __init__(
        self,
        vocab_json: PathLike | None = None,
        merges_txt: PathLike | None = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
    ) -> None:
        if (vocab_json is None) != (merges_txt is None):
            raise TokenizerError(
                "a CLIP tokenizer needs both vocab.json and merges.txt, or neither",
                hint="give both files, or none to use the vocabulary shipped with echoclip",
            )
        if context_length < 2:
            raise TokenizerError(f"context length must be at least 2, not {context_length}")
        self.vocab_json = Path(vocab_json) if vocab_json is not None else None
        self.merges_txt = Path(merges_txt) if merges_txt is not None else None
        for path in (self.vocab_json, self.merges_txt):
            if path is not None and not path.is_file():
                raise TokenizerError(f"tokenizer file not found: {path}")
        self.context_length = context_length
        self._vocabulary: _Vocabulary | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_dir(
        cls, folder: PathLike, context_length: int = DEFAULT_CONTEXT_LENGTH
    ) -> ClipBpeTokenizer:
        """Use ``folder``'s ``vocab.json`` + ``merges.txt`` if both exist, else the shipped ones."""
        vocab_json = Path(folder) / "vocab.json"
        merges_txt = Path(folder) / "merges.txt"
        if vocab_json.is_file() and merges_txt.is_file():
            return cls(vocab_json, merges_txt, context_length)
        return cls(context_length=context_length)

    def __repr__(self) -> str:
        source = self.vocab_json or PACKAGED_MERGES.name
        return f"ClipBpeTokenizer(source={str(source)!r}, context_length={self.context_length})"

    # -- loading ------------------------------------------------------------------------------

    @property
    def vocabulary(self) -> _Vocabulary:
        """The loaded vocabulary (read on first access)."""
        if self._vocabulary is None:
            with self._lock:
                if self._vocabulary is None:
                    self._vocabulary = self._load()
        return self._vocabulary

    def _load(self) -> _Vocabulary:
        if self.vocab_json is None or self.merges_txt is None:
            return _packaged_vocabulary()
        return _files_vocabulary(self.vocab_json, self.merges_txt)

    def load(self) -> ClipBpeTokenizer:
        """Read the vocabulary now (it is otherwise read on first use); returns ``self``."""
        _ = self.vocabulary
        return self

    @property
    def start_id(self) -> int:
        """Id of the start-of-text token (49406 for CLIP)."""
        return self.vocabulary.start_id

    @property
    def end_id(self) -> int:
        """Id of the end-of-text token (49407 for CLIP)."""
        return self.vocabulary.end_id

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary (49408 for CLIP)."""
        return self.vocabulary.backend.get_vocab_size()

    # -- encoding -----------------------------------------------------------------------------

    def _content_ids(self, cleaned: Sequence[str]) -> list[list[int]]:
        """BPE ids (no start/end) for each cleaned text; ordinary text is encoded in one batch."""
        vocab = self.vocabulary
        split = [split_text(text) for text in cleaned]
        plain = [part for segments in split for kind, part in segments if kind == TEXT]
        encoded = iter(vocab.backend.encode_batch(plain, add_special_tokens=False))
        result: list[list[int]] = []
        for segments in split:
            ids: list[int] = []
            for kind, part in segments:
                if kind == TEXT:
                    ids.extend(next(encoded).ids)
                elif kind == SPECIAL:
                    ids.append(vocab.start_id if part == START_TEXT else vocab.end_id)
                else:
                    ids.extend(self._word_ids(part))
            result.append(ids)
        return result

    def _word_ids(self, word: str) -> list[int]:
        """BPE ids of ``word`` taken as a single piece (no pre-tokenisation)."""
        chars = dict(byte_alphabet())
        mapped = "".join(chars[byte] for byte in word.encode("utf-8"))
        return [token.id for token in self.vocabulary.backend.model.tokenize(mapped)]

    def _frame(self, content: list[int]) -> tuple[list[int], int]:
        """Start + content + end, cut to the context length (end kept last); unpadded.

        Returns the ids and how many were cut.
        """
        ids = [self.start_id, *content, self.end_id]
        n_cut = max(0, len(ids) - self.context_length)
        if n_cut:
            ids = ids[: self.context_length - 1] + [self.end_id]
        return ids, n_cut

    def encode(self, text: str) -> Encoding:
        """Tokenise one text, with the pieces each id stands for."""
        (content,) = self._content_ids([clean_text(text)])
        ids, n_cut = self._frame(content)
        pieces = [self.piece(i) for i in ids]
        padded = ids + [PAD_ID] * (self.context_length - len(ids))
        return Encoding(text=text, ids=padded, pieces=pieces, n_truncated=n_cut, unmatched=[])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Padded id lists (``context_length`` each) for many texts."""
        contents = self._content_ids([clean_text(text) for text in texts])
        rows = []
        for content in contents:
            ids, _ = self._frame(content)
            rows.append(ids + [PAD_ID] * (self.context_length - len(ids)))
        return rows

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Ids as an ``(N, context_length)`` ``torch.long`` tensor, like ``open_clip.tokenize``."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        rows = self.encode_batch(list(texts))
        if not rows:
            return torch.zeros((0, self.context_length), dtype=torch.long)
        return torch.tensor(rows, dtype=torch.long)

    # -- decoding -----------------------------------------------------------------------------

    def piece(self, token_id: int) -> str:
        """Readable text of one token: its characters (bytes decoded), ``</w>`` kept at word ends.

        Special tokens read ``<start_of_text>`` / ``<end_of_text>``; bytes that are only part of a
        character are shown as ``\\xNN``.
        """
        vocab = self.vocabulary
        if token_id == vocab.start_id:
            return START_TEXT
        if token_id == vocab.end_id:
            return END_TEXT
        token = vocab.id_to_token.get(int(token_id))
        if token is None:
            return f"<unknown:{int(token_id)}>"
        suffix = END_OF_WORD if token.endswith(END_OF_WORD) else ""
        body = token[: len(token) - len(suffix)]
        return _chars_to_bytes(body).decode("utf-8", errors="backslashreplace") + suffix

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a row of ids: from after the start token up to the end token (or the end)."""
        vocab = self.vocabulary
        values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        tokens: list[str] = []
        for value in values:
            token_id = int(value)
            if token_id == vocab.end_id:
                break
            if token_id == vocab.start_id:
                continue
            tokens.append(vocab.id_to_token.get(token_id, ""))
        words = "".join(tokens).split(END_OF_WORD)
        data = b" ".join(_chars_to_bytes(word) for word in words)
        return data.decode("utf-8", errors="replace").strip()


def _chars_to_bytes(chars: str) -> bytes:
    """Map CLIP byte-alphabet characters back to bytes (unknown characters are skipped)."""
    table = _char_to_byte()
    return bytes(table[char] for char in chars if char in table)
