"""Proteomics tables as they come: linkmix against an lme4 loop, same run, as ratios.

Cases (lme4 and linkmix alternate, medians of ``--repeats`` runs; the machine is noisy):

1. ``simulated``: ``linkmix.datasets.simulate_msstats`` (1,000 peptides, 3 conditions ×
   3 biological replicates × 2 runs, 1–6 features per peptide, 5% of intensities
   missing at random), ``log2Intensity ~ Condition + Feature + (1 | BioReplicate)`` per
   peptide: time per fit in process (``fit_groups``, one core, against the R loop
   alone), and whole commands (``linkmix batch`` against ``Rscript`` reading the table
   and looping, start-up included).
2. ``DDASkyline`` per peptide and per precursor, ``DDA`` per protein (MSstats' own
   example tables, from ``tests/data``): whole commands.
3. ``per-protein``: the Skyline proteins' feature models (n ≈ 700–1,900, p ≈ 60–160):
   time per fit in process and the peak resident memory the fits add (``/usr/bin/time``'s
   maximum RSS of a process that reads the table and fits every protein, minus one that
   reads it and fits only the smallest, so both have loaded and used their libraries).

Usage: ``python benchmarks/msstats_lme4.py [--repeats 3] [--peptides 1000]``.
Needs R with lme4.  For whole-command figures run it with the Python of an installed
linkmix (as ``run.sh`` installs it), not an editable one: an editable install checks
its build each time it starts (~0.2 s here).
"""

from __future__ import annotations

import argparse
import gzip
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

import linkmix

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"
PEPTIDE_MODEL = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"

R_LOOP = r"""
suppressMessages(library(lme4))
invisible(Sys.setlocale("LC_COLLATE", "C"))
args <- commandArgs(trailingOnly = TRUE)   # csv, by (a+b), formula, repeats, fit (0/1)
d <- read.csv(args[1])
if (is.null(d$log2Intensity)) {
  d$Intensity[!is.na(d$Intensity) & d$Intensity <= 0] <- NA
  d$log2Intensity <- log2(d$Intensity)
}
f <- as.formula(args[3])
by <- strsplit(args[2], "+", fixed = TRUE)[[1]]
for (col in setdiff(all.vars(f), "log2Intensity")) d[[col]] <- factor(as.character(d[[col]]))
groups <- split(d, d[by], drop = TRUE)
times <- numeric(as.integer(args[4]))
if (args[5] == "0") {  # the baseline of memory: lme4 loaded and used on one small group
  g <- groups[[which.min(sapply(groups, nrow))]]
  m <- suppressWarnings(suppressMessages(lmer(f, droplevels(g), REML = FALSE)))
} else for (r in seq_along(times)) {
  t0 <- proc.time()[["elapsed"]]
  for (g in groups) m <- tryCatch(suppressWarnings(suppressMessages(
    lmer(f, droplevels(g), REML = FALSE))), error = function(e) NULL)
  times[r] <- proc.time()[["elapsed"]] - t0
}
cat(sprintf("seconds=%.6f groups=%d\n", median(times), length(groups)))
"""

PY_READ_AND_FIT = r"""
import sys, warnings
import numpy as np, pandas as pd, linkmix
warnings.simplefilter("ignore")
table = pd.read_csv(sys.argv[1])
if "log2Intensity" not in table:
    table["log2Intensity"] = np.log2(table.Intensity.where(table.Intensity > 0))
table["Condition"] = table.Condition.astype(str)
by = sys.argv[2].split("+")
if sys.argv[3] == "0":  # the baseline of memory: linkmix loaded and used on one small group
    sizes = table.groupby(by).size()
    table = table.set_index(by).loc[[sizes.idxmin()]].reset_index()
linkmix.fit_groups(table, by, sys.argv[4], REML=False, n_jobs=1)
"""


def peak_rss_mb(command) -> float:
    """Maximum resident set size of ``command`` (``/usr/bin/time -f %M``), MB."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True,
                         text=True, check=True).stderr.strip().splitlines()[-1]
    return int(out) / 1024


def wall(command) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - start


def r_loop_seconds(script, csv, by, formula) -> tuple[float, int]:
    out = subprocess.run(["Rscript", str(script), str(csv), "+".join(by), formula, "1", "1"],
                         capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=") for item in out.split())
    return float(fields["seconds"]), int(fields["groups"])


def in_process(csv, by, formula, repeats, script) -> dict:
    """Per fit in process: fit_groups on one core against the R loop alone."""
    table = pd.read_csv(csv)
    if "log2Intensity" not in table:
        table["log2Intensity"] = np.log2(table.Intensity.where(table.Intensity > 0))
    table["Condition"] = table.Condition.astype(str)
    mine, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        linkmix.fit_groups(table, by, formula, REML=False, n_jobs=1)
        mine.append(time.perf_counter() - start)
        seconds, groups = r_loop_seconds(script, csv, by, formula)
        theirs.append(seconds)
    return {"linkmix": statistics.median(mine), "lme4": statistics.median(theirs),
            "groups": groups}


def whole(csv, by, formula, repeats, script, tmp, jobs=1) -> dict:
    """Whole commands: `linkmix batch` against Rscript (start-up and reading included)."""
    linkmix_cmd = [str(pathlib.Path(sys.executable).with_name("linkmix")), "batch", str(csv),
                   *sum([["--by", b] for b in by], []), "--formula", formula, "--ml",
                   "-o", str(tmp / "out.csv"), "--jobs", str(jobs), "--no-progress"]
    if "log2Intensity" not in pd.read_csv(csv, nrows=1):
        linkmix_cmd += ["--log2", "Intensity", "--factor", "Condition"]
    r_cmd = ["Rscript", str(script), str(csv), "+".join(by), formula, "1", "1"]
    mine, theirs = [], []
    for _ in range(repeats):
        mine.append(wall(linkmix_cmd))
        theirs.append(wall(r_cmd))
    return {"linkmix": statistics.median(mine), "lme4": statistics.median(theirs)}


def msstats_csv(name: str, tmp: pathlib.Path) -> pathlib.Path:
    target = tmp / f"{name}.csv"
    target.write_bytes(gzip.decompress((DATA / f"msstats_{name}.csv.gz").read_bytes()))
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peptides", type=int, default=1000)
    parser.add_argument("--case", choices=["all", "simulated", "tables", "protein"],
                        default="all")
    args = parser.parse_args(argv)
    if shutil.which("Rscript") is None:
        print("Rscript not found: lme4 is needed for the comparison")
        return 1
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        script = tmp / "loop.R"
        script.write_text(R_LOOP)
        sim = tmp / "simulated.csv"
        linkmix.datasets.simulate_msstats(args.peptides, seed=7, missing_rate=0.05).to_csv(
            sim, index=False)
        skyline, dda = msstats_csv("DDASkyline", tmp), msstats_csv("DDA", tmp)
        if args.case in ("all", "simulated"):
            simulated(args, sim, script, tmp)
        if args.case in ("all", "tables"):
            tables(args, skyline, dda, script, tmp)
        if args.case in ("all", "protein"):
            protein(args, skyline, script, tmp)
    return 0


def simulated(args, sim, script, tmp):
    """Case 1: per fit in process and whole commands on the simulated table."""
    print(f"simulated MSstats-like table: {args.peptides} peptides, 5% missing, "
          f"{PEPTIDE_MODEL} per peptide; medians of {args.repeats} alternating runs")
    r = in_process(sim, ["PeptideSequence"], PEPTIDE_MODEL, args.repeats, script)
    g = r["groups"]
    print(f"  per fit in process, one core: linkmix {1e3 * r['linkmix'] / g:.3f} ms, "
          f"lme4 loop {1e3 * r['lme4'] / g:.3f} ms: {r['lme4'] / r['linkmix']:.1f}x")
    for jobs in (1, 2):
        w = whole(sim, ["PeptideSequence"], PEPTIDE_MODEL, args.repeats, script, tmp, jobs)
        print(f"  whole command (linkmix --jobs {jobs}): linkmix {w['linkmix']:.2f} s, "
              f"Rscript {w['lme4']:.2f} s: {w['lme4'] / w['linkmix']:.1f}x")



def tables(args, skyline, dda, script, tmp):
    """Case 2: MSstats' example tables, whole commands."""
    print("MSstats example tables, whole commands (linkmix --jobs 1)")
    for name, csv, by, formula in [
            ("DDASkyline per peptide", skyline, ["PeptideSequence"],
             "log2Intensity ~ Condition + FragmentIon + (1 | BioReplicate)"),
            ("DDASkyline per precursor", skyline, ["PeptideSequence", "PrecursorCharge"],
             "log2Intensity ~ Condition + FragmentIon + (1 | BioReplicate)"),
            ("DDA per protein", dda, ["ProteinName"],
             "log2Intensity ~ Condition + Feature + (1 | Run)")]:
        w = whole(csv, by, formula, args.repeats, script, tmp)
        print(f"  {name:26s} linkmix {w['linkmix']:.2f} s, Rscript {w['lme4']:.2f} s: "
              f"{w['lme4'] / w['linkmix']:.1f}x")



def protein(args, skyline, script, tmp):
    """Case 3: per-protein feature models, time and memory."""
    print("DDASkyline per protein, Condition + Feature + (1 | BioReplicate) "
          "(6 proteins, n 666-1,928, p 60-159)")
    by, formula = ["ProteinName"], PEPTIDE_MODEL
    r = in_process(skyline, by, formula, args.repeats, script)
    g = r["groups"]
    print(f"  per fit in process: linkmix {1e3 * r['linkmix'] / g:.0f} ms, lme4 "
          f"{1e3 * r['lme4'] / g:.0f} ms: {r['lme4'] / r['linkmix']:.1f}x")
    py = tmp / "read_and_fit.py"
    py.write_text(PY_READ_AND_FIT)
    mem = {"linkmix": [], "lme4": []}
    for _ in range(args.repeats):
        mem["linkmix"].append(
            peak_rss_mb([sys.executable, str(py), str(skyline), "ProteinName", "1", formula])
            - peak_rss_mb([sys.executable, str(py), str(skyline), "ProteinName", "0", formula]))
        mem["lme4"].append(
            peak_rss_mb(["Rscript", str(script), str(skyline), "ProteinName", formula, "1", "1"])
            - peak_rss_mb(["Rscript", str(script), str(skyline), "ProteinName", formula, "1", "0"]))
    lm, rm = statistics.median(mem["linkmix"]), statistics.median(mem["lme4"])
    print(f"  peak memory the fits add: linkmix {lm:.0f} MB, lme4 {rm:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
