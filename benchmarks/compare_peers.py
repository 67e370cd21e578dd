"""linkmix against glmm, mixedlm (Python, Rust cores) and lme4 (R), in one run.

Every row times the four packages on the same data in the same run.  Each round
runs each package in turn (the machine is noisy: turns alternate), a package's time
in a round is the median of its repeats after one untimed fit, and the table shows
the median over rounds.  Ratios above 1 mean linkmix is faster.

What is timed, per package (ML fits, data already loaded):
* linkmix: ``lmer(...)`` and its ``coef_table()`` (Satterthwaite t tests);
* glmm: ``glmm.fit(data, formula, reml=False)`` (Satterthwaite t tests by default);
* mixedlm: ``mixedlm.lmer(formula, data, REML=False)``;
* lme4: ``lmer`` inside R (its own loop; R's start-up not counted).
Per-group rows fit one model per peptide: ``linkmix.fit_groups`` (one core) against a
plain loop of each peer's fit over the groups.  The seed rows are linkmix's linked
fits (no peer fits them) against lme4's plain fit of the same peptide.

Usage::

    python benchmarks/compare_peers.py [--cases small,groups,seed,insteval]
                                       [--rounds 3] [--reps 30] [--peptides 1000]

Needs ``pip install glmm mixedlm`` (the ``bench`` extra) and R with lme4; a peer that
is missing is left out of the table.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
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
import linkmix.datasets
from linkmix.examples import M1_FORMULA, M1_MEAN, M2_CONSTRAINT, M2_FORMULA
from _timing import median_seconds

HERE = pathlib.Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (col in strsplit(args[3], ",")[[1]]) d[[col]] <- factor(d[[col]])
f <- as.formula(args[2]); reps <- as.integer(args[4]); by <- args[5]
groups <- if (by == "") list(d) else split(d, d[[by]])
fit <- function() for (g in groups) m <<- suppressMessages(lmer(f, g, REML = FALSE))
fit()
times <- numeric(reps)
for (i in seq_len(reps)) {
  t0 <- proc.time()[["elapsed"]]; fit(); times[i] <- proc.time()[["elapsed"]] - t0
}
cat(sprintf("%.9f %.12f\n", median(times) / length(groups), deviance(m)))
"""


def _distribution_version(name: str) -> str:
    """The installed distribution's version (glmm has no ``__version__``), or "?"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def peptide_16() -> pd.DataFrame:
    """One MSstats-like peptide: 2 conditions × 4 biological replicates × 2 runs."""
    return linkmix.datasets.simulate_msstats(1, n_conditions=2, n_bioreplicates=4, n_runs=2,
                                             n_features=(1, 1), missing_rate=0.0)


def load(stem: str) -> pd.DataFrame:
    if stem in linkmix.datasets.names():
        return linkmix.datasets.load(stem)
    return pd.read_csv(SHARED / f"{stem}.csv")


def single_cases():
    pastes = load("Pastes")
    return {
        "sleepstudy `Reaction ~ Days + (Days|Subject)`":
            (load("sleepstudy"), "Reaction ~ Days + (Days | Subject)", ["Subject"]),
        "Penicillin `(1|plate) + (1|sample)`":
            (load("Penicillin"), "diameter ~ 1 + (1 | plate) + (1 | sample)",
             ["plate", "sample"]),
        "Pastes `(1|batch) + (1|sample)`":
            (pastes.assign(sample=pastes["sample"].astype(str)),
             "strength ~ 1 + (1 | batch) + (1 | sample)", ["batch", "sample"]),
        "16-row peptide `log2Intensity ~ Condition + (1|BioReplicate)`":
            (peptide_16(), "log2Intensity ~ Condition + (1 | BioReplicate)",
             ["Condition", "BioReplicate"]),
    }


def peers():
    found = {}
    for name in ("glmm", "mixedlm"):
        try:
            found[name] = importlib.import_module(name)
        except ImportError:
            print(f"({name} is not installed: pip install {name})", file=sys.stderr)
    return found


def python_fitters(formula: str, modules: dict) -> dict:
    """name → data → one fit (with t tests where the package gives them by default)."""
    out = {"linkmix": lambda d: linkmix.lmer(formula, d, REML=False).coef_table()}
    if "glmm" in modules:
        out["glmm"] = lambda d: modules["glmm"].fit(d, formula, reml=False)
    if "mixedlm" in modules:
        out["mixedlm"] = lambda d: modules["mixedlm"].lmer(formula, d, REML=False)
    return out


def run_lme4(data: pd.DataFrame, formula: str, factors, reps: int, by: str = "") -> float | None:
    """lme4's seconds per fit (R's own loop), or None without R."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = pathlib.Path(tmp) / "d.csv", pathlib.Path(tmp) / "fit.R"
        data.to_csv(csv, index=False)
        script.write_text(R_SCRIPT)
        out = subprocess.run(["Rscript", str(script), str(csv), formula, ",".join(factors),
                              str(reps), by], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return float(out.stdout.split()[0])


def rounds_of(timers: dict, rounds: int) -> dict:
    """name → median over ``rounds`` of its seconds, the timers taking turns."""
    seen = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            value = timer()
            if value is not None:
                seen[name].append(value)
    return {name: statistics.median(v) for name, v in seen.items() if v}


def small_rows(modules, rounds, reps):
    rows = []
    for label, (data, formula, factors) in single_cases().items():
        timers = {name: (lambda fit=fit: median_seconds(lambda: fit(data), reps))
                  for name, fit in python_fitters(formula, modules).items()}
        timers["lme4"] = lambda: run_lme4(data, formula, factors, reps)
        rows.append((label, rounds_of(timers, rounds)))
    return rows


def group_rows(modules, rounds, peptides):
    data = linkmix.datasets.simulate_msstats(peptides, n_features=(1, 1))
    data = data.dropna(subset=["log2Intensity"]).reset_index(drop=True)
    formula = "log2Intensity ~ Condition + (1 | BioReplicate)"
    groups = [g for _, g in data.groupby("PeptideSequence", sort=False)]
    n = len(groups)
    fitters = python_fitters(formula, modules)

    def loop(fit):
        def run():
            start = time.perf_counter()
            for g in groups:
                try:
                    fit(g)
                except Exception:  # a peer refusing a group still spent its time
                    pass
            return (time.perf_counter() - start) / n
        return run

    def batch():
        start = time.perf_counter()
        linkmix.fit_groups(data, "PeptideSequence", formula, REML=False, n_jobs=1)
        return (time.perf_counter() - start) / n

    timers = {"linkmix": batch}
    timers.update({name: loop(fit) for name, fit in fitters.items() if name != "linkmix"})
    timers["linkmix loop"] = loop(fitters["linkmix"])
    timers["lme4"] = lambda: run_lme4(data, formula, ["Condition", "BioReplicate"], 1,
                                      by="PeptideSequence")
    return [(f"{n:,} MSstats-like peptides (5% missing), per fit, with t tests",
             rounds_of(timers, rounds))]


def seed_rows(rounds, reps):
    data = linkmix.datasets.simulate_peptide(1)
    plain = "x ~ treatment + modification + (1 | replicate)"
    timers = {
        "linkmix M2 + summary": lambda: median_seconds(
            lambda: str(linkmix.lmer(M2_FORMULA, data, constraints=M2_CONSTRAINT).summary()),
            reps),
        "linkmix M1": lambda: median_seconds(lambda: linkmix.lmer(M1_FORMULA, data, mean=M1_MEAN),
                                       max(3, reps // 3)),
        "lme4": lambda: run_lme4(data, plain, ["treatment", "modification", "replicate"], reps),
    }
    times = rounds_of(timers, rounds)
    return [("seed peptide, M2 (constraint) with its summary",
             {"linkmix": times["linkmix M2 + summary"], "lme4": times.get("lme4")}),
            ("seed peptide, M1 (linked mean)",
             {"linkmix": times["linkmix M1"], "lme4": times.get("lme4")})]


def insteval_rows(modules, rounds):
    path = HERE.parent / "tests" / "data" / "InstEval.csv.gz"
    data = pd.read_csv(path)
    for col in ("s", "d", "dept", "service"):
        data[col] = data[col].astype(str)
    formula = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"
    timers = {name: (lambda fit=fit: median_seconds(lambda: fit(data), 1))
              for name, fit in python_fitters(formula, modules).items()}
    timers["lme4"] = lambda: run_lme4(data, formula, ["s", "d", "dept", "service"], 1)
    return [("InstEval ML `service + (1|s) + (1|d) + (1|dept:service)`",
             rounds_of(timers, rounds))]


def milliseconds(value):
    return "" if value is None else f"{value * 1e3:.2f} ms"


def print_table(rows):
    columns = ["linkmix", "glmm", "mixedlm", "lme4"]
    print("| case | " + " | ".join(columns) + " | glmm / linkmix | lme4 / linkmix |")
    print("|---|" + "---|" * (len(columns) + 2))
    for label, times in rows:
        ours = times["linkmix"]
        cells = [milliseconds(times.get(c)) for c in columns]
        ratios = [f"{times[c] / ours:.2f}×" if times.get(c) else "" for c in ("glmm", "lme4")]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        if "linkmix loop" in times:
            print(f"| … as a loop of `lmer` | {milliseconds(times['linkmix loop'])} | | | | "
                  f"{times['glmm'] / times['linkmix loop']:.2f}× | |" if "glmm" in times else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="small,groups,seed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--peptides", type=int, default=1000)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    modules = peers()
    rows = []
    cases = args.cases.split(",")
    if "small" in cases:
        rows += small_rows(modules, args.rounds, args.reps)
    if "groups" in cases:
        rows += group_rows(modules, args.rounds, args.peptides)
    if "seed" in cases:
        rows += seed_rows(args.rounds, args.reps)
    if "insteval" in cases:
        rows += insteval_rows(modules, args.rounds)
    versions = {name: getattr(module, "__version__", None) or _distribution_version(name)
                for name, module in modules.items()}
    print(f"linkmix {linkmix.__version__}; " + "; ".join(f"{k} {v}" for k, v in versions.items())
          + f"; median of {args.rounds} alternating rounds\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
