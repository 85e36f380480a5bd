"""The DICOMweb path's cost per study, everything but the model, against a real Orthanc on loopback.

    python bench/bench_dicomweb.py --studies 6 --clips 4 --frames 60 --size 600x800

Starts Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on a free port, uploads synthetic echo
studies (JPEG Baseline cines of realistic size, one still per study), then for each study times
what ``--dicomweb`` adds before the model sees a frame: listing its instances (QIDO-RS), the
metadata of each (WADO-RS), the sampled frames (WADO-RS frames) and writing the staged files,
and reading them back into model-ready frames, beside reading the same files from a local disk.
Also prints the bytes fetched against the pixel bytes of the study and of the sampled frames.
In a run the next study is fetched while the model works on this one, so on a machine whose
model step takes longer than the fetch, the fetch costs nothing but the first study's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))

from _machine import cpu_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--clips", type=int, default=4, help="cines per study (plus one still)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="600x800", help="ROWSxCOLUMNS")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.size.split("x"))

    import os

    import pydicom
    from pydicom.encaps import generate_frames

    from echoclip_cli.dicomweb.server import Server
    from echoclip_cli.dicomweb.staging import stage
    from echoclip_cli.media.batch import iter_clips
    from echoclip_cli.preprocess_config import PreprocessConfig
    from tests.media_factory import echo_frames, make_dicom
    from tests.pacs import orthanc_missing, start_orthanc

    if orthanc_missing():
        sys.exit(orthanc_missing())
    cfg = PreprocessConfig()
    work = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    server = start_orthanc(work / "orthanc")
    try:
        studies: dict[str, list[Path]] = {}
        pixel_bytes = sampled_bytes = 0
        for s in range(args.studies):
            uid = pydicom.uid.generate_uid(entropy_srcs=[f"bench study {s}"])
            paths = []
            for c in range(args.clips + 1):
                n = args.frames if c < args.clips else 1
                path = make_dicom(work / f"s{s}c{c}.dcm", echo_frames(n, rows, cols, seed=100 * s + c), "jpeg",
                                  seed=1000 * s + c)
                ds = pydicom.dcmread(path)
                ds.StudyInstanceUID = uid
                ds.save_as(path, enforce_file_format=True)
                sizes = [len(f) for f in generate_frames(ds.PixelData, number_of_frames=n)]
                pixel_bytes += sum(sizes)
                if n > 1:
                    sampled_bytes += sum(size for i, size in enumerate(sizes) if i in set(cfg.frame_indices))
                server.upload(path)
                paths.append(path)
            studies[uid] = paths
        os.environ["ECHOCLIP_DICOMWEB_USER"], os.environ["ECHOCLIP_DICOMWEB_PASSWORD"] = server.user, server.password
        client = Server(server.url)
        fetch, read_staged, read_disk = [], [], []
        for uid, paths in studies.items():
            started = time.perf_counter()
            staged = stage(client, uid, client.study_instances(uid), cfg.frame_indices, work / "staged" / uid,
                           wanted_types=("2d",))
            fetch.append(time.perf_counter() - started)
            started = time.perf_counter()
            decoded = list(iter_clips(staged.paths, cfg))
            read_staged.append(time.perf_counter() - started)
            started = time.perf_counter()
            list(iter_clips(paths, cfg))
            read_disk.append(time.perf_counter() - started)
            assert not staged.errors and len(decoded) == len(paths)
            staged.remove()
        got = client.received
        print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.studies} studies × ({args.clips} cines of "
              f"{args.frames} frames {rows}×{cols} JPEG + 1 still); sampling {len(cfg.frame_indices)} frames")
        print(f"pixel bytes in the studies: {pixel_bytes:,}; of the sampled frames: {sampled_bytes:,}; fetched as "
              f"frames: {got.get('frames', 0):,} ({got.get('frames', 0) / sampled_bytes:.2f}× the sampled share); "
              f"metadata and searches: {got.get('metadata', 0) + got.get('query', 0):,}")
        print("| per study (median of %d) | seconds |" % len(fetch))
        print("|---|---|")
        print(f"| list + metadata + sampled frames + staged files (`--dicomweb` only) | {statistics.median(fetch):.3f} |")
        print(f"| decode + prepare the staged files | {statistics.median(read_staged):.3f} |")
        print(f"| decode + prepare the same files from local disk | {statistics.median(read_disk):.3f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
