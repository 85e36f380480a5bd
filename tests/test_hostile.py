"""Hostile and odd inputs: nothing hangs, one bad input costs one record, messages cannot be forged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from echoclip_cli.preprocess_config import PreprocessConfig
from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_dicom, make_video


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _cli(args, cwd, timeout=60):
    """The real command in a subprocess (a hang shows as a timeout, not a stuck test run)."""
    return subprocess.run([sys.executable, "-m", "echoclip_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ})


def test_a_fifo_is_skipped_without_being_opened(tiny_bundle, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "ok.avi", echo_frames(8, 48, 64, seed=1))
    os.mkfifo(folder / "x.dcm")
    os.mkfifo(folder / "x")
    done = _cli(["embed", "--dir", folder, "-w", "tiny", "-f", "jsonl"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert [r["source"].rsplit("/", 1)[-1] for r in _jsonl(done.stdout)] == ["ok.avi"]
    assert "x.dcm: skipped, a named pipe (FIFO), not read" in done.stderr
    named = _cli(["embed", folder / "x.dcm", folder / "ok.avi", "-w", "tiny", "-f", "jsonl"], tmp_path)
    assert named.returncode == 1 and "named pipe" in named.stderr  # given by name: an error, the rest still runs
    assert len(_jsonl(named.stdout)) == 1


def test_empty_selections_and_repeated_dirs(tiny_bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.dcm").mkdir()  # a folder named like a file
    for args in (["--dir", tmp_path / "empty"], [tmp_path / "x.dcm"]):
        result = run_cli("embed", *args, "-w", "tiny")
        assert result.exit_code == 1 and "no DICOM or video files found" in result.stderr
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        make_video(tmp_path / name / f"{name}.avi", echo_frames(6, 48, 64, seed=3))
    both = run_cli("embed", "--dir", tmp_path / "a", "--dir", tmp_path / "b", "-w", "tiny", "-f", "jsonl")
    assert both.exit_code == 0 and len(_jsonl(both.stdout)) == 2  # every --dir counts, not only the last


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder: an unreadable one cannot be made")
def test_an_unreadable_folder_is_reported(tiny_bundle, tmp_path):
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    make_video(folder / "ok.avi", echo_frames(6, 48, 64, seed=1))
    (folder / "locked").chmod(0)
    try:
        result = run_cli("embed", "--dir", folder, "-w", "tiny", "-f", "jsonl")
    finally:
        (folder / "locked").chmod(0o755)
    assert result.exit_code == 1 and "folder not read" in result.stderr and len(_jsonl(result.stdout)) == 1


def test_a_newline_in_a_file_name_cannot_forge_a_line(tiny_bundle, tmp_path):
    bad = tmp_path / "x\nerror: forged.avi"
    bad.write_bytes(b"not a video")
    result = run_cli("embed", bad, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 1
    assert not any(line.startswith("error: forged") for line in result.stderr.splitlines())
    assert "x\\x0aerror: forged.avi" in result.stderr


def test_a_malformed_frames_file_costs_only_its_record(tiny_bundle, tmp_path):
    from echoclip_cli.media.store_file import write_clip_file

    good = make_video(tmp_path / "ok.avi", echo_frames(8, 48, 64, seed=1))
    cfg = PreprocessConfig.from_dict(json.loads((tiny_bundle.root / "echoclip.json").read_text())["preprocess_cfg"])
    meta = {"source": "fake", "source_sha256": "0" * 64, "preprocess": cfg.to_dict(),
            "preprocess_digest": cfg.digest(), "frame_indices": [0, 2]}
    one_channel = write_clip_file(tmp_path / "grey.safetensors", torch.zeros(2, 1, 32, 32, dtype=torch.uint8), meta)
    result = run_cli("embed", good, one_channel, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 1, result.stderr
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert records["ok.avi"]["error"] is None and "frames of shape" in records["grey.safetensors"]["error"]
    assert "internal error" not in result.stderr


def test_weights_changed_in_place_with_the_mtime_restored_are_hashed_again(tiny_bundle):
    import echoclip_cli
    from echoclip_cli.errors import ChecksumError

    echoclip_cli.load_model("tiny", device="cpu")  # verified: the stamp is written
    path = tiny_bundle.root / "model.safetensors"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    with pytest.raises(ChecksumError):
        echoclip_cli.load_model("tiny", device="cpu")


def test_a_failed_write_is_one_line_not_an_internal_error(capsys):
    from safetensors import SafetensorError

    from echoclip_cli.cli.app import report_error

    assert report_error(SafetensorError("Error while serializing: No space left on device (os error 28)")) == 1
    assert report_error(OSError(28, "No space left on device")) == 1
    err = capsys.readouterr().err
    assert "internal error" not in err and err.count("cannot write") == 2


def test_third_party_warnings_never_print_header_values(capsys, monkeypatch):
    import warnings

    from echoclip_cli.cli.app import _quiet_warning

    monkeypatch.setattr(warnings, "showwarning", _quiet_warning)
    warnings.warn_explicit("Invalid value for VR UI: 'DOE^JOHN^19700101'", UserWarning,
                           "/venv/lib/python3.11/site-packages/pydicom/valuerep.py", 1)
    err = capsys.readouterr().err
    assert "DOE^JOHN" not in err and "UserWarning from pydicom" in err


def test_inputs_over_the_decode_budget_are_refused_before_decoding(tiny_bundle, tmp_path, monkeypatch):
    """Priced from the header / stream info: a clip too large for the budget is one error record;
    the small clip beside it still gets its result (the 8192² H.264 of issue 13 needed 9.5 GB)."""
    monkeypatch.setenv("ECHOCLIP_DECODE_MB", "2")
    small = make_video(tmp_path / "small.avi", echo_frames(8, 48, 64, seed=1))
    big = make_video(tmp_path / "big.avi", echo_frames(4, 480, 640, seed=2))
    result = run_cli("embed", small, big, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 1
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert records["small.avi"]["error"] is None
    assert "over the decode budget of 2 MB" in records["big.avi"]["error"]


def test_a_deflate_bomb_is_refused_without_inflating_it(tiny_bundle, tmp_path, monkeypatch):
    import numpy as np
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from tests.media_factory import base_dataset

    ds = base_dataset(n_frames=40, rows=256, cols=256, seed=9)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.zeros((40, 256, 256), np.uint8).tobytes()  # 2.6 MB of zeros: a few KB deflated
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("ECHOCLIP_DECODE_MB", "1")
    result = run_cli("embed", path, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 1
    assert "its deflated dataset would need" in _jsonl(result.stdout)[0]["error"]
    monkeypatch.setenv("ECHOCLIP_DECODE_MB", "100")  # under the budget: inflated to its end (and padding) once
    done = _cli(["embed", path, "-w", "tiny", "-f", "jsonl"], tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _jsonl(done.stdout)[0]["clip_type"] == "still"  # zeros do not move


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
def test_workers_die_with_a_killed_parent(tiny_bundle, tmp_path):
    import signal
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        make_video(folder / f"v{i:02d}.avi", echo_frames(40, 96, 128, seed=i))
    proc = subprocess.Popen([sys.executable, "-m", "echoclip_cli", "embed", "--dir", str(folder), "-w", "tiny",
                             "-j", "2", "-f", "jsonl", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ}, start_new_session=True)
    deadline, children = time.time() + 60, set()
    while time.time() < deadline and len(children) < 3:  # fork server + 2 workers (+ resource tracker)
        children = _descendants(proc.pid)
        time.sleep(0.2)
    assert len(children) >= 3, "the workers did not start"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)], "processes outlived the killed run"


def test_preprocess_goes_on_after_a_failed_write(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import echoclip_cli.media.batch as batch

    videos = [make_video(tmp_path / f"v{i}.avi", echo_frames(6, 48, 64, seed=i)) for i in range(3)]
    real, calls = batch.write_clip_file, []

    def full_disk_once(path, frames, meta):
        calls.append(path)
        if len(calls) == 1:
            raise SafetensorError("Error while serializing: No space left on device (os error 28)")
        return real(path, frames, meta)

    monkeypatch.setattr(batch, "write_clip_file", full_disk_once)
    result = run_cli("preprocess", *videos, "--out", tmp_path / "out", "-f", "jsonl")
    assert result.exit_code == 1 and "internal error" not in result.stderr
    statuses = [r["status"] for r in _jsonl(result.stdout)]
    assert statuses.count("ok") == 2 and statuses.count("error") == 1  # the later inputs were still tried
    (tmp_path / "file").write_text("x")
    assert run_cli("preprocess", videos[0], "--out", tmp_path / "file").exit_code == 2


def test_a_truncated_jpeg_frame_fails_its_file_instead_of_decoding_made_up_rows(tiny_bundle, tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from tests.media_factory import base_dataset, jpeg_frames

    frames = echo_frames(6, 48, 64, seed=4)
    streams = jpeg_frames(frames)
    streams[2] = streams[2][: len(streams[2]) // 3]  # frame 2 cut to a third (sampled: 0, 2, 4)
    ds = base_dataset(n_frames=6, rows=48, cols=64, seed=11)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "YBR_FULL_422", 3, 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = encapsulate(streams)
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "cut.dcm"
    ds.save_as(path, enforce_file_format=True)
    good = make_video(tmp_path / "ok.avi", echo_frames(6, 48, 64, seed=5))
    result = run_cli("embed", path, good, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 1
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert "frame 2's JPEG data is truncated" in records["cut.dcm"]["error"]
    assert records["ok.avi"]["error"] is None


def test_a_home_that_refuses_writes_degrades_and_still_gives_every_record(tiny_bundle, _hermetic_home, tmp_path,
                                                                          monkeypatch):
    """Issue 30, class 5: where the home cannot be written (here: the cache, the compiled tower's
    folder and the verification stamp are taken by things that cannot be written into, which
    stops root as well as a read-only mount would), a run embeds without the cache, stays eager
    instead of aborting its automatic build, and re-hashes the weights instead of failing."""
    from echoclip_cli.backends import compiled
    from tests.media_factory import echo_frames, make_video

    for name in ("cache", "compiled"):
        (_hermetic_home / name).write_text("not a folder")
    stamp = tiny_bundle.root / ".verified"
    stamp.unlink(missing_ok=True)
    stamp.mkdir()  # the stamp cannot be written
    monkeypatch.setattr(compiled, "AUTO_BUILD_INPUTS", 1)
    videos = [make_video(tmp_path / f"v{i}.avi", echo_frames(8, 48, 64, seed=i)) for i in range(2)]
    result = run_cli("predict-ef", *map(str, videos), "-w", "tiny", "--device", "cpu", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(r["ef"] is not None for r in rows)
    assert "cache cannot be written" in result.stderr and "running eager" in result.stderr


@pytest.mark.parametrize("change", [{"frame_indices": None}, {"frame_indices": "0,2"}, {"frame_indices": [0, 2, 4]},
                                    {"fps": "fast"}, {"study_instance_uid": 12}])
def test_a_frames_file_with_wrong_metadata_types_costs_only_its_record(tiny_bundle, tmp_path, change):
    """Issue 30, class 9: `"frame_indices": null` (or another wrong type, or indices that do not
    describe the array) ended the whole run; now it is that file's error record."""
    from echoclip_cli.media.store_file import write_clip_file

    good = make_video(tmp_path / "ok.avi", echo_frames(8, 48, 64, seed=1))
    cfg = PreprocessConfig.from_dict(json.loads((tiny_bundle.root / "echoclip.json").read_text())["preprocess_cfg"])
    size = cfg.image_size
    meta = {"source": "fake", "source_sha256": "0" * 64, "preprocess": cfg.to_dict(),
            "preprocess_digest": cfg.digest(), "frame_indices": [0, 2], **change}
    bad = write_clip_file(tmp_path / "bad.safetensors", torch.zeros(2, 3, size, size, dtype=torch.uint8), meta)
    result = run_cli("predict-ef", good, bad, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 1 and "internal error" not in result.stderr, result.stderr
    records = {r.get("source", "").rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout) if r["level"] == "video"}
    error = records["bad.safetensors"]["error"] or ""
    assert records["ok.avi"]["ef"] is not None and ("metadata" in error or "frame indices" in error), error


def test_a_file_of_zeros_is_refused_at_once_not_parsed(tiny_bundle, tmp_path):
    """Issue 30, class 7: a .dcm of zeros was parsed at ~3 MB/s (a sparse 100 GB file: hours). A
    file without the preamble that does not start like a DICOM dataset is refused from its first
    bytes; a good input beside it still gets its record."""
    import time

    zeros = tmp_path / "zeros.dcm"
    with open(zeros, "wb") as fh:
        fh.truncate(200 << 20)  # 200 MB of zeros, sparse: nothing written
    good = make_video(tmp_path / "ok.avi", echo_frames(8, 48, 64, seed=1))
    start = time.perf_counter()
    result = run_cli("embed", zeros, good, "-w", "tiny", "-f", "jsonl")
    assert time.perf_counter() - start < 30  # the 200 MB are never read (parsing them took ~70 s)
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert result.exit_code == 1 and records["ok.avi"]["error"] is None
    assert "not a DICOM file" in records["zeros.dcm"]["error"]


def test_jpeg_frames_larger_than_the_header_says_are_never_decoded(tiny_bundle, tmp_path, monkeypatch):
    """Issue 30, class 1 (JPEG): the memory budget prices Rows × Columns, but decoders allocate
    what each frame's own start-of-frame header declares (16384² in a 54 KB file: 2.6 GB). A frame
    that declares another size than the DICOM header is refused before any decoder sees it."""
    import pydicom

    import echoclip_cli.media.dicom as dicom

    bomb = make_dicom(tmp_path / "bomb.dcm", echo_frames(4, 96, 128, seed=2), "jpeg", seed=4)
    ds = pydicom.dcmread(bomb)
    ds.Rows, ds.Columns = 48, 64  # the header claims less than the frames hold
    ds.save_as(bomb)
    decoded = []
    real = dicom._pydicom_frames
    monkeypatch.setattr(dicom, "_pydicom_frames", lambda *a, **k: decoded.append(1) or real(*a, **k))
    good = make_video(tmp_path / "ok.avi", echo_frames(8, 48, 64, seed=1))
    result = run_cli("embed", bomb, good, "-w", "tiny", "-f", "jsonl")
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert result.exit_code == 1 and records["ok.avi"]["error"] is None, result.stderr
    assert "declares 96×128 pixels, the DICOM header 48×64" in records["bomb.dcm"]["error"] and decoded == []


def _growing_avi(path, big: tuple[int, int]):
    """An MJPEG AVI whose stream (and the probe) says 48×64 and whose frames from 2 on are ``big``."""
    from fractions import Fraction

    import av

    small, large = np.full((48, 64, 3), 100, np.uint8), np.full((*big, 3), 100, np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mjpeg", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        larger = av.CodecContext.create("mjpeg", "w")
        larger.width, larger.height, larger.pix_fmt, larger.time_base = big[1], big[0], "yuvj420p", Fraction(1, 30)
        for _ in range(2):
            for packet in stream.encode(av.VideoFrame.from_ndarray(small, format="rgb24")):
                container.mux(packet)
        for i in range(6):
            for packet in larger.encode(av.VideoFrame.from_ndarray(large, format="rgb24")):
                packet.stream, packet.pts, packet.dts = stream, 2 + i, 2 + i
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_video_whose_frames_grow_after_the_probe_is_refused_not_kept(tiny_bundle, tmp_path):
    """Issue 30, class 1 (video): the budget prices the stream's probed size, but an MJPEG AVI
    whose later frames grow (16000² in the fuzz) took 4+ GB. A frame of another size than the
    stream declared is refused before it is converted or kept."""
    path = _growing_avi(tmp_path / "grow.avi", (96, 128))
    good = make_video(tmp_path / "ok.avi", echo_frames(8, 48, 64, seed=1))
    result = run_cli("embed", path, good, "-w", "tiny", "-f", "jsonl")
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert result.exit_code == 1 and records["ok.avi"]["error"] is None, result.stderr
    assert "frame 2 is 96×128, the stream declared 48×64" in records["grow.avi"]["error"]


def test_a_frames_file_is_priced_before_it_is_loaded(tiny_bundle, tmp_path, monkeypatch):
    """Issue 30, class 1 (frame files): a preprocessed file's frames are priced from its header
    against the decode budget before they are loaded; good inputs beside it keep their records."""
    from echoclip_cli.media.store_file import write_clip_file

    cfg = PreprocessConfig.from_dict(json.loads((tiny_bundle.root / "echoclip.json").read_text())["preprocess_cfg"])
    size = cfg.image_size
    meta = {"source": "fake", "source_sha256": "0" * 64, "preprocess": cfg.to_dict(),
            "preprocess_digest": cfg.digest(), "frame_indices": list(range(64))}
    big = write_clip_file(tmp_path / "big.safetensors", torch.zeros(64, 3, size, size, dtype=torch.uint8), meta)
    good = make_video(tmp_path / "ok.avi", echo_frames(8, 48, 64, seed=1))
    monkeypatch.setenv("ECHOCLIP_DECODE_MB", "0.5")  # the file's 64 frames need 0.75 MB
    result = run_cli("embed", big, good, "-w", "tiny", "-f", "jsonl")
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert result.exit_code == 1 and records["ok.avi"]["error"] is None, result.stderr
    assert "over the decode budget" in records["big.safetensors"]["error"]


def test_a_home_that_cannot_keep_a_salt_gives_one_salt_shared_by_the_decode_workers(tiny_bundle, _hermetic_home,
                                                                                     tmp_path):
    """Issue 30, class 5: where the salt file cannot be made (here its name is taken by a folder,
    which stops root as well as a read-only home would), DICOM inputs failed, blamed on the
    input. Now the run gets a salt of its own, with a warning, resolved once and handed to the
    decode workers: two files of one patient decoded in different workers get one patient key."""
    from echoclip_cli.errors import EchoclipWarning
    from echoclip_cli.media import phi

    (_hermetic_home / phi.SALT_FILE).mkdir()
    phi._PROCESS_SALT.clear()
    files = [make_dicom(tmp_path / f"{i}.dcm", echo_frames(6, 48, 64, seed=i), "rgb", seed=i,
                        patient={"PatientID": "SAME-PATIENT"}) for i in range(4)]
    with pytest.warns(EchoclipWarning, match="cannot keep a patient-key salt"):
        result = run_cli("embed", *files, "-w", "tiny", "--workers", "2", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = _jsonl(result.stdout)
    assert len(records) == 4 and all(r["error"] is None for r in records)
    assert len({r["patient_key"] for r in records}) == 1 and records[0]["patient_key"]
    phi._PROCESS_SALT.clear()


def _sof_patched(stream: bytes, height: int, width: int) -> bytes:
    """A JPEG codestream whose start-of-frame header declares ``height`` × ``width`` (the data
    stays the small image's): what a decoder allocates is what the header says."""
    at = stream.index(b"\xff\xc0")
    return stream[:at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + stream[at + 9:]


def test_under_a_4_gb_memory_limit_every_memory_case_is_one_error_and_good_files_keep_their_records(
        tiny_bundle, tmp_path):
    """Issue 30's done-when for class 1: under ``prlimit --as=4G`` a run mixing good files with
    each memory case — JPEG frames whose own header declares 30000² (2.7 GB decoded) in a DICOM
    that says 96×128, a DICOM header promising 30000² × 200 frames, an MJPEG AVI whose frames grow
    after the probe, a frames file claiming 100,000 model-size frames — gives every good file's
    record and exactly one error per bad input."""
    import shutil

    import pydicom

    from echoclip_cli.media.store_file import write_clip_file
    from tests.media_factory import jpeg_dicom, jpeg_frames

    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "good.avi", echo_frames(8, 48, 64, seed=1))
    make_dicom(folder / "good.dcm", echo_frames(8, 48, 64, seed=2), "jpeg", seed=5)
    streams = jpeg_frames(echo_frames(4, 96, 128, seed=3))
    jpeg_dicom(folder / "sof_bomb.dcm", [_sof_patched(s, 30000, 30000) for s in streams], 96, 128, seed=6)
    promise = make_dicom(folder / "header_bomb.dcm", echo_frames(2, 48, 64, seed=4), "rgb", seed=7)
    ds = pydicom.dcmread(promise)
    ds.Rows = ds.Columns = 30000
    ds.NumberOfFrames = 200
    ds.save_as(promise)
    _growing_avi(folder / "grow_bomb.avi", (4096, 4096))  # frames 2… 4096² (50 MB each as RGB), the probe 48×64
    cfg = PreprocessConfig.from_dict(json.loads((tiny_bundle.root / "echoclip.json").read_text())["preprocess_cfg"])
    meta = {"source": "fake", "source_sha256": "1" * 64, "preprocess": cfg.to_dict(),
            "preprocess_digest": cfg.digest(), "frame_indices": list(range(2))}
    frames_bomb = write_clip_file(folder / "frames_bomb.safetensors",
                                  torch.zeros(2, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8), meta)
    raw = bytearray(frames_bomb.read_bytes())  # the header now claims 100,000 frames (the data is 2)
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"][0] = 100_000
    header[name]["data_offsets"][1] = 100_000 * 3 * cfg.image_size ** 2
    text = json.dumps(header).encode()
    frames_bomb.write_bytes(len(text).to_bytes(8, "little") + text + bytes(raw[8 + length:]))

    command = ["prlimit", f"--as={4 * 1024 ** 3}", sys.executable, "-m", "echoclip_cli", "embed", "--dir", folder,
               "-w", "tiny", "-f", "jsonl", "--no-cache"]
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, env={**os.environ})
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(done.stdout)}
    assert done.returncode == 1, done.stderr[-2000:]
    assert set(records) == {"good.avi", "good.dcm", "sof_bomb.dcm", "header_bomb.dcm", "grow_bomb.avi",
                            "frames_bomb.safetensors"}, done.stderr[-2000:]
    assert records["good.avi"]["error"] is None and records["good.dcm"]["error"] is None
    bad = {name: r["error"] for name, r in records.items() if name.endswith(("_bomb.dcm", "_bomb.avi", "_bomb.safetensors"))}
    assert all(bad.values()), bad
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr


def test_a_frames_file_claiming_another_inputs_sha256_does_not_take_its_place(tiny_bundle, tmp_path):
    """Issue 30, class 9: a preprocessed file whose metadata names another input's sha256 was
    taken for that input: skipped by a store that holds it, and handed its cached embeddings.
    The claim now counts only when this home signed it for these frames."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import save_file

    import echoclip_cli
    from echoclip_cli.files import sha256_file

    model = echoclip_cli.load_model("tiny", device="cpu")
    a = make_dicom(tmp_path / "a.dcm", echo_frames(12, 48, 64, seed=1), "jpeg", seed=1)
    b = make_dicom(tmp_path / "b.dcm", echo_frames(12, 48, 64, seed=2), "jpeg", seed=2)
    out = tmp_path / "frames"
    assert run_cli("preprocess", b, "--out", out, "-w", "tiny").exit_code == 0
    (made,) = out.glob("*.safetensors")
    honest = list(echoclip_cli.embed(model, [made]))[0]
    assert honest.error is None
    with safe_open(str(made), framework="pt") as fh:
        frames, meta = fh.get_tensor("frames"), _json.loads(fh.metadata()["echoclip"])
    assert meta["source_sha256"] == sha256_file(b)  # signed here: it stands for b
    meta["source_sha256"] = sha256_file(a)  # forged: it says it was made from a
    forged = tmp_path / "forged.safetensors"
    save_file({"frames": frames}, str(forged), metadata={"echoclip": _json.dumps(meta)})
    store = tmp_path / "a.store"
    assert [r.error for r in echoclip_cli.embed(model, [a], out=store)] == [None]  # a is stored and cached
    records = list(echoclip_cli.embed(model, [forged], out=store))
    assert len(records) == 1 and records[0].error is None  # not skipped as "already in the store"
    np.testing.assert_allclose(records[0].embedding, honest.embedding, atol=1e-6)  # b's frames, not a's cache
    from echoclip_cli.identity import input_key

    assert input_key(forged) == sha256_file(forged) and input_key(made) == sha256_file(b)


def test_a_rotated_mp4_is_turned_upright_as_a_player_shows_it(tiny_bundle, tmp_path):
    """Issue 30, class 9: an MP4 stored sideways with a display matrix (rotate 90°) was embedded
    unrotated: the model saw what no viewer shows. Its frames are now turned upright (and the
    record's metadata says so); the same clip stored upright gives the same frames."""
    import av

    from echoclip_cli.media.clip import read_frames

    def write(path, frames, rotation=None):
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264rgb", rate=30)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
            stream.options = {"crf": "0", "preset": "ultrafast"}
            if rotation is not None:
                stream.set_display_rotation(rotation)
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path

    upright = echo_frames(6, 64, 48, seed=3)  # portrait, as shown
    stored = np.ascontiguousarray(np.rot90(upright, k=-1, axes=(1, 2)))  # stored turned clockwise: landscape
    sideways = write(tmp_path / "sideways.mp4", stored, rotation=90)
    plain = write(tmp_path / "plain.mp4", upright)
    got, meta = read_frames(sideways, [0, 2, 4])
    want, _ = read_frames(plain, [0, 2, 4])
    assert got.shape == want.shape == (3, 64, 48, 3) and meta["rotation"] == 90
    np.testing.assert_array_equal(got, want)


def test_an_avi_whose_index_lies_is_one_error_not_a_one_frame_clip(tiny_bundle, tmp_path):
    """Issue 30, class 9: an AVI whose index points every frame at frame 0 gave one frame and a
    plausible record. A container that declares far more frames than can be read is refused."""
    import struct

    good = make_video(tmp_path / "good.avi", echo_frames(8, 48, 64, seed=2))
    liar = make_video(tmp_path / "liar.avi", echo_frames(8, 48, 64, seed=1), codec="mjpeg")
    data = bytearray(liar.read_bytes())
    at = data.rfind(b"idx1")
    first = data[at + 16:at + 24]  # offset and size of frame 0's entry
    for k in range(struct.unpack("<I", data[at + 4:at + 8])[0] // 16):
        entry = at + 8 + 16 * k
        if data[entry:entry + 4] == b"00dc":
            data[entry + 8:entry + 16] = first
    liar.write_bytes(bytes(data))
    result = run_cli("embed", liar, good, "-w", "tiny", "-f", "jsonl")
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert result.exit_code == 1 and records["good.avi"]["error"] is None, result.stderr
    assert "declares 8 frames but only 1 could be read" in records["liar.avi"]["error"]


def test_weights_optimise_on_a_full_disk_is_one_line_and_leaves_nothing_behind(tiny_bundle, monkeypatch):
    """Issue 30, class 5: on a full disk the compiler's failure (a C++ backtrace) ended
    `weights optimise`, and was remembered as "cannot compile on this CPU" for good. Now: one
    line, exit 1, no staging folder and no failure record (the next run tries again)."""
    import torch._inductor

    from echoclip_cli.backends import compiled

    def full(*args, **kwargs):
        raise RuntimeError("std::runtime_error: write failed: No space left on device\n"
                           "Exception raised from save at /pytorch/aten/src/ATen/cpp/serialize.cpp:42 (most recent "
                           "call first):\nframe #0: c10::Error::Error(...)")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", full)
    result = run_cli("weights", "optimise", "tiny")
    assert result.exit_code == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0] and "frame #0" not in result.stderr
    target = compiled.folder(tiny_bundle)
    assert not (target / "failed.json").exists()
    assert not [p for p in target.parent.glob("*") if ".build" in p.name]  # no staging folder left


def test_a_jpeg_frame_cut_short_with_its_end_marker_put_back_is_refused(tiny_bundle, tmp_path):
    """Issue 30, class 9: a frame whose scan data is cut and whose end-of-image marker is put back
    passed the truncation check and decoded with its lower part made up (exact mid-grey fill)."""
    from tests.media_factory import jpeg_dicom, jpeg_frames

    streams = jpeg_frames(echo_frames(4, 96, 128, seed=3))
    sos = streams[2].index(b"\xff\xda")
    streams[2] = streams[2][:sos + (len(streams[2]) - sos) // 2] + b"\xff\xd9"
    cut = jpeg_dicom(tmp_path / "cut.dcm", streams, 96, 128, seed=8)
    good = make_dicom(tmp_path / "good.dcm", echo_frames(4, 96, 128, seed=4), "jpeg", seed=9)
    result = run_cli("embed", cut, good, "-w", "tiny", "-f", "jsonl", "--no-cache")
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert result.exit_code == 1 and records["good.dcm"]["error"] is None, result.stderr
    assert "frame 2's JPEG data is cut short" in records["cut.dcm"]["error"]
