"""The frame-embedding cache: reused across commands, never across weights or preprocessing,
bounded, and a damaged entry costs a recomputation, not a run."""

from __future__ import annotations

import json

import pytest

from echoclip_cli import frame_cache
from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_dicom, make_video


@pytest.fixture()
def clips(tmp_path):
    return [make_dicom(tmp_path / "a.dcm", echo_frames(20, 48, 64, seed=1), "jpeg", seed=5),
            make_video(tmp_path / "b.avi", echo_frames(16, 48, 64, seed=2))]


def _ef(*args):
    result = run_cli("predict-ef", *args, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    return {r.get("source") or r["study"]: r["ef"] for r in map(json.loads, result.stdout.splitlines())}, result


def _parts():
    return sorted(frame_cache.cache_root().glob("*/part-*.safetensors"))


def test_a_second_command_reuses_the_first_ones_frames(tiny_bundle, clips, monkeypatch):
    first, run1 = _ef(*clips)
    assert "from the embedding cache" not in run1.stderr and len(_parts()) == 1
    import echoclip_cli.pipeline

    def no_embedding(*args, **kwargs):
        raise AssertionError("the model was asked to embed frames the cache holds")

    real = echoclip_cli.pipeline.start_embedding
    monkeypatch.setattr(echoclip_cli.pipeline, "start_embedding", no_embedding)
    second, run2 = _ef(*clips)
    assert second == first and "2 of 2 clips from the embedding cache" in run2.stderr
    devices = run_cli("detect-devices", *clips, "-w", "tiny", "-f", "jsonl")
    assert devices.exit_code == 0 and "from the embedding cache" in devices.stderr
    monkeypatch.setattr(echoclip_cli.pipeline, "start_embedding", real)
    fresh, run3 = _ef(*clips, "--no-cache")
    assert fresh == first and "from the embedding cache" not in run3.stderr


def test_other_preprocessing_or_weights_never_share_vectors(tiny_bundle, clips, tiny_checkpoint, tmp_path):
    _ef(*clips)
    _, other_sampling = _ef(*clips, "--frames", "5")
    assert "from the embedding cache" not in other_sampling.stderr
    import torch

    from echoclip_cli.weights import import_openclip
    from tests.conftest import write_openclip_checkpoint

    state = {k: v * 1.01 for k, v in torch.load(tiny_checkpoint / "open_clip_pytorch_model.bin").items()}
    import_openclip(write_openclip_checkpoint(tmp_path / "other", state=state), "other")
    result = run_cli("predict-ef", *clips, "-w", "other", "-f", "jsonl")
    assert result.exit_code == 0 and "from the embedding cache" not in result.stderr
    assert len({p.parent for p in _parts()}) == 3  # one folder per (weights, preprocessing)


def test_a_damaged_part_is_recomputed(tiny_bundle, clips):
    first, _ = _ef(*clips)
    (part,) = _parts()
    part.write_bytes(b"\0" * 100)
    second, run = _ef(*clips)
    assert second == first and "from the embedding cache" not in run.stderr
    assert len(_parts()) == 1 and _parts()[0].stat().st_size > 100


def test_eviction_keeps_the_cache_under_its_cap_least_recently_used_first(tiny_bundle, clips, monkeypatch):
    import os
    import time

    _ef(clips[0])
    _ef(clips[1])
    old, new = _parts() if _parts()[0].stat().st_mtime <= _parts()[1].stat().st_mtime else _parts()[::-1]
    os.utime(old, (time.time() - 100, time.time() - 100))
    cap = max(p.stat().st_size for p in _parts()) + 1
    assert frame_cache.evict(cap) > 0
    assert _parts() == [new]
    info = run_cli("cache", "info", "-f", "jsonl")
    assert info.exit_code == 0 and json.loads(info.stdout)["clips"] == 1
    assert run_cli("cache", "clear").exit_code == 0 and not _parts()


def test_a_fully_cached_run_never_loads_the_network_and_quiet_hides_the_note(tiny_bundle, clips):
    _, first = _ef(*clips)
    assert "loading weights tiny" in first.stderr  # built for the first batch, said above the bar
    _, second = _ef(*clips)
    assert "loading weights tiny (frames" not in second.stderr and "from the embedding cache" in second.stderr
    quiet = run_cli("predict-ef", *clips, "-w", "tiny", "-f", "jsonl", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_a_part_with_flipped_bytes_is_not_served(tiny_bundle, clips, monkeypatch):
    """Bytes changed inside the frame embeddings (size, header and rows intact) fail the part's
    checksum: the part is deleted and its clips are embedded again, never served."""
    from tests.test_store import flip_tensor_bytes

    first, _ = _ef(*clips)
    (part,) = _parts()
    flip_tensor_bytes(part, "frame_embeddings")
    import echoclip_cli.pipeline

    embedded = []
    real = echoclip_cli.pipeline.start_embedding
    monkeypatch.setattr(echoclip_cli.pipeline, "start_embedding", lambda *a, **k: embedded.append(1) or real(*a, **k))
    second, run = _ef(*clips)
    assert second == first and "from the embedding cache" not in run.stderr and embedded
    assert not part.exists() and len(_parts()) == 1  # the damaged part deleted, the clips cached again
    _, third = _ef(*clips)
    assert "2 of 2 clips from the embedding cache" in third.stderr


def test_cache_info_counts_only_sound_parts(tiny_bundle, clips):
    from tests.test_store import flip_tensor_bytes

    _ef(clips[0])
    _ef(clips[1])
    flip_tensor_bytes(_parts()[0], "embeddings")
    info = run_cli("cache", "info", "-f", "jsonl")
    assert info.exit_code == 0 and json.loads(info.stdout)["clips"] == 1


def test_a_part_whose_rows_were_swapped_is_not_served(tiny_bundle, clips):
    """Two clips' rows swapped inside a part (so each file would get the other's frames) fail the
    part's checksum, which covers rows and tensors together: both clips are embedded again."""
    import json as _json

    from safetensors import safe_open
    from safetensors.numpy import save_file

    first, _ = _ef(*clips)
    (part,) = _parts()
    with safe_open(str(part), framework="np") as fh:
        metadata = dict(fh.metadata())
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    rows = _json.loads(metadata["rows"])
    assert len(rows) == 2
    metadata["rows"] = _json.dumps(rows[::-1])
    save_file(tensors, str(part), metadata=metadata)
    second, run = _ef(*clips)
    assert second == first and "from the embedding cache" not in run.stderr


def test_embed_shares_the_cache_and_gives_its_vectors_in_csv_and_a_hint_on_a_terminal(tiny_bundle, clips,
                                                                                      monkeypatch):
    """embed was the odd one out: it embedded every time (the cache was predict-ef's only), left
    the vectors out of CSV and said nothing about them on a terminal."""
    import csv
    import io

    import echoclip_cli.pipeline

    fresh = run_cli("embed", *clips, "-w", "tiny", "-f", "jsonl")
    assert fresh.exit_code == 0, fresh.stderr
    vectors = {r["source"]: r["embedding"] for r in map(json.loads, fresh.stdout.splitlines())}

    def no_embedding(*args, **kwargs):
        raise AssertionError("the model was asked to embed frames the cache holds")

    monkeypatch.setattr(echoclip_cli.pipeline, "start_embedding", no_embedding)
    as_csv = run_cli("embed", *clips, "-w", "tiny", "-f", "csv")
    assert as_csv.exit_code == 0, as_csv.stderr
    assert "2 of 2 clips from the embedding cache" in as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {r["source"]: json.loads(r["embedding"]) for r in rows} == vectors  # CSV carries every field
    _, from_embed = _ef(*clips)  # embed's clips serve predict-ef too
    assert "2 of 2 clips from the embedding cache" in from_embed.stderr
    table = run_cli("embed", *clips, "-w", "tiny", "-f", "table")
    assert table.exit_code == 0 and "hint: a table shows no vectors: --format jsonl" in table.stderr
