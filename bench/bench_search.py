"""Exact cosine top-k over one million 512-d vectors: query latency of echoclip's search.

    PYTHONPATH=src python bench/bench_search.py                # 1M vectors, 30 queries, k=10
    PYTHONPATH=src python bench/bench_search.py --rows 200000 --queries 20
    PYTHONPATH=src python bench/bench_search.py --device cuda       # the index held on the GPU

Builds ``--rows`` random L2-normalised float32 vectors (1M × 512 × 4 B = 2 GB; generated in
blocks so the peak stays near one copy), then times :class:`echoclip_cli.retrieval.VectorIndex`
queries: ``--warmup`` untimed queries first, then the median (and 90th percentile) of
``--queries`` single-vector queries. Building the index (the one-off load) is not timed. For
comparison it also times the same search in chunks of 65,536 rows, a plain ``torch.mm`` against
an (E,1) query, and fp16 storage (half the memory traffic) with its recall@k against the exact
fp32 answer. The variants take turns on every query, so noise from other tenants of shared cores
hits them alike. Prints one markdown row per variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _machine import cpu_name

from echoclip_cli.device import resolve_device
from echoclip_cli.retrieval import VectorIndex


def random_unit_rows(rows: int, dim: int, seed: int, device: torch.device, block: int = 1 << 16) -> torch.Tensor:
    """Made where they will be searched: on a GPU, a million rows take milliseconds, not seconds."""
    gen = torch.Generator(device).manual_seed(seed)
    out = torch.empty(rows, dim, device=device)
    for start in range(0, rows, block):
        chunk = torch.randn(min(block, rows - start), dim, generator=gen, device=device)
        out[start : start + len(chunk)] = torch.nn.functional.normalize(chunk, dim=1)
    return out


def time_interleaved(variants: dict[str, object], queries: torch.Tensor, warmup: int) -> dict[str, list[float]]:
    """Per variant, the milliseconds of each query; variants take turns on every query, so machine
    noise (other tenants on shared cores) hits them alike."""
    for q in queries[:warmup]:
        for search in variants.values():
            search(q)
    times: dict[str, list[float]] = {label: [] for label in variants}
    for q in queries[warmup:]:
        for label, search in variants.items():
            start = time.perf_counter()
            search(q)
            times[label].append((time.perf_counter() - start) * 1000)
    return times


def row(label: str, times: list[float], extra: str = "") -> str:
    p90 = sorted(times)[int(0.9 * (len(times) - 1))]
    return f"| {label} | {statistics.median(times):.1f} | {p90:.1f} | {len(times)} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=None, help="Rows per product (default: one product).")
    parser.add_argument("--skip-fp16", action="store_true")
    parser.add_argument("--device", default="cpu", help="where the index is held (cpu, cuda, auto)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    matrix = random_unit_rows(args.rows, args.dim, seed=0, device=device)
    queries = random_unit_rows(args.warmup + args.queries, args.dim, seed=1, device=device)
    start = time.perf_counter()
    index = VectorIndex(matrix, device=device, chunk_rows=args.chunk_rows)  # a normalised contiguous fp32 copy
    load_s = time.perf_counter() - start
    del matrix

    cuda = device.type == "cuda"
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads, {cpu_name()}"
    print(f"{args.rows:,} × {args.dim} vectors, k={args.k}, {where}, torch {torch.__version__}; "
          f"index build {load_s:.1f} s (not timed below)\n")
    print("| variant | median ms | p90 ms | queries | notes |")
    print("|---|---|---|---|---|")
    whole = index.matrix
    chunked = VectorIndex(whole, device=device, chunk_rows=65_536)  # shares nothing: another 2 GB copy
    variants = {
        "fp32, VectorIndex.search (torch.mv + topk) [echoclip]": lambda q: index.search(q, args.k),
        f"fp32, {-(-args.rows // 65_536)} chunks of 65,536 rows (torch.mv + topk, merged)":
            lambda q: chunked.search(q, args.k),
        "fp32, one torch.mm with an (E,1) query + topk":  # .cpu(): the answer in hand, as search gives it
            lambda q: torch.topk(torch.mm(whole, q[:, None])[:, 0], args.k).indices.cpu(),
    }
    notes = {label: "" for label in variants}
    notes[next(iter(variants))] = f"{args.rows * args.dim * 4 / 2**30:.2f} GiB"
    if not args.skip_fp16:
        half = VectorIndex(whole, dtype=torch.float16, device=device, chunk_rows=args.chunk_rows)
        label = "fp16 storage, VectorIndex.search"
        variants[label] = lambda q: half.search(q, args.k)
        measured = queries[args.warmup :]
        truth = [index.search(q, args.k)[1][0] for q in measured]
        found = [half.search(q, args.k)[1][0] for q in measured]
        recall = sum(len(set(a) & set(b)) for a, b in zip(truth, found)) / (args.k * len(truth))
        notes[label] = f"{args.rows * args.dim * 2 / 2**30:.2f} GiB; recall@{args.k} vs fp32 {recall:.3f}"
    for label, times in time_interleaved(variants, queries, args.warmup).items():
        print(row(label, times, notes[label]))


if __name__ == "__main__":
    main()
