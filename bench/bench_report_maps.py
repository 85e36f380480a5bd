"""What the PromptCAM evidence costs a report: ``echoclip report`` with and without ``--no-maps``.

Whole processes, as a user runs them, alternating (maps on, off, off, on, …) so noise hits both;
``--no-cache`` so every run embeds its clips; one untimed report first fills the text cache (the
first report with new weights embeds the prompt library's ~600 sentences once). Weights: the tiny test architecture (convnext_atto,
64² input, random weights) by default, ``--full`` for the full-size random checkpoint, or
``--weights`` (an OpenCLIP folder). Inputs: copies of pydicom's echo cine (30 frames, 15 sampled)
or of ``--video FILE``.

    python bench/bench_report_maps.py [--videos 4] [--rounds 3] [--full | --weights DIR] [--video FILE]

Prints a Markdown table (seconds per run, each round) and the ratio of the means, with the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _machine import cpu_name, timed_process  # noqa: E402
from bench_embed import random_weights  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "tests" / "golden" / "openclip_tiny.json"


def tiny_weights(folder: Path) -> Path:
    """The tests' tiny convnext_atto architecture with random weights (an OpenCLIP folder)."""
    from safetensors.torch import save_file

    from echoclip_cli.model import build_model

    model_cfg = json.loads(TINY.read_text())["models"]["atto"]["model_cfg"]
    torch.manual_seed(0)
    model = build_model(model_cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale_one = name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_final.weight", "gamma"))
            p.copy_(torch.randn_like(p) * (0.02 if p.ndim > 1 else 0.1) + (1.0 if scale_one else 0.0))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="copies of the input to report on")
    parser.add_argument("--rounds", type=int, default=3, help="runs with and without maps, alternating")
    parser.add_argument("--full", action="store_true", help="full-size random weights instead of the tiny model")
    parser.add_argument("--weights", help="an OpenCLIP folder to time instead")
    parser.add_argument("--video", type=Path, help="the input to copy (default: pydicom's ybr_color cine)")
    args = parser.parse_args()
    from pydicom import examples

    source = args.video or Path(examples.get_path("ybr_color"))
    with tempfile.TemporaryDirectory(prefix="echoclip-report-maps-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "ECHOCLIP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
        if args.weights:
            weights, label = args.weights, args.weights
        elif args.full:
            weights, label = str(random_weights(tmp_path / "weights")), "full-size random"
        else:
            weights, label = str(tiny_weights(tmp_path / "weights")), "tiny (convnext_atto, 64²) random"
        subprocess.run([sys.executable, "-m", "echoclip_cli", "weights", "import", weights, "--name", "bench"],
                       env=env, check=True, capture_output=True)
        inputs = tmp_path / "study"
        inputs.mkdir()
        for i in range(args.videos):
            (inputs / f"clip{i}{source.suffix}").write_bytes(source.read_bytes())
        common = [sys.executable, "-m", "echoclip_cli", "report", str(inputs), "-w", "bench", "--precision", "fp32",
                  "--no-cache", "-f", "jsonl", "-q"]
        # once, untimed: the first report with these weights embeds the prompt library's sentences
        # (~600, the nearest-sentence lists) into the text cache, whichever arm runs first
        timed_process([*common, "--out", str(tmp_path / "warm-up")], env)
        times: dict[str, list[float]] = {"maps": [], "no maps": []}
        for r in range(args.rounds):
            for kind in ("maps", "no maps") if r % 2 == 0 else ("no maps", "maps"):
                flag = [] if kind == "maps" else ["--no-maps"]
                times[kind].append(timed_process([*common, "--out", str(tmp_path / f"out{r}{kind}"), *flag], env))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; weights {label}; {args.videos} copies of {source.name}\n")
    print("| run | " + " | ".join(f"round {i + 1} (s)" for i in range(args.rounds)) + " | mean (s) |")
    print("|---|" + "---|" * (args.rounds + 1))
    for kind, values in times.items():
        print(f"| report, {kind} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {sum(values) / len(values):.1f} |")
    ratio = (sum(times["maps"]) / len(times["maps"])) / (sum(times["no maps"]) / len(times["no maps"]))
    print(f"\nwith maps / without: {ratio:.2f}x")


if __name__ == "__main__":
    main()
