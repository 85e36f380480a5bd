"""Query understanding: free text such as "severe MR" → report sentences EchoCLIP-R knows.

EchoCLIP-R's template tokenizer only knows its 770 report sentences, so free text would encode
to nothing. :func:`understand_query` rewrites the query in report language (abbreviations
expanded, severity words and numbers normalised) and matches it onto the report-template
phrases, filling each phrase's ``<#>`` slots with the query's severities and numbers, so the
model embeds a sentence it was trained on.

How a phrase is chosen (:func:`match_phrases`). Query and phrases are compared as sets of
*canonical content words*: upper case, plurals folded, synonyms joined (``LEFT VENTRICULAR`` =
``LEFT VENTRICLE`` = ``LV``; ``PULMONIC`` = ``PULMONARY``; ``TRACE`` = ``TRIVIAL``;
``INSUFFICIENCY`` = ``REGURGITATION``; ``REDUCED`` = ``DEPRESSED``; ``ENLARGED`` = ``DILATED``), and
filler words (THE, IS, THERE, OF, …) dropped. Each word weighs its inverse document frequency over
the phrases, so ``MITRAL`` counts more than ``VALVE``. Two numbers come out, both multiplied by a
slot factor (each query severity or number the phrase has no slot for costs ×0.7; each severity
slot the query leaves empty costs ×0.9 and is then filled with MILD, MODERATE and SEVERE in turn,
the three embeddings averaged; a number slot the query cannot fill rules the phrase out, since a
number cannot be guessed; a numeric range such as ``EF 30-35%`` fills two slots, or one slot
with both ends in turn, the two embeddings averaged — whichever scores better):

- **coverage** = weighted recall (the share of the query's words the phrase has) × slot factor.
  A phrase is only accepted with coverage ≥ :data:`MIN_MATCH_SCORE` (0.5: at least half of what
  the query says, by weight, is in the sentence embedded);
- **score** = weighted F2 of the overlap (recall counts four times as much as precision, "the
  phrase says little else") × slot factor, which ranks the accepted phrases. A ``difflib`` ratio
  of the two canonical strings breaks ties (weight 0.01), then the shorter phrase wins.

A query with several findings (``"severe MR, EF 35%"``) is split at commas, semicolons and full
stops, and where it helps at AND / WITH; the split with the best mean score wins (a pasted report
sentence with commas stays whole because its whole-sentence match scores 1.0). Every part must
have an accepted phrase; otherwise :class:`QueryNotUnderstood` says what was tried (the closest
phrase and its coverage, the words no phrase uses), never returning arbitrary ranks.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence


from .errors import EchoclipError, UsageError
from .tokenizer.template import N_SPECIAL_TOKENS, SEVERITIES, SLOT, normalise, templatise

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

# Below this phrase coverage a query (part) is "not understood" (see the module docstring).
MIN_MATCH_SCORE = 0.5
# F-beta with beta = 2: recall (the phrase covers the query) weighs 4× precision.
_BETA2 = 4.0
UNUSED_VALUE_FACTOR = 0.7  # per query severity/number that the phrase has no slot for
UNFILLED_SEVERITY_FACTOR = 0.9  # per severity slot the query leaves empty (filled by averaging)
ANY_SEVERITY = ("MILD", "MODERATE", "SEVERE")


class QueryNotUnderstood(EchoclipError):
    """A search query that maps onto no report sentence well enough to embed."""



# --------------------------------------------------------------------------- query rewriting

# Echo abbreviations, written out the way reports spell them. "AS" is also an English word: it is
# only expanded when typed in capitals (see _CASE_SENSITIVE).
ABBREVIATIONS: dict[str, str] = {
    "MR": "MITRAL REGURGITATION",
    "AR": "AORTIC REGURGITATION",
    "AI": "AORTIC REGURGITATION",
    "TR": "TRICUSPID REGURGITATION",
    "PR": "PULMONIC REGURGITATION",
    "PI": "PULMONIC REGURGITATION",
    "AS": "AORTIC STENOSIS",
    "MS": "MITRAL STENOSIS",
    "TS": "TRICUSPID STENOSIS",
    "PS": "PULMONIC STENOSIS",
    "LVH": "LEFT VENTRICULAR HYPERTROPHY",
    "RVH": "RIGHT VENTRICULAR HYPERTROPHY",
    "LVEF": "LV EJECTION FRACTION",
    "EF": "EJECTION FRACTION",
    "LV": "LEFT VENTRICULAR",
    "RV": "RIGHT VENTRICULAR",
    "LA": "LEFT ATRIUM",
    "RA": "RIGHT ATRIUM",
    "LAE": "DILATED LEFT ATRIUM",
    "RAE": "DILATED RIGHT ATRIUM",
    "PFO": "PATENT FORAMEN OVALE",
    "ASD": "ATRIAL SEPTAL DEFECT",
    "VSD": "VENTRICULAR SEPTAL DEFECT",
    "TAVR": "BIOPROSTHETIC STENT-VALVE IN THE AORTIC POSITION",
    "TAVI": "BIOPROSTHETIC STENT-VALVE IN THE AORTIC POSITION",
    "PA": "PULMONARY ARTERY",
    "PASP": "PULMONARY ARTERY SYSTOLIC PRESSURE",
    "RVSP": "RIGHT VENTRICULAR SYSTOLIC PRESSURE",
    "PHTN": "PULMONARY HYPERTENSION",
    "IVC": "INFERIOR VENA CAVA",
    "SVC": "SUPERIOR VENA CAVA",
    "MAC": "MITRAL ANNULAR CALCIFICATION",
    "MVP": "MITRAL VALVE PROLAPSE",
    "LVOT": "LEFT VENTRICULAR OUTFLOW TRACT",
    "RVOT": "RIGHT VENTRICULAR OUTFLOW TRACT",
    "HCM": "HYPERTROPHIC CARDIOMYOPATHY",
    "LVAD": "LEFT VENTRICULAR ASSIST DEVICE",
    "AV": "AORTIC VALVE",
    "MV": "MITRAL VALVE",
    "TV": "TRICUSPID VALVE",
    "PV": "PULMONIC VALVE",
    "AVR": "AORTIC VALVE REPLACEMENT",
    "MVR": "MITRAL VALVE REPLACEMENT",
    "BAV": "BICUSPID AORTIC VALVE",
    "RWMA": "REGIONAL WALL MOTION ABNORMALITY",
    "WMA": "WALL MOTION ABNORMALITY",
    "SAM": "SYSTOLIC ANTERIOR MOTION",
    "ICD": "ICD LEAD",
    "PPM": "PACER LEAD",
    "PACEMAKER": "PACER LEAD",
    # Clip devices: a MitraClip sits on the mitral valve (reports call a tricuspid clip a
    # "MITRACLIP ... IN THE TRICUSPID POSITION"), so the valve is said out loud for matching.
    "MITRACLIP": "MITRACLIP ON THE MITRAL VALVE",
    "MITRACLIPS": "MITRACLIPS ON THE MITRAL VALVE",
    "TRICLIP": "MITRACLIP IN THE TRICUSPID POSITION",
    "TRICLIPS": "MITRACLIPS IN THE TRICUSPID POSITION",
}
_MITRAL_CLIP_RE = re.compile(r"\bMITRAL(?:\s+VALVE)?\s+CLIP(S?)\b", re.IGNORECASE)
_CASE_SENSITIVE = frozenset({"AS", "PI", "MS"})  # also expanded after a severity word ("severe as")
_AFTER_SEVERITY_RE = re.compile(r"\b(?:MILD|MODERATE|SEVERE|CRITICAL|TRIVIAL|TRACE)(?:LY)?\s+$", re.IGNORECASE)
# Severity spellings reports do not use, and the 1+ … 4+ regurgitation grades.
_SEVERITY_WORDS = {"MILDLY": "MILD", "MODERATELY": "MODERATE", "SEVERELY": "SEVERE", "SEV": "SEVERE", "MOD": "MODERATE"}
_GRADES = {"1": "MILD", "2": "MODERATE", "3": "MODERATE TO SEVERE", "4": "SEVERE"}
_SEVERITY_RANGE_RE = re.compile(r"\b(MILD|MODERATE)\s*(?:-\s*TO\s*-|-|\bTO\b)\s*(MODERATE|SEVERE)\b")
_GRADE_RE = re.compile(r"\b([1-4])\s*\+(?=\s|$|[,;.])")
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
# "EJECTION FRACTION IS 35" / "OF 35 %" / "= 30-35" -> "EJECTION FRACTION 35%" (the report's form).
_EF_NUMBER_RE = re.compile(rf"\b(EJECTION FRACTION)\s*(?:IS|OF|=|:)?\s*({_NUMBER})(?:\s*-\s*({_NUMBER}))?(?:\s*%)?(?![0-9.])")
_WORD_RE = re.compile(r"[A-Za-z]+")


def rewrite_query(query: str) -> str:
    """``"severe MR, EF 35"`` -> ``"SEVERE MITRAL REGURGITATION, EJECTION FRACTION 35%"``."""
    def expand(m: re.Match[str]) -> str:
        word, upper = m.group(), m.group().upper()
        if upper not in ABBREVIATIONS:
            return word
        after_severity = _AFTER_SEVERITY_RE.search(query[: m.start()]) is not None
        if upper in _CASE_SENSITIVE and not (word.isupper() or after_severity or query.strip() == word):
            return word
        return ABBREVIATIONS[upper]

    query = _MITRAL_CLIP_RE.sub(lambda m: f"MITRACLIP{m.group(1).upper()}", query)
    text = normalise(_WORD_RE.sub(expand, query))
    text = _GRADE_RE.sub(lambda m: _GRADES[m.group(1)], text)
    text = _WORD_RE.sub(lambda m: _SEVERITY_WORDS.get(m.group(), m.group()), text)
    text = _SEVERITY_RANGE_RE.sub(r"\1 TO \2", text)
    text = re.sub(r"([0-9])\s+%", r"\1%", text)
    text = _EF_NUMBER_RE.sub(lambda m: f"{m.group(1)} {m.group(2)}{'-' + m.group(3) if m.group(3) else ''}%", text)
    return normalise(text)


# --------------------------------------------------------------------------- canonical words

_STOPWORDS = frozenset(
    "A AN THE IS ARE WAS WERE BE BEEN THERE THIS THAT OF IN ON AT TO FOR BY WITH AND OR AS IT ITS "
    "WHICH SEEN NOTED PATIENT STUDY".split()
)
# Word sequences that name one thing, rewritten in two passes (so RIGHT VENTRICULAR SYSTOLIC
# PRESSURE -> RV SYSTOLIC PRESSURE -> RVSP).
_MULTIWORD: tuple[dict[tuple[str, ...], str], ...] = (
    {
        ("LEFT", "VENTRICULAR"): "LV",
        ("LEFT", "VENTRICLE"): "LV",
        ("RIGHT", "VENTRICULAR"): "RV",
        ("RIGHT", "VENTRICLE"): "RV",
        ("LEFT", "ATRIAL"): "LA",
        ("LEFT", "ATRIUM"): "LA",
        ("RIGHT", "ATRIAL"): "RA",
        ("RIGHT", "ATRIUM"): "RA",
        ("PULMONARY", "ARTERY"): "PA",
        ("PULMONIC", "ARTERY"): "PA",
    },
    {("RV", "SYSTOLIC", "PRESSURE"): "RVSP"},
)
_SYNONYMS = {
    "PULMONIC": "PULMONARY",
    "INSUFFICIENCY": "REGURGITATION",
    "TRACE": "TRIVIAL",
    "REDUCED": "DEPRESSED",
    "DECREASED": "DEPRESSED",
    "ENLARGED": "DILATED",
    "ENLARGEMENT": "DILATED",
    "DILATATION": "DILATED",
    "DILATION": "DILATED",
    "PACEMAKER": "PACER",
    "VENTRICLE": "VENTRICULAR",
    "ATRIUM": "ATRIAL",
}
_TOKEN_RE = re.compile(re.escape(SLOT) + r"|%|[A-Z][A-Z']*")


def _fold(word: str) -> str:
    word = _SYNONYMS.get(word, word)
    if len(word) > 4 and word.endswith("S") and not word.endswith(("SS", "IS", "US")):
        word = word[:-1]  # LEAFLETS -> LEAFLET; STENOSIS, VALVULUS stay
    return _SYNONYMS.get(word, word)


def _join_sequences(words: list[str], table: Mapping[tuple[str, ...], str]) -> list[str]:
    sizes = sorted({len(k) for k in table}, reverse=True)
    out: list[str] = []
    i = 0
    while i < len(words):
        for size in sizes:
            seq = tuple(words[i : i + size])
            if seq in table:
                out.append(table[seq])
                i += size
                break
        else:
            out.append(words[i])
            i += 1
    return out


def canonical_words(templated: str) -> list[str]:
    """Canonical words of a templated text (``<#>`` kept as a word, fillers dropped)."""
    words = _TOKEN_RE.findall(templated)
    for table in _MULTIWORD:
        words = _join_sequences(words, table)
    return [w for w in map(_fold, words) if w not in _STOPWORDS]


# --------------------------------------------------------------------------- phrase slots

_NUMBER_AFTER_RE = re.compile(r"\s?(%|MMHG|MM|CM|M/S|CM/S|MS|BPM|ML|BEATS|G/M|KG|SEC|YEAR)")


def slot_kinds(phrase: str) -> tuple[str, ...]:
    """For each ``<#>`` of a phrase: ``severity``, ``number`` or ``any`` (context decides)."""
    positions = [m.start() for m in re.finditer(re.escape(SLOT), phrase)]
    kinds: list[str | None] = []
    for pos in positions:
        before, after = phrase[:pos], phrase[pos + len(SLOT) :]
        if (before and (before[-1].isalnum() or before[-1] in "<>(")) or before.endswith("TYPE "):
            kinds.append("number")
        elif after.startswith(("-" + SLOT, " TO " + SLOT)):
            kinds.append(None)  # a range: same kind as its second end
        elif _NUMBER_AFTER_RE.match(after) or (after and after[0].isalnum()):
            kinds.append("number")
        elif re.match(r" [A-Z]", after):
            kinds.append("severity")
        else:
            kinds.append("any")
    for i in range(len(kinds) - 1, -1, -1):
        if kinds[i] is None:
            kinds[i] = kinds[i + 1] if i + 1 < len(kinds) else "any"
    return tuple(k or "any" for k in kinds)


def _value_kind(value: str) -> str:
    return "severity" if value in SEVERITIES else "number"


_RANGE_SLOTS_RE = re.compile(re.escape(SLOT) + r"\s*-\s*" + re.escape(SLOT))


def merge_ranges(templated_text: str, values: Sequence[str]) -> list[str]:
    """The query's values with each numeric range ``A-B`` (two slots joined by a hyphen) as one
    value ``"A-B"``, for phrases that have one number slot where the query gives a range."""
    slot_starts = [m.start() for m in re.finditer(re.escape(SLOT), templated_text)]
    first_of_range = {slot_starts.index(m.start()) for m in _RANGE_SLOTS_RE.finditer(templated_text)}
    merged: list[str] = []
    skip = False
    for i, value in enumerate(values):
        if skip:
            skip = False
            continue
        nxt = values[i + 1] if i + 1 < len(values) else None
        if i in first_of_range and nxt is not None and _value_kind(value) == _value_kind(nxt) == "number":
            merged.append(f"{value}-{nxt}")
            skip = True
        else:
            merged.append(value)
    return merged


def range_ends(value: str) -> list[str]:
    """``"30-35"`` → ``["30", "35"]``; any other value → ``[value]``."""
    if _value_kind(value) == "number" and "-" in value:
        return value.split("-", 1)
    return [value]


def assign_values(kinds: Sequence[str], values: Sequence[str]) -> tuple[list[str | None], int]:
    """Give the query's values to a phrase's slots in order, by kind; return fills and unused count."""
    used = [False] * len(values)
    fills: list[str | None] = []
    for kind in kinds:
        pick = next((j for j, v in enumerate(values) if not used[j] and kind in ("any", _value_kind(v))), None)
        if pick is None:
            fills.append(None)
        else:
            used[pick] = True
            fills.append(values[pick])
    return fills, used.count(False)


# --------------------------------------------------------------------------- phrase matching


@dataclass(frozen=True)
class _Phrase:
    index: int
    text: str  # normalised phrase, with <#> slots
    words: frozenset[str]
    canonical: str
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class _PhraseBook:
    phrases: tuple[_Phrase, ...]
    idf: Mapping[str, float]
    unknown_idf: float


@functools.lru_cache(maxsize=8)
def _phrase_book(phrases: tuple[str, ...]) -> _PhraseBook:
    entries = []
    df: dict[str, int] = defaultdict(int)
    for index, text in enumerate(phrases):
        words = canonical_words(text)
        content = frozenset(w for w in words if w != SLOT)
        for w in content:
            df[w] += 1
        entries.append(_Phrase(index, text, content, " ".join(words), slot_kinds(text)))
    n = len(phrases)
    idf = {w: math.log((n + 1) / (d + 1)) + 1.0 for w, d in df.items()}
    return _PhraseBook(tuple(entries), idf, math.log(n + 1) + 1.0)


@dataclass(frozen=True)
class PhraseMatch:
    """A report phrase chosen for (part of) a query, with its slots filled."""

    clause: str  # the rewritten query part it stands for
    phrase_index: int  # line in template_vocab.txt (token id = 5 + index)
    phrase: str  # the phrase with <#> slots
    score: float  # ranks phrases: weighted F2 of the word overlap × slot factor
    coverage: float  # accepts them: weighted share of the query's words the phrase has × slot factor
    fills: tuple[str | None, ...]  # per slot: the query's value, or None (any severity)
    unused_values: tuple[str, ...] = ()

    def texts(self) -> list[str]:
        """The filled sentence; several when a severity slot was left open (MILD, MODERATE and
        SEVERE in turn, the same in every open slot) or a number slot holds a range (each end in
        turn): their embeddings are averaged."""
        severities = ANY_SEVERITY if None in self.fills else ("",)
        texts = []
        for severity in severities:
            choices = [[severity] if f is None else range_ends(str(f)) for f in self.fills]
            texts += [_fill(self.phrase, combo) for combo in itertools.product(*choices)]
        return texts


def _fill(phrase: str, values: Sequence[str]) -> str:
    parts = phrase.split(SLOT)
    out = [parts[0]]
    for value, rest in zip(values, parts[1:]):
        out += [value, rest]
    return "".join(out)


def _weight(book: _PhraseBook, words: Iterable[str]) -> float:
    return sum(book.idf.get(w, book.unknown_idf) for w in words)


@dataclass(frozen=True)
class _Score:
    score: float  # F2 of the weighted word overlap × slot factor: ranks phrases
    coverage: float  # weighted recall × slot factor: how much of the query the phrase says
    fills: tuple[str | None, ...]


def _score_phrase(book: _PhraseBook, phrase: _Phrase, words: frozenset[str], values: Sequence[str]) -> _Score | None:
    matched = words & phrase.words
    if not matched:
        return None
    fills, unused = assign_values(phrase.kinds, values)
    open_slots = [k for k, f in zip(phrase.kinds, fills) if f is None]
    if any(k != "severity" for k in open_slots):
        return None  # a number cannot be guessed
    factor = UNUSED_VALUE_FACTOR**unused * UNFILLED_SEVERITY_FACTOR ** len(open_slots)
    recall = _weight(book, matched) / _weight(book, words)
    precision = _weight(book, matched) / _weight(book, phrase.words)
    f_score = (1 + _BETA2) * precision * recall / (_BETA2 * precision + recall)
    return _Score(f_score * factor, recall * factor, tuple(fills))


def match_phrases(clause: str, phrases: Sequence[str], *, top: int = 5, min_coverage: float = 0.0) -> list[PhraseMatch]:
    """The ``top`` phrases best matching one rewritten query clause, best first (see module doc).

    Only phrases whose coverage reaches ``min_coverage`` take part.
    """
    book = _phrase_book(tuple(phrases))
    templated = templatise(normalise(clause))
    words = canonical_words(templated.text)
    content = frozenset(w for w in words if w != SLOT)
    if not content:
        return []
    values = list(templated.values)
    merged = merge_ranges(templated.text, values)
    scored = []
    for p in book.phrases:
        tries = [(s, values) for s in [_score_phrase(book, p, content, values)] if s]
        if merged != values and (m := _score_phrase(book, p, content, merged)):
            tries.append((m, merged))
        if tries:
            best, used = max(tries, key=lambda t: t[0].score)
            if best.coverage >= min_coverage:
                scored.append((best, p, used))
    scored.sort(key=lambda item: -item[0].score)
    query_canonical = " ".join(words)
    finalists = []
    for s, phrase, used in scored[: max(top, 20)]:
        ratio = difflib.SequenceMatcher(None, query_canonical, phrase.canonical, autojunk=False).ratio()
        finalists.append((s.score + 0.01 * ratio, -len(phrase.text), phrase, s, used))
    finalists.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [_match(clause, phrase, s, used) for _, _, phrase, s, used in finalists[:top]]


def _match(clause: str, phrase: _Phrase, s: _Score, values: Sequence[str]) -> PhraseMatch:
    unused = list(values)
    for value in s.fills:
        if value is not None:
            unused.remove(value)
    return PhraseMatch(clause, phrase.index, phrase.text, round(min(s.score, 1.0), 4), round(min(s.coverage, 1.0), 4),
                       s.fills, tuple(unused))


def unknown_words(clause: str, phrases: Sequence[str]) -> list[str]:
    """Content words of a clause that no phrase contains (for error messages)."""
    book = _phrase_book(tuple(phrases))
    words = canonical_words(templatise(normalise(clause)).text)
    return sorted({w for w in words if w != SLOT and w not in book.idf})


# --------------------------------------------------------------------------- query plans

_CLAUSE_RE = re.compile(r"\s*(?:[;,]|\.(?![0-9]))\s*")
_JOIN_RE = re.compile(r"\s+(?:AND|WITH|PLUS)\s+|\s*\+\s*")


@dataclass
class QueryPlan:
    """What a query became: the texts embedded and their token ids (for ``--explain``)."""

    query: str
    rewritten: str
    method: str  # "template" (phrase matching) or "free-text" (BPE)
    texts: list[str]
    ids: list[list[int]]  # per text, up to and including the end token
    pieces: list[list[str]]
    matches: list[PhraseMatch] = field(default_factory=list)
    padded: list[list[int]] = field(default_factory=list, repr=False)  # the full context-length rows

    def explain(self) -> list[str]:
        """Human-readable lines: rewriting, chosen phrases with scores, texts and ids."""
        lines = [f"query: {self.query}", f"rewritten: {self.rewritten}"]
        for m in self.matches:
            open_note = " (open severity: averaged over MILD, MODERATE, SEVERE)" if None in m.fills else ""
            for fill in m.fills:
                if fill is not None and len(range_ends(str(fill))) == 2:
                    open_note += f" (range {fill}: averaged over its ends)"
            unused = f"; unused: {', '.join(m.unused_values)}" if m.unused_values else ""
            lines.append(f"phrase line {m.phrase_index + 1}, id {N_SPECIAL_TOKENS + m.phrase_index} "
                         f"(coverage {m.coverage:.2f}, score {m.score:.2f}): {m.phrase}{open_note}{unused}")
        for text, ids in zip(self.texts, self.ids):
            lines.append(f"embedded: {text}")
            lines.append(f"ids: {' '.join(map(str, ids))}")
        return lines


def _clause_splits(rewritten: str) -> list[list[str]]:
    """Candidate ways to cut a query into findings: whole, at punctuation, also at AND/WITH."""
    whole = [rewritten]
    by_punct = [c for c in _CLAUSE_RE.split(rewritten) if c.strip()]
    by_join = [part for c in by_punct for part in _JOIN_RE.split(c) if part.strip()]
    splits = [whole]
    for split in (by_punct, by_join):
        if split not in splits:
            splits.append(split)
    return splits


def _best_split(rewritten: str, phrases: Sequence[str]) -> tuple[list[PhraseMatch] | None, list[PhraseMatch]]:
    """The split whose every clause has an accepted phrase, best mean score first; also the closest tries."""
    best: tuple[float, int, list[PhraseMatch]] | None = None
    tried: list[PhraseMatch] = []
    for split in _clause_splits(rewritten):
        found = [match_phrases(clause, phrases, top=1, min_coverage=MIN_MATCH_SCORE) for clause in split]
        if any(not f for f in found):
            tried.extend(m for clause in split for m in _closest(clause, phrases))
            continue
        picks = [f[0] for f in found]
        mean = sum(m.score for m in picks) / len(picks)
        if best is None or (mean, -len(picks)) > (best[0], -best[1]):
            best = (mean, len(picks), picks)
    return (best[2] if best else None), tried


def _closest(clause: str, phrases: Sequence[str]) -> list[PhraseMatch]:
    found = match_phrases(clause, phrases, top=50)
    return [max(found, key=lambda m: m.coverage)] if found else []


def _not_understood(query: str, rewritten: str, tried: list[PhraseMatch], phrases: Sequence[str]) -> QueryNotUnderstood:
    closest = max(tried, key=lambda m: m.coverage, default=None)
    unknown = unknown_words(rewritten, phrases)
    parts = [f"could not understand the query {query!r} (read as {rewritten!r})"]
    if closest is not None:
        parts.append(f"the closest report phrase {closest.phrase!r} covers {closest.coverage:.2f} of it "
                     f"(needs {MIN_MATCH_SCORE})")
    else:
        parts.append(f"no report phrase shares a word with it (of {len(phrases)} tried)")
    if unknown:
        parts.append(f"words no report phrase uses: {', '.join(unknown[:6])}")
    return QueryNotUnderstood(
        "; ".join(parts),
        hint="use report wording, e.g. 'severe mitral regurgitation', 'MR', 'LVEF 35%', 'dilated left atrium' "
        "(abbreviations are expanded), or --weights echo-clip to embed free text",
    )


def understand_query(query: str, tokenizer: "Tokenizer") -> QueryPlan:
    """Turn a free-text query into the text(s) the model embeds (see the module docstring).

    With the template tokenizer the query is matched onto report phrases; with the BPE tokenizer
    the rewritten query is embedded as it is. Raises :class:`QueryNotUnderstood` when nothing
    matches well enough.
    """
    if not query or not query.strip():
        raise UsageError("the search query is empty")
    rewritten = rewrite_query(query)
    phrases = getattr(tokenizer, "phrases", None)
    if phrases is None:
        return _plan(query, rewritten, "free-text", [rewritten], [], tokenizer)
    matches, tried = _best_split(rewritten, phrases)
    if matches is None:
        raise _not_understood(query, rewritten, tried, phrases)
    return _plan(query, rewritten, "template", _combine(matches), matches, tokenizer)


def _combine(matches: Sequence[PhraseMatch]) -> list[str]:
    """One sentence per finding joined into a report; the alternatives of several findings (open
    severities, range ends) vary together, each cycling through its own."""
    per_match = [m.texts() for m in matches]
    count = math.lcm(*(len(t) for t in per_match))
    return [" ".join(t[i % len(t)] for t in per_match) for i in range(count)]


def _plan(query: str, rewritten: str, method: str, texts: list[str], matches: list[PhraseMatch],
          tokenizer: "Tokenizer") -> QueryPlan:
    encodings = [tokenizer.encode(t) for t in texts]
    ids = [e.ids[: len(e.pieces)] for e in encodings]
    if method == "template" and any(len(i) <= 2 for i in ids):
        raise QueryNotUnderstood(f"the phrase chosen for {query!r} did not tokenize (vocabulary mismatch)")
    return QueryPlan(query, rewritten, method, texts, ids, [e.pieces for e in encodings], list(matches),
                     [list(e.ids) for e in encodings])
