"""Compare echoclip's CLIP BPE ids with ``open_clip.tokenize`` on many texts.

A developer check, not part of the test suite: it needs ``open_clip_torch`` (and ``tokenizers``,
``ftfy``) in the running environment, e.g.::

    PYTHONPATH=src /path/to/venv-with-open_clip/bin/python scripts/check_bpe_against_openclip.py

Texts compared: the golden texts in ``../shared/reference/golden/tokens.json`` (when present),
hand-picked tricky strings, and seeded random strings (Unicode from every plane, punctuation,
numbers, words, long reports). Prints each mismatch and a summary; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT.parent / "shared" / "reference" / "golden" / "tokens.json"

TRICKY = [
    "",
    "   \t\n ",
    "Severe mitral regurgitation.",
    "SEVERE MITRAL REGURGITATION.",
    "LVEF 55-60%, RVSP 35.5 mmHg; AVA 0.8 cm² (Vmax 4.2 m/s)",
    "EF ≥ 50 %, ½ normal, 3×4, 10,000.25, -3.5e-2, ١٢٣ ٣٫٥, ⅫⅣ, ①②",
    "It's the patient's LV; they'll see what we've done, I'm sure he'd do it. IT'S DONE",
    "It’s curly ‘quotes’ and “double” — en–dash … ellipsis",
    "&amp; &lt;b&gt; &amp;lt;i&amp;gt; &#39; &#x27; &quot;x&quot; &nbsp;a&nbsp;b &copy;",
    "<b>bold</b> & <i>italic</i> &amp; 5 < 6 > 4",
    "cafÃ© naÃ¯ve Ã¼ber â€œmojibakeâ€\x9d",
    "café naïve über Ærø façade Ångström ß straße İstanbul ΣΊΣΥΦΟΣ Ǆ ǅ",
    "e\u0301 a\u0308 combining marks n\u0303",
    "ﬁnancial ﬂow ﬀ ligatures Ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ １２３",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇺🇸 ❤️ ✔︎ 🫀 🫁",
    "中文超声心动图 日本語の心エコー 한국어 심초음파",
    "ภาษาไทย हिन्दी العربية עברית",
    "tabs\tand\nnew\r\nlines\u2028sep\u2029para\x0bvt\x0cff\x1cfs\x1dgs\x85nel",
    "zero\u200bwidth\u200cjoin\u200d\ufeffbom \u00a0nbsp \u2009thin \u3000ideo \u180emvs",
    "control \x00\x01\x07\x1b[31mred\x1b[0m \x7f\x80\x9f chars",
    "<start_of_text> hello <end_of_text>",
    "a<start_of_text>b!<start_of_text>c<end_of_text><start_of_text>!<end_of_text>",
    "<START_OF_TEXT>X<END_OF_TEXT>'s<end_of_text>",
    "<|startoftext|> <|endoftext|>",
    "it'ſ <ſtart_of_text>x <ſtart_of_text><start_of_text>!<ſtart_of_text> ſ's",
    "a\u0345b '\u0345s \u0345<start_of_text> ᾳ ᾼ",
    "''''' ''s 'S 'T 'RE 'VE 'M 'LL 'D 's's",
    "!!!???...,,,;;;:::---___===+++***///\\\\\\|||@@@###$$$%%%^^^&&&(((()))[[[]]]{{{}}}~~~```",
    "a" * 300,
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "1234567890" * 10,
    "x " * 100,
    "hello world " * 40,
]


def load_golden() -> list[str]:
    """The golden texts, or none when the reference folder is absent."""
    if not GOLDEN.is_file():
        return []
    return [row["text"] for row in json.loads(GOLDEN.read_text(encoding="utf-8"))["rows"]]


def random_codepoint(rng: random.Random) -> str:
    """One code point from a mix of ranges (any plane, no surrogates); half of the time one
    that Python's Unicode tables know (so that newer-Unicode differences do not hide others)."""
    import unicodedata

    ranges = [
        (0x20, 0x7E), (0x00, 0x20), (0x80, 0x2FF), (0x300, 0x36F), (0x370, 0x1FFF),
        (0x2000, 0x2BFF), (0x2C00, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x1FFFF),
        (0x1F300, 0x1FAFF), (0x20000, 0x10FFFF),
    ]
    known = rng.random() < 0.5
    while True:
        lo, hi = rng.choice(ranges)
        char = chr(rng.randint(lo, hi))
        if not known or unicodedata.category(char) != "Cn":
            return char


def random_texts(rng: random.Random, words: list[str], count: int) -> list[str]:
    """Seeded random strings of several kinds."""
    punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \t\n"
    texts = []
    for i in range(count):
        kind = i % 6
        if kind == 0:  # random unicode
            texts.append("".join(random_codepoint(rng) for _ in range(rng.randint(1, 40))))
        elif kind == 1:  # words, punctuation and case mixed
            parts = [rng.choice(words) for _ in range(rng.randint(1, 25))]
            parts = [p.upper() if rng.random() < 0.3 else p for p in parts]
            texts.append("".join(p + rng.choice(punct) for p in parts))
        elif kind == 2:  # numbers
            units = ["", "%", "mm", "mmHg", " cm/s"]
            texts.append(" ".join(
                f"{rng.uniform(-1000, 1000):.{rng.randint(0, 4)}f}{rng.choice(units)}"
                for _ in range(rng.randint(1, 15))
            ))
        elif kind == 3:  # long report
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(60, 200))) + ".")
        elif kind == 4:  # ascii soup
            soup = punct + "abcXYZ019'"
            texts.append("".join(rng.choice(soup) for _ in range(rng.randint(1, 60))))
        else:  # words with random unicode sprinkled in
            texts.append(" ".join(
                rng.choice(words) + (random_codepoint(rng) if rng.random() < 0.5 else "")
                for _ in range(rng.randint(1, 20))
            ))
    return texts


def newer_unicode(text: str) -> list[str]:
    """Characters that ``regex`` (OpenCLIP) reads as letters/digits but Python's Unicode tables
    (and the Oniguruma tables in ``tokenizers``) do not know: an expected source of differences."""
    import unicodedata

    import regex

    return [
        c for c in text
        if unicodedata.category(c) == "Cn" and regex.match(r"[\p{L}\p{N}]", c, regex.IGNORECASE)
    ]


def first_difference(a: list[int], b: list[int]) -> int:
    """Index of the first differing id."""
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600, help="random texts (default 600)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    import open_clip

    from echoclip_cli.tokenizer.bpe import ClipBpeTokenizer, clean_text

    golden = load_golden()
    words = sorted({w for text in golden + TRICKY for w in text.split()}) or ["echo"]
    texts = golden + TRICKY + random_texts(random.Random(args.seed), words, args.count)

    ours = ClipBpeTokenizer()(texts).tolist()
    theirs = open_clip.tokenize(texts).tolist()
    different = [i for i in range(len(texts)) if ours[i] != theirs[i]]
    explained = [i for i in different if newer_unicode(texts[i])]
    bad = [i for i in different if i not in explained]
    for i in bad:
        at = first_difference(ours[i], theirs[i])
        print(f"MISMATCH #{i}: {texts[i]!r}")
        print(f"  cleaned: {clean_text(texts[i])!r}")
        print(f"  at {at}: ours {ours[i][at:at + 6]} open_clip {theirs[i][at:at + 6]}")
    for i in explained:
        chars = " ".join(f"U+{ord(c):04X}" for c in newer_unicode(texts[i]))
        print(f"newer-Unicode difference #{i}: letters/digits unknown to Unicode 14: {chars}")
    print(
        f"compared {len(texts)} texts ({len(golden)} golden, {len(TRICKY)} hand-picked, "
        f"{args.count} random): {len(texts) - len(different)} equal, "
        f"{len(explained)} differ only through characters newer than Unicode 14, "
        f"{len(bad)} mismatched"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
