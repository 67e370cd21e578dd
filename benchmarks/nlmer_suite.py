"""The nonlinear reference suite: linkmix's nlmer fits against lme4's nlmer, same run.

For each of the 14 cases of tests/data/nlmer_suite.json (make_nlmer_suite.R), times
nlmer (benchmarks/nlmer_suite_time.R: the fit only, data already loaded) and linkmix
(``NonlinearMixedModel(...).fit()`` with defaults: the model is built once, the fit
timed), alternating R and Python rounds (the machine is noisy), each round the median
of ``--repeats`` fits; reports the median over rounds, evaluations against nlmer's,
and the deviance reached against nlmer's deviance function at its own estimates.
``--optima FILE`` writes linkmix's optima (θ, β, deviance) for
tests/data/check_nlmer_at_linkmix.R.

Usage: ``python benchmarks/nlmer_suite.py [--rounds 3] [--repeats 3] [--optima FILE]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from nlmer_suite import CASES, DATA, fit_case, model_of, nlmer_point  # noqa: E402


def time_nlmer(repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "nlmer.json"
        subprocess.run(["Rscript", str(HERE / "nlmer_suite_time.R"),
                        str(DATA / "nlmer_suite.json"), str(repeats), str(out)],
                       check=True, capture_output=True)
        return json.loads(out.read_text())


def time_linkmix(repeats: int) -> dict:
    out = {}
    for name, case in CASES.items():
        model = model_of(case)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fit = fit_case(model, case)
            times.append(time.perf_counter() - start)
        out[name] = {"seconds": statistics.median(times), "fit": fit, "model": model}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--optima", type=pathlib.Path)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    for case in CASES.values():  # warm up: imports, compiled code, self-start's scipy
        fit_case(model_of(case), case)
    r_rounds, py_rounds = [], []
    for _ in range(args.rounds):
        r_rounds.append(time_nlmer(args.repeats))
        py_rounds.append(time_linkmix(args.repeats))
    print(f"{'case':24s} {'nlmer s':>8s} {'linkmix s':>9s} {'ratio':>6s} {'evals':>11s} "
          f"{'deviance - nlmer devfun':>24s}")
    ratios, optima = [], {}
    for name, case in CASES.items():
        r = statistics.median(run[name]["seconds"] for run in r_rounds)
        py = statistics.median(run[name]["seconds"] for run in py_rounds)
        last = py_rounds[-1][name]
        fit, model = last["fit"], last["model"]
        theta, beta = nlmer_point(model, case)
        at_nlmer = case["devfun_tight"] if case["devfun_tight"] is not None else \
            model.laplace(theta, beta)
        ratios.append(r / py)
        print(f"{name:24s} {r:8.3f} {py:9.3f} {r / py:6.2f} "
              f"{fit.optsummary.n_evaluations:5d}/{r_rounds[-1][name]['feval']:<5d} "
              f"{fit.objective - at_nlmer:+24.2e}")
        optima[name] = {"theta": fit.theta.tolist(), "beta": dict(zip(
            model.design.fixed_names, fit.beta.tolist())), "deviance": fit.objective,
            "below_nlmer": fit.objective - at_nlmer}
    print(f"median ratio (nlmer time / linkmix time) over {len(ratios)} cases: "
          f"{statistics.median(ratios):.2f}; slowest {min(ratios):.2f}, fastest {max(ratios):.2f}")
    if args.optima:
        args.optima.write_text(json.dumps(optima, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
