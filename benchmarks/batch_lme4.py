"""Per-peptide fits, thousands at a time: linkmix.fit_groups against an lme4 loop.

Simulates a seed experiment (``linkmix.datasets.simulate_experiment``; by default 5%
of intensities missing at random, so groups have different layouts, as real tables
do), writes it to CSV, and times in the same run, alternating lme4 and linkmix
repeats (the machine is noisy; medians are reported):
* lme4: ``lmer`` on each peptide in an R loop (data already loaded; the loop only),
* linkmix: ``fit_groups`` on one core (n_jobs=1), unconstrained (the same model,
  ML) and constrained (M2), and on all cores,
then prints time per fit and the ratios.  Needs R with lme4 for the comparison.

Usage: ``python benchmarks/batch_lme4.py [--peptides 1000] [--repeats 3]
[--missing-rate 0.05]``
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import warnings

import linkmix
from _timing import median_seconds
from linkmix.examples import M2_CONSTRAINT, M2_FORMULA

PLAIN = "x ~ 1 + t2 + m2 + t2m1 + (0 + treatment || replicate)"

R_LOOP = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (col in c("treatment", "modification", "replicate")) d[[col]] <- factor(d[[col]])
groups <- split(d, d$peptide)
f <- x ~ 1 + t2 + m2 + t2m1 + (0 + dummy(treatment, "1") | replicate) +
     (0 + dummy(treatment, "2") | replicate)
times <- numeric(as.integer(args[2]))
for (r in seq_along(times)) {
  t0 <- proc.time()[["elapsed"]]
  for (g in groups) m <- suppressMessages(lmer(f, g, REML = FALSE))
  times[r] <- proc.time()[["elapsed"]] - t0
}
cat(sprintf("seconds=%.6f\n", median(times)))
"""


def lme4_loop(csv: pathlib.Path, tmp: pathlib.Path) -> float:
    """Seconds of one R loop over the peptides (R's start-up and reading excluded)."""
    script = tmp / "loop.R"
    script.write_text(R_LOOP)
    out = subprocess.run(["Rscript", str(script), str(csv), "1"], capture_output=True,
                         text=True, check=True).stdout
    return float(out.split("=")[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peptides", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--missing-rate", type=float, default=0.05)
    args = parser.parse_args(argv)
    data, _ = linkmix.datasets.simulate_experiment(args.peptides, seed=7,
                                                   missing_rate=args.missing_rate)
    g = args.peptides
    warnings.simplefilter("ignore")
    linkmix.fit_groups(data.head(160), "peptide", PLAIN, REML=False, n_jobs=1)  # warm up
    have_r = shutil.which("Rscript") is not None
    plain_times, lme4_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        csv = tmp / "experiment.csv"
        data.to_csv(csv, index=False)
        for _ in range(args.repeats):  # alternate, so both see the same machine
            plain_times.append(median_seconds(lambda: linkmix.fit_groups(
                data, "peptide", PLAIN, REML=False, n_jobs=1), 1, warmup=False))
            if have_r:
                lme4_times.append(lme4_loop(csv, tmp))
    plain = statistics.median(plain_times)
    constrained = median_seconds(lambda: linkmix.fit_groups(
        data, "peptide", M2_FORMULA, constraints=M2_CONSTRAINT, n_jobs=1), 1, warmup=False)
    pooled = median_seconds(lambda: linkmix.fit_groups(
        data, "peptide", PLAIN, REML=False, n_jobs=-1), 1, warmup=False)
    constrained_pooled = median_seconds(lambda: linkmix.fit_groups(
        data, "peptide", M2_FORMULA, constraints=M2_CONSTRAINT, n_jobs=-1), 1, warmup=False)
    print(f"{g} peptides, 16 observations each, {100 * args.missing_rate:g}% of intensities "
          f"missing; ms per fit (median of {args.repeats} alternating repeats where repeated)")
    print(f"  linkmix unconstrained, 1 core    {1000 * plain / g:8.3f}")
    print(f"  linkmix constrained M2, 1 core   {1000 * constrained / g:8.3f}")
    print(f"  linkmix unconstrained, all cores {1000 * pooled / g:8.3f}")
    print(f"  linkmix constrained, all cores   {1000 * constrained_pooled / g:8.3f}")
    if not have_r:
        print("Rscript not found: lme4 not measured")
        return 0
    lme4 = statistics.median(lme4_times)
    print(f"  lme4 lmer loop (unconstrained)   {1000 * lme4 / g:8.3f}")
    print(f"ratios (lme4 / linkmix): unconstrained {lme4 / plain:.1f}x, "
          f"constrained {lme4 / constrained:.1f}x, unconstrained all cores {lme4 / pooled:.1f}x, "
          f"constrained all cores {lme4 / constrained_pooled:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
