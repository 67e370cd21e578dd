"""linkmix against lme4, fitted side by side in the same run: time ratios, objectives.

For each case lme4's ``lmer`` is timed inside R (its own fit time, the median of
the case's repeats, data already loaded) through ``Rscript``; linkmix is timed twice:
in process (``lmer`` on a loaded DataFrame, after one untimed fit, median of the
repeats) and as a whole ``linkmix fit`` command (interpreter start, imports, reading
the CSV, fitting, printing).  The two programs take turns, ``--rounds`` times per case,
so that both see the machine at the same speed; each ratio is the median of the
rounds' ratios.  Ratios above 1 mean linkmix is faster.

Usage::

    python benchmarks/compare_lme4.py [--cases sleepstudy,penicillin,insteval] [--data DIR]
                                      [--rounds N] [--peptide-reps N]

The seed-peptide comparison times lme4's unconstrained ML fit of one simulated
peptide against linkmix's plain fit, its constrained fit (M2), the same with
its summary (reduced Hessian and SEs), and its linked-mean fit (M1).

Needs R with lme4 (``apt-get install r-base-core r-cran-lme4``); without it only
linkmix's times are printed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import linkmix
import linkmix.datasets
from _peak import run_with_peak
from _timing import median_seconds

HERE = pathlib.Path(__file__).resolve().parent
DATA_DIR = HERE.parent / "tests" / "data"   # InstEval.csv.gz; other folders by --data

# name: (csv stem, formula, REML, factor columns for R, repeats per round)
CASES = {
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", False, ["Subject"], 30),
    "sleepstudy-reml": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", True, ["Subject"], 30),
    "penicillin": ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", False,
                   ["plate", "sample"], 30),
    "insteval": ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", False,
                 ["s", "d", "dept", "service"], 1),
    # MixedModels.jl's showcase (lme4 reported there at 43-54 s)
    "insteval-dept": ("InstEval", "y ~ 1 + service * dept + (1 | s) + (1 | d)", False,
                      ["s", "d", "dept", "service"], 1),
}

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (col in strsplit(args[4], ",")[[1]]) d[[col]] <- factor(d[[col]])
f <- as.formula(args[2]); reml <- as.logical(args[3]); reps <- as.integer(args[5])
times <- numeric(reps)
for (i in seq_len(reps)) {
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(f, d, REML = reml)
  times[i] <- proc.time()[["elapsed"]] - t0
}
cat(sprintf("objective=%.12f\nseconds=%.6f\nfeval=%d\nversion=%s\n",
            if (reml) REMLcrit(m) else deviance(m), median(times),
            m@optinfo$feval, as.character(packageVersion("lme4"))))
"""


def data_path(stem: str, data_dir: pathlib.Path) -> pathlib.Path:
    if stem in linkmix.datasets.names():
        return pathlib.Path(linkmix.datasets.path(stem))
    for path in (data_dir / f"{stem}.csv", data_dir / f"{stem}.csv.gz"):
        if path.exists():
            return path
    raise SystemExit(f"{stem}.csv not found in {data_dir}: pass --data DIR holding it")


def run_lme4(path, formula, reml, factors, reps):
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(R_SCRIPT)
    out, peak = run_with_peak(["Rscript", fh.name, str(path), formula, str(reml).upper(),
                               ",".join(factors), str(reps)], check=True)
    values = dict(line.split("=", 1) for line in out.stdout.strip().splitlines())
    return {"objective": float(values["objective"]), "seconds": float(values["seconds"]),
            "feval": int(values["feval"]), "version": values["version"], "peak_mb": peak}


def run_linkmix(path, formula, reml, reps):
    data = linkmix.read_table(path)
    linkmix.lmer(formula, data, REML=reml)  # first use: lazy imports, caches
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fit = linkmix.lmer(formula, data, REML=reml)
        times.append(time.perf_counter() - start)
    cli = [shutil.which("linkmix") or sys.executable, "fit", str(path), "--formula", formula]
    if cli[0] == sys.executable:
        cli[1:1] = ["-m", "linkmix.cli"]
    if not reml:
        cli.append("--ml")
    process_times, peaks = [], []
    for _ in range(min(reps, 3)):  # one per round for the large cases
        start = time.perf_counter()
        peaks.append(run_with_peak(cli, check=True)[1])
        process_times.append(time.perf_counter() - start)
    return {"objective": fit.objective, "seconds": statistics.median(times),
            "process_seconds": statistics.median(process_times),
            "peak_mb": max(peaks, default=None),
            "feval": fit.optsummary.n_evaluations, "engine": fit.engine_kind,
            "converged": fit.converged}


PEPTIDE_R = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (col in c("treatment", "modification", "replicate")) d[[col]] <- factor(d[[col]])
reps <- as.integer(args[2])
# (0 + treatment || replicate) with one independent variance per treatment level; lme4's
# own `||` does not split factors, so the two terms are written out.
f <- x ~ 1 + t2 + m2 + t2m1 + t2m2 + (0 + dummy(treatment, "1") | replicate) +
     (0 + dummy(treatment, "2") | replicate)
times <- numeric(reps)
for (i in seq_len(reps)) {
  t0 <- proc.time()[["elapsed"]]
  m <- suppressMessages(lmer(f, d, REML = FALSE))
  times[i] <- proc.time()[["elapsed"]] - t0
}
cat(sprintf("objective=%.12f\nseconds=%.6f\nfeval=%d\nversion=%s\n", deviance(m),
            median(times), m@optinfo$feval, as.character(packageVersion("lme4"))))
"""


def peptide_case(reps: int, have_r: bool) -> dict:
    """One seed peptide: lme4's unconstrained ML fit against linkmix's plain, M2 and M1 fits."""
    import warnings

    from linkmix import datasets
    from linkmix.examples import M1_FORMULA, M1_MEAN, M2_CONSTRAINT, M2_FORMULA

    data = datasets.simulate_peptide(1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = {"case": "peptide (16 obs)",
               "plain": median_seconds(lambda: linkmix.lmer(M2_FORMULA, data, REML=False),
                                       reps),
               "M2": median_seconds(lambda: linkmix.lmer(M2_FORMULA, data,
                                                         constraints=M2_CONSTRAINT), reps),
               "M2+summary": median_seconds(lambda: str(linkmix.lmer(
                   M2_FORMULA, data, constraints=M2_CONSTRAINT).summary()), reps),
               "M1": median_seconds(lambda: linkmix.lmer(M1_FORMULA, data, mean=M1_MEAN),
                                    reps),
               "objective": linkmix.lmer(M2_FORMULA, data, REML=False).objective,
               "objective_M2": linkmix.lmer(M2_FORMULA, data, constraints=M2_CONSTRAINT).objective}
    if have_r:
        with tempfile.TemporaryDirectory() as tmp:
            csv = pathlib.Path(tmp) / "peptide.csv"
            data.to_csv(csv, index=False)
            script = pathlib.Path(tmp) / "peptide.R"
            script.write_text(PEPTIDE_R)
            out = subprocess.run(["Rscript", str(script), str(csv), str(reps)],
                                 capture_output=True, text=True, check=True).stdout
        values = dict(line.split("=", 1) for line in out.strip().splitlines())
        row["lme4"] = float(values["seconds"])
        row["lme4_objective"] = float(values["objective"])
    return row


NLMER_R = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
reps <- as.integer(args[3])
d <- read.csv(args[1])
d[[args[2]]] <- factor(d[[args[2]]])
cases <- list(
  Orange = list(f = circumference ~ SSlogis(age, Asym, xmid, scal) ~ Asym | Tree,
                start = c(Asym = 200, xmid = 725, scal = 350)),
  Theoph = list(f = conc ~ SSfol(Dose, Time, lKe, lKa, lCl) ~
                  0 + lKe + lKa + lCl + (0 + lKe | Subject) + (0 + lKa | Subject) +
                  (0 + lCl | Subject),
                start = c(lKe = -2.4, lKa = 0.45, lCl = -3.2)))
case <- cases[[args[4]]]
times <- numeric(reps)
for (i in seq_len(reps)) {
  t0 <- proc.time()[["elapsed"]]
  m <- nlmer(case$f, d, start = case$start)
  times[i] <- proc.time()[["elapsed"]] - t0
}
cat(sprintf("objective=%.12f\nseconds=%.6f\nfeval=%d\n", deviance(m), median(times),
            m@optinfo$feval))
"""

NLMER_CASES = {
    "Orange": ("Orange", "Tree", "circumference ~ SSlogis(age, Asym, xmid, scal) ~ Asym | Tree",
               None),
    "Theoph": ("Theoph", "Subject", "conc ~ SSfol(Dose, Time, lKe, lKa, lCl)",
               "lKe + lKa + lCl || Subject"),
}


def nlmer_case(name: str, data_dir: pathlib.Path, reps: int, have_r: bool) -> dict:
    """nlmer's Laplace fit against linkmix.nlmer (whole call, self-started), same run."""
    stem, group, formula, random = NLMER_CASES[name]
    path = data_path(stem, data_dir)
    data = linkmix.read_table(path)
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        fit = linkmix.nlmer(formula, data, random=random)
        times.append(time.perf_counter() - start)
    row = {"case": f"nlmer {name}", "linkmix": {
        "seconds": statistics.median(times[1:]), "objective": fit.objective,
        "feval": fit.optsummary.n_evaluations, "converged": fit.converged}}
    if have_r:
        with tempfile.TemporaryDirectory() as tmp:
            script = pathlib.Path(tmp) / "nlmer.R"
            script.write_text(NLMER_R)
            out = subprocess.run(["Rscript", str(script), str(path), group, str(reps), name],
                                 capture_output=True, text=True, check=True).stdout
        values = dict(line.split("=", 1) for line in out.strip().splitlines())
        row["lme4"] = {"seconds": float(values["seconds"]),
                       "objective": float(values["objective"]), "feval": int(values["feval"])}
    return row


def combine_rounds(name, formula, reml, rounds) -> dict:
    """One case's row from its rounds: median times, the largest peaks, and the median
    of the rounds' ratios (each round's lme4 and linkmix measured back to back)."""
    def merged(results):
        out = dict(results[-1])
        for key in ("seconds", "process_seconds"):  # lme4's rows have no process time
            if key in out:
                out[key] = statistics.median(r[key] for r in results)
        out["peak_mb"] = max((r["peak_mb"] or 0 for r in results), default=None)
        return out

    ours = [o for o, _ in rounds]
    row = {"case": name, "formula": formula, "REML": reml, "linkmix": merged(ours),
           "rounds": [{"linkmix": o, "lme4": t} for o, t in rounds]}
    if rounds[0][1] is not None:
        row["lme4"] = merged([t for _, t in rounds])
        row["ratio"] = statistics.median(t["seconds"] / o["seconds"] for o, t in rounds)
        row["ratio_command"] = statistics.median(t["seconds"] / o["process_seconds"]
                                                 for o, t in rounds)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--data", type=pathlib.Path, default=DATA_DIR,
                        help="folder with the CSV files not shipped with linkmix (InstEval)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of lme4 and linkmix per case; ratios are the median of "
                             "the rounds' ratios")
    parser.add_argument("--json", help="write the measurements to this file")
    parser.add_argument("--nlmer-reps", type=int, default=5,
                        help="repeats of the nlmer comparison, Orange and Theoph (0 skips it)")
    parser.add_argument("--peptide-reps", type=int, default=50,
                        help="repeats of the seed-peptide comparison (0 skips it)")
    args = parser.parse_args(argv)
    have_r = shutil.which("Rscript") is not None
    if not have_r:
        print("Rscript not found: lme4 is not measured (apt-get install r-base-core r-cran-lme4)")
    rows = []
    for name in args.cases.split(","):
        stem, formula, reml, factors, reps = CASES[name]
        path = data_path(stem, args.data)
        rounds = []
        for _ in range(args.rounds):
            ours = run_linkmix(path, formula, reml, reps)
            rounds.append((ours, run_lme4(path, formula, reml, factors, reps) if have_r
                           else None))
        rows.append(combine_rounds(name, formula, reml, rounds))

    header = (f"{'case':16s} {'lme4 fit':>9s} {'linkmix fit':>11s} {'ratio':>6s} "
              f"{'linkmix cmd':>11s} {'ratio':>6s} {'evals l4/lm':>11s} {'obj diff (lm-l4)':>17s}"
              f" {'peak MB l4/lm':>14s}")
    print(header)
    for row in rows:
        ours = row["linkmix"]
        if "lme4" in row:
            l4 = row["lme4"]
            print(f"{row['case']:16s} {l4['seconds']:9.4f} {ours['seconds']:11.4f} "
                  f"{row['ratio']:6.1f} {ours['process_seconds']:11.3f} "
                  f"{row['ratio_command']:6.2f} "
                  f"{l4['feval']:5d}/{ours['feval']:<5d} "
                  f"{ours['objective'] - l4['objective']:+17.3e} "
                  f"{l4['peak_mb'] or 0:7.0f}/{ours['peak_mb'] or 0:<6.0f}")
        else:
            print(f"{row['case']:16s} {'-':>9s} {ours['seconds']:11.4f} {'-':>6s} "
                  f"{ours['process_seconds']:11.3f}")
    print(f"times in seconds, medians of {args.rounds} alternating rounds; ratio = lme4 fit "
          "time / linkmix time, the median of the rounds' ratios (higher is better for "
          "linkmix); 'linkmix cmd' is the whole `linkmix fit` process; peak MB: the Rscript "
          "process (its repeated fits) and the `linkmix fit` process, resident, from "
          "/usr/bin/time")
    if args.peptide_reps:
        pep = peptide_case(args.peptide_reps, have_r)
        rows.append(pep)
        print()
        print("seed peptide, median of", args.peptide_reps, "fits (whole lmer call, ms):")
        l4 = pep.get("lme4")
        for key in ("plain", "M2", "M2+summary", "M1"):
            ratio = f"  lme4/linkmix = {l4 / pep[key]:.2f}" if l4 else ""
            print(f"  linkmix {key:11s} {1000 * pep[key]:7.2f}{ratio}")
        if l4:
            print(f"  lme4 unconstrained {1000 * l4:7.2f}   objective difference "
                  f"(linkmix plain - lme4) {pep['objective'] - pep['lme4_objective']:+.2e}, "
                  f"(M2 - lme4) {pep['objective_M2'] - pep['lme4_objective']:+.2e}")
    if args.nlmer_reps:
        print()
        print(f"nonlinear (Laplace), median of {args.nlmer_reps} fits:")
        for name in NLMER_CASES:
            row = nlmer_case(name, args.data, args.nlmer_reps, have_r)
            rows.append(row)
            ours, l4 = row["linkmix"], row.get("lme4")
            text = f"  {name:8s} linkmix {ours['seconds']:.4f} s ({ours['feval']} evals)"
            if l4:
                text += (f"   nlmer {l4['seconds']:.4f} s ({l4['feval']} evals)   "
                         f"nlmer/linkmix = {l4['seconds'] / ours['seconds']:.2f}   "
                         f"deviance difference (linkmix - nlmer) "
                         f"{ours['objective'] - l4['objective']:+.2e}")
            print(text)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
