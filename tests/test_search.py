"""Search: exact chunked top-k, query understanding on a synthetic phrase list, the search command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from echoclip_cli.records import VideoEmbedding
from echoclip_cli.query import (
    MIN_MATCH_SCORE,
    QueryNotUnderstood,
    match_phrases,
    rewrite_query,
    slot_kinds,
    understand_query,
)
from echoclip_cli.retrieval import VectorIndex, group_studies, read_reports, topk_cosine
from echoclip_cli.store import StoreWriter
from echoclip_cli.tokenizer import ClipBpeTokenizer, TemplateTokenizer
from echoclip_cli.tokenizer.template import VARIABLE_INDEX
from tests.cli_helpers import one_error_line, run_cli

# A small made-up report vocabulary (not the EchoCLIP-R one, which is under an academic licence).
PHRASES = [
    "THERE IS <#> REGURGITATION OF THE MITRAL VALVE.",
    "<#> TO <#> REGURGITATION OF THE MITRAL VALVE IS SEEN.",
    "THERE IS <#> REGURGITATION OF THE AORTIC VALVE.",
    "THE AORTIC VALVE SHOWS <#> STENOSIS.",
    "THE LV EJECTION FRACTION MEASURES <#>%.",
    "LEFT VENTRICULAR WALL THICKNESS IS <#>MM.",
    "THE LEFT VENTRICLE IS NORMAL IN SIZE.",
    "THE LEFT ATRIUM IS <#> DILATED.",
    "A PACER LEAD IS SEEN IN THE RIGHT HEART.",
    "IMAGE QUALITY IS TECHNICALLY ADEQUATE.",
    "TRIVIAL REGURGITATION OF THE MITRAL VALVE.",
    "ONE MITRACLIP SEEN IN THE TRICUSPID POSITION.",
    "ONE MITRACLIP IS SEEN ON THE ANTERIOR AND POSTERIOR LEAFLETS OF THE MITRAL VALVE.",
]


@pytest.fixture(scope="module")
def tokenizer() -> TemplateTokenizer:
    return TemplateTokenizer.from_phrases(PHRASES)


def var_id(tok: TemplateTokenizer, piece: str) -> int:
    return tok.variable_offset + VARIABLE_INDEX[piece]


# --------------------------------------------------------------------------- top-k


def test_chunked_topk_equals_bruteforce_argsort() -> None:
    gen = torch.Generator().manual_seed(0)
    matrix = torch.nn.functional.normalize(torch.randn(1000, 16, generator=gen), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(4, 16, generator=gen), dim=1)
    want = torch.argsort(queries @ matrix.T, dim=1, descending=True)[:, :7]
    scores, index = topk_cosine(matrix, queries, 7, chunk_rows=64)  # 16 chunks, merged
    assert torch.equal(index, want)
    torch.testing.assert_close(scores, (queries @ matrix.T).gather(1, want))
    one_scores, one_index = topk_cosine(matrix, queries[2], 7, chunk_rows=100)  # the torch.mv path
    assert torch.equal(one_index[0], want[2])
    assert topk_cosine(matrix[:5], queries, 50)[1].shape == (4, 5)  # k larger than the database


def test_vector_index_normalises_and_fp16_keeps_recall() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((2000, 32)).astype(np.float32) * 3  # unnormalised on purpose
    query = rng.standard_normal(32).astype(np.float32)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    want = np.argsort(-(normed @ (query / np.linalg.norm(query))))[:10]
    scores, index = VectorIndex(vectors).search(query, 10)
    assert list(index[0]) == list(want) and scores[0, 0] <= 1.0 + 1e-6
    _, half = VectorIndex(vectors, dtype=torch.float16).search(query, 10)
    assert len(set(half[0]) & set(want)) >= 9


# --------------------------------------------------------------------------- query understanding


@pytest.mark.parametrize("query, rewritten", [
    ("severe MR", "SEVERE MITRAL REGURGITATION"),
    ("EF 35", "EJECTION FRACTION 35%"),
    ("LVEF of 35 %", "LV EJECTION FRACTION 35%"),
    ("3+ TR", "MODERATE TO SEVERE TRICUSPID REGURGITATION"),
    ("mild-moderate AR", "MILD TO MODERATE AORTIC REGURGITATION"),
    ("moderately dilated LA", "MODERATE DILATED LEFT ATRIUM"),
    ("severe as", "SEVERE AORTIC STENOSIS"),
    ("same as before", "SAME AS BEFORE"),
])
def test_rewrite_query(query: str, rewritten: str) -> None:
    assert rewrite_query(query) == rewritten


def test_slot_kinds() -> None:
    assert slot_kinds("THERE IS <#> TO <#> MITRAL REGURGITATION.") == ("severity", "severity")
    assert slot_kinds("EJECTION FRACTION IS <#>%.") == ("number",)
    assert slot_kinds("SEGMENTS A<#> AND P<#>.") == ("number", "number")
    assert slot_kinds("GRADIENT IS <#>-<#>MMHG.") == ("number", "number")
    assert slot_kinds("THERE IS <#>.") == ("any",)


def test_severe_mr_becomes_the_mitral_regurgitation_sentence(tokenizer: TemplateTokenizer) -> None:
    plan = understand_query("severe MR", tokenizer)
    assert plan.method == "template"
    assert plan.texts == ["THERE IS SEVERE REGURGITATION OF THE MITRAL VALVE."]
    assert plan.ids == [[tokenizer.bos_id, 5 + 0, var_id(tokenizer, "SEVERE"), tokenizer.eos_id]]
    assert plan.matches[0].fills == ("SEVERE",) and plan.matches[0].coverage == 1.0
    assert any("ids: " in line for line in plan.explain())


def test_ef_number_fills_the_ejection_fraction_slot(tokenizer: TemplateTokenizer) -> None:
    for query in ("EF 35%", "ef 35", "LVEF = 35"):
        plan = understand_query(query, tokenizer)
        assert plan.texts == ["THE LV EJECTION FRACTION MEASURES 35%."], query
        assert plan.ids[0] == [tokenizer.bos_id, 5 + 4, var_id(tokenizer, "35"), tokenizer.eos_id]


def test_a_mitraclip_is_on_the_mitral_valve_unless_said_otherwise(tokenizer: TemplateTokenizer) -> None:
    mitral = "ONE MITRACLIP IS SEEN ON THE ANTERIOR AND POSTERIOR LEAFLETS OF THE MITRAL VALVE."
    for query in ("mitraclip", "MitraClip", "mitral clip", "mitral valve clips"):
        assert understand_query(query, tokenizer).texts == [mitral], query
    assert understand_query("TriClip", tokenizer).texts == ["ONE MITRACLIP SEEN IN THE TRICUSPID POSITION."]


def test_a_number_range_is_averaged_over_its_ends(tokenizer: TemplateTokenizer) -> None:
    for query in ("EF 30-35%", "ejection fraction 30 - 35 %"):
        plan = understand_query(query, tokenizer)
        assert plan.texts == [f"THE LV EJECTION FRACTION MEASURES {v}%." for v in ("30", "35")], query
        assert plan.matches[0].fills == ("30-35",) and not plan.matches[0].unused_values
        assert any("range 30-35" in line for line in plan.explain())
    both = understand_query("MR, EF 30-35%", tokenizer)  # open severity (3) and range (2) vary together
    assert len(both.texts) == 6 and len(set(both.texts)) == 6


def test_two_severities_and_an_open_severity(tokenizer: TemplateTokenizer) -> None:
    plan = understand_query("mild to moderate MR", tokenizer)
    assert plan.texts == ["MILD TO MODERATE REGURGITATION OF THE MITRAL VALVE IS SEEN."]
    open_plan = understand_query("MR", tokenizer)  # no severity given: averaged over all three
    assert open_plan.texts == [f"THERE IS {s} REGURGITATION OF THE MITRAL VALVE." for s in ("MILD", "MODERATE", "SEVERE")]
    assert understand_query("moderately dilated LA", tokenizer).texts == ["THE LEFT ATRIUM IS MODERATE DILATED."]


def test_several_findings_become_several_sentences(tokenizer: TemplateTokenizer) -> None:
    plan = understand_query("severe AS, EF 20", tokenizer)
    assert plan.texts == ["THE AORTIC VALVE SHOWS SEVERE STENOSIS. THE LV EJECTION FRACTION MEASURES 20%."]
    assert [m.phrase_index for m in plan.matches] == [3, 4]
    assert understand_query("severe AS and EF 20", tokenizer).texts == plan.texts


def test_synonyms_and_devices(tokenizer: TemplateTokenizer) -> None:
    assert understand_query("pacemaker", tokenizer).texts == ["A PACER LEAD IS SEEN IN THE RIGHT HEART."]
    assert understand_query("trace mitral insufficiency", tokenizer).texts == ["TRIVIAL REGURGITATION OF THE MITRAL VALVE."]
    assert understand_query("normal LV size", tokenizer).texts == ["THE LEFT VENTRICLE IS NORMAL IN SIZE."]


def test_unknowable_query_is_an_error_naming_what_was_tried(tokenizer: TemplateTokenizer) -> None:
    with pytest.raises(QueryNotUnderstood, match="could not understand") as err:
        understand_query("banana smoothie", tokenizer)
    assert "BANANA" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(QueryNotUnderstood, match=f"needs {MIN_MATCH_SCORE}"):
        understand_query("severe MR in a seventy year old gardener", tokenizer)
    assert match_phrases("THE", PHRASES) == []  # filler words alone match nothing


def test_bpe_weights_embed_the_rewritten_free_text() -> None:
    plan = understand_query("severe MR", ClipBpeTokenizer())
    assert plan.method == "free-text" and plan.texts == ["SEVERE MITRAL REGURGITATION"]
    assert plan.ids[0][0] == 49406 and plan.ids[0][-1] == 49407


def test_read_reports_csv_jsonl_and_lines(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text('id,text\na,"THERE IS SEVERE MR."\nb,\n')
    (tmp_path / "r.jsonl").write_text('{"id": 7, "text": "EF 35%"}\n\n')
    (tmp_path / "r.txt").write_text("first\n\nsecond\n")
    assert [(r.id, r.text) for r in read_reports(tmp_path / "r.csv")] == [("a", "THERE IS SEVERE MR.")]
    assert [(r.id, r.text) for r in read_reports(tmp_path / "r.jsonl")] == [("7", "EF 35%")]
    assert [r.id for r in read_reports(tmp_path / "r.txt")] == ["1", "3"]
    (tmp_path / "bad.csv").write_text("name,report\nx,y\n")
    with pytest.raises(Exception, match="'id' and 'text'"):
        read_reports(tmp_path / "bad.csv")


# --------------------------------------------------------------------------- with a model


@pytest.fixture()
def template_model(tmp_path: Path, tiny_checkpoint: Path):
    """The tiny checkpoint installed as ``tiny-r`` with the synthetic template vocabulary."""
    from echoclip_cli import load_model
    from echoclip_cli.weights import import_openclip

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(PHRASES) + "\n")
    bundle = import_openclip(tiny_checkpoint, "tiny-r", tokenizer="template", template_vocab=vocab)
    return load_model(bundle, device="cpu")


def write_store(path: Path, model, vectors: np.ndarray, studies: list[str]) -> Path:
    with StoreWriter(path, weights_name=model.bundle.name, weights_sha256=model.weights_sha256,
                     cfg=model.preprocess, embed_dim=model.embed_dim) as writer:
        for i, (vector, study) in enumerate(zip(vectors, studies, strict=True)):
            meta = {"source": f"/echo/{study}/v{i}.dcm", "source_sha256": f"sha{i}", "study_instance_uid": study,
                    "study_date": "20240102"}
            writer.add(VideoEmbedding(source=meta["source"], embedding=vector.astype(np.float32), meta=meta))
    return path


def test_search_command_finds_the_planted_video(tmp_path: Path, template_model) -> None:
    from echoclip_cli.retrieval import embed_query

    target = embed_query(template_model, understand_query("severe MR", TemplateTokenizer.from_phrases(PHRASES)))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30, template_model.embed_dim)).astype(np.float32)
    vectors[17] = target * 0.9  # store vectors are means of unit frame vectors: not unit length
    studies = [f"1.2.{i // 3}" for i in range(30)]
    store = write_store(tmp_path / "s", template_model, vectors, studies)

    result = run_cli("search", "severe MR", "--index", store, "--weights", "tiny-r", "--top-k", "3",
                     "--format", "jsonl", "--explain")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    videos = [r for r in records if r["level"] == "video"]
    study_rows = [r for r in records if r["level"] == "study"]
    assert len(videos) == 3 and len(study_rows) == 3
    assert videos[0]["source"] == "/echo/1.2.5/v17.dcm" and videos[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert study_rows[0]["study"] == "1.2.5" and study_rows[0]["n_videos"] == 3
    assert [r["rank"] for r in videos] == [1, 2, 3] and videos[0]["score"] >= videos[1]["score"] >= videos[2]["score"]
    assert "embedded: THERE IS SEVERE REGURGITATION OF THE MITRAL VALVE." in result.stderr
    assert "ids: " in result.stderr

    alias = run_cli("search-reports", "severe MR", "--index", store, "--weights", "tiny-r", "--level", "video",
                    "--format", "csv", "-k", "1")
    assert alias.exit_code == 0 and alias.stdout.splitlines()[1].startswith("video,1,")

    spelled = run_cli("search", "severe MR", "--store", store, "--weights", "tiny-r", "--top-k", "3", "-f", "jsonl")
    assert spelled.exit_code == 0 and spelled.stdout == result.stdout  # --store, as every command spells it
    both = run_cli("search", "severe MR", "--store", store, "--index", store, "--weights", "tiny-r")
    assert both.exit_code == 2 and "--index is its old spelling" in both.stderr
    shown = run_cli("search", "--help").stdout
    assert "--store" in shown and "--index" not in shown  # the old spelling still works, unlisted


def test_search_command_errors(tmp_path: Path, template_model) -> None:
    store = write_store(tmp_path / "s", template_model, np.ones((2, template_model.embed_dim)), ["a", "b"])
    unknown = run_cli("search", "banana smoothie", "--index", store, "--weights", "tiny-r")
    assert unknown.exit_code == 1 and "could not understand the query" in one_error_line(unknown)
    assert unknown.stdout == ""
    usage = run_cli("search", "--index", store, "--weights", "tiny-r")
    assert usage.exit_code == 2 and "QUERY" in one_error_line(usage)
    other = write_store(tmp_path / "o", template_model, np.ones((1, template_model.embed_dim)), ["a"])
    header = json.loads((other / "store.json").read_text())
    header["weights"] = {"name": "elsewhere", "sha256": "e" * 64}
    (other / "store.json").write_text(json.dumps(header))
    mismatch = run_cli("search", "severe MR", "--index", other, "--weights", "tiny-r")
    assert mismatch.exit_code == 2 and "elsewhere" in one_error_line(mismatch)


def test_rank_reports_for_a_video(tmp_path: Path, template_model) -> None:
    from tests.media_factory import echo_frames, make_video

    video = make_video(tmp_path / "a4c.avi", echo_frames(8, 64, 64))
    reports = tmp_path / "reports.csv"
    reports.write_text("id,text\nr1,THERE IS SEVERE REGURGITATION OF THE MITRAL VALVE.\n"
                       "r2,THE LV EJECTION FRACTION MEASURES 35%.\nr3,nothing the tokenizer knows\n")
    result = run_cli("search", "--video", video, "--reports", reports, "--weights", "tiny-r", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["id"] for r in records) == ["r1", "r2"] and records[0]["score"] >= records[1]["score"]
    assert "1 of 3 reports" in result.stderr


def test_study_vectors_are_normalised_means_grouped_by_uid_else_folder() -> None:
    vectors = np.array([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 3.0]], np.float32)
    rows = [{"source": "/x/s1/a.dcm", "study_instance_uid": "1.9"}, {"source": "/y/b.dcm", "study_instance_uid": "1.9"},
            {"source": "/x/s2/c.avi"}]
    studies = group_studies(vectors, rows)
    assert studies.keys == ["1.9", "/x/s2"] and studies.members == [[0, 1], [2]]
    np.testing.assert_allclose(studies.vectors[0], [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)


# --------------------------------------------------------------------------- the real vocabulary


def test_severe_mr_on_the_released_template_vocabulary(reference_dir: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """What ``echoclip search "severe MR" --explain`` embeds with EchoCLIP-R's own phrases."""
    from echoclip_cli import load_model
    from echoclip_cli.retrieval import embed_query
    from echoclip_cli.tokenizer import tokenizer_for
    from echoclip_cli.weights import import_openclip

    bundle = import_openclip(tiny_checkpoint, "tiny-real-r", tokenizer="template",
                             template_vocab=reference_dir / "template_vocab.txt")
    model = load_model(bundle, device="cpu")
    tok = tokenizer_for(model.bundle)
    plan = understand_query("severe MR", tok)
    assert len(plan.texts) == 1 and len(plan.matches) == 1
    text, ids = plan.texts[0], plan.ids[0]
    assert "SEVERE" in text and "MITRAL" in text and "REGURGITATION" in text and "<#>" not in text
    phrase = plan.matches[0].phrase_index
    assert ids == [907, 5 + phrase, 775 + VARIABLE_INDEX["SEVERE"], 908]
    assert "MITRAL" in tok.phrases[phrase] and "REGURGITATION" in tok.phrases[phrase]
    assert tok.encode(text).unmatched == []
    assert np.linalg.norm(embed_query(model, plan)) == pytest.approx(1.0, abs=1e-5)

    store = write_store(tmp_path / "s", model, np.eye(4, model.embed_dim), ["a", "b", "c", "d"])
    result = run_cli("search", "severe MR", "--index", store, "--weights", "tiny-real-r", "--explain", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert f"embedded: {text}" in result.stderr and "ids: " + " ".join(map(str, ids)) in result.stderr


def test_tokenize_points_a_text_search_understands_to_search_explain(tmp_path: Path) -> None:
    """`tokenize -t template "severe MR"` said only "empty report", while `search "severe MR"`
    rewrites it into a template sentence and finds videos: the warning now says so."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(PHRASES) + "\n")
    result = run_cli("tokenize", "-t", "template", "--template-vocab", vocab, "severe MR")
    assert result.exit_code == 0, result.stderr
    warning = " ".join(result.stderr.split())
    assert "as a report this embeds an empty report" in warning
    assert "as a search query it becomes 'THERE IS SEVERE REGURGITATION OF THE MITRAL VALVE.'" in warning
    assert "echoclip search --explain 'severe MR'" in warning
    nonsense = run_cli("tokenize", "-t", "template", "--template-vocab", vocab, "qwerty zxcv")
    assert "empty report" in nonsense.stderr and "search --explain" not in nonsense.stderr
