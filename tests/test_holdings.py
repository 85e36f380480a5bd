"""Search without a store: what echoclip holds (remembered stores, the frame cache), the weights it
chooses, ``echoclip index``, and the issue's Done-when scenarios end to end with tiny models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import echoclip_cli
from echoclip_cli import frame_cache, remembered
from echoclip_cli.errors import NothingHeldError, UsageError, WeightsNotFoundError
from echoclip_cli.held import CACHE, holdings
from echoclip_cli.records import VideoEmbedding
from echoclip_cli.store import StoreWriter, read_store
from tests.cli_helpers import one_error_line, run_cli
from tests.media_factory import echo_frames, make_video
from tests.test_search import PHRASES


@pytest.fixture()
def tiny_r(tiny_checkpoint, tmp_path_factory):
    """EchoCLIP-R's stand-in, ``tiny-r``: template tokenizer, weights other than ``tiny``'s."""
    import torch

    from echoclip_cli.weights import import_openclip
    from tests.conftest import write_openclip_checkpoint

    folder = tmp_path_factory.mktemp("tiny_r")
    state = {k: v * 1.01 for k, v in torch.load(tiny_checkpoint / "open_clip_pytorch_model.bin").items()}
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(PHRASES) + "\n")
    return import_openclip(write_openclip_checkpoint(folder / "ck", state=state), "tiny-r", tokenizer="template",
                           template_vocab=vocab)


def clips(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make_video(folder / f"v{i}.avi", echo_frames(8, 48, 64, seed=seed + i)) for i in range(n)]


def fake_store(path: Path, bundle, n: int, seed: int = 0) -> Path:
    """A store of ``n`` random vectors recorded as made by ``bundle`` (no model needed)."""
    rng = np.random.default_rng(seed)
    with StoreWriter(path, weights_name=bundle.name, weights_sha256=bundle.weights_sha256, cfg=bundle.preprocess,
                     embed_dim=bundle.model_cfg["embed_dim"]) as writer:
        for i in range(n):
            source = f"/echo/{path.name}/s{i}/v.dcm"
            writer.add(VideoEmbedding(source=source, embedding=rng.standard_normal(32).astype(np.float32),
                                      meta={"source": source, "source_sha256": f"{path.name}-{i}"}))
    return path


def jsonl(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def videos(records: list[dict]) -> list[tuple[str, float]]:
    return [(r["source"], r["score"]) for r in records if r["level"] == "video"]


# --------------------------------------------------------------------------- remembered stores


def test_a_written_store_is_remembered_and_the_frame_cache_is_not(tiny_bundle, tmp_path):
    store = fake_store(tmp_path / "a.store", tiny_bundle, 3)
    [entry] = remembered.remembered()
    assert entry.path == store.resolve() and entry.weights == "tiny" and entry.weights_sha256 == tiny_bundle.weights_sha256
    assert entry.videos == 3 and entry.bytes == sum(p.stat().st_size for p in store.glob("part-*"))
    cache = frame_cache.FrameCache("tiny", tiny_bundle.weights_sha256, tiny_bundle.preprocess, 32)
    with cache.writer() as writer:
        writer.add(VideoEmbedding(source="/x.avi", embedding=np.ones(32, np.float32),
                                  frame_embeddings=np.ones((2, 32), np.float32), meta={"source_sha256": "x"}))
    assert [e.path for e in remembered.remembered()] == [store.resolve()]  # the cache is searched as the cache
    assert [(f.weights, f.videos) for f in frame_cache.folders()] == [("tiny", 1)]


def test_an_unwritable_home_costs_the_entry_never_the_run(tiny_bundle, tmp_path, _hermetic_home):
    (_hermetic_home / remembered.FOLDER).write_text("a file where the folder should be")
    store = fake_store(tmp_path / "a.store", tiny_bundle, 2)  # writes, and cannot remember
    assert len(read_store(store)) == 2 and remembered.remembered() == []
    assert not remembered.remember(store, "tiny", tiny_bundle.weights_sha256)
    with pytest.raises(Exception, match="cannot write the list of remembered stores"):
        echoclip_cli.remember_store(store)


def test_holdings_group_by_weights_and_prefer_the_retrieval_model(tiny_bundle, tiny_r, tmp_path):
    with pytest.raises(NothingHeldError, match="echoclip embed --dir"):
        holdings().preferred_weights()
    fake_store(tmp_path / "zero.store", tiny_bundle, 5)
    fake_store(tmp_path / "r.store", tiny_r, 2)
    held = holdings()
    assert {h.weights: h.videos for h in held.held} == {"tiny": 5, "tiny-r": 2}
    choice = held.preferred_weights()  # the retrieval model, though it holds fewer videos
    assert choice.name == "tiny-r" and choice.weights_sha256 == tiny_r.weights_sha256
    assert "the retrieval model" in choice.note and "also held: tiny: 1 store and 0 cached videos" in choice.note
    assert holdings(tiny_bundle.weights_sha256).for_weights(tiny_r.weights_sha256) is None

    from echoclip_cli import weights

    weights.remove("tiny-r")  # its vectors stay held, but nothing can embed a query for them
    assert holdings().preferred_weights().name == "tiny"
    weights.remove("tiny")
    with pytest.raises(WeightsNotFoundError, match="which are not installed"):
        holdings().preferred_weights()


def test_a_moved_store_is_dropped_with_a_note_and_added_again(tiny_r, tmp_path):
    store = fake_store(tmp_path / "a.store", tiny_r, 4)
    fake_store(tmp_path / "b.store", tiny_r, 2, seed=1)
    moved = tmp_path / "elsewhere" / "a.store"
    moved.parent.mkdir()
    store.rename(moved)
    assert [e.path.name for e in holdings().gone] == ["a.store"]

    result = run_cli("search", "severe MR", "-f", "jsonl")
    assert f"warning: {store.resolve()} is gone (moved or deleted): dropped from the remembered stores" in result.stderr
    assert {r["store"] for r in jsonl(result) if r["level"] == "video"} == {str((tmp_path / "b.store").resolve())}
    assert [e.path.name for e in remembered.remembered()] == ["b.store"] and not holdings().gone

    listed = run_cli("index", "add", moved)
    assert listed.exit_code == 0 and f"remembered {moved.resolve()} (4 videos, weights tiny-r)" in listed.stderr
    again = jsonl(run_cli("search", "severe MR", "-f", "jsonl", "-k", "20", "--level", "video"))
    assert len(again) == 6 and "is gone" not in run_cli("search", "severe MR").stderr


def test_index_list_and_forget(tiny_r, tmp_path):
    a = fake_store(tmp_path / "a.store", tiny_r, 3)
    b = fake_store(tmp_path / "b.store", tiny_r, 1, seed=1)
    listed = jsonl(run_cli("index", "list", "-f", "jsonl"))
    assert [(r["path"], r["weights"], r["videos"]) for r in listed] == [
        (str(a.resolve()), "tiny-r", 3), (str(b.resolve()), "tiny-r", 1)]
    assert all(r["bytes"] > 0 and r["size_mb"] is not None and r["updated"] for r in listed)

    forgot = run_cli("index", "forget", a)
    assert forgot.exit_code == 0 and "forgot" in forgot.stderr and (a / "store.json").is_file()  # files stay
    assert [r["path"] for r in jsonl(run_cli("index", "list", "-f", "jsonl"))] == [str(b.resolve())]
    found = jsonl(run_cli("search", "severe MR", "-f", "jsonl", "--level", "video"))
    assert {r["store"] for r in found} == {str(b.resolve())}
    again = run_cli("index", "forget", a)
    assert again.exit_code == 2 and "is not a remembered store" in one_error_line(again)
    assert run_cli("index", "add", tmp_path / "nostore").exit_code == 2


# --------------------------------------------------------------------------- search over what is held


def test_several_stores_are_searched_together_when_they_share_weights(tiny_bundle, tiny_r, tmp_path):
    a = fake_store(tmp_path / "a.store", tiny_r, 3)
    b = fake_store(tmp_path / "b.store", tiny_r, 2, seed=1)
    together = jsonl(run_cli("search", "severe MR", "--store", a, "--store", b, "-k", "10", "-f", "jsonl"))
    found = [r for r in together if r["level"] == "video"]
    assert len(found) == 5 and {r["store"] for r in found} == {str(a.resolve()), str(b.resolve())}
    assert [r["rank"] for r in found] == [1, 2, 3, 4, 5]
    studies = [r for r in together if r["level"] == "study"]
    assert len(studies) == 5 and all(len(r["stores"]) == 1 for r in studies)
    old = jsonl(run_cli("search", "severe MR", "--index", a, "--index", b, "-k", "10", "-f", "jsonl"))
    assert old == together  # the old spelling, repeated, as well
    assert jsonl(run_cli("search", "severe MR", "-k", "10", "-f", "jsonl")) == together  # all that is held

    library = echoclip_cli.search(echoclip_cli.load_model("tiny-r", device="cpu"), "severe MR", [a, b], k=10)
    assert [r.as_dict() for r in library.records] == together  # typed records, the same fields as JSONL
    mixed = run_cli("search", "severe MR", "--store", a, "--store", fake_store(tmp_path / "z.store", tiny_bundle, 1))
    assert mixed.exit_code == 2 and "must hold vectors of one weights" in one_error_line(mixed)


def test_nothing_to_search_exits_1_saying_what_to_run_first(tiny_bundle, tiny_r, tmp_path):
    probe = ("import sys, runpy; sys.argv = ['echoclip', 'search', 'severe MR']\n"
             "try:\n    runpy.run_module('echoclip_cli', run_name='__main__')\n"
             "finally:\n    sys.stderr.write('torch loaded: %s\\n' % ('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert "error: nothing to search yet" in out.stderr and "echoclip embed --dir STUDIES --out STORE" in out.stderr
    assert "torch loaded: False" in out.stderr  # found before any model loads
    with pytest.raises(NothingHeldError):
        echoclip_cli.search(echoclip_cli.load_model("tiny", device="cpu"), "severe MR")

    fake_store(tmp_path / "r.store", tiny_r, 2)
    other = run_cli("search", "severe MR", "--weights", "tiny")  # held, but not for these weights
    assert other.exit_code == 1 and "nothing embedded by weights tiny" in one_error_line(other)
    assert "tiny-r: 1 store and 0 cached videos" in other.stderr


def test_done_when_embed_then_search_ranks_the_store_as_store_does(tiny_r, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clips(tmp_path / "studies", 3, seed=10)
    embedded = run_cli("embed", "--dir", "studies", "--out", "s.store", "--weights", "tiny-r", "-f", "jsonl")
    assert embedded.exit_code == 0, embedded.stderr
    plain = run_cli("search", "severe MR", "-f", "jsonl")
    given = run_cli("search", "severe MR", "--store", "s.store", "-f", "jsonl")
    assert plain.stdout == given.stdout and len(videos(jsonl(plain))) == 3
    assert {r["store"] for r in jsonl(plain) if r["level"] == "video"} == {str((tmp_path / "s.store").resolve())}
    assert "searching with weights tiny-r (the retrieval model)" in plain.stderr
    assert (f"searched {(tmp_path / 's.store').resolve()} (3 videos) and 3 cached videos (weights tiny-r); all of "
            "the cached videos are in the stores too: searched once") in plain.stderr  # embed fills the cache too


def test_done_when_a_model_command_then_search_ranks_the_cached_videos(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = clips(tmp_path / "other", 3, seed=20)
    assert run_cli("predict-ef", "--dir", "other", "--weights", "tiny", "-f", "jsonl").exit_code == 0
    plain = run_cli("search", "severe MR", "-f", "jsonl")
    found = [r for r in jsonl(plain) if r["level"] == "video"]
    assert sorted(r["source"] for r in found) == sorted(str(f.relative_to(tmp_path)) for f in files)
    assert {r["store"] for r in found} == {CACHE}
    assert "searched no store and 3 cached videos (weights tiny)" in plain.stderr

    # a cached video ranks exactly as the same video embedded into a store
    assert run_cli("embed", "--dir", "other", "--out", "o.store", "--weights", "tiny").exit_code == 0
    [folder] = frame_cache.folders()
    cached, stored = frame_cache.videos(folder.path), read_store("o.store")
    by_content = {row["source_sha256"]: v for row, v in zip(stored.rows, stored.embeddings)}
    for row, vector in zip(cached.rows, cached.embeddings):
        np.testing.assert_allclose(vector, by_content[row["source_sha256"]], rtol=0, atol=1e-6)
    from_store = run_cli("search", "severe MR", "--store", "o.store", "-f", "jsonl")
    assert videos(jsonl(from_store)) == videos(jsonl(plain))
    both_run = run_cli("search", "severe MR", "-f", "jsonl", "--level", "video")
    both = jsonl(both_run)
    assert len(both) == 3 and {r["store"] for r in both} == {str((tmp_path / "o.store").resolve())}  # once each
    # the cached videos are the store's own: said so, not "0 cached videos"
    assert (f"searched {(tmp_path / 'o.store').resolve()} (3 videos) and 3 cached videos (weights tiny); all of the "
            "cached videos are in the stores too: searched once") in " ".join(both_run.stderr.split())


def test_weights_choose_what_is_searched_among_several(tiny_bundle, tiny_r, tmp_path):
    fake_store(tmp_path / "r.store", tiny_r, 2)
    files = clips(tmp_path / "other", 2, seed=30)
    assert run_cli("predict-ef", *files, "--weights", "tiny").exit_code == 0
    preferred = run_cli("search", "severe MR", "-f", "jsonl")
    assert {r["store"] for r in jsonl(preferred) if r["level"] == "video"} == {str((tmp_path / "r.store").resolve())}
    assert "also held: tiny: 0 stores and 2 cached videos" in preferred.stderr
    chosen = run_cli("search", "severe MR", "--weights", "tiny", "-f", "jsonl")
    assert {r["store"] for r in jsonl(chosen) if r["level"] == "video"} == {CACHE}
    with pytest.raises(UsageError, match="no store given"):
        echoclip_cli.search(echoclip_cli.load_model("tiny", device="cpu"), "severe MR", [])


def test_records_reach_a_redirected_file_under_a_pseudo_terminal(tiny_r, tmp_path):
    """`echoclip search "severe MR" > out.jsonl` typed at a terminal: stderr is the terminal, and
    every record lands in the file."""
    import pty  # noqa: F401 - POSIX only, like the terminal it stands for

    fake_store(tmp_path / "a.store", tiny_r, 7)
    bin_dir = str(Path(sys.executable).parent)
    command = "echoclip" if shutil.which("echoclip", path=bin_dir) else f"{sys.executable} -m echoclip_cli"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    main, child = os.openpty()
    proc = subprocess.Popen(["bash", "-c", f'{command} search "severe MR" -k 5 > out.jsonl'], cwd=tmp_path, env=env,
                            stdin=child, stdout=child, stderr=child)
    os.close(child)
    shown = _read_all(main)
    assert proc.wait(timeout=120) == 0, shown
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["level"] for r in records] == ["video"] * 5 + ["study"] * 5
    assert "searched" in shown and '"level"' not in shown  # notes on the terminal, records in the file


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")
