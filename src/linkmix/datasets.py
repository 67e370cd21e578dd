"""Datasets: small public ones shipped with linkmix, and the seed peptide simulator.

``load(name)`` returns a shipped dataset (exports of R's lme4 and nlme data, and
MSstats' DDA example table of peptide intensities) with
R's factor columns as strings, read by ``linkmix.read_table``; ``path(name)``
gives the CSV file itself.  ``simulate_peptide`` draws one peptide of the seed
proteomics experiment (docs/model.md) from a seeded generator; ``simulate_msstats`` a
long proteomics table; ``simulate_ratings`` an InstEval-like crossed design of any
size.
"""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pandas as pd

from .io import read_table

__all__ = ["load", "path", "names", "simulate_peptide", "simulate_experiment", "simulate_msstats",
           "simulate_ratings", "seed_link", "add_seed_columns",
           "THREE_OPTIMA"]

_FILES = {"sleepstudy": "sleepstudy.csv", "Dyestuff": "Dyestuff.csv",
          "Dyestuff2": "Dyestuff2.csv", "Penicillin": "Penicillin.csv",
          "Orthodont": "Orthodont.csv", "Orange": "Orange.csv", "Theoph": "Theoph.csv",
          # MSstats' DDA example (6 proteins, 6 conditions × 3 runs; gzipped CSV)
          "msstats_DDA": "msstats_DDA.csv.gz"}


def names() -> list[str]:
    """Names of the shipped datasets."""
    return sorted(_FILES)


def path(name: str) -> str:
    """Filesystem path of dataset ``name``'s CSV file."""
    if name not in _FILES:
        raise KeyError(f"unknown dataset {name!r}; available: {names()}")
    return str(resources.files("linkmix") / "data" / _FILES[name])


def load(name: str):
    """Dataset ``name`` as a pandas DataFrame."""
    return read_table(path(name))


#: ``simulate_peptide`` arguments for a peptide whose link equation in c₂ has three roots:
#: three optima with equal likelihood (replicate SDs very unequal, b₂₁ ≫ b₂₂).
THREE_OPTIMA = dict(seed=4, n_replicates=6, sd_1=0.3, sd_2=3.6, b21=8.0, b22=-4.0)


def seed_link(sd_1: float, sd_2: float, b21: float, b22: float) -> float:
    """The seed model's link: c₂ = exp(½·log(2)²·(σ₂² − σ₁²))·(1 + 2^b₂₂)/(1 + 2^b₂₁)."""
    return math.exp(0.5 * math.log(2) ** 2 * (sd_2**2 - sd_1**2)) * (1 + 2**b22) / (1 + 2**b21)


def simulate_peptide(seed: int = 1, *, n_replicates: int = 4, mu: float = 20.0,
                     alpha2: float = -1.0, b21: float = 0.3, b22: float = 1.2,
                     sd_1: float = 0.4, sd_2: float = 0.9, sigma: float = 0.25) -> pd.DataFrame:
    """One peptide of the seed experiment: log-quantities under 2 treatments × 2
    modifications × ``n_replicates`` biological replicates.

    ``x_ijk = μ + c_i + α_j + b_ij + θ_ik + ε_ijk`` with ``c_1 = α_1 = b_1j = 0``,
    ``θ_ik ~ N(0, sd_i²)``, ``ε ~ N(0, σ²)`` and ``c_2 = seed_link(sd_1, sd_2, b21, b22)``.

    Returns
    -------
    pandas.DataFrame
        Columns ``treatment``, ``modification``, ``replicate`` (text codes "1", "2", …),
        ``x``, and the 0/1 design columns of the seed model: ``t2`` (treatment 2),
        ``m2`` (modification 2), ``t2m1`` and ``t2m2`` (treatment 2 with modification
        1 or 2) — so that ``x ~ 1 + t2 + m2 + t2m1 + t2m2`` has coefficients
        μ, c₂, α₂, b₂₁, b₂₂.
    """
    rng = np.random.default_rng(seed)
    c2 = seed_link(sd_1, sd_2, b21, b22)
    rows = [(t, m, r) for t in (1, 2) for r in range(1, n_replicates + 1) for m in (1, 2)]
    frame = pd.DataFrame(rows, columns=["treatment", "modification", "replicate"])
    t2 = (frame.treatment == 2).to_numpy(float)
    m2 = (frame.modification == 2).to_numpy(float)
    replicate_effect = rng.normal(size=(2, n_replicates)) * np.array([[sd_1], [sd_2]])
    x = (mu + c2 * t2 + alpha2 * m2 + b21 * t2 * (1 - m2) + b22 * t2 * m2
         + replicate_effect[frame.treatment - 1, frame.replicate - 1]
         + sigma * rng.normal(size=len(frame)))
    frame = frame.astype(str)
    frame["x"] = x
    return add_seed_columns(frame)


def add_seed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the seed model's 0/1 columns t2, m2, t2m1, t2m2 from treatment/modification."""
    t2 = (frame["treatment"].astype(str) == "2").to_numpy(float)
    m2 = (frame["modification"].astype(str) == "2").to_numpy(float)
    return frame.assign(t2=t2, m2=m2, t2m1=t2 * (1 - m2), t2m2=t2 * m2)


def simulate_experiment(n_peptides: int = 100, seed: int = 0, *, n_replicates: int = 4,
                        missing_rate: float = 0.0):
    """A whole seed experiment: ``n_peptides`` peptides, each from ``simulate_peptide``
    with its own effects (μ ~ N(20, 2²), α₂ ~ N(−1, 0.5²), b₂₁ ~ N(0.3, 0.5²),
    b₂₂ ~ N(1.2, 0.5²); SDs 0.4, 0.9, σ = 0.25).

    Returns
    -------
    data : pandas.DataFrame
        ``simulate_peptide``'s columns plus ``peptide``; with ``missing_rate`` > 0,
        that fraction of ``x`` is missing (as MS1 intensities often are).
    truth : pandas.DataFrame
        One row per peptide: mu, alpha2, b21, b22, c2, sd_1, sd_2, sigma.
    """
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for i in range(n_peptides):
        params = dict(mu=rng.normal(20, 2), alpha2=rng.normal(-1, 0.5), b21=rng.normal(0.3, 0.5),
                      b22=rng.normal(1.2, 0.5), sd_1=0.4, sd_2=0.9, sigma=0.25)
        frame = simulate_peptide(int(rng.integers(2**31)), n_replicates=n_replicates, **params)
        name = f"PEP{i:05d}"
        frames.append(frame.assign(peptide=name))
        truth.append({"peptide": name, **params,
                      "c2": seed_link(params["sd_1"], params["sd_2"], params["b21"],
                                      params["b22"])})
    data = pd.concat(frames, ignore_index=True)
    if missing_rate > 0:
        data.loc[rng.random(len(data)) < missing_rate, "x"] = np.nan
    return data, pd.DataFrame(truth)


def simulate_msstats(n_peptides: int = 1000, seed: int = 0, *, n_conditions: int = 3,
                     n_bioreplicates: int = 3, n_runs: int = 2, n_features=(1, 6),
                     missing_rate: float = 0.05, dropout_rate: float = 0.0) -> pd.DataFrame:
    """A long MSstats-like table, as ``dataProcess`` takes it: one row per peptide,
    feature and run.

    Each peptide has its own number of features (uniform in ``n_features``, inclusive)
    and is measured in every run: ``n_conditions`` conditions × ``n_bioreplicates``
    biological replicates per condition × ``n_runs`` technical runs per replicate.
    ``log2Intensity = μ_pep + c_cond + f_feat + b_biorep + ε`` with μ ~ N(22, 2²),
    c ~ N(0, 1), f ~ N(0, 1), b ~ N(0, 0.3²), ε ~ N(0, 0.2²).  A fraction
    ``missing_rate`` of intensities is missing at random, and each feature is absent
    from a whole condition with probability ``dropout_rate`` (below detection there),
    so groups differ in rows, features and levels, as in real tables.

    Returns
    -------
    pandas.DataFrame
        ProteinName (10 peptides each), PeptideSequence, Feature, Condition,
        BioReplicate, Run and log2Intensity (NaN where missing).
    """
    rng = np.random.default_rng(seed)
    low, high = n_features
    k = rng.integers(low, high + 1, n_peptides)              # features per peptide
    peptide = np.repeat(np.arange(n_peptides), k)            # one entry per feature
    feature = np.arange(len(peptide)) - np.repeat(np.cumsum(k) - k, k)
    runs_per_condition = n_bioreplicates * n_runs
    n_cols = n_conditions * runs_per_condition
    condition = np.repeat(np.arange(n_conditions), runs_per_condition)
    biorep = np.repeat(np.arange(n_conditions * n_bioreplicates), n_runs)
    y = (rng.normal(22, 2, n_peptides)[peptide][:, None]
         + rng.normal(0, 1, (n_peptides, n_conditions))[peptide][:, condition]
         + rng.normal(0, 1, len(peptide))[:, None]
         + rng.normal(0, 0.3, (n_peptides, n_conditions * n_bioreplicates))[peptide][:, biorep]
         + rng.normal(0, 0.2, (len(peptide), n_cols)))
    y[rng.random(y.shape) < missing_rate] = np.nan
    if dropout_rate > 0:
        gone = rng.random((len(peptide), n_conditions)) < dropout_rate
        y[gone[:, condition]] = np.nan
    width = len(str(n_peptides - 1))
    pep_names = np.array([f"PEP{i:0{width}d}" for i in range(n_peptides)], dtype=object)
    rows = np.repeat(np.arange(len(peptide)), n_cols)
    cols = np.tile(np.arange(n_cols), len(peptide))
    cond_names = np.array([f"C{c + 1}" for c in range(n_conditions)], dtype=object)
    bio_names = np.array([f"C{c // n_bioreplicates + 1}_B{c % n_bioreplicates + 1}"
                          for c in range(n_conditions * n_bioreplicates)], dtype=object)
    run_names = np.array([f"{bio_names[biorep[j]]}_R{j % n_runs + 1}" for j in range(n_cols)],
                         dtype=object)
    protein = np.array([f"PROT{i // 10:0{width}d}" for i in range(n_peptides)], dtype=object)
    return pd.DataFrame({
        "ProteinName": protein[peptide[rows]], "PeptideSequence": pep_names[peptide[rows]],
        "Feature": np.char.add("F", feature[rows].astype(str)).astype(object),
        "Condition": cond_names[condition[cols]], "BioReplicate": bio_names[biorep[cols]],
        "Run": run_names[cols], "log2Intensity": y.ravel()})


#: simulate_ratings' factors: name, number of levels for n ratings, SD of its effects.
#: Students grow with the ratings; teachers and courses as √n (a university's staff
#: does not grow with its ratings: at InstEval's 73,421 ratings 4√n = 1,084 teachers,
#: InstEval has 1,128); terms are 12.
RATING_FACTORS = (("s", lambda n: max(2, n // 20), 0.35),
                  ("d", lambda n: max(2, round(4 * math.sqrt(n))), 0.5),
                  ("c", lambda n: max(2, round(math.sqrt(n) / 2)), 0.2),
                  ("t", lambda n: 12, 0.1))


def simulate_ratings(n: int = 10_000, n_factors: int = 3, seed: int = 0, *,
                     n_departments: int = 20, at_home: float = 0.9,
                     missing_rate: float = 0.03) -> pd.DataFrame:
    """An InstEval-like table of ``n`` ratings with 2–4 crossed grouping factors.

    Students ``s`` (n/20 levels, unbalanced: each student's share is Gamma(1)),
    teachers ``d`` (4√n) and courses ``c`` (√n/2) belong to one of ``n_departments``;
    each rating is of a teacher (and course) of the student's home department with
    probability ``at_home``, else of any department; terms ``t`` (12) cross
    everything.  The first ``n_factors`` of (s, d, c, t) are kept.
    ``y = 3 − 0.05·service + Σ effects + ε``, effects N(0, sd²) with sd 0.35, 0.5,
    0.2, 0.1 and ε ~ N(0, 1.15²); a fraction ``missing_rate`` of y is missing.

    Returns
    -------
    pandas.DataFrame
        y, service ("0"/"1"), dept and the factors' columns, as strings.
    """
    if not 2 <= n_factors <= 4:
        raise ValueError("n_factors must be 2, 3 or 4")
    rng = np.random.default_rng(seed)
    n_students = RATING_FACTORS[0][1](n)
    share = rng.gamma(1.0, size=n_students)
    student = rng.choice(n_students, size=n, p=share / share.sum())
    home = rng.integers(0, n_departments, n_students)[student]
    dept = np.where(rng.random(n) < at_home, home, rng.integers(0, n_departments, n))
    frame = {"s": student}
    y = 3.0 + rng.normal(0, 1.15, n)
    y += rng.normal(0, RATING_FACTORS[0][2], n_students)[student]
    for name, levels, sd in RATING_FACTORS[1:n_factors]:
        if name == "t":  # terms: crossed with everything
            n_levels = levels(n)
            level = rng.integers(0, n_levels, n)
        else:  # a level of the rating's department, uniformly
            n_levels = max(n_departments, levels(n))
            owner = rng.integers(0, n_departments, n_levels)
            owner[:n_departments] = np.arange(n_departments)  # none empty
            order = np.argsort(owner, kind="stable")
            count = np.bincount(owner, minlength=n_departments)
            first = np.cumsum(count) - count
            level = order[first[dept] + (rng.random(n) * count[dept]).astype(np.int64)]
        frame[name] = level
        y += rng.normal(0, sd, n_levels)[level]
    service = (rng.random(n) < 0.4).astype(np.int64)
    y -= 0.05 * service
    y[rng.random(n) < missing_rate] = np.nan
    out = pd.DataFrame({"y": y, "service": service.astype(str), "dept": dept.astype(str)})
    for name, codes in frame.items():
        out[name] = codes.astype(str)
    return out
