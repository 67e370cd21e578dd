"""Inference against R in the same run: lmerTest's t tests and lme4's profile intervals.

Times, alternating R and Python rounds (the machine is noisy) and reporting the
median over rounds of each side's median of ``--repeats``:

* one peptide's fit with Satterthwaite t tests of its fixed effects: R ``lmerTest::lmer``
  + ``summary`` (its df are computed there) against ``linkmix.lmer`` + ``coef_table()``,
  on the real Skyline peptide of tests/data/inference (43 rows, 8 fixed effects),
  and the same with Kenward-Roger;
* ``confint(method = "profile")`` against ``linkmix.confint(fit)`` on sleepstudy,
  Penicillin and Orthodont (REML fits, as lme4's defaults).

Ratios above 1 mean linkmix is faster.  Needs R with lme4 and lmerTest.

Usage: ``python benchmarks/inference_lme4.py [--rounds 3] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import warnings

import pandas as pd

import linkmix
from _timing import median_seconds

HERE = pathlib.Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(TESTS))

from conftest import load_dataset  # noqa: E402

PEPTIDE = TESTS / "data" / "inference" / "skyline_peptide.csv"
PEPTIDE_FORMULA = "log2Intensity ~ Condition + FragmentIon + (1 | BioReplicate)"
PROFILES = {"sleepstudy": "Reaction ~ Days + (Days | Subject)",
            "Penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
            "Orthodont": "distance ~ age + Sex + (1 | Subject)"}

R_SCRIPT = r"""
suppressMessages({library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
reps <- as.integer(args[3])
timed <- function(f) median(replicate(reps, system.time(f())[["elapsed"]]))
p <- read.csv(args[1], colClasses = c(Condition = "character", BioReplicate = "character",
                                      FragmentIon = "character"))
out <- list(
  satterthwaite = timed(function() coef(summary(lmer(PEPTIDE, p)))),
  kenward_roger = timed(function() coef(summary(lmer(PEPTIDE, p), ddf = "Kenward-Roger"))))
data_dir <- args[2]
factors <- list(sleepstudy = "Subject", Penicillin = c("plate", "sample"),
                Orthodont = "Subject")
formulas <- list(PROFILES)
for (name in names(factors)) {
  d <- read.csv(file.path(data_dir, paste0(name, ".csv")))
  for (f in factors[[name]]) d[[f]] <- factor(d[[f]])
  if (name == "Orthodont") d$Sex <- factor(d$Sex, levels = c("Male", "Female"))
  m <- lme4::lmer(as.formula(formulas[[name]]), d)
  out[[name]] <- median(replicate(max(1, reps %/% 3), system.time(suppressMessages(
    suppressWarnings(confint(m, method = "profile"))))[["elapsed"]]))
}
cat(toJSON(out, auto_unbox = TRUE, digits = NA))
"""


def r_times(repeats: int) -> dict:
    profiles = ", ".join(f'{k} = "{v}"' for k, v in PROFILES.items())
    script = R_SCRIPT.replace("PEPTIDE", PEPTIDE_FORMULA).replace(
        "formulas <- list(PROFILES)", f"formulas <- list({profiles})")
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as handle:
        handle.write(script)
    done = subprocess.run(["Rscript", handle.name, str(PEPTIDE),
                           str(pathlib.Path(linkmix.datasets.path("sleepstudy")).parent),
                           str(repeats)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def python_times(repeats: int) -> dict:
    warnings.simplefilter("ignore")
    peptide = pd.read_csv(PEPTIDE, dtype={"Condition": str, "BioReplicate": str,
                                          "FragmentIon": str})
    out = {"satterthwaite": median_seconds(
               lambda: linkmix.lmer(PEPTIDE_FORMULA, peptide).coef_table(), repeats,
               warmup=False),
           "kenward_roger": median_seconds(
               lambda: linkmix.lmer(PEPTIDE_FORMULA, peptide).coef_table("kenward-roger"),
               repeats, warmup=False)}
    for name, formula in PROFILES.items():
        fit = linkmix.lmer(formula, load_dataset(name))
        out[name] = median_seconds(lambda: linkmix.confint(fit), max(1, repeats // 3),
                                   warmup=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    python_times(1)  # imports and first calls
    rounds = {"R": [], "linkmix": []}
    for _ in range(args.rounds):
        rounds["R"].append(r_times(args.repeats))
        rounds["linkmix"].append(python_times(args.repeats))
    labels = {"satterthwaite": "peptide fit + Satterthwaite t tests (lmerTest)",
              "kenward_roger": "peptide fit + Kenward-Roger t tests (lmerTest/pbkrtest)",
              **{name: f"{name} confint(method='profile') (lme4)" for name in PROFILES}}
    print(f"{'case':58s} {'R s':>8s} {'linkmix s':>10s} {'R / linkmix':>12s}")
    for key, label in labels.items():
        r = statistics.median(run[key] for run in rounds["R"])
        py = statistics.median(run[key] for run in rounds["linkmix"])
        print(f"{label:58s} {r:8.3f} {py:10.3f} {r / py:12.2f}")


if __name__ == "__main__":
    main()
