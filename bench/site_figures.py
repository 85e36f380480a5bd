"""The statistical figures of a site head on planted embeddings (issue 27's "Done when").

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src:. python bench/site_figures.py          # a table
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src:. python bench/site_figures.py --json   # for tests/test_site.py

Planted data (tests/site_factory.py): unit-norm 512-d embeddings near an 8-d latent space, labels
from a planted linear function of the embedding (mean 55, SD 10) plus heteroscedastic noise
(SD 2 + 3|z₁|), and a cluster shifted off the distribution. Figures:

- ``r2_ratio``: the head's R² over the true linear model's, on 5,000 test rows, fitted on n = 200
  labelled rows (150 train, 50 held out to calibrate);
- ``coverage_mean``: the empirical coverage of 90 % conformal intervals, averaged over
  ``--splits`` random splits (each: 200 labelled rows drawn from a pool of 1,200, the head fitted
  and calibrated on them with the split's seed, coverage measured on the other 1,000);
- ``shifted_abstain`` and ``inside_abstain``: the share of a shifted cluster (1,000 rows) and of
  in-distribution inputs (5,000 rows) that abstain.

Fixed seeds: the numbers are the same on every run. One BLAS thread is faster here on shared cores
(a thousand small eigendecompositions).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from echoclip_cli import evaluation as E
from echoclip_cli.options import FitOptions
from echoclip_cli.site import TrainingSet, fit_head
from tests.site_factory import planted_embeddings


def figures(splits: int) -> dict[str, float]:
    options = FitOptions(zero_shot=False)
    pool, test = planted_embeddings(200, seed=1), planted_embeddings(5000, seed=100)
    groups = np.asarray([f"s{i}" for i in range(200)])
    head = fit_head(TrainingSet(pool.X, pool.y, groups), "ejection_fraction", "regression", options, {}).head
    r2_ratio = E.r2(test.y, head.predict(test.X).value) / E.r2(test.y, test.signal)
    inside = float(head.predict(test.X).abstain.mean())
    shifted = float(head.predict(planted_embeddings(1000, seed=101, shift=0.3).X).abstain.mean())
    big = planted_embeddings(1200, seed=10)
    coverages, widths = [], []
    for split in range(splits):
        order = np.random.default_rng(split).permutation(1200)
        labelled, rest = order[:200], order[200:]
        fitted = fit_head(TrainingSet(big.X[labelled], big.y[labelled], groups), "ejection_fraction", "regression",
                          options.replace(seed=split), {}).head
        out = fitted.predict(big.X[rest])
        coverages.append(float(np.mean((big.y[rest] >= out.low) & (big.y[rest] <= out.high))))
        widths.append(2 * fitted.quantile)
    return {"r2_ratio": round(float(r2_ratio), 4), "r2_head": round(E.r2(test.y, head.predict(test.X).value), 4),
            "r2_true": round(E.r2(test.y, test.signal), 4), "coverage_mean": round(float(np.mean(coverages)), 4),
            "coverage_sd": round(float(np.std(coverages)), 4), "interval_width_mean": round(float(np.mean(widths)), 3),
            "splits": splits, "shifted_abstain": shifted, "inside_abstain": inside}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    start = time.perf_counter()
    found = figures(args.splits)
    found["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps(found))
        return
    for key, value in found.items():
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
