"""CLIP BPE tokenizer: the ids must equal OpenCLIP's, id for id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from echoclip_cli.errors import TokenizerError
from echoclip_cli.tokenizer.base import Encoding
from echoclip_cli.tokenizer.bpe import (
    END_TEXT,
    PACKAGED_MERGES,
    START_TEXT,
    ClipBpeTokenizer,
    byte_alphabet,
    read_packaged_merges,
    split_text,
    vocab_from_merges,
)

SOT, EOT = 49406, 49407

# Expected ids (start and end included, padding left out) were produced once by running
# open_clip_torch 3.3.0's ``open_clip.tokenize`` (ftfy 6.3.1) and are written here as literals.
KNOWN = [
    ("Severe mitral regurgitation.", [49406, 6215, 3303, 1406, 515, 3218, 70, 5070, 269, 49407]),
    (
        "LVEF 55-60%, RVSP 35.5 mmHg; AVA 0.8 cm²",
        [49406, 75, 673, 325, 276, 276, 268, 277, 271, 14505, 17135, 4393, 274, 276, 269, 276,
         1028, 26237, 282, 12385, 271, 269, 279, 3741, 41175, 49407],
    ),
    (
        "café naïve über Ångström straße",
        [49406, 15304, 1097, 35689, 563, 6522, 1516, 23176, 10352, 807, 7255, 332, 1894, 127,
         253, 324, 49407],
    ),
    ("emoji 😀👍🏽 🫀", [49406, 16327, 12832, 43722, 558, 104, 478, 49407]),
    (
        "&amp;lt;b&amp;gt; &quot;x&quot; AT&amp;T &#39;",
        [49406, 283, 321, 285, 257, 343, 257, 536, 261, 339, 262, 49407],
    ),
    (
        "It’s the patient's LV; they'll see",
        [49406, 585, 568, 518, 6262, 568, 11184, 282, 889, 1342, 862, 49407],
    ),
    ("cafÃ© mojibake", [49406, 15304, 617, 3252, 11878, 49407]),
    ("ﬁnancial Ｆｕｌｌｗｉｄｔｈ", [49406, 4930, 9407, 23571, 49407]),
    (
        "中文 日本語 한국어",
        [49406, 19759, 255, 29032, 485, 39121, 44353, 34002, 508, 15197, 250, 31871, 255, 31625,
         368, 49407],
    ),
    ("tabs\tand\nnew\r\nlines", [49406, 29163, 537, 686, 3418, 49407]),
    # OpenCLIP quirks: special-token texts, long s, U+0345
    (
        "a<start_of_text>b!<start_of_text>c<end_of_text>",
        [49406, 320, 49406, 321, 0, 283, 1572, 318, 539, 318, 4160, 285, 322, 49407, 49407],
    ),
    (
        "it'ſ <ſtart_of_text>x",
        [49406, 585, 6, 129, 379, 27, 129, 123, 16707, 62, 684, 62, 18169, 285, 343, 49407],
    ),
    ("a\u0345b \u0345<end_of_text>", [49406, 320, 321, 49407, 49407]),
]


@pytest.fixture(scope="module")
def tok() -> ClipBpeTokenizer:
    return ClipBpeTokenizer()


def padded(ids: list[int], length: int = 77) -> list[int]:
    return ids + [0] * (length - len(ids))


def write_hf_files(folder: Path) -> tuple[Path, Path]:
    """Write Hugging Face style vocab.json + merges.txt made from the packaged vocabulary."""
    merges = read_packaged_merges()
    vocab = vocab_from_merges(merges)
    vocab["<|startoftext|>"] = vocab.pop(START_TEXT)
    vocab["<|endoftext|>"] = vocab.pop(END_TEXT)
    vocab_json = folder / "vocab.json"
    merges_txt = folder / "merges.txt"
    vocab_json.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    merges_txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_json, merges_txt


# -- golden ------------------------------------------------------------------------------------


def test_golden_rows_match_openclip(tok, reference_dir):
    golden = reference_dir / "golden" / "tokens.json"
    rows = json.loads(golden.read_text(encoding="utf-8"))["rows"]
    assert len(rows) == 107
    got = tok([row["text"] for row in rows]).tolist()
    bad = [i for i, row in enumerate(rows) if got[i] != row["clip_bpe_ids"]]
    assert bad == []
    for row in rows[:5]:
        assert tok.encode(row["text"]).ids == row["clip_bpe_ids"]


# -- known ids (no reference files needed) ---------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), KNOWN, ids=[f"known{i}" for i in range(len(KNOWN))])
def test_known_ids(tok, text, expected):
    assert tok.encode(text).ids == padded(expected)
    assert tok([text])[0].tolist() == padded(expected)


def test_empty_and_blank_text(tok):
    for text in ("", "   ", "\n\t "):
        enc = tok.encode(text)
        assert enc.ids == padded([SOT, EOT])
        assert enc.pieces == [START_TEXT, END_TEXT]
        assert enc.n_truncated == 0


def test_case_does_not_matter(tok):
    text = "The Left Ventricular Ejection Fraction Is 35%."
    assert tok.encode(text.upper()).ids == tok.encode(text.lower()).ids == tok.encode(text).ids


def test_numbers_are_split_into_digits(tok):
    enc = tok.encode("EF 20.5%")
    digits = ["2</w>", "0</w>", ".</w>", "5</w>"]
    assert enc.pieces == [START_TEXT, "ef</w>", *digits, "%</w>", END_TEXT]


def test_html_entities_are_unescaped_twice(tok):
    assert tok.encode("a &amp;amp; b").ids == tok.encode("a & b").ids
    assert tok.encode("5 &lt; 6").ids == tok.encode("5 < 6").ids


def test_unicode_pieces_are_readable(tok):
    enc = tok.encode("naïve café 😀")
    assert enc.pieces[0] == START_TEXT and enc.pieces[-1] == END_TEXT
    assert "café</w>" in enc.pieces and "😀</w>" in enc.pieces
    assert enc.unmatched == []
    assert isinstance(enc, Encoding)


# -- truncation ----------------------------------------------------------------------------------


def test_long_text_is_truncated_with_end_token_last(tok):
    enc = tok.encode("hello world " * 40)  # 80 word tokens + start + end = 82
    assert len(enc.ids) == 77
    assert enc.ids[0] == SOT and enc.ids[-1] == EOT
    assert 0 not in enc.ids
    assert enc.n_truncated == 5
    assert len(enc.pieces) == 77


@pytest.mark.parametrize(("n_words", "n_cut"), [(74, 0), (75, 0), (76, 1), (77, 2)])
def test_truncation_boundary(tok, n_words, n_cut):
    enc = tok.encode("word " * n_words)
    assert enc.n_truncated == n_cut
    used = min(n_words + 2, 77)
    assert enc.ids[used - 1] == EOT
    assert enc.ids[used:] == [0] * (77 - used)
    assert len(enc.pieces) == used


def test_other_context_length():
    short = ClipBpeTokenizer(context_length=5)
    enc = short.encode("severe mitral regurgitation")
    assert enc.ids == [SOT, 6215, 3303, 1406, EOT]
    assert enc.n_truncated == 4
    assert short(["a", "b c"]).shape == (2, 5)


# -- batch call, decode ----------------------------------------------------------------------------


def test_call_returns_long_tensor(tok):
    texts = ["Severe MR.", "", "normal LV size"]
    out = tok(texts)
    assert out.dtype == torch.long and out.shape == (3, 77)
    assert out.tolist() == [tok.encode(t).ids for t in texts]
    assert tok("Severe MR.").shape == (1, 77)
    assert tok([]).shape == (0, 77)


def test_decode(tok):
    assert tok.decode(tok("Severe mitral regurgitation, EF 35%.")[0]) == (
        "severe mitral regurgitation , ef 3 5 %."
    )
    assert tok.decode(tok.encode("naïve 😀").ids) == "naïve 😀"


def test_vocabulary_facts(tok):
    assert tok.kind == "clip"
    assert (tok.start_id, tok.end_id, tok.vocab_size) == (SOT, EOT, 49408)
    assert len(byte_alphabet()) == 256
    assert len({char for _, char in byte_alphabet()}) == 256
    assert tok.piece(0) == "!" and tok.piece(256) == "!</w>"


def test_packaged_vocabulary_is_shared():
    assert ClipBpeTokenizer().vocabulary is ClipBpeTokenizer().vocabulary
    assert PACKAGED_MERGES.is_file()
    assert (PACKAGED_MERGES.parent / "LICENSE-CLIP-BPE.txt").is_file()


def test_split_text_follows_openclip_regex():
    assert split_text("plain text") == [("text", "plain text")]
    assert split_text("") == []
    assert split_text("x<start_of_text>!<end_of_text>") == [
        ("text", "x"), ("special", START_TEXT), ("text", "!<end_of_text>"),
    ]
    assert split_text("<start_of_text><end_of_text>") == [
        ("special", START_TEXT), ("special", END_TEXT),
    ]
    assert split_text("<ſtart_of_text>") == [("word", "<ſtart_of_text>")]


# -- vocab.json + merges.txt ---------------------------------------------------------------------


def test_hf_files_give_same_ids(tok, tmp_path):
    write_hf_files(tmp_path)
    from_files = ClipBpeTokenizer.from_dir(tmp_path)
    assert from_files.vocab_json == tmp_path / "vocab.json"
    texts = [text for text, _ in KNOWN] + ["", "hello world " * 40, "Severe MR"]
    assert torch.equal(from_files(texts), tok(texts))
    enc_a, enc_b = from_files.encode(KNOWN[0][0]), tok.encode(KNOWN[0][0])
    assert enc_a.pieces == enc_b.pieces


def test_from_dir_without_files_uses_packaged(tmp_path):
    (tmp_path / "vocab.json").write_text("{}", encoding="utf-8")  # merges.txt missing
    tok = ClipBpeTokenizer.from_dir(tmp_path)
    assert tok.vocab_json is None
    assert tok.encode("").ids[:2] == [SOT, EOT]


def test_only_one_file_is_an_error(tmp_path):
    vocab_json, _ = write_hf_files(tmp_path)
    with pytest.raises(TokenizerError):
        ClipBpeTokenizer(vocab_json=vocab_json)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        ClipBpeTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")


def test_unreadable_vocab_json(tmp_path):
    _, merges_txt = write_hf_files(tmp_path)
    (tmp_path / "vocab.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="vocabulary"):
        ClipBpeTokenizer.from_dir(tmp_path).encode("x")


def test_malformed_merges_txt(tmp_path):
    write_hf_files(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\ni n\nthree parts here\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="line 2"):
        ClipBpeTokenizer.from_dir(tmp_path).load()


def test_vocab_without_special_tokens(tmp_path):
    write_hf_files(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    del vocab["<|startoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(TokenizerError, match="startoftext"):
        ClipBpeTokenizer.from_dir(tmp_path).load()


def test_corrupt_packaged_file(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(TokenizerError):
        read_packaged_merges(bad)
