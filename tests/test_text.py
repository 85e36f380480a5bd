"""Text side: tokenize command, prompt library, text embeddings and their cache."""

from __future__ import annotations

import json

import pytest
import torch

import echoclip_cli
from echoclip_cli.errors import ConfigError
from echoclip_cli.prompts import load_prompts, parse_prompts
from echoclip_cli.text_embed import TextEmbeddingCache, cache_path, embed_texts
from tests.cli_helpers import one_error_line, run_cli

PHRASES = "LV EJECTION FRACTION IS <#>%. \nTHERE IS <#> MITRAL VALVE REGURGITATION. \n"


@pytest.fixture()
def small_vocab(tmp_path):
    path = tmp_path / "template_vocab.txt"
    path.write_text(PHRASES)
    return path


def _jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_tokenize_json_matches_golden_for_both_tokenizers(reference_dir):
    rows = json.loads((reference_dir / "golden" / "tokens.json").read_text())["rows"]
    stdin = "\n".join(r["text"] for r in rows) + "\n"
    assert all("\n" not in r["text"] and r["text"].strip() for r in rows)
    clip = run_cli("tokenize", "--json", "-", input=stdin)
    template = run_cli("tokenize", "--json", "-t", "template", "--template-vocab",
                       reference_dir / "template_vocab.txt", "-", input=stdin)
    assert clip.exit_code == 0 and template.exit_code == 0
    assert [r["ids"] for r in _jsonl(clip.stdout)] == [r["clip_bpe_ids"] for r in rows]
    assert [r["ids"] for r in _jsonl(template.stdout)] == [r["template_ids"] for r in rows]


def test_tokenize_template_says_when_nothing_matched(small_vocab):
    result = run_cli("tokenize", "-t", "template", "--template-vocab", small_vocab, "--json", "severe MR")
    record = _jsonl(result.stdout)[0]
    assert result.exit_code == 0
    assert record["n_tokens"] == 2 and record["pieces"] == ["<start>", "<end>"]
    assert "nothing matched the report-template vocabulary" in result.stderr


def test_tokenize_reports_dropped_text_and_variables(small_vocab):
    result = run_cli("tokenize", "-t", "template", "--template-vocab", small_vocab, "--json",
                     "lv ejection fraction is 35%. the rv is small. there is severe mitral valve regurgitation.")
    record = _jsonl(result.stdout)[0]
    assert record["pieces"] == ["<start>", "LV EJECTION FRACTION IS <#>%.", "35",
                                "THERE IS <#> MITRAL VALVE REGURGITATION.", "SEVERE", "<end>"]
    # 2 phrases: phrase ids 5, 6; variables from 5 + 2 = 7 (value 35 -> 7 + 5 + 35, SEVERE -> 7 + 109);
    # BOS/EOS after the 132 variable tokens.
    assert record["ids"][:7] == [139, 5, 47, 6, 116, 140, 0]
    assert "THE RV IS SMALL." in result.stderr


def test_tokenize_explain_shows_the_cleaned_text(small_vocab):
    report = "lv ejection fraction was 35 %. [there was mildly mitral valve regurgitation.] 05/21/2019 the rv is small"
    cleaned = "LV EJECTION FRACTION IS 35%. THERE IS MILD MITRAL VALVE REGURGITATION. THE RV IS SMALL"
    result = run_cli("tokenize", "-t", "template", "--template-vocab", small_vocab, "--explain", report)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == report
    assert lines[1] == f"  cleaned: {cleaned}"
    assert lines[2].startswith("  6 tokens (template): <start>:139 LV EJECTION FRACTION IS <#>%.:5 35:47 ")
    assert lines[3] == "  dropped (no phrase): THE RV IS SMALL"
    as_json = _jsonl(run_cli("tokenize", "-t", "template", "--template-vocab", small_vocab, "--json", report).stdout)
    assert as_json[0]["cleaned"] == cleaned + " "  # the cleaning ends a text with a space
    plain = run_cli("tokenize", "-t", "template", "--template-vocab", small_vocab, report)
    assert "cleaned:" not in plain.stdout and "THE RV IS SMALL" in plain.stderr


def test_tokenize_warns_on_truncation():
    result = run_cli("tokenize", "--json", " ".join(["regurgitation"] * 120))
    record = _jsonl(result.stdout)[0]
    assert len(record["ids"]) == 77 and record["ids"][-1] == 49407 and record["n_truncated"] > 40
    assert "truncated" in result.stderr


def test_tokenize_template_without_vocab_is_one_line():
    result = run_cli("tokenize", "-t", "template", "SEVERE MR")
    assert result.exit_code == 1
    assert "template vocabulary is not available" in one_error_line(result)
    assert "--template-vocab" in result.stderr


def test_default_prompt_library():
    tasks = load_prompts()
    ef = tasks["ejection_fraction"]
    assert len(ef.texts()) == 202 and ef.texts()[35] == "THE LEFT VENTRICULAR EJECTION FRACTION IS ESTIMATED TO BE 35% "
    assert ef.text_values()[101 + 20] == 20.0
    assert tasks["pacemaker"].threshold == 0.298 and tasks["pacemaker"].threshold_source
    assert all(tasks[d].threshold is None for d in ("tavr", "mitraclip", "impella"))  # never invented
    assert set(tasks["left_ventricle_size"].classes) == {"normal", "mild", "moderate", "severe"}


def test_upstream_prompt_format_is_read():
    text = json.dumps({
        "ef": {"mode": "regression", "label_sources": ["EF IS <#>%. "], "range": [10, 12]},
        "size": {"mode": "categorical", "label_sources": ["A. ", "B. ", "C. "], "values": [0, 1, 1],
                 "value_mapping": {"0": "Normal", "1": "Dilated"}},
    })
    tasks = parse_prompts(text, "x.json")
    assert tasks["ef"].texts() == ["EF IS 10%. ", "EF IS 11%. ", "EF IS 12%. "]
    assert dict(tasks["size"].classes) == {"Normal": ("A. ",), "Dilated": ("B. ", "C. ")}


@pytest.mark.parametrize("doc, message", [
    ('[tasks.a]\nmode = "binary"\n', "binary needs prompts"),
    ('[tasks.a]\nmode = "regression"\ntemplates = ["NO SLOT"]\nrange = [0, 3]\n', "exactly one <#>"),
    ('[tasks.a]\nmode = "odd"\n', "mode must be one of"),
    ("nothing = 1\n", "no [tasks.NAME] tables"),
])
def test_bad_prompt_files_are_config_errors(doc, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_prompts(doc, "p.toml")


def test_text_embeddings_are_cached_and_exact(tiny_bundle, monkeypatch):
    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    texts = ["LV EJECTION FRACTION IS 35%. ", "SEVERE MR", "LV EJECTION FRACTION IS 35%. "]
    first = embed_texts(model, texts)
    assert cache_path().is_file()
    calls = []
    real = model.model.encode_text
    monkeypatch.setattr(model.model, "encode_text", lambda ids: calls.append(len(ids)) or real(ids))
    again = embed_texts(model, texts)
    assert calls == []  # all from the cache
    assert torch.equal(first, again)
    assert torch.equal(first[0], first[2])
    embed_texts(model, texts + ["A NEW SENTENCE. "])
    assert calls == [1]  # only the new text is embedded
    uncached = embed_texts(model, texts, use_cache=False)
    assert torch.allclose(uncached, first, atol=1e-6)


def test_cache_is_keyed_by_precision(tiny_bundle):
    fp32 = embed_texts(echoclip_cli.load_model("tiny", device="cpu", precision="fp32"), ["LV EJECTION FRACTION IS 35%. "])
    bf16 = embed_texts(echoclip_cli.load_model("tiny", device="cpu", precision="bf16"), ["LV EJECTION FRACTION IS 35%. "])
    assert not torch.equal(fp32, bf16)


def test_damaged_cache_is_set_aside(tiny_bundle):
    cache_path().parent.mkdir(parents=True, exist_ok=True)
    cache_path().write_bytes(b"this is not a database" * 100)
    vectors = embed_texts(echoclip_cli.load_model("tiny", device="cpu", precision="fp32"), ["SEVERE MR"])
    assert vectors.shape == (1, 32)
    assert cache_path().with_suffix(".damaged").exists()
    assert len(TextEmbeddingCache().get(["missing"])) == 0


def test_shuffled_or_damaged_cache_rows_are_never_served(tiny_bundle):
    """Rows whose vectors were swapped between keys (or damaged) fail their digest: they are
    embedded again, not served (shuffled rows moved an EF by 9 points)."""
    import sqlite3

    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    texts = ["LV EJECTION FRACTION IS 35%. ", "SEVERE MR", "THERE IS A PACER LEAD. "]
    first = embed_texts(model, texts)
    with sqlite3.connect(cache_path()) as db:
        rows = db.execute("SELECT key, vec FROM text_embeddings_v2 ORDER BY key").fetchall()
        assert len(rows) == 3
        for (key, _), (_, vec) in zip(rows, rows[1:] + rows[:1]):  # each key gets another's vector
            db.execute("UPDATE text_embeddings_v2 SET vec = ? WHERE key = ?", (vec, key))
    again = embed_texts(model, texts)
    assert torch.allclose(again, first, atol=1e-6)
    with sqlite3.connect(cache_path()) as db:  # and put back right
        assert db.execute("SELECT count(*) FROM text_embeddings_v2").fetchone()[0] == 3
    assert len(TextEmbeddingCache().get([k for k, _ in rows])) == 3


def test_template_vocab_from_environment(small_vocab, monkeypatch):
    monkeypatch.setenv("ECHOCLIP_TEMPLATE_VOCAB", str(small_vocab))
    result = run_cli("tokenize", "-t", "template", "--json", "LV EJECTION FRACTION IS 35%.")
    assert result.exit_code == 0
    assert _jsonl(result.stdout)[0]["pieces"][1] == "LV EJECTION FRACTION IS <#>%."


def test_add_template_vocab_to_an_installed_bundle(tiny_bundle, small_vocab, tmp_path):
    before = run_cli("tokenize", "-w", "tiny", "-t", "template", "SEVERE MR")
    assert before.exit_code == 1
    bad = tmp_path / "empty.txt"
    bad.write_text("")
    refused = run_cli("weights", "add-template-vocab", "tiny", bad)
    assert refused.exit_code == 1 and not (tiny_bundle.root / "template_vocab.txt").exists()
    added = run_cli("weights", "add-template-vocab", "tiny", small_vocab)
    assert added.exit_code == 0 and "2 phrases" in added.stderr
    after = run_cli("tokenize", "-w", "tiny", "-t", "template", "--json", "THERE IS SEVERE MITRAL VALVE REGURGITATION.")
    assert _jsonl(after.stdout)[0]["pieces"][1] == "THERE IS <#> MITRAL VALVE REGURGITATION."
