"""linkmix against lme4, fitted side by side in the same run: time ratios, objectives.

For each case lme4's ``lmer`` is timed inside R (its own fit time, the median of
several repeats, data already loaded) through ``Rscript``; linkmix is timed twice:
in process (``lmer`` on a loaded DataFrame, median of repeats) and as a whole
``linkmix fit`` command (interpreter start, imports, reading the CSV, fitting,
printing).  Ratios above 1 mean linkmix is faster.

Usage::

    python benchmarks/compare_lme4.py [--cases sleepstudy,penicillin,insteval] [--data DIR]

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

HERE = pathlib.Path(__file__).resolve().parent
SHARED_DATA = HERE.parent.parent / "shared" / "data"

# name: (csv stem, formula, REML, factor columns for R, repeats)
CASES = {
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", False, ["Subject"], 30),
    "sleepstudy-reml": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", True, ["Subject"], 30),
    "penicillin": ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", False,
                   ["plate", "sample"], 30),
    "insteval": ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", False,
                 ["s", "d", "dept", "service"], 3),
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
    path = data_dir / f"{stem}.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found: pass --data DIR holding {stem}.csv")
    return path


def run_lme4(path, formula, reml, factors, reps):
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(R_SCRIPT)
    out = subprocess.run(["Rscript", fh.name, str(path), formula, str(reml).upper(),
                          ",".join(factors), str(reps)], capture_output=True, text=True,
                         check=True).stdout
    values = dict(line.split("=", 1) for line in out.strip().splitlines())
    return {"objective": float(values["objective"]), "seconds": float(values["seconds"]),
            "feval": int(values["feval"]), "version": values["version"]}


def run_linkmix(path, formula, reml, reps):
    data = linkmix.read_table(path)
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
    process_times = []
    for _ in range(min(reps, 3)):
        start = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        process_times.append(time.perf_counter() - start)
    return {"objective": fit.objective, "seconds": statistics.median(times),
            "process_seconds": statistics.median(process_times),
            "feval": fit.optsummary.n_evaluations, "engine": fit.engine_kind,
            "converged": fit.converged}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--data", type=pathlib.Path, default=SHARED_DATA,
                        help="folder with the CSV files not shipped with linkmix (InstEval)")
    parser.add_argument("--json", help="write the measurements to this file")
    args = parser.parse_args(argv)
    have_r = shutil.which("Rscript") is not None
    if not have_r:
        print("Rscript not found: lme4 is not measured (apt-get install r-base-core r-cran-lme4)")
    rows = []
    for name in args.cases.split(","):
        stem, formula, reml, factors, reps = CASES[name]
        path = data_path(stem, args.data)
        ours = run_linkmix(path, formula, reml, reps)
        row = {"case": name, "formula": formula, "REML": reml, "linkmix": ours}
        if have_r:
            row["lme4"] = run_lme4(path, formula, reml, factors, reps)
        rows.append(row)

    header = (f"{'case':16s} {'lme4 fit':>9s} {'linkmix fit':>11s} {'ratio':>6s} "
              f"{'linkmix cmd':>11s} {'ratio':>6s} {'evals l4/lm':>11s} {'obj diff (lm-l4)':>17s}")
    print(header)
    for row in rows:
        ours = row["linkmix"]
        if "lme4" in row:
            l4 = row["lme4"]
            print(f"{row['case']:16s} {l4['seconds']:9.4f} {ours['seconds']:11.4f} "
                  f"{l4['seconds'] / ours['seconds']:6.1f} {ours['process_seconds']:11.3f} "
                  f"{l4['seconds'] / ours['process_seconds']:6.2f} "
                  f"{l4['feval']:5d}/{ours['feval']:<5d} "
                  f"{ours['objective'] - l4['objective']:+17.3e}")
        else:
            print(f"{row['case']:16s} {'-':>9s} {ours['seconds']:11.4f} {'-':>6s} "
                  f"{ours['process_seconds']:11.3f}")
    print("times in seconds; ratio = lme4 fit time / linkmix time (higher is better for "
          "linkmix); 'linkmix cmd' is the whole `linkmix fit` process")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
