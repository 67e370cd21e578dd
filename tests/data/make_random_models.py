"""Writes random_models.csv.gz and random_models.json: 150 random linear mixed models
with their data, drawn as a new user's tables come, for the comparison with lme4 and
lmerTest (make_lme4_random_models.R) in tests/test_random_models.py.

Each case is crossed, nested, a random slope (correlated, independent, or both), with
groups of unequal sizes, 20-250 rows, often missing responses or covariates, sometimes an
aliased column (x3 = x1 + 2·x2), and in a third of the cases a covariate or the response
moved or rescaled by 1e3-1e6.  The CSV (one column ``case``) is what the tests read;
this script documents how it was made (numpy's streams may change between releases).

Run: python tests/data/make_random_models.py tests/data
"""

import json
import pathlib
import sys

import numpy as np
import pandas as pd

STRUCTURES = ["(1|g1)", "(1|g1) + (1|g2)", "(1|a/b)", "(x1|g1)", "(x1||g1) + (1|g2)",
              "(1|g1) + (0 + x1|g1)", "(x1|g1) + (1|g2)"]


def case(rng, i):
    n = int(rng.integers(20, 250))
    n_g1 = int(rng.integers(3, max(4, min(30, n // 3))))
    n_g2, n_a = int(rng.integers(3, 12)), int(rng.integers(3, 9))
    g1, g2 = rng.integers(0, n_g1, n), rng.integers(0, n_g2, n)
    a, b = rng.integers(0, n_a, n), rng.integers(0, 3, n)
    x1, x2 = rng.normal(size=n) * rng.uniform(0.5, 3), rng.uniform(0, 5, n)
    f = rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2])
    sd = dict(g1=rng.choice([0, 0.3, 1, 2]), s1=rng.choice([0, 0.2, 0.8]),
              g2=rng.choice([0, 0.5, 1.5]), a=rng.choice([0, 0.7]), ab=rng.choice([0, 0.5]),
              e=rng.uniform(0.3, 2))
    u1, s1 = rng.normal(size=n_g1) * sd["g1"], rng.normal(size=n_g1) * sd["s1"]
    u2, ua = rng.normal(size=n_g2) * sd["g2"], rng.normal(size=n_a) * sd["a"]
    uab = rng.normal(size=(n_a, 3)) * sd["ab"]
    y = (5 + 0.5 * x1 - 0.3 * x2 + (f == "B") * 0.8 + u1[g1] + s1[g1] * x1 + u2[g2] + ua[a]
         + uab[a, b] + rng.normal(size=n) * sd["e"])
    data = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "f": f,
                         "g1": [f"s{k}" for k in g1], "g2": [f"t{k}" for k in g2],
                         "a": [f"a{k}" for k in a], "b": [f"b{k}" for k in b]})
    data["x3"] = data.x1 + 2 * data.x2
    move = str(rng.choice(["none", "none", "scale_x1", "shift_x1", "scale_y", "scale_x2"]))
    if move == "scale_x1":
        data["x1"] *= float(rng.choice([1e4, 1e5, 1e6]))
    if move == "shift_x1":
        data["x1"] += float(rng.choice([1e3, 1e4]))
    if move == "scale_y":
        data["y"] *= float(rng.choice([1e-6, 1e6, 1e4]))
    if move == "scale_x2":
        data["x2"] *= float(rng.choice([1e-4, 1e5]))
    if rng.random() < 0.5:
        data.loc[rng.random(n) < 0.08, "y"] = np.nan
    if rng.random() < 0.3:
        data.loc[rng.random(n) < 0.05, "x2"] = np.nan
    fixed = str(rng.choice(["x1", "x1 + x2", "x1 + f", "x1 * f", "x1 + x2 + x3", "x2 + f"]))
    structure = STRUCTURES[i % len(STRUCTURES)]
    if "x1" in structure and "x1" not in fixed:
        fixed = "x1 + " + fixed
    return data, {"case": i, "formula": f"y ~ {fixed} + {structure}", "move": move}


def main(out: pathlib.Path):
    rng = np.random.default_rng(2026)
    frames, cases = [], []
    for i in range(150):
        data, meta = case(rng, i)
        frames.append(data.assign(case=i))
        cases.append(meta)
    pd.concat(frames).to_csv(out / "random_models.csv.gz", index=False)
    (out / "random_models.json").write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
