"""PromptCAM: the released maps on the released script's own checkpoint (golden.npz), the
algorithm against a hook-free computation of the same gradient, the display, and
``echoclip explain``'s files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import echoclip_cli
from echoclip_cli.api.explain import embed_prompts, frame_maps
from echoclip_cli.media import load_frames
from echoclip_cli.preprocess import resize_bicubic, to_model_input
from echoclip_cli.promptcam import (BLUR_SIGMA, JET, display_map, gaussian_blur, jet, normalise_map, overlay,
                                    prompt_cam, upsample)
from tests.cli_helpers import one_error_line, run_cli
from tests.golden.synthetic import synthetic_images
from tests.media_factory import echo_frames, make_video

GOLDEN_FRAMES = (0, 10, 24)
# Frame 0 of example_video.avi: after the released crop (22 px each side of 224) and the bicubic
# resize, the red channel at row 122, column 100 comes out at 157.49998, a rounding tie. Our resize
# and OpenCV 4.5-5.1's x86 wheels round it to 157; the OpenCV that made golden.npz rounded it to
# 158 (found by a linearised search over single-grey-level changes of the input: this one change
# explains 99.8 % of the squared difference, and with it all 9 maps agree to 3e-6).
TIE = (0, 122, 100)  # stored RGB channel, row, column


def _relative(ours: np.ndarray, golden: np.ndarray) -> float:
    return float(np.abs(ours - golden).max() / golden.max())


@pytest.fixture()
def released(reference_dir, _hermetic_home):
    """The released script's small checkpoint, imported like any OpenCLIP folder."""
    folder = reference_dir / "promptcam"
    result = run_cli("weights", "import", folder, "--name", "promptcam-ref")
    assert result.exit_code == 0, result.stderr
    model = echoclip_cli.load_model("promptcam-ref", device="cpu", precision="fp32")
    return model, np.load(folder / "golden.npz"), reference_dir / "example_video.avi"


def test_golden_maps_of_the_released_script(released):
    model, golden, video = released
    assert model.preprocess.channel_order == "BGR"  # the released AVI reader fed BGR frames as RGB
    worst = {}
    for p, prompt in enumerate(golden["prompts"]):
        records = list(echoclip_cli.explain(model, video, prompt=str(prompt), frames=list(GOLDEN_FRAMES)))
        assert [r.frame for r in records] == list(GOLDEN_FRAMES) and all(r.ok for r in records)
        for r in records:
            assert r.raw.shape == (7, 7) and r.cam.shape == (224, 224) and r.cam.dtype == np.float32
            worst[p, r.frame] = max(_relative(r.raw, golden[f"raw_p{p}_f{r.frame}"]),
                                    _relative(r.cam, golden[f"cam_p{p}_f{r.frame}"]))
            assert r.cam.min() < 0  # bicubic overshoots kept: no clamp after upsampling
    for (p, frame), err in worst.items():
        # frame 0 differs in one input pixel (TIE); test_golden_frame_zero_with_the_released_rounding
        assert err <= (1e-5 if frame else 5e-4), (p, frame, err)


def test_golden_frame_zero_with_the_released_rounding(released):
    model, golden, video = released
    cfg = model.preprocess
    clip = load_frames(video, cfg, [0])
    c, y, x = TIE
    crop = torch.from_numpy(np.ascontiguousarray(clip.frames.numpy()))  # prepared frames, for the tie below
    exact = _float_resize_of_frame_zero(video, cfg)[c, y, x]
    assert abs(exact - (np.floor(exact) + 0.5)) < 1e-4 and int(crop[0, c, y, x]) == int(np.floor(exact))
    frames = clip.frames.clone()
    frames[0, c, y, x] += 1  # rounded up, as the OpenCV that made golden.npz did
    prompts = [str(p) for p in golden["prompts"]]
    targets = embed_prompts(model, prompts)
    images = to_model_input(frames, cfg).expand(len(prompts), -1, -1, -1)
    maps = frame_maps(model, images, [t[None] for t in targets])
    for p in range(len(prompts)):
        assert _relative(maps.raw[p], golden[f"raw_p{p}_f0"]) <= 1e-5
        assert _relative(maps.cam[p], golden[f"cam_p{p}_f0"]) <= 1e-5
    rgb = to_model_input(frames, cfg.replace(channel_order="RGB"))
    wrong = frame_maps(model, rgb, [targets[:1]])
    assert _relative(wrong.raw[0], golden["raw_p0_f0"]) > 0.05  # the channel order matters


def _float_resize_of_frame_zero(video, cfg) -> np.ndarray:
    """Frame 0 cropped as released and resized without rounding: (3, 224, 224) float32."""
    from echoclip_cli.media.clip import read_frames
    from echoclip_cli.preprocess import square_zoom_box

    frames, _ = read_frames(video, [0])
    x0, y0, x1, y1 = square_zoom_box(frames.shape[1], frames.shape[2], cfg.zoom)
    crop = torch.from_numpy(frames[0, y0:y1, x0:x1]).permute(2, 0, 1).float()
    return resize_bicubic(crop, cfg.image_size).numpy()


# --------------------------------------------------------------------------- the algorithm


@pytest.fixture()
def model(tiny_bundle):
    return echoclip_cli.load_model("tiny", device="cpu", precision="fp32")


def _hook_free(model, images: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The same maps with no hook: the trunk run by hand to the last block's output A, then A made
    a leaf and the rest of the tower applied to it."""
    visual = model.visual
    trunk = visual.trunk
    with torch.no_grad():
        x = trunk.stem(images)
        for stage in trunk.stages[:-1]:
            x = stage(x)
        last = trunk.stages[-1]
        x = last.blocks[:-1](last.downsample(x))
        a = last.blocks[-1](x)
    a = a.clone().requires_grad_(True)
    with torch.enable_grad():
        e = visual.head(trunk.head(a))
        (e @ target).sum().backward()
    alpha = a.grad.mean(dim=(2, 3), keepdim=True)
    raw = F.relu((alpha * a.detach()).sum(1))
    return raw.numpy(), upsample(raw, images.shape[-2:]).numpy()


def test_maps_equal_a_hook_free_computation_and_leave_the_model_as_it_was(model):
    images = synthetic_images(3, 64)
    target = F.normalize(torch.randn(model.embed_dim, generator=torch.Generator().manual_seed(1)), dim=0)
    maps = prompt_cam(model.visual, images, target)
    raw, cam = _hook_free(model, images, target)
    # a frame at a time against a batch of three: fp32 rounding apart
    np.testing.assert_allclose(maps.raw, raw, rtol=0, atol=1e-5 * raw.max())
    np.testing.assert_allclose(maps.cam, cam, rtol=0, atol=1e-5 * cam.max())
    assert maps.raw.shape == (3, 2, 2) and maps.cam.shape == (3, 64, 64)  # a 64² input: a 2×2 last stage
    np.testing.assert_allclose(maps.embeddings, model.encode_image(images).numpy(), rtol=0, atol=1e-5)
    assert all(p.requires_grad for p in model.visual.parameters())  # frozen only while the maps ran
    assert not model.visual.trunk.stages[-1].blocks[-1]._forward_hooks  # the hook is gone


def test_maps_on_the_cpu_are_deterministic_in_any_split(model, monkeypatch):
    images = synthetic_images(4, 64)
    targets = F.normalize(torch.randn(4, model.embed_dim, generator=torch.Generator().manual_seed(2)), dim=1)
    first = prompt_cam(model.visual, images, targets)
    again = prompt_cam(model.visual, images, targets)
    assert np.array_equal(first.raw, again.raw) and np.array_equal(first.cam, again.cam)
    monkeypatch.setenv("ECHOCLIP_CPU_SPLIT", "0")  # one thread pool for every frame, frame after frame
    shared = prompt_cam(model.visual, images, targets)
    np.testing.assert_allclose(shared.raw, first.raw, rtol=0, atol=1e-6 * first.raw.max())
    batched = prompt_cam(model.visual, images, targets, batch_size=4)
    np.testing.assert_allclose(batched.raw, first.raw, rtol=0, atol=1e-5 * first.raw.max())


def test_bf16_maps_are_close_to_fp32(tiny_bundle):
    images = synthetic_images(2, 64)
    target = F.normalize(torch.randn(32, generator=torch.Generator().manual_seed(3)), dim=0)
    fp32 = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    bf16 = echoclip_cli.load_model("tiny", device="cpu", precision="bf16")
    a = prompt_cam(fp32.visual, images, target).cam
    b = prompt_cam(bf16.visual, images, target, dtype=torch.bfloat16).cam
    assert not np.array_equal(a, b)  # bf16 really ran
    assert np.abs(a - b).max() <= 0.1 * np.abs(a).max()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_maps_match_the_cpu(tiny_bundle):
    images = synthetic_images(2, 64)
    target = F.normalize(torch.randn(32, generator=torch.Generator().manual_seed(4)), dim=0)
    cpu = prompt_cam(echoclip_cli.load_model("tiny", device="cpu", precision="fp32").visual, images, target)
    gpu = prompt_cam(echoclip_cli.load_model("tiny", device="cuda", precision="fp32").visual, images, target)
    np.testing.assert_allclose(gpu.cam, cpu.cam, rtol=0, atol=1e-3 * np.abs(cpu.cam).max())


# --------------------------------------------------------------------------- the display


def test_jet_runs_from_dark_blue_through_green_to_dark_red():
    assert JET.shape == (256, 3)
    np.testing.assert_allclose(jet(np.array(0.0)), [0, 0, 0.5])
    np.testing.assert_allclose(jet(np.array(1.0)), [0.5, 0, 0])
    middle = jet(np.array(0.5))
    assert middle[1] == 1.0 and 0.4 < middle[0] < 0.6 and 0.4 < middle[2] < 0.6  # green-yellow/cyan mix
    assert (np.diff(JET[:, 2][JET[:, 2].argmax():]) <= 1e-12).all()  # blue only fades after its peak


def test_blur_is_a_gaussian_of_the_released_width():
    image = np.zeros((224, 224))
    image[112, 112] = 1.0
    blurred = gaussian_blur(image, BLUR_SIGMA * 224)
    assert blurred.sum() == pytest.approx(1.0)
    row = blurred[112] / blurred[112].sum()
    spread = np.sqrt((row * (np.arange(224) - 112.0) ** 2).sum())
    assert spread == pytest.approx(4.48, rel=0.02)  # σ = 0.02 × 224


def test_overlay_weights_the_colour_by_the_normalised_map():
    image = np.full((32, 32, 3), 100, np.uint8)
    flat = overlay(image, np.zeros((32, 32), np.float32))
    assert np.array_equal(flat, image)  # a flat map normalises to 0: the frame as it was
    cam = np.zeros((32, 32), np.float32)
    cam[16, 16] = 1.0
    m = display_map(cam)
    assert m.min() == 0.0 and m.max() == 1.0 and normalise_map(cam).max() == 1.0
    out = overlay(image, cam)
    peak = np.unravel_index(int(np.argmax(m)), m.shape)
    expected = np.round(255 * jet(np.array(1.0)))  # full weight on the colour at the peak
    np.testing.assert_allclose(out[peak], expected, atol=1)
    corner = np.round((1 - m[0, 0]) * image[0, 0] + m[0, 0] * 255 * jet(np.array(m[0, 0])))
    np.testing.assert_allclose(out[0, 0], corner, atol=1)


# --------------------------------------------------------------------------- files and the command


@pytest.fixture()
def video(tmp_path):
    return make_video(tmp_path / "a4c.avi", echo_frames(30, 48, 64, seed=5))


def test_load_frames_by_index_match_the_sampled_clip(video):
    from echoclip_cli.media import load_clip
    from echoclip_cli.preprocess_config import PreprocessConfig

    cfg = PreprocessConfig(image_size=64)
    clip = load_clip(video, cfg)  # frames 0, 2, …
    picked = load_frames(video, cfg, [10, 4, 999])
    assert picked.meta["frame_indices"] == [4, 10]
    assert torch.equal(picked.frames, clip.frames[[2, 5]])


def test_explain_writes_overlays_records_and_maps(tiny_bundle, video, tmp_path):
    out, npz = tmp_path / "maps", tmp_path / "maps" / "raw.npz"
    result = run_cli("explain", video, "--task", "pacemaker", "--frames", "3,0,29", "-w", "tiny", "--out", out,
                     "--save-maps", npz, "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["frame"] for r in records] == [0, 3, 29]
    assert (out / "explain.jsonl").read_text() == result.stdout
    for r in records:
        assert r["level"] == "frame" and r["task"] == "pacemaker" and len(r["prompts"]) == 2
        assert -1 <= r["score"] <= 1 and r["map_max"] > 0 and r["error"] is None
        x, y = r["map_max_xy"]
        assert 0 <= x < 64 and 0 <= y < 64
        png = (out / f"frame_{r['frame']}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    maps = np.load(npz)
    assert set(maps.files) == {"raw_f0", "cam_f0", "raw_f3", "cam_f3", "raw_f29", "cam_f29", "frames", "prompts"}
    assert maps["raw_f3"].shape == (2, 2) and maps["cam_f3"].shape == (64, 64)
    assert all(maps[k].dtype == np.float32 for k in maps.files if k.startswith(("raw", "cam")))
    for r in records:
        cam = maps[f"cam_f{r['frame']}"]
        assert float(cam.max()) == pytest.approx(r["map_max"])
        assert cam[r["map_max_xy"][1], r["map_max_xy"][0]] == cam.max()


def test_explain_default_frames_and_a_regression_task(tiny_bundle, video):
    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    records = list(echoclip_cli.explain(model, video, task="ejection_fraction"))
    assert [r.frame for r in records] == list(range(0, 30, 2))  # the sampled frames
    for r in records:
        assert r.value is not None and all(f"{r.value:.0f}%" in p for p in r.prompts) and len(r.prompts) == 2
    again = list(echoclip_cli.explain(model, video, task="ejection_fraction"))
    assert all(np.array_equal(a.cam, b.cam) for a, b in zip(records, again))


def test_explain_frames_past_the_end_are_error_records(tiny_bundle, video):
    result = run_cli("explain", video, "--prompt", "A PACER LEAD. ", "--frames", "1,30", "-w", "tiny",
                     "--out", video.parent / "o", "-f", "jsonl")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["frame"] == 1 and records[0]["error"] is None
    assert records[1]["frame"] == 30 and "no frame 30 (the video has 30 frames)" in records[1]["error"]
    assert not (video.parent / "o" / "frame_30.png").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--frames", "0,x", "--task", "tavr"], "--frames"),
    (["--frames", "2,2", "--task", "tavr"], "frame 2 is given twice"),
    (["--frames", "-1", "--task", "tavr"], "--frames"),
    (["--task", "tavr", "--prompt", "X"], "a prompt or a task"),
    ([], "a prompt or a task"),
    (["--task", "no_such_task"], "no task 'no_such_task'"),
    (["--prompt", "  "], "the prompt is empty"),
    (["--task", "tavr", "--save-maps", "maps.txt"], "must end with .npz"),
])
def test_explain_usage_mistakes_exit_2_before_any_model_loads(video, args, message):
    result = run_cli("explain", video, "-w", "not-installed", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and "not-installed" not in result.stderr


def test_explain_refuses_a_folder(tmp_path):
    result = run_cli("explain", tmp_path, "--task", "tavr")
    assert result.exit_code == 2 and "explain reads one video or DICOM file" in one_error_line(result)


def test_explain_reports_one_video_of_its_frames_to_the_progress_bar(tiny_bundle, video):
    """The bar said "videos 0/2" for one video: explain reported each frame asked for as an input."""
    heard: list[tuple] = []

    class Heard:
        def start(self, total, frames_per_item):
            heard.append(("start", total, frames_per_item))

        def frames(self, count):
            heard.append(("frames", count))

        def item(self, n_frames):
            heard.append(("item", n_frames))

        def note(self, message):
            pass

        def warn(self, message):
            pass

    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    records = list(echoclip_cli.explain(model, video, prompt="A PACER LEAD. ", frames=[0, 10], progress=Heard()))
    assert len(records) == 2
    assert heard == [("start", 1, 2), ("frames", 1), ("frames", 1), ("item", 2)]  # one video, two frames
