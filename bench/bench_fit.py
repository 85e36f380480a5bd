"""Fitting a site head on 100,000 × 512 video embeddings: ridge with the zero-shot feature,
5-fold CV over 15 penalties, split-conformal calibration and the abstention distance.

    PYTHONPATH=src:. python bench/bench_fit.py                   # 100,000 rows, 3 repeats
    PYTHONPATH=src:. python bench/bench_fit.py --rows 20000 --kind binary

Times :func:`echoclip_cli.site.fit_head` (everything a fit does after the embeddings and labels
are in memory: the zero-shot feature from 202 EF prompts, the CV, the final fit, the conformal
quantile, the distance model) on planted float32 embeddings; prints the median of ``--repeats``
runs and the machine. Reading a store of that size is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from _machine import cpu_name

from echoclip_cli.options import FitOptions
from echoclip_cli.site import TrainingSet, fit_head, zero_shot_feature
from tests.site_factory import planted_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kind", choices=("regression", "binary"), default="regression")
    args = parser.parse_args()
    data = planted_embeddings(args.rows, seed=1)
    prompts = np.random.default_rng(2).standard_normal((202, data.X.shape[1]))
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    values = np.tile(np.arange(101, dtype=np.float64), 2)
    y = data.y if args.kind == "regression" else (data.y > 55).astype(float)
    groups = np.asarray([f"s{i}" for i in range(args.rows)])
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        zs = zero_shot_feature(args.kind, data.X, prompts, values if args.kind == "regression" else None)
        result = fit_head(TrainingSet(data.X, y, groups, zs), "ejection_fraction" if args.kind == "regression"
                          else "pacemaker", args.kind, FitOptions(), {})
        times.append(time.perf_counter() - start)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"| {args.rows:,} × {data.X.shape[1]} {args.kind} | median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}) | alpha {result.head.provenance['alpha']:.3g} | "
          f"{cpu_name()}, {os.cpu_count()} cores, BLAS threads {threads} |")


if __name__ == "__main__":
    main()
