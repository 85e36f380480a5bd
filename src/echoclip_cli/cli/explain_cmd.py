"""``echoclip explain``: PromptCAM maps of a video's frames, as overlays, records and raw maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import ZERO_SHOT_WEIGHTS
from .common import DeviceOpt, FormatOpt, OutputFormat, RecordSink, info, report_failure, weights_option
from .inputs import MaskOpt, QuietOpt, run_options, sampling
from .models import open_model
from .progress import progress_bar
from .zeroshot_cmd import PromptsOpt

MAPS_SUFFIX = ".npz"
WeightsOpt = weights_option(ZERO_SHOT_WEIGHTS, store="")


def parse_frames(text: Optional[str]) -> Optional[list[int]]:
    """``--frames 0,10,24`` as integers (None when not given); anything else is a usage error."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"expected frame indices such as 0,10,24 (integers ≥ 0), not {text!r}",
                                 param_hint="--frames")
    return [int(p) for p in parts]


def explain(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="One DICOM file, video or preprocessed .safetensors file.",
                                           show_default=False)],
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="The text whose evidence to map.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="A task of the prompt library: its prompts (see `echoclip zero-shot --list`).")] = None,
    frames: Annotated[Optional[str], typer.Option("--frames", metavar="F,F,…", help="Frame indices of the decoded video (before sampling); default: the frames the model samples (0, 2, …, 38).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for frame_F.png overlays and explain.jsonl.")] = Path(
        "echoclip-explain"),
    save_maps: Annotated[Optional[Path], typer.Option("--save-maps", metavar="FILE.npz", help="Also keep the raw maps: raw_fF (7×7) and cam_fF (224²), float32.")] = None,
    prompts: PromptsOpt = None,
    weights: WeightsOpt = None,
    mask: MaskOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32 (as released), bf16 or fp16 (maps differ slightly: docs/BENCHMARKS.md).")] = "fp32",
    quiet: QuietOpt = False,
) -> None:
    """Show where in each frame the model found what a prompt says (PromptCAM, as released).

    For each frame: the Grad-CAM of the last ConvNeXt block for the prompt's embedding, blurred,
    normalised and overlaid in the jet colour map on the frame the model received
    (OUT/frame_F.png), and one record (frame, prompts, score, map maximum and where it is) on
    stdout and in OUT/explain.jsonl. A task's map explains its score: a device task's prompts;
    for EF, the prompts of the value the frame alone estimates. The maps run on the torch network,
    a frame at a time.

    Examples:

        echoclip explain a4c.avi --task pacemaker --out maps/

        echoclip explain a4c.avi --prompt "SEVERE MITRAL REGURGITATION. " --frames 0,10,24 --save-maps maps.npz

        echoclip explain study.dcm --task ejection_fraction --format csv > ef_maps.csv
    """
    from .. import api
    from ..api.explain import MAPS_FILE
    from ..backends import registry

    wanted = parse_frames(frames)
    if save_maps is not None and save_maps.suffix != MAPS_SUFFIX:
        raise typer.BadParameter(f"the maps file must end with {MAPS_SUFFIX}, not {save_maps.name!r}",
                                 param_hint="--save-maps")
    api.check_explain(source, prompt=prompt, task=task, frames=wanted, prompts=prompts)
    registry.check("torch", precision)
    model = open_model(weights, default=ZERO_SHOT_WEIGHTS, device=device, precision=precision, backend="torch",
                       quiet=quiet)
    failed = False
    with progress_bar(quiet) as bar, RecordSink(fmt, columns=["frame", "task", "score", "map_max", "map_max_xy",
                                                               "error"]) as sink:
        options = run_options(batch_size=None, workers=0, sampled=sampling(None, None, None, mask))
        for record in api.explain(model, source, prompt=prompt, task=task, frames=wanted, options=options,
                                  prompts=prompts, out=out, save_maps=save_maps, progress=bar):
            if record.error:
                report_failure(record.error)
                failed = True
            sink.write(record.as_dict())
    info(f"wrote the overlays and {MAPS_FILE} to {out}" + (f", the maps to {save_maps}" if save_maps else ""))
    if failed:
        raise typer.Exit(1)
