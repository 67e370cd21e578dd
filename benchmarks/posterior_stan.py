"""Posterior sampling against Stan in the same run: draws and effective draws per second.

Two models, each with the same priors on both sides (tests/data/make_stan_posteriors.R):
sleepstudy ``Reaction ~ Days + (Days | Subject)`` (Stan: brms's program) and the seed
model's linked-mean form on tests/data/stan/seed_peptide.csv (Stan:
tests/data/stan/seed_linked_mean.stan).  Each side draws 4 chains × (1000 warm-up +
1000 draws), one chain after another on one core.  Stan's time is its own elapsed
warm-up + sampling (compilation is cached and not timed); linkmix's is ``fit.sample``
(the maximum-likelihood fit before it is not timed either).  Rounds alternate R and
Python (the machine is noisy); the table shows medians over rounds.

Needs R with brms (apt-get install r-cran-brms r-cran-bh; on Debian 12, BH's headers
are the system's: ``ln -s /usr/include/boost /usr/lib/R/site-library/BH/include/boost``).

Usage: ``python benchmarks/posterior_stan.py [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import tempfile
import time
import warnings

import arviz
import pandas as pd

import linkmix
from linkmix import examples

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"
SEED_PRIORS = {"t2m1": "normal(0, 5)", "t2m2": "normal(0, 5)"}


def linkmix_fits():
    sleep = linkmix.datasets.load("sleepstudy")
    peptide = pd.read_csv(DATA / "stan" / "seed_peptide.csv",
                          dtype={"treatment": str, "modification": str, "replicate": str})
    return {"sleepstudy": (linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleep,
                                        REML=False), {}),
            "seed_linked_mean": (linkmix.lmer(examples.M1_FORMULA, peptide,
                                              mean=examples.M1_MEAN, n_starts=5),
                                 SEED_PRIORS)}


def linkmix_round(fits, seed):
    out = {}
    for name, (fit, prior) in fits.items():
        start = time.perf_counter()
        idata = fit.sample(draws=1000, tune=1000, chains=4, seed=seed, prior=prior,
                           progress=False)
        seconds = time.perf_counter() - start
        ess = arviz.ess(idata, var_names=list(fit.params["name"]))
        out[name] = {"seconds": seconds, "draws": 4000,
                     "min_ess_bulk": float(ess.to_array().min()),
                     "divergent": int(idata.sample_stats["diverging"].sum())}
    return out


def stan_round(cache, seed):
    result = subprocess.run(["Rscript", str(HERE / "posterior_stan.R"), str(DATA), cache,
                             str(seed)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fits = linkmix_fits()
    with tempfile.TemporaryDirectory() as cache:
        stan_round(cache, 0)                      # compiles and caches both models
        rounds = []
        for k in range(args.rounds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rounds.append((stan_round(cache, k + 1), linkmix_round(fits, k + 1)))
    print(f"{'model':18s} {'side':8s} {'seconds':>8s} {'draws/s':>8s} {'ESS/s':>8s} "
          f"{'min ESS':>8s} {'diverg.':>7s}")
    for name in fits:
        medians = {}
        for side, index in (("Stan", 0), ("linkmix", 1)):
            runs = [r[index][name] for r in rounds]
            seconds = statistics.median(r["seconds"] for r in runs)
            ess = statistics.median(r["min_ess_bulk"] for r in runs)
            ess_rate = statistics.median(r["min_ess_bulk"] / r["seconds"] for r in runs)
            medians[side] = (seconds, ess_rate)
            print(f"{name:18s} {side:8s} {seconds:8.2f} {4000 / seconds:8.0f} {ess_rate:8.0f} "
                  f"{ess:8.0f} {sum(r['divergent'] for r in runs):7d}")
        print(f"{name:18s} Stan time / linkmix time {medians['Stan'][0] / medians['linkmix'][0]:.2f}×; "
              f"ESS/s linkmix / Stan {medians['linkmix'][1] / medians['Stan'][1]:.2f}×")


if __name__ == "__main__":
    main()
