"""Crossed random effects at growing size: time and peak memory against n, lme4 alongside.

For each n (default 1e4, 1e5, 1e6 ratings) and number of crossed factors (2, 3, 4),
``linkmix.datasets.simulate_ratings`` draws an InstEval-like table (unbalanced
students, teachers and courses by department, 10% of ratings across departments,
terms crossing all, 3% of y missing) and writes it to CSV; then

* linkmix fits ``y ~ 1 + service + (1 | s) + (1 | d) [+ (1 | c) [+ (1 | t)]]`` by ML
  in a fresh process: the fit's own seconds (model build and fit, data already read,
  modules loaded by a small fit first, as R's ``library(lme4)`` loads lme4's) and the
  process's peak resident memory;
* lme4 fits the same model with ``lmer(REML = FALSE)`` in ``Rscript``: ``lmer``'s
  seconds and the process's peak resident memory, unless a smaller n with as many
  factors already took over the time limit (default 600 s, when it is stopped).

Both peaks are whole processes (interpreter and libraries included), from
``/usr/bin/time`` (``benchmarks/_peak.py``).  The two runs of each case alternate (linkmix, then lme4), so
load on the machine falls on both.  Prints a row per case as it finishes, with the
ratio lme4/linkmix of seconds and the objectives' difference.

Usage::

    python benchmarks/crossed_scaling.py [--sizes 10000,100000,1000000]
                                         [--factors 2,3,4] [--limit 600] [--no-lme4]

Needs R with lme4 for the peer (``apt-get install r-base-core r-cran-lme4``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

from _peak import run_with_peak

from linkmix import datasets

FACTORS = "sdct"

LINKMIX = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import linkmix
# load what a fit loads on first use (scipy.optimize, CHOLMOD, nlopt), as lme4's
# library() call does before R's timing
linkmix.lmer("Reaction ~ Days + (Days | Subject)", linkmix.datasets.load("sleepstudy"),
             REML=False, optimizer="lbfgs")
with open(sys.argv[1]) as fh:
    header = fh.readline().strip().split(",")
data = linkmix.read_table(sys.argv[1], factors=[c for c in header if c != "y"])
start = time.perf_counter()
fit = linkmix.lmer(sys.argv[2], data, REML=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "objective": fit.objective,
                  "evaluations": fit.optsummary.n_evaluations, "engine": fit.engine_kind,
                  "optimizer": fit.optsummary.optimizer, "converged": fit.converged}))
"""

LME4 = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (col in intersect(c("s", "d", "c", "t", "service", "dept"), names(d))) d[[col]] <- factor(d[[col]])
t0 <- proc.time()[["elapsed"]]
m <- lmer(as.formula(args[2]), d, REML = FALSE)
cat(sprintf('{"seconds": %.6f, "objective": %.10f, "evaluations": %d}\n',
            proc.time()[["elapsed"]] - t0, deviance(m), m@optinfo$feval))
"""


def timed(command, limit):
    """(result dict or None, peak MB or None, note): ``command``'s last stdout line as
    JSON and its peak resident memory."""
    try:
        out, peak = run_with_peak(command, timeout=limit)
    except subprocess.TimeoutExpired:
        return None, None, f"> {limit:.0f} s"
    if out.returncode != 0:
        return None, peak, out.stderr.strip().splitlines()[-2:] if out.stderr else "failed"
    return json.loads(out.stdout.strip().splitlines()[-1]), peak, ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--factors", default="2,3,4")
    parser.add_argument("--limit", type=float, default=600.0,
                        help="seconds before a run is stopped")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-lme4", action="store_true", help="linkmix only")
    args = parser.parse_args(argv)
    sizes = [int(float(v)) for v in args.sizes.split(",")]
    factor_counts = [int(v) for v in args.factors.split(",")]
    have_r = shutil.which("Rscript") is not None and not args.no_lme4
    work = pathlib.Path(tempfile.mkdtemp(prefix="crossed_scaling_"))
    (work / "fit.py").write_text(LINKMIX)
    (work / "fit.R").write_text(LME4)
    print(f"{'n':>9} {'factors':>7} {'q':>7} {'linkmix s':>10} {'MB':>6} {'engine':>14} "
          f"{'evals':>5} {'lme4 s':>9} {'MB':>6} {'evals':>5} {'ratio':>6} {'obj diff':>10}")
    lme4_too_slow = set()
    for k in factor_counts:
        for n in sizes:
            frame = datasets.simulate_ratings(n, k, seed=args.seed)
            csv = work / f"ratings_{n}_{k}.csv"
            frame.to_csv(csv, index=False)
            q = sum(frame[f].nunique() for f in FACTORS[:k])
            formula = "y ~ 1 + service + " + " + ".join(f"(1 | {f})" for f in FACTORS[:k])
            mine, mine_mb, note = timed([sys.executable, str(work / "fit.py"), str(csv),
                                         formula], args.limit)
            theirs, theirs_mb, their_note = (None, None, "no R")
            if have_r and k not in lme4_too_slow:
                theirs, theirs_mb, their_note = timed(["Rscript", str(work / "fit.R"), str(csv),
                                                       formula], args.limit)
                if theirs is None:
                    lme4_too_slow.add(k)
            elif k in lme4_too_slow:
                their_note = "skipped (smaller n over the limit)"
            row = f"{n:>9} {k:>7} {q:>7} "
            row += (f"{mine['seconds']:>10.2f} {mine_mb:>6.0f} {mine['engine']:>14} "
                    f"{mine['evaluations']:>5} " if mine else f"{str(note):>40} ")
            if theirs:
                row += (f"{theirs['seconds']:>9.2f} {theirs_mb:>6.0f} {theirs['evaluations']:>5} "
                        + (f"{theirs['seconds'] / mine['seconds']:>6.1f} "
                           f"{mine['objective'] - theirs['objective']:>10.3g}" if mine else ""))
            else:
                row += f" lme4: {their_note}"
            print(row, flush=True)
            csv.unlink()


if __name__ == "__main__":
    main()
