"""EchoCLIP-R template tokenizer: golden ids from upstream, and rules on a synthetic vocabulary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from echoclip_cli.errors import TokenizerError
from echoclip_cli.tokenizer.base import Encoding
from echoclip_cli.tokenizer.template import (
    BOS_ID,
    EOS_ID,
    RELEASED_PHRASE_COUNT,
    RELEASED_VOCAB_SHA256,
    VARIABLE_OFFSET,
    VARIABLE_PATTERN,
    TemplateTokenizer,
    split_variable,
    templatise,
)

# --- golden rows (reference files under an academic licence; skipped when absent) ----------


@pytest.fixture(scope="module")
def released(reference_dir: Path) -> TemplateTokenizer:
    return TemplateTokenizer(reference_dir / "template_vocab.txt")


@pytest.fixture(scope="module")
def golden_rows(reference_dir: Path) -> list[dict]:
    return json.loads((reference_dir / "golden" / "tokens.json").read_text())["rows"]


@pytest.fixture(scope="module")
def cleaning_rows(reference_dir: Path) -> list[dict]:
    """34 texts written the way real reports are (WAS, MILDLY, dates, ICD codes, brackets...)."""
    return json.loads((reference_dir / "golden" / "tokens-cleaning.json").read_text())["rows"]


def test_released_vocab_layout(released: TemplateTokenizer, reference_dir: Path) -> None:
    import hashlib

    data = (reference_dir / "template_vocab.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == RELEASED_VOCAB_SHA256
    assert not data.endswith(b"\n")  # wc -l says 769; the last phrase has no newline
    assert len(released.phrases) == RELEASED_PHRASE_COUNT == 770
    assert (released.variable_offset, released.bos_id, released.eos_id) == (775, 907, 908)
    assert (VARIABLE_OFFSET, BOS_ID, EOS_ID) == (775, 907, 908)


def test_all_golden_rows_match(released: TemplateTokenizer, golden_rows: list[dict]) -> None:
    assert len(golden_rows) == 107
    mismatched = [
        (i, row["text"][:60])
        for i, row in enumerate(golden_rows)
        if released.encode(row["text"]).ids != row["template_ids"]
    ]
    assert mismatched == []


def test_all_report_style_golden_rows_match(released: TemplateTokenizer, cleaning_rows: list[dict]) -> None:
    assert len(cleaning_rows) == 34
    mismatched = [
        (i, row["text"][:60])
        for i, row in enumerate(cleaning_rows)
        if released.encode(row["text"]).ids != row["template_ids"]
    ]
    assert mismatched == []


def test_report_style_row_pieces(released: TemplateTokenizer, cleaning_rows: list[dict]) -> None:
    # Row 0 has a date, a period with no space after it, brackets and an -LY adverb: once cleaned,
    # every sentence of it is a phrase.
    enc = released.encode(cleaning_rows[0]["text"])
    assert enc.cleaned is not None and enc.cleaned.endswith(". ")
    assert not any(c in enc.cleaned for c in "[]/") and "MILDLY" not in enc.cleaned
    assert enc.unmatched == []
    assert enc.pieces[-3:] == ["<#> LEFT VENTRICULAR HYPERTROPHY.", "MILD", "<end>"]


def test_golden_batch_tensor(released: TemplateTokenizer, golden_rows: list[dict]) -> None:
    texts = [row["text"] for row in golden_rows]
    batch = released(texts)
    assert batch.dtype == torch.long
    assert batch.shape == (107, 77)
    assert batch.tolist() == [row["template_ids"] for row in golden_rows]


def test_golden_long_report_pieces(released: TemplateTokenizer, golden_rows: list[dict]) -> None:
    enc = released.encode(golden_rows[0]["text"])
    assert enc.pieces[:5] == [
        "<start>",
        "A BIOPROSTHETIC STENT-VALVE IS PRESENT IN THE AORTIC POSITION.",
        "THE PEAK TRANSAORTIC GRADIENT IS <#>MMHG.",
        "20",
        ".0",
    ]
    assert enc.pieces[-1] == "<end>"
    assert len(enc.pieces) == 71 and enc.ids[71:] == [0] * 6
    assert enc.n_truncated == 0
    assert enc.unmatched == [
        "THERE IS TRACE PARAVALVULAR AORTIC REGURGITATION.",
        "POST TRANSSEPTAL PROCEDURE ASD WITH LEFT TO RIGHT SHUNTING.",
        "MID TO APICAL INFERIOR WALL.",
        "THE REMAINING LEFT VENTRICULAR SEGMENTS DEMONSTRATE HYPOKINESIS.",
        "OTHER NONRHEUMATIC MITRAL VALVE DISORDERS OTHER NONRHEUMATIC AORTIC VALVE DISORDERS",
        "S/P TAVR.",
    ]


# --- synthetic vocabulary -------------------------------------------------------------------

PHRASES = [
    "NORMAL LEFT VENTRICULAR SIZE. ",  # id 5
    "<#> DILATED LEFT ATRIUM. ",  # 6
    "LV EJECTION FRACTION IS <#>%. ",  # 7
    "THE PEAK GRADIENT IS <#>MMHG. ",  # 8
    "THERE IS <#> TO <#> TRICUSPID REGURGITATION. ",  # 9
    "THERE IS <#> TRICUSPID REGURGITATION. ",  # 10
    "THERE IS AKINESIS OF THE ",  # 11
    "APICAL CAP. ",  # 12
    "THE EJECTION FRACTION IS <#>-<#>%. ",  # 13
    "TOTAL WALL MOTION SCORE IS <#>. ",  # 14
    "THERE IS ",  # 15
]
OFFSET = 5 + len(PHRASES)  # 16: variable ids follow the phrases
BOS = OFFSET + 132  # 148
EOS = BOS + 1  # 149


def v(token: str) -> int:
    """Variable id, from the documented order (independent of the module's own table)."""
    if token == "‡":
        index = 106
    elif token in ("MILD", "MODERATE", "SEVERE", "MILD/MODERATE", "MODERATE/SEVERE"):
        index = 107 + ["MILD", "MODERATE", "SEVERE", "MILD/MODERATE", "MODERATE/SEVERE"].index(
            token
        )
    elif token.startswith("."):
        index = 112 + int(token[1])
    elif len(token) == 2 and token.startswith("0"):
        index = 122 + int(token[1])
    else:
        index = 5 + int(token)
    return OFFSET + index


def body(enc: Encoding) -> list[int]:
    """The ids between BOS and EOS (checks BOS, EOS and padding on the way)."""
    ids = enc.ids
    assert ids[0] == BOS
    end = ids.index(EOS)
    assert all(i == 0 for i in ids[end + 1 :])
    return ids[1:end]


@pytest.fixture(scope="module")
def tok() -> TemplateTokenizer:
    return TemplateTokenizer.from_phrases(PHRASES)


def test_synthetic_layout(tok: TemplateTokenizer) -> None:
    assert (tok.variable_offset, tok.bos_id, tok.eos_id) == (16, 148, 149)
    assert tok.kind == "template" and tok.context_length == 77


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("LV EJECTION FRACTION IS 45%.", [7, v("45")]),
        ("LV EJECTION FRACTION IS 0%.", [7, v("0")]),
        ("LV EJECTION FRACTION IS 100%.", [7, v("100")]),
        ("LV EJECTION FRACTION IS 123%.", [7, v("12"), v("3")]),
        ("LV EJECTION FRACTION IS 2005%.", [7, v("20"), v("05")]),
        ("THE PEAK GRADIENT IS 20.0MMHG.", [8, v("20"), v(".0")]),
        ("THE PEAK GRADIENT IS 100.5MMHG.", [8, v("100"), v(".5")]),
        ("THE PEAK GRADIENT IS 1.05MMHG.", [8, v("1"), v(".0"), v("5")]),
        ("TOTAL WALL MOTION SCORE IS 2.29.", [14, v("2"), v(".2"), v("9")]),
    ],
)
def test_numbers_become_variables(tok: TemplateTokenizer, text: str, expected: list[int]) -> None:
    assert body(tok.encode(text)) == expected


@pytest.mark.parametrize(
    ("word", "token"),
    [
        ("MILD", "MILD"),
        ("MODERATE", "MODERATE"),
        ("SEVERE", "SEVERE"),
        ("MILD/MODERATE", "MILD/MODERATE"),
        ("MODERATE/SEVERE", "MODERATE/SEVERE"),
    ],
)
def test_severities_become_variables(tok: TemplateTokenizer, word: str, token: str) -> None:
    enc = tok.encode(f"{word} DILATED LEFT ATRIUM.")
    assert body(enc) == [6, v(token)]
    assert enc.pieces == ["<start>", "<#> DILATED LEFT ATRIUM.", token, "<end>"]


def test_severity_adverbs_are_cleaned_to_severities(tok: TemplateTokenizer) -> None:
    enc = tok.encode("moderately dilated left atrium.")  # cleaning: MODERATELY -> MODERATE
    assert body(enc) == [6, v("MODERATE")]
    assert enc.cleaned == "MODERATE DILATED LEFT ATRIUM. "


def test_severity_with_a_letter_before_it_is_text(tok: TemplateTokenizer) -> None:
    # released rule: a severity counts only when no letter stands right before it
    enc = tok.encode("NONSEVERE DILATED LEFT ATRIUM. XMILD DILATED LEFT ATRIUM.")
    assert body(enc) == []
    assert enc.unmatched == ["NONSEVERE DILATED LEFT ATRIUM. XMILD DILATED LEFT ATRIUM."]
    # a digit, a slash or a bracket before it is no letter; letters after it do not matter
    assert templatise("2SEVERE (MILD) MODERATED").values == ("2", "SEVERE", "MILD", "MODERATE")


def test_very_severe_is_one_variable(tok: TemplateTokenizer) -> None:
    enc = tok.encode("THERE IS VERY SEVERE TRICUSPID REGURGITATION.")
    # the variable vocabulary has no VERY: unknown token, then SEVERE (not pinned by a golden row)
    assert body(enc) == [10, OFFSET + 1, v("SEVERE")]
    assert enc.pieces[2:4] == ["<v-unk>", "SEVERE"]
    assert split_variable("VERY SEVERE") == ("<v-unk>", "SEVERE")


@pytest.mark.parametrize(
    "text",
    [
        "MILD MODERATE/SEVERE MILD/MODERATE VERY SEVERE SEVERE NONSEVERE XMILD 5MILD MODERATED",
        "12.5MM 3.1.2 .5 5. A2 G/M2 MILD-MODERATE 55-60% VERYSEVERE VERY  SEVERE SMILD SSEVERE",
    ],
)
def test_variable_pattern_is_the_released_one(text: str) -> None:
    plain = re.compile(r"(?<![A-Z])(?:MODERATE/SEVERE|MILD/MODERATE|VERY SEVERE|MODERATE|SEVERE|MILD)"
                       r"|[0-9]+(?:\.[0-9]+)?")
    found = [(m.span(), m.group()) for m in re.finditer(VARIABLE_PATTERN, text)]
    assert found == [(m.span(), m.group()) for m in plain.finditer(text)]


# A slot filled with a value of the other kind: the released tokenizer emits the phrase and then
# the value's pieces, whatever kind the phrase's wording suggests (severity glued to a unit, a
# number where a grade is meant, severities joined by "/", decimals).
OTHER_KIND_FILLS = [
    ("THE PEAK GRADIENT IS MODERATEMMHG.", [8, v("MODERATE")]),
    ("THE PEAK GRADIENT IS SEVEREMMHG.", [8, v("SEVERE")]),
    ("THE PEAK GRADIENT IS MILD/MODERATEMMHG.", [8, v("MILD/MODERATE")]),
    ("THE PEAK GRADIENT IS MODERATE/SEVEREMMHG.", [8, v("MODERATE/SEVERE")]),
    ("LV EJECTION FRACTION IS SEVERE%.", [7, v("SEVERE")]),
    ("THERE IS 4.8 TRICUSPID REGURGITATION.", [10, v("4"), v(".8")]),
    ("THERE IS 3 TRICUSPID REGURGITATION.", [10, v("3")]),
    ("THERE IS 2 TO MODERATE TRICUSPID REGURGITATION.", [9, v("2"), v("‡"), v("MODERATE")]),
    ("THERE IS MILD TO 3.5 TRICUSPID REGURGITATION.", [9, v("MILD"), v("‡"), v("3"), v(".5")]),
    ("2.5 DILATED LEFT ATRIUM.", [6, v("2"), v(".5")]),
    ("THE EJECTION FRACTION IS MILD-60%.", [13, v("MILD"), v("‡"), v("60")]),
    ("TOTAL WALL MOTION SCORE IS SEVERE.", [14, v("SEVERE")]),
]


@pytest.mark.parametrize(("text", "expected"), OTHER_KIND_FILLS)
def test_a_slot_takes_a_value_of_the_other_kind(tok: TemplateTokenizer, text: str, expected: list[int]) -> None:
    enc = tok.encode(text)
    assert body(enc) == expected
    assert enc.unmatched == []


@pytest.mark.parametrize(
    ("text", "phrase_line", "values"),
    [
        # written from the rule (phrase id = 5 + line index, values +775), not by running the code
        ("ESTIMATED PA PRESSURE IS MODERATEMMHG.", 570, [883]),
        ("ESTIMATED PA PRESSURE IS MILD/MODERATEMMHG.", 570, [885]),
        ("THERE IS DOPPLER EVIDENCE OF PULMONARY VEIN SYSTOLIC FLOW REVERSAL, INDICATING 4.8 MITRAL "
         "REGURGITATION.", 83, [775 + 5 + 4, 775 + 112 + 8]),
    ],
)
def test_released_vocab_other_kind_fills(released: TemplateTokenizer, text: str, phrase_line: int,
                                         values: list[int]) -> None:
    assert released.encode(text).ids[: 3 + len(values)] == [BOS_ID, 5 + phrase_line, *values, EOS_ID]


def test_two_variables_are_separated(tok: TemplateTokenizer) -> None:
    enc = tok.encode("THERE IS MILD TO MODERATE TRICUSPID REGURGITATION.")
    assert body(enc) == [9, v("MILD"), v("‡"), v("MODERATE")]
    assert enc.pieces[1:5] == [
        "THERE IS <#> TO <#> TRICUSPID REGURGITATION.",
        "MILD",
        "‡",
        "MODERATE",
    ]


def test_range_is_two_variables(tok: TemplateTokenizer) -> None:
    enc = tok.encode("THE EJECTION FRACTION IS 55-60%.")
    assert body(enc) == [13, v("55"), v("‡"), v("60")]
    enc = tok.encode("THE EJECTION FRACTION IS 52.5-60%.")
    assert body(enc) == [13, v("52"), v(".5"), v("‡"), v("60")]


def test_longest_phrase_wins_at_a_position(tok: TemplateTokenizer) -> None:
    # "THERE IS " also matches at 0, but the longer phrase starting there is taken.
    assert body(tok.encode("THERE IS SEVERE TRICUSPID REGURGITATION.")) == [10, v("SEVERE")]
    assert body(tok.encode("THERE IS AKINESIS OF THE APICAL CAP.")) == [11, 12]


def test_short_phrase_and_unmatched_rest(tok: TemplateTokenizer) -> None:
    enc = tok.encode("THERE IS NOTHING ELSE TO SAY.")
    assert body(enc) == [15]
    assert enc.unmatched == ["NOTHING ELSE TO SAY."]


def test_several_phrases_in_order(tok: TemplateTokenizer) -> None:
    enc = tok.encode(
        "NORMAL LEFT VENTRICULAR SIZE. LV EJECTION FRACTION IS 60%. MILD DILATED LEFT ATRIUM."
    )
    assert body(enc) == [5, 7, v("60"), 6, v("MILD")]
    assert enc.unmatched == []


def test_phrases_match_exactly_with_their_closing_space(tok: TemplateTokenizer) -> None:
    # "THERE IS " ends in a space: it does not match inside "THERE ISN'T" (matched as exact strings)
    assert body(tok.encode("THERE ISN'T ANY.")) == []
    assert body(tok.encode("THERE IS")) == [15]  # cleaning ends every text with a space


def test_resting_segmental_rewrite(reference_dir: Path, released: TemplateTokenizer) -> None:
    # no period after ANALYSIS: cleaning adds one, then the released rewrite drops the colon
    enc = released.encode("Resting segmental wall motion analysis: NORMAL LEFT VENTRICULAR SIZE.")
    assert enc.cleaned == "RESTING SEGMENTAL WALL MOTION ANALYSIS. NORMAL LEFT VENTRICULAR SIZE. "
    assert enc.pieces[1:3] == ["RESTING SEGMENTAL WALL MOTION ANALYSIS.", "NORMAL LEFT VENTRICULAR SIZE."]


def test_released_phrases_survive_cleaning(released: TemplateTokenizer, reference_dir: Path) -> None:
    # Every released phrase, its slots filled, still encodes to itself after cleaning.
    from echoclip_cli.tokenizer.template import read_phrases

    for line, phrase in enumerate(read_phrases(reference_dir / "template_vocab.txt")):
        ids = released.encode(phrase.replace("<#>", "7")).ids
        assert ids[1] == 5 + line, phrase
        assert all(i >= VARIABLE_OFFSET for i in ids[2 : ids.index(EOS_ID)]), phrase


def test_lower_case_and_whitespace_are_normalised(tok: TemplateTokenizer) -> None:
    expected = tok.encode("NORMAL LEFT VENTRICULAR SIZE. ").ids
    assert tok.encode("normal left ventricular size.").ids == expected
    assert tok.encode("  Normal\n left\t  ventricular SIZE.\r\n").ids == expected
    assert body(tok.encode("lv ejection fraction is 35%.")) == [7, v("35")]


def test_trailing_space_and_period_are_optional(tok: TemplateTokenizer) -> None:
    assert body(tok.encode("NORMAL LEFT VENTRICULAR SIZE.")) == [5]
    assert body(tok.encode("NORMAL LEFT VENTRICULAR SIZE.. ")) == [5]
    assert body(tok.encode("NORMAL LEFT VENTRICULAR SIZE")) == []


def test_unicode_is_upper_cased_and_dropped(tok: TemplateTokenizer) -> None:
    enc = tok.encode("Normal left ventricular size. Échographie ✓ — straße")
    assert body(enc) == [5]
    assert enc.unmatched == ["ÉCHOGRAPHIE ✓ — STRASSE"]
    # a non-ASCII digit is not a number variable
    enc = tok.encode("LV EJECTION FRACTION IS ٣%.")
    assert body(enc) == []
    assert enc.unmatched == ["LV EJECTION FRACTION IS ٣%."]


def test_empty_text(tok: TemplateTokenizer) -> None:
    enc = tok.encode("")
    assert enc.ids == [BOS, EOS] + [0] * 75
    assert enc.pieces == ["<start>", "<end>"]
    assert enc.unmatched == [] and enc.n_truncated == 0
    assert tok.encode(" \n\t ").ids == enc.ids


def test_only_unknown_words(tok: TemplateTokenizer) -> None:
    enc = tok.encode("severe MR")
    assert enc.ids == [BOS, EOS] + [0] * 75
    assert enc.unmatched == ["SEVERE MR"]


def test_variables_in_dropped_text_do_not_shift(tok: TemplateTokenizer) -> None:
    enc = tok.encode("EF WAS 35% BY EYE. LV EJECTION FRACTION IS 45%. PEAK 3.5 M/S.")
    assert body(enc) == [7, v("45")]
    assert enc.unmatched == ["EF IS 35% BY EYE.", "PEAK 3.5 M/S."]  # as cleaned (WAS -> IS)


def test_punctuation_only_leftovers_are_not_reported(tok: TemplateTokenizer) -> None:
    enc = tok.encode("NORMAL LEFT VENTRICULAR SIZE... ; LV EJECTION FRACTION IS 50%.")
    assert body(enc) == [5, 7, v("50")]
    assert enc.unmatched == []


def test_exact_fit_is_not_truncated(tok: TemplateTokenizer) -> None:
    enc = tok.encode("MILD DILATED LEFT ATRIUM. " * 37)  # 1 + 74 + 1 = 76 ids
    assert enc.n_truncated == 0
    assert enc.ids[75] == EOS and enc.ids[76] == 0


def test_one_id_too_many(tok: TemplateTokenizer) -> None:
    enc = tok.encode("MILD DILATED LEFT ATRIUM. " * 38)  # 1 + 76 + 1 = 78 ids
    assert len(enc.ids) == 77
    assert enc.ids[-1] == EOS and enc.ids[-2] == 6  # the last variable made way for EOS
    assert enc.n_truncated == 1
    assert len(enc.pieces) == 77 and enc.pieces[-1] == "<end>"


def test_very_long_report_is_truncated(tok: TemplateTokenizer) -> None:
    enc = tok.encode("THE PEAK GRADIENT IS 20.0MMHG. NORMAL LEFT VENTRICULAR SIZE. " * 100)
    assert len(enc.ids) == 77
    assert enc.ids[0] == BOS and enc.ids[-1] == EOS
    assert 0 not in enc.ids
    assert enc.ids[1:9] == [8, v("20"), v(".0"), 5, 8, v("20"), v(".0"), 5]
    assert enc.n_truncated == 400 + 2 - 77  # 4 content ids per repeat, plus BOS and EOS
    assert enc.pieces[-1] == "<end>" and len(enc.pieces) == 77


def test_custom_context_length() -> None:
    short = TemplateTokenizer.from_phrases(PHRASES, context_length=5)
    enc = short.encode("THE PEAK GRADIENT IS 20.0MMHG. NORMAL LEFT VENTRICULAR SIZE.")
    assert enc.ids == [BOS, 8, v("20"), v(".0"), EOS]
    assert enc.n_truncated == 1
    assert short(["", "THERE IS"]).tolist() == [[BOS, EOS, 0, 0, 0], [BOS, 15, EOS, 0, 0]]


def test_call_returns_long_tensor(tok: TemplateTokenizer) -> None:
    one = tok("LV EJECTION FRACTION IS 45%.")
    assert one.dtype == torch.long and one.shape == (1, 77)
    assert one[0, :4].tolist() == [BOS, 7, v("45"), EOS]
    two = tok(["NORMAL LEFT VENTRICULAR SIZE.", "severe MR"])
    assert two.shape == (2, 77)
    assert two[:, :3].tolist() == [[BOS, 5, EOS], [BOS, EOS, 0]]
    assert tok([]).shape == (0, 77)


# --- vocabulary files and errors --------------------------------------------------------------


def test_vocab_file_without_final_newline_and_crlf(tmp_path: Path, tok: TemplateTokenizer) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(PHRASES), encoding="utf-8")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(("\r\n".join(PHRASES) + "\r\n").encode("utf-8"))
    text = "THERE IS MILD TO SEVERE TRICUSPID REGURGITATION. APICAL CAP."
    for path in (plain, crlf):
        loaded = TemplateTokenizer(path)
        assert loaded.phrases == tok.phrases
        assert loaded.encode(text).ids == tok.encode(text).ids
    assert body(tok.encode(text)) == [9, v("MILD"), v("‡"), v("SEVERE"), 12]


def test_missing_vocab_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not found") as info:
        TemplateTokenizer(tmp_path / "nope.txt")
    assert "nope.txt" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\n  \n"])
def test_empty_vocab_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(TokenizerError, match="empty"):
        TemplateTokenizer(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"NORMAL LEFT VENTRICULAR SIZE. \xff\xfe\n", "not UTF-8"),
        (b"APICAL CAP. \n\nNORMAL LEFT VENTRICULAR SIZE. \n", "empty phrase on line 2"),
        (b"APICAL CAP. \nAPICAL CAP.\n", "repeats a phrase on lines 1 and 2"),
        (b"APICAL CAP. \nEF IS 55%. \n", "line 2 holds a number"),
        (b"MILD LEFT VENTRICULAR HYPERTROPHY. \n", "line 1 holds a number or severity"),
    ],
)
def test_malformed_vocab_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(TokenizerError, match=message):
        TemplateTokenizer(path)


def test_bad_phrases_and_context_length() -> None:
    with pytest.raises(TokenizerError, match="no phrases"):
        TemplateTokenizer.from_phrases([])
    with pytest.raises(TokenizerError, match="at least 2"):
        TemplateTokenizer.from_phrases(PHRASES, context_length=1)
