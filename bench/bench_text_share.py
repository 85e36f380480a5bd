"""How much of a `predict-ef` run goes to text: prompt embedding cold (first run) and cached.

    python bench/bench_text_share.py --videos 20 [--weights NAME|PATH]

Builds a demo archive of ``--videos`` copies of pydicom's echo cine (examples/_demo_data.py),
then times, with the same loaded model: preparing the 202 EF prompts with an empty text cache,
preparing them again (served from the cache), and embedding the videos' frames. Prints the
share of a cached run spent on text. Default weights: a full-size random convnext_base.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    import os

    with tempfile.TemporaryDirectory(prefix="echoclip-text-") as tmp:
        tmp = Path(tmp)
        os.environ["ECHOCLIP_HOME"] = str(tmp / "home")
        import echoclip_cli
        from echoclip_cli import tasks as T
        from echoclip_cli.prompts import select_tasks
        from echoclip_cli.pipeline import embed_videos
        from bench_embed import random_weights

        weights = args.weights or str(random_weights(tmp / "weights"))
        model = echoclip_cli.load_model(weights, device="cpu", precision="fp32")
        archive = tmp / "archive"
        subprocess.run([sys.executable, str(ROOT / "examples" / "_demo_data.py"), str(archive), str(args.videos)],
                       check=True, stdout=subprocess.DEVNULL)
        files = sorted(archive.rglob("*.dcm"))
        task = select_tasks(["ejection_fraction"])["ejection_fraction"]
        start = time.perf_counter()
        T.prepare(model, task)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        prepared = T.prepare(model, task)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        sets = T.frame_sets_from_results(embed_videos(files, model, batch_size=20, keep_frames=True))
        records = list(T.ef_records(sets, model, prepared))
        videos = time.perf_counter() - start
    assert all(r["error"] is None for r in records)
    print("| videos | prompts cold (s) | prompts cached (s) | videos (s) | text share, cached run |\n|---|---|---|---|---|")
    print(f"| {len(files)} | {cold:.2f} | {warm:.3f} | {videos:.1f} | {warm / (warm + videos):.2%} |")


if __name__ == "__main__":
    main()
