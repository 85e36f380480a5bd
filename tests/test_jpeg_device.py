"""JPEG Baseline DICOM decoded where the model runs (``jpeg_decode="device"``).

On a CPU model the device path decodes with torchvision (when it loads) or Pillow, so it must
give exactly what the worker path gives; on CUDA it uses nvJPEG, which may differ by a grey
level here and there (checked by cosine, GPU-marked).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import echoclip_cli
from echoclip_cli.errors import UsageError
from echoclip_cli.media import load_clip
from echoclip_cli.media.clip import finish_codestreams, load_codestreams
from echoclip_cli.media.jpeg_device import backend, decode_jpegs
from echoclip_cli.pipeline import embed_videos, resolve_jpeg_decode
from echoclip_cli.preprocess_config import PreprocessConfig
from tests.media_factory import echo_frames, jpeg_frames, make_dicom, make_video, region_item

CPU = torch.device("cpu")


@pytest.fixture()
def model(tiny_bundle):
    return echoclip_cli.load_model("tiny", device="cpu", precision="fp32")


def _colour_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames that are mostly colour (a Doppler-heavy clip): not the B-mode grey."""
    frames = echo_frames(n, height, width, seed=5).copy()
    frames[..., 0] = np.clip(frames[..., 0].astype(int) + 90, 0, 255)
    frames[..., 2] = frames[..., 2] // 3
    return frames


@pytest.mark.parametrize("kind", ["jpeg", "jpeg_as_rgb", "jpeg_mono"])
@pytest.mark.parametrize("mask", ["auto", "none"])
def test_device_path_prepares_what_load_clip_prepares(tmp_path, kind, mask):
    path = make_dicom(tmp_path / "a.dcm", echo_frames(12, 60, 80, seed=4), kind, seed=9,
                      regions=[region_item([4, 2, 75, 57])])
    cfg = PreprocessConfig(mask=mask)
    item = load_codestreams(path, cfg)
    assert item is not None and len(item.streams) == 6 and item.size == (60, 80)
    decoded = torch.stack(decode_jpegs(item.streams, CPU))
    clip = finish_codestreams(item, decoded, cfg, backend(CPU))
    reference = load_clip(path, cfg)
    assert clip is not None
    assert torch.equal(clip.frames, reference.frames)
    assert {k: v for k, v in clip.meta.items() if k != "decoder"} == \
        {k: v for k, v in reference.meta.items() if k != "decoder"}
    assert clip.meta["decoder"] in ("pillow", "torchvision")


def test_only_plain_jpeg_baseline_dicom_takes_the_device_path(tmp_path):
    frames = echo_frames(6, 32, 40, seed=1)
    cfg = PreprocessConfig()
    assert load_codestreams(make_dicom(tmp_path / "rgb.dcm", frames, "rgb"), cfg) is None
    assert load_codestreams(make_dicom(tmp_path / "rle.dcm", frames, "rle"), cfg) is None
    assert load_codestreams(make_video(tmp_path / "v.avi", frames), cfg) is None


def test_colour_clips_go_back_to_the_cpu_path(tmp_path):
    path = make_dicom(tmp_path / "colour.dcm", _colour_frames(8), "jpeg")
    cfg = PreprocessConfig()
    item = load_codestreams(path, cfg)
    decoded = torch.stack(decode_jpegs(item.streams, CPU))
    assert finish_codestreams(item, decoded, cfg, "pillow") is None  # pydicom's view is needed
    assert finish_codestreams(item, decoded[:, :, :-1], cfg, "pillow") is None  # not the header's size


def _embed(model, paths, **kw):
    return {r.source: r for r in embed_videos(paths, model, **kw)}


@pytest.mark.parametrize("workers", [0, 2])
def test_embeddings_equal_the_worker_path(model, tmp_path, workers):
    paths = [
        make_dicom(tmp_path / "a.dcm", echo_frames(30, 48, 64, seed=1), "jpeg", seed=11),
        make_dicom(tmp_path / "b.dcm", echo_frames(9, 48, 64, seed=2), "rgb", seed=12),
        make_video(tmp_path / "c.avi", echo_frames(14, 48, 64, seed=3)),
        make_dicom(tmp_path / "d.dcm", echo_frames(20, 48, 64, seed=4), "jpeg_mono", seed=13),
        make_dicom(tmp_path / "e.dcm", _colour_frames(10), "jpeg", seed=14),
    ]
    want = _embed(model, paths, batch_size=7, jpeg_decode="workers")
    got = _embed(model, paths, batch_size=7, workers=workers, jpeg_decode="device")
    assert list(got) == list(want)
    for source, result in got.items():
        assert result.ok, result.error
        # The pixels are identical (test_device_path_prepares_what_load_clip_prepares); the two paths may
        # batch clips differently, and oneDNN on some CPUs (AMD EPYC, AVX2) rounds a frame's
        # embedding differently by its place in the batch: ~6e-8, one float32 ulp.
        np.testing.assert_allclose(result.embedding, want[source].embedding, rtol=0, atol=1e-6)
        assert result.meta["frame_indices"] == want[source].meta["frame_indices"]
    decoders = [got[str(p)].meta.get("decoder") for p in paths]
    assert decoders[0] in ("pillow", "torchvision") and decoders[3] == decoders[0]
    assert decoders[1] == "pydicom"
    assert decoders[4] == want[str(paths[4])].meta["decoder"]  # the colour clip went the CPU way


def test_a_damaged_codestream_costs_only_its_file(model, tmp_path):
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    frames = echo_frames(10, 48, 64, seed=6)
    good = make_dicom(tmp_path / "good.dcm", frames, "jpeg", seed=1)
    bad = make_dicom(tmp_path / "bad.dcm", frames, "jpeg", seed=2)
    streams = jpeg_frames(frames)
    streams[4] = streams[4][: len(streams[4]) // 3]  # a truncated frame among the sampled ones
    ds = dcmread(bad)
    ds.PixelData = encapsulate(streams)
    ds.save_as(bad)
    want = _embed(model, [good, bad], batch_size=64, jpeg_decode="workers")
    got = _embed(model, [good, bad], batch_size=64, jpeg_decode="device")
    np.testing.assert_array_equal(got[str(good)].embedding, want[str(good)].embedding)
    assert got[str(good)].meta["decoder"] != want[str(good)].meta["decoder"] or backend(CPU) == "pillow"
    assert got[str(bad)].error == want[str(bad)].error
    if want[str(bad)].ok:
        np.testing.assert_array_equal(got[str(bad)].embedding, want[str(bad)].embedding)


def test_jpeg_decode_modes(monkeypatch):
    assert resolve_jpeg_decode("workers", CPU) is None
    assert resolve_jpeg_decode("auto", CPU) is None  # the CPU decodes in the workers by default
    assert resolve_jpeg_decode("device", CPU) == CPU
    monkeypatch.setenv("ECHOCLIP_JPEG_DECODE", "device")
    assert resolve_jpeg_decode(None, CPU) == CPU
    with pytest.raises(UsageError, match="must be one of auto, workers, device"):
        resolve_jpeg_decode("gpu", CPU)


def test_torchvision_decodes_the_pixels_pillow_decodes(tmp_path):
    if backend(CPU) != "torchvision":
        pytest.skip("torchvision's image extension does not load with this torch")
    from echoclip_cli.media.jpeg_device import _pillow_rgb

    grey = echo_frames(2, 48, 64, seed=9)[..., 0].copy()
    streams = jpeg_frames(echo_frames(4, 48, 64, seed=8)) + jpeg_frames(grey)
    for stream, tensor in zip(streams, decode_jpegs(streams, CPU), strict=True):
        assert torch.equal(tensor, _pillow_rgb(stream))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_frames_match_the_cpu_decoder(tmp_path):
    cuda = torch.device("cuda")
    if backend(cuda) != "nvjpeg":
        pytest.skip("torchvision with nvJPEG is not installed")
    path = make_dicom(tmp_path / "a.dcm", echo_frames(40, 480, 640, seed=2), "jpeg")
    cfg = PreprocessConfig()
    item = load_codestreams(path, cfg)
    decoded = torch.stack(decode_jpegs(item.streams, cuda))
    assert decoded.device.type == "cuda"
    clip = finish_codestreams(item, decoded, cfg, "nvjpeg")
    reference = load_clip(path, cfg)
    diff = (clip.frames.cpu().int() - reference.frames.int()).abs()
    assert clip.frames.device.type == "cuda" and diff.float().mean() < 1.0 and diff.max() <= 16


def test_preparing_in_a_background_thread_changes_nothing(model, tmp_path):
    paths = [make_dicom(tmp_path / f"{i}.dcm", echo_frames(12, 48, 64, seed=i), "jpeg", seed=i) for i in range(4)]
    paths.append(make_video(tmp_path / "v.avi", echo_frames(14, 48, 64, seed=7)))
    want = _embed(model, paths, batch_size=5, jpeg_decode="workers")
    got = _embed(model, paths, batch_size=5, jpeg_decode="device", prepare_thread=True)
    assert list(got) == list(want)
    for source, result in got.items():
        np.testing.assert_array_equal(result.embedding, want[source].embedding)


def test_background_thread_raises_in_the_consumer_and_stops_when_closed():
    import threading

    from echoclip_cli.pipeline import _Decoded, in_background

    def failing():
        yield _Decoded("a", None, {}, "first")
        raise RuntimeError("decoder exploded")

    stream = in_background(failing(), CPU, depth=1)
    assert next(stream).error == "first"
    with pytest.raises(RuntimeError, match="decoder exploded"):
        next(stream)

    produced = []

    def endless():
        while True:
            produced.append(1)
            yield _Decoded(str(len(produced)), None, {}, None)

    stream = in_background(endless(), CPU, depth=2)
    assert [next(stream).source for _ in range(3)] == ["1", "2", "3"]
    stream.close()
    assert not any(t.name == "echoclip-prepare" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1  # bounded look-ahead


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pipeline_with_nvjpeg_matches_the_cpu(tiny_bundle, tmp_path):
    if backend(torch.device("cuda")) != "nvjpeg":
        pytest.skip("torchvision with nvJPEG is not installed")
    paths = [make_dicom(tmp_path / f"{i}.dcm", echo_frames(30, 120, 160, seed=i), "jpeg", seed=i) for i in range(6)]
    paths.append(make_dicom(tmp_path / "colour.dcm", _colour_frames(10), "jpeg", seed=9))  # CPU fallback
    paths.append(make_video(tmp_path / "v.avi", echo_frames(14, 48, 64, seed=7)))
    cpu = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    gpu = echoclip_cli.load_model("tiny", device="cuda", precision="fp32")
    want = _embed(cpu, paths, batch_size=16, jpeg_decode="workers")
    got = _embed(gpu, paths, batch_size=16, workers=2, jpeg_decode="device")  # background thread on CUDA
    assert list(got) == list(want)
    assert got[str(paths[0])].meta["decoder"] == "nvjpeg"
    for source, result in got.items():
        a, b = result.embedding, want[source].embedding
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


class _Said:
    """A progress hook that keeps what it is told (api.Progress)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def start(self, total, frames_per_item):
        pass

    def frames(self, count):
        pass

    def item(self, n_frames):
        pass

    def note(self, message):
        self.notes.append(message)

    def warn(self, message):
        self.warnings.append(message)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_error_on_the_device_falls_back_to_the_cpu_path_and_is_said_once(model, tmp_path, monkeypatch, workers):
    import echoclip_cli.media.clip as clip_module
    from echoclip_cli.api import embed_files

    paths = [make_dicom(tmp_path / f"{i}.dcm", echo_frames(8, 48, 64, seed=i), "jpeg", seed=i) for i in range(5)]
    want = _embed(model, paths, batch_size=4, jpeg_decode="workers")

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)\nmore detail")

    monkeypatch.setattr(clip_module, "finish_codestream_group", out_of_memory)
    said = _Said()
    from echoclip_cli.options import RunOptions

    options = RunOptions(batch_size=4, workers=workers, jpeg_decode="device")
    got = {r.source: r for r in embed_files(model, paths, options, progress=said)}
    assert list(got) == [str(p) for p in paths]  # every input, in order
    for source, result in got.items():
        assert result.ok and result.meta["decoder"] == want[source].meta["decoder"]
        np.testing.assert_array_equal(result.embedding, want[source].embedding)
    cause = "RuntimeError: CUDA out of memory (simulated)"
    assert len(said.warnings) == 2 and cause in said.warnings[0]  # the first error, once; then the summary
    assert "0 clips prepared" in said.warnings[1] and "5 decoded on the CPU instead (5 prepare error)" in said.warnings[1]


def test_a_failing_device_decoder_is_said_once_and_counted(model, tmp_path, monkeypatch):
    import echoclip_cli.media.jpeg_device as jpeg_device
    from echoclip_cli.pipeline import DeviceReport

    paths = [make_dicom(tmp_path / f"{i}.dcm", echo_frames(8, 48, 64, seed=i), "jpeg", seed=i) for i in range(3)]
    want = _embed(model, paths, batch_size=64, jpeg_decode="workers")

    def broken(streams, device):
        raise jpeg_device.JpegDecodeError("RuntimeError: nvjpegDecode failed (simulated)")

    monkeypatch.setattr(jpeg_device, "decode_jpegs", broken)
    warnings: list[str] = []
    report = DeviceReport(warn=warnings.append)
    got = _embed(model, paths, batch_size=64, jpeg_decode="device", device_report=report)
    assert all(got[str(p)].ok for p in paths) and list(got) == [str(p) for p in paths]
    np.testing.assert_array_equal(got[str(paths[1])].embedding, want[str(paths[1])].embedding)
    assert report.given_back == {"decode error": 3} and report.fallbacks == 3 and report.prepared == 0
    assert len(warnings) == 1 and "nvjpegDecode failed (simulated)" in warnings[0]


def test_a_group_prepared_together_equals_each_clip_alone(tmp_path):
    from echoclip_cli.media.clip import finish_codestream_group
    from echoclip_cli.preprocess import host_syncs

    cfg = PreprocessConfig()
    items = [load_codestreams(make_dicom(tmp_path / f"{i}.dcm", echo_frames(12, 60, 80, seed=i), "jpeg", seed=i,
                                         regions=[region_item([4, 2, 75, 57])] if i % 2 else None), cfg)
             for i in range(5)]
    items.insert(2, load_codestreams(make_dicom(tmp_path / "colour.dcm", _colour_frames(12, 60, 80), "jpeg"), cfg))
    frames = torch.stack([torch.stack(decode_jpegs(item.streams, CPU)) for item in items])
    before = host_syncs()
    together = finish_codestream_group(items, frames, cfg, "pillow")
    assert host_syncs() - before == 2  # one copy per region: colour and clip-type counts with the block grids
    assert together[2] is None and finish_codestreams(items[2], frames[2], cfg, "pillow") is None  # colour: the CPU's
    for item, decoded, clip in zip(items[:2] + items[3:], torch.cat([frames[:2], frames[3:]]),
                                   together[:2] + together[3:], strict=True):
        alone = finish_codestreams(item, decoded, cfg, "pillow")
        assert torch.equal(clip.frames, alone.frames) and clip.meta == alone.meta
        assert torch.equal(clip.frames, load_clip(item.source, cfg).frames)


def test_host_synchronisations_per_batch_do_not_grow_with_the_batch(tmp_path):
    from echoclip_cli.pipeline import ClipSource, DeviceReport

    per_batch = []
    for n in (2, 6):
        paths = [str(make_dicom(tmp_path / f"{n}-{i}.dcm", echo_frames(8, 48, 64, seed=i), "jpeg", seed=i))
                 for i in range(n)]
        report = DeviceReport()
        out = list(ClipSource(paths, PreprocessConfig(), jpeg_device=CPU, group_frames=1000, report=report))
        assert len(out) == n and all(item.frames is not None for item in out)
        assert report.batches == 1 and report.prepared == n
        per_batch.append(report.host_syncs)
    assert per_batch[0] == per_batch[1] == 1  # one copy to the host per group of one region


def test_the_reason_jpeg_cannot_be_decoded_on_cuda_is_kept(monkeypatch):
    import echoclip_cli.media.jpeg_device as jpeg_device

    monkeypatch.setattr(jpeg_device, "_torchvision_probe", lambda: (None, "torchvision's JPEG decoder does not load "
                                                                        "(OSError: libnvjpeg.so.12: not found)"))
    jpeg_device._nvjpeg_probe.cache_clear()
    try:
        cuda = torch.device("cuda")
        assert backend(cuda) is None
        assert "libnvjpeg.so.12" in jpeg_device.unavailable_reason(cuda)
        with pytest.raises(UsageError, match="libnvjpeg.so.12: not found"):
            resolve_jpeg_decode("device", cuda)
    finally:
        jpeg_device._nvjpeg_probe.cache_clear()


def test_other_inputs_are_not_held_back_waiting_for_jpeg_frames(tmp_path):
    from echoclip_cli.pipeline import ClipSource

    paths = [make_video(tmp_path / f"{i}.avi", echo_frames(6, 32, 40, seed=i)) for i in range(5)]
    paths.insert(1, make_dicom(tmp_path / "j.dcm", echo_frames(6, 32, 40, seed=9), "jpeg"))
    taken = []

    def sources():
        for p in paths:
            taken.append(p)
            yield str(p)

    out = []
    for item in ClipSource(sources(), PreprocessConfig(), jpeg_device=CPU, group_frames=4):
        out.append((item.index, len(taken)))
    assert [i for i, _ in out] == list(range(6))
    assert out[0][1] == 1  # the first video came out before the next input was read
    # held behind the JPEG input: 2 videos (4 frames); the JPEG group is prepared while the next
    # group's codestreams decode, so it leaves once the next input is read
    assert out == [(0, 1), (1, 5), (2, 5), (3, 5), (4, 5), (5, 6)]


def test_codestreams_reach_the_decoder_without_copies(monkeypatch):
    """decode_jpegs hands torchvision tensors over the codestreams' own bytes (no bytearray copy),
    and gives what the decoder returns."""
    from echoclip_cli.media import jpeg_device

    streams = jpeg_frames(echo_frames(3, 16, 16))
    seen = []

    def fake_decode(inputs, mode=None, device=None):
        seen.extend(inputs)
        return [torch.zeros(3, 16, 16, dtype=torch.uint8) for _ in inputs]

    monkeypatch.setattr(jpeg_device, "backend", lambda device: "torchvision")
    monkeypatch.setattr(jpeg_device, "_torchvision_decode", lambda: fake_decode)
    monkeypatch.setattr(jpeg_device, "_rgb_mode", lambda: None)
    out = decode_jpegs(streams, torch.device("cpu"))
    assert len(out) == 3
    for tensor, data in zip(seen, streams, strict=True):
        assert tensor.data_ptr() == np.frombuffer(data, np.uint8).ctypes.data  # the same memory
        assert bytes(tensor.numpy()) == data


def test_decoding_overlaps_preparation(tmp_path, monkeypatch):
    """Codestreams are decoded on a thread of their own, one group ahead: group k+1 decodes while
    group k is prepared. The results are those of the plain run, in order."""
    import threading
    import time

    from echoclip_cli.media import clip as clip_module
    from echoclip_cli.media import jpeg_device
    from echoclip_cli.pipeline import ClipSource

    paths = [str(make_dicom(tmp_path / f"{i}.dcm", echo_frames(8, 32, 40, seed=i), "jpeg", seed=i)) for i in range(4)]
    cfg = PreprocessConfig()
    plain = list(ClipSource(paths, cfg, jpeg_device=CPU, group_frames=4))
    spans: dict[str, list[tuple[float, float, str]]] = {"decode": [], "prepare": []}

    def slow(name, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            time.sleep(0.15)
            try:
                return fn(*args, **kwargs)
            finally:
                spans[name].append((start, time.perf_counter(), threading.current_thread().name))
        return run

    monkeypatch.setattr(jpeg_device, "decode_jpegs", slow("decode", jpeg_device.decode_jpegs))
    monkeypatch.setattr(clip_module, "finish_codestream_group", slow("prepare", clip_module.finish_codestream_group))
    out = list(ClipSource(paths, cfg, jpeg_device=CPU, group_frames=4))
    assert [o.index for o in out] == [o.index for o in plain] == [0, 1, 2, 3]
    for a, b in zip(out, plain, strict=True):
        assert torch.equal(a.frames, b.frames) and a.meta == b.meta
    assert len(spans["decode"]) == len(spans["prepare"]) == 4
    assert all(name.startswith("echoclip-decode") for *_, name in spans["decode"])
    assert all(not name.startswith("echoclip-decode") for *_, name in spans["prepare"])
    overlaps = sum(d0 < p1 and p0 < d1 for d0, d1, _ in spans["decode"] for p0, p1, _ in spans["prepare"])
    assert overlaps >= 2  # decoding the next group while this one is prepared
