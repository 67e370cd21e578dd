"""linkmix on the 150 random models of ``tests/data/random_models.*`` against lme4 1.1-31
and lmerTest 3.1-3 (``tests/data/lme4_random_models.json``, lme4 at tight tolerances).

Every fit is sorted into: the same optimum as lme4 (criterion within 1e-8 relative),
lower than lme4, or higher (never, ``tests/test_random_models.py``).  For each lower one
lme4's own criterion (``lmer(..., devFunOnly = TRUE)``) is evaluated at linkmix's θ in
``Rscript``, so that "lower" is shown with the reference's function, not linkmix's.
Satterthwaite df are compared with lmerTest's where both reach the same optimum.

    python benchmarks/random_models_lme4.py [--no-r] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import linkmix

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SAME = 1e-8   # relative criterion difference read as the same optimum

R_CRITERION = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
jobs <- jsonlite::fromJSON(args[1], simplifyDataFrame = FALSE)
all_data <- read.csv(gzfile(args[2]), stringsAsFactors = TRUE)
out <- lapply(jobs, function(job) {
  d <- droplevels(all_data[all_data$case == job$case, ])
  f <- lmer(as.formula(job$formula), d, REML = job$REML, devFunOnly = TRUE)
  f(unlist(job$theta))
})
cat(jsonlite::toJSON(unlist(out), digits = NA))
"""


def fit_all():
    cases = {c["case"]: c for c in json.loads((DATA / "random_models.json").read_text())}
    references = json.loads((DATA / "lme4_random_models.json").read_text())["fits"]
    data = pd.read_csv(DATA / "random_models.csv.gz")
    rows = []
    for ref in references:
        case = cases[ref["case"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = linkmix.lmer(case["formula"], data[data.case == ref["case"]].drop(columns="case"),
                               REML=ref["REML"])
        rows.append({"case": ref["case"], "REML": ref["REML"], "formula": case["formula"],
                     "move": case["move"], "objective": fit.objective,
                     "lme4": ref["objective"], "theta": np.atleast_1d(fit.theta).tolist(),
                     "singular": fit.singular or ref["singular"],
                     "lme4_messages": bool(ref.get("messages")),
                     "df": fit.coef_table()["df"].to_numpy(),
                     "lmerTest_df": np.atleast_1d(np.asarray(ref["df"], dtype=float))})
    return rows


def lme4_criterion(jobs) -> np.ndarray:
    """lme4's criterion at each job's θ (one ``Rscript`` call for all)."""
    with tempfile.TemporaryDirectory() as tmp:
        script, spec = Path(tmp) / "criterion.R", Path(tmp) / "jobs.json"
        script.write_text(R_CRITERION)
        spec.write_text(json.dumps([{k: job[k] for k in ("case", "REML", "formula", "theta")}
                                    for job in jobs]))
        run = subprocess.run(["Rscript", str(script), str(spec),
                              str(DATA / "random_models.csv.gz")],
                             capture_output=True, text=True, check=True)
    return np.atleast_1d(np.array(json.loads(run.stdout), dtype=float))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-r", action="store_true",
                        help="skip lme4's criterion at linkmix's θ (no R needed)")
    parser.add_argument("--json", type=Path, help="write the per-fit results here")
    args = parser.parse_args(argv)

    rows = fit_all()
    for row in rows:
        row["difference"] = (row["objective"] - row["lme4"]) / abs(row["lme4"])
    same = [r for r in rows if abs(r["difference"]) <= SAME]
    lower = [r for r in rows if r["difference"] < -SAME]
    higher = [r for r in rows if r["difference"] > SAME]
    print(f"{len(rows)} fits of {len({r['case'] for r in rows})} models: {len(same)} at lme4's "
          f"optimum (1e-8 relative), {len(lower)} lower, {len(higher)} higher")
    if higher:
        print("  higher:", [(r["case"], r["REML"], r["difference"]) for r in higher])

    if lower and not args.no_r:
        at_linkmix = lme4_criterion(lower)
        for row, value in zip(lower, at_linkmix):
            row["lme4_at_linkmix"] = float(value)
        agreement = np.array([abs(r["lme4_at_linkmix"] - r["objective"]) / abs(r["objective"])
                              for r in lower])
        below = sum(r["lme4_at_linkmix"] < r["lme4"] for r in lower)
        print(f"lme4's criterion at linkmix's θ: {below} of {len(lower)} below lme4's own "
              f"optimum; agrees with linkmix's value to {agreement.max():.1e} relative")
        gains = np.array([r["lme4"] - r["lme4_at_linkmix"] for r in lower])
        print(f"  by how much (lme4's function): median {np.median(gains):.3g}, "
              f"largest {gains.max():.3g}")

    comparable = [r for r in same if r["move"] == "none" and not r["singular"]
                  and not r["lme4_messages"] and len(r["df"]) == len(r["lmerTest_df"])]
    if comparable:
        relative = np.concatenate([np.abs(r["df"] - r["lmerTest_df"]) / r["lmerTest_df"]
                                   for r in comparable])
        print(f"Satterthwaite df against lmerTest's on {len(comparable)} unmoved, non-singular "
              f"fits at the same optimum ({relative.size} coefficients): largest relative "
              f"difference {relative.max():.1e}, median {np.median(relative):.1e}")
    moved = [r for r in same if r["move"] != "none" and not r["singular"]
             and len(r["df"]) == len(r["lmerTest_df"])]
    if moved:
        relative = np.concatenate([np.abs(r["df"] - r["lmerTest_df"]) / r["lmerTest_df"]
                                   for r in moved])
        print(f"  with moved or rescaled data ({len(moved)} fits): lmerTest's df differ by up "
              f"to {relative.max():.1e} relative (linkmix's do not move, tests/test_invariance.py)")
    if args.json:
        for row in rows:
            row["df"], row["lmerTest_df"] = row["df"].tolist(), row["lmerTest_df"].tolist()
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if higher else 0


if __name__ == "__main__":
    sys.exit(main())
