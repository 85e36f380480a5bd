"""Embedding store: append, read back in one call, refuse mixing, resume keys, merge shards."""

from __future__ import annotations

import os

import numpy as np
import pytest

from echoclip_cli.records import VideoEmbedding
from echoclip_cli.preprocess_config import PreprocessConfig
from echoclip_cli.store import StoreError, StoreWriter, merge_stores, read_store

CFG = PreprocessConfig()


def result(i: int, frames: int = 3) -> VideoEmbedding:
    rng = np.random.default_rng(i)
    per_frame = rng.standard_normal((frames, 8)).astype(np.float32)
    per_frame /= np.linalg.norm(per_frame, axis=1, keepdims=True)
    return VideoEmbedding(source=f"v{i}.dcm", embedding=per_frame.mean(0), frame_embeddings=per_frame,
                          meta={"source": f"v{i}.dcm", "source_sha256": f"sha{i}", "frame_indices": list(range(frames)),
                                "study_instance_uid": f"1.2.{i % 2}"})


def writer(path, sha="w" * 64, cfg=CFG, **kw) -> StoreWriter:
    return StoreWriter(path, weights_name="tiny", weights_sha256=sha, cfg=cfg, embed_dim=8, **kw)


def test_round_trip_with_frames(tmp_path):
    with writer(tmp_path / "s", keep_frames=True, flush_every=2) as w:
        for i in range(5):
            w.add(result(i, frames=2 + i))
        w.add(VideoEmbedding(source="bad.dcm", error="bad.dcm: truncated"))  # failures are not stored
    store = read_store(tmp_path / "s", frames=True)
    assert len(store) == 5 and store.embeddings.shape == (5, 8)
    assert [r["source"] for r in store.rows] == [f"v{i}.dcm" for i in range(5)]
    assert [len(f) for f in store.frame_embeddings] == [2, 3, 4, 5, 6]
    np.testing.assert_allclose(store.embeddings[3], result(3, 5).embedding)
    assert store.rows[0]["weights_sha256"] == "w" * 64 and store.rows[0]["preprocess_digest"] == CFG.digest()
    assert len(list((tmp_path / "s").glob("part-*.safetensors"))) == 3  # flushed every 2, then the rest
    assert not list((tmp_path / "s").glob("*.tmp"))


def test_refuses_other_weights_or_preprocessing(tmp_path):
    with writer(tmp_path / "s") as w:
        w.add(result(0))
    with pytest.raises(StoreError, match="weights"):
        writer(tmp_path / "s", sha="x" * 64)
    with pytest.raises(StoreError, match="preprocessing"):
        writer(tmp_path / "s", cfg=CFG.replace(frames=10))


def test_done_keys_and_duplicates_read_once(tmp_path):
    with writer(tmp_path / "s") as w:
        w.add(result(0))
        w.add(result(1))
    with writer(tmp_path / "s") as w:
        assert w.done_keys() == {"sha0", "sha1"}
        w.add(result(1))  # the same content again (a copy under another name): not stored twice
    assert len(read_store(tmp_path / "s")) == 2
    assert sum(1 for _ in (tmp_path / "s").glob("part-*")) == 1


def test_merge_shards(tmp_path):
    for shard in range(2):
        with writer(tmp_path / f"shard{shard}", keep_frames=True) as w:
            for i in range(shard, 6, 2):
                w.add(result(i))
    merged = merge_stores(tmp_path / "all", [tmp_path / "shard0", tmp_path / "shard1"])
    assert sorted(r["source"] for r in merged.rows) == [f"v{i}.dcm" for i in range(6)]
    assert read_store(tmp_path / "all", frames=True).frame_embeddings is not None


def test_damaged_part_is_reported(tmp_path):
    with writer(tmp_path / "s") as w:
        w.add(result(0))
    part = next((tmp_path / "s").glob("part-*.safetensors"))
    part.write_bytes(part.read_bytes()[:40])
    store = read_store(tmp_path / "s")  # readers go on without it, and say so
    assert len(store) == 0 and len(store.damaged) == 1
    assert "damaged store part" in store.damaged[0] and part.name in store.damaged[0]


def test_not_a_store(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="not an embedding store"):
        read_store(tmp_path / "x")
    with pytest.raises(Exception, match="not an embedding store"):
        writer(tmp_path / "x")


def test_store_commands_merge_and_info(tmp_path):
    import json

    from tests.cli_helpers import run_cli

    for shard in range(2):
        with writer(tmp_path / f"shard{shard}") as w:
            for i in range(shard, 4, 2):
                w.add(result(i))
    merged = run_cli("store", "merge", tmp_path / "all", tmp_path / "shard0", tmp_path / "shard1")
    assert merged.exit_code == 0 and "4 videos from 2 stores" in merged.stderr
    summary = json.loads(run_cli("store", "info", tmp_path / "all").stdout)
    assert summary["videos"] == 4 and summary["studies"] == 0 and summary["weights"]["name"] == "tiny"
    missing = run_cli("store", "info", tmp_path / "nope")
    assert missing.exit_code == 1 and "not an embedding store" in missing.stderr


def test_processes_can_append_to_one_store_at_once(tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / ".store.json.abc.tmp").write_text("{")  # another process is writing the header right now
    first, second = writer(store), writer(store)  # both open it before either has written a part
    with first, second:
        for i in range(6):
            (first if i % 2 else second).add(result(i))
    assert sorted(r["source"] for r in read_store(store).rows) == [f"v{i}.dcm" for i in range(6)]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not an embedding store"):
        writer(tmp_path / "other")


def test_store_and_bundle_files_get_the_usual_modes(tmp_path, tiny_checkpoint, monkeypatch):
    """Under umask 022 a store and a weights bundle are readable by the group and others (a lab
    shares them), not 0600/0700 as mkstemp/mkdtemp would leave them."""
    import stat

    from echoclip_cli import files
    from echoclip_cli.weights import import_openclip

    old = os.umask(0o022)
    files.umask.cache_clear()
    try:
        with writer(tmp_path / "s") as w:
            w.add(result(1))
        bundle = import_openclip(tiny_checkpoint, "shared")
    finally:
        os.umask(old)
        files.umask.cache_clear()
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert {mode(p) for p in (tmp_path / "s").iterdir()} == {0o644}
    assert mode(bundle.root) == 0o755
    assert {mode(p) for p in bundle.root.iterdir() if not p.name.startswith(".")} == {0o644}


def test_a_damaged_part_is_named_skipped_and_repaired(tmp_path):
    from echoclip_cli.store import check_parts
    from tests.cli_helpers import run_cli

    with writer(tmp_path / "s", keep_frames=True, flush_every=2) as w:
        for i in range(4):
            w.add(result(i))
    first, second = sorted((tmp_path / "s").glob("part-*.safetensors"))
    data = bytearray(second.read_bytes())
    data[-40:-8] = bytes(b ^ 0x5A for b in data[-40:-8])  # flip bytes inside the vectors, size unchanged
    second.write_bytes(bytes(data))
    assert [problem is None for _, problem in check_parts(tmp_path / "s")] == [True, False]
    store = read_store(tmp_path / "s", frames=True)
    assert len(store) == 2 and "checksum" in store.damaged[0]  # the sound part still reads
    verify = run_cli("store", "verify", tmp_path / "s", "-f", "jsonl")
    assert verify.exit_code == 1 and "1 damaged" in verify.stderr
    assert run_cli("store", "repair", tmp_path / "s").exit_code == 0
    assert run_cli("store", "verify", tmp_path / "s").exit_code == 0
    with writer(tmp_path / "s", keep_frames=True) as w:  # a resumed run: only the lost videos are missing
        assert w.done_keys() == {"sha0", "sha1"}
    second.write_bytes(bytes(data))  # damaged again, then merged: refused, naming the part
    with pytest.raises(StoreError, match="cannot merge"):
        merge_stores(tmp_path / "all", [tmp_path / "s"])


def flip_tensor_bytes(part, name: str) -> None:
    """Flip bytes in the middle of tensor ``name`` of a safetensors file; its size stays the same."""
    import json

    data = bytearray(part.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8:8 + header_len])[name]["data_offsets"]
    middle = 8 + header_len + (start + end) // 2
    data[middle:middle + 8] = bytes(b ^ 0x5A for b in data[middle:middle + 8])
    part.write_bytes(bytes(data))


def test_resume_over_a_damaged_part_refills_its_inputs(tmp_path):
    """A damaged part's inputs are not done: a resumed run embeds them again, before or without
    `store repair`, and readers then hold every input once."""
    with writer(tmp_path / "s", keep_frames=True, flush_every=2) as w:
        for i in range(4):
            w.add(result(i))
    first, second = sorted((tmp_path / "s").glob("part-*.safetensors"))
    flip_tensor_bytes(second, "frame_embeddings")
    with writer(tmp_path / "s", keep_frames=True) as w:
        assert w.done_keys() == {"sha0", "sha1"}
        for i in range(4):
            w.add(result(i))  # the resumed run: only the damaged part's videos are added
    store = read_store(tmp_path / "s", frames=True)
    assert sorted(r["source"] for r in store.rows) == [f"v{i}.dcm" for i in range(4)]
    assert len(store.damaged) == 1 and second.name in store.damaged[0]
    np.testing.assert_allclose(store.frame_embeddings[3], result(3).frame_embeddings)
    assert len(list((tmp_path / "s").glob("part-*.safetensors"))) == 3


def test_one_reader_verifies_every_part_once_per_process(tmp_path, monkeypatch):
    from echoclip_cli import store as S

    with writer(tmp_path / "s", keep_frames=True) as w:
        w.add(result(0))
    (part,) = (tmp_path / "s").glob("part-*.safetensors")
    hashed = []
    real = S.part_checksum
    monkeypatch.setattr(S, "part_checksum", lambda *a: hashed.append(1) or real(*a))
    assert len(S.read_part(part, rows_only=True)) == 1 and len(hashed) == 1
    assert S.read_part(part, rows_only=True).has_frames and len(hashed) == 1  # unchanged: trusted
    whole = S.read_part(part, frames=True)  # tensors are verified as read, every time
    assert len(hashed) == 2 and whole.frames[0].shape == (3, 8) and whole.vectors.shape == (1, 8)
    flip_tensor_bytes(part, "embeddings")
    for how in ({"rows_only": True}, {"frames": True}, {}):
        with pytest.raises(StoreError, match="checksum"):
            S.read_part(part, **how)
    assert S.read_part(part, rows_only=True, verify=False).rows[0]["source"] == "v0.dcm"  # an index, unchecked
    with pytest.raises(ValueError):
        S.read_part(part, verify=False)


def test_checksum_is_over_the_tensor_bytes(tmp_path):
    """The checksum of parts already written does not change with how it is computed."""
    import hashlib
    import json

    from echoclip_cli.store import part_checksum

    tensors = {"embeddings": np.arange(16, dtype=np.float32).reshape(2, 8), "frame_counts": np.array([1, 1])}
    rows_json = json.dumps([{"source": "a"}, {"source": "b"}])
    digest = hashlib.sha256(rows_json.encode())
    for name in sorted(tensors):
        digest.update(f"{name}|{tensors[name].shape}|{tensors[name].dtype.str}|".encode() + tensors[name].tobytes())
    assert part_checksum(tensors, rows_json) == digest.hexdigest()


def test_frame_counts_that_do_not_add_up_are_damage(tmp_path):
    """A part written before checksums is still checked for shapes that do not fit together."""
    import json

    from safetensors.numpy import save_file

    from echoclip_cli.store import check_parts

    with writer(tmp_path / "s") as w:
        w.add(result(0))
    tensors = {"embeddings": np.zeros((1, 8), np.float32), "frame_embeddings": np.zeros((3, 8), np.float32),
               "frame_counts": np.array([2])}
    old = tmp_path / "s" / "part-000009-old.safetensors"
    save_file(tensors, str(old), metadata={"rows": json.dumps([{"source": "x"}])})  # no "sha256"
    ((_, sound), (_, problem)) = check_parts(tmp_path / "s")
    assert sound is None and "frame counts" in problem
