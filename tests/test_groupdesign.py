"""One design per table, cut per group: the same design as each group built alone, and
lme4's answers (names, dropped columns, values) on real and simulated MSstats tables."""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix.design import build_design
from linkmix.errors import LinkmixError
from linkmix.formula import parse_formula
from linkmix.groupdesign import TableDesign

from conftest import DATA

LME4 = json.loads((DATA / "lme4_msstats.json").read_text())
# cut designs warn of the columns they drop, as build_design does: expected here
pytestmark = pytest.mark.filterwarnings("ignore::linkmix.RankDeficiencyWarning")
CASES = sorted({(f["table"], f["by"], f["formula"]) for f in LME4["fits"]})


def read_msstats(name: str) -> pd.DataFrame:
    """A table as ``make_lme4_msstats.R`` reads it: zero intensities missing, log2."""
    table = pd.read_csv(DATA / name)
    if "log2Intensity" not in table:
        table["log2Intensity"] = np.log2(table.Intensity.where(table.Intensity > 0))
    table["Condition"] = table.Condition.astype(str)
    return table


def r_name(name: str) -> str:
    """formulaic's ``Feature[T.F2]`` as R names it, ``FeatureF2`` (main effects)."""
    return re.sub(r"\[T\.(.*)\]$", r"\1", name)


@pytest.mark.parametrize("table,by,formula", CASES)
def test_batch_matches_an_lme4_loop(table, by, formula):
    results = linkmix.fit_groups(read_msstats(table), by, formula, REML=False, n_jobs=1)
    fits = [f for f in LME4["fits"] if (f["table"], f["by"], f["formula"]) == (table, by, formula)]
    n_compared = n_dropping = 0
    for ref in fits:
        rows = results[results[by] == ref["key"]]
        if "error" in ref:  # lme4 refuses a one-level factor; linkmix fits without its term
            assert "contrasts" in ref["error"] and rows.error.isna().all()
            continue
        assert rows.error.isna().all(), rows.error.iloc[0]
        fixed = rows[rows.kind == "fixef"]
        assert [r_name(n) for n in fixed.parameter] == ref["fixef_names"], ref["key"]
        np.testing.assert_allclose(fixed.estimate, ref["fixef"], rtol=1e-6, atol=2e-6)
        assert rows.loglik.iloc[0] == pytest.approx(ref["loglik"], rel=3e-7)
        assert rows.n.iloc[0] == ref["n"]
        n_compared += 1
        n_dropping += bool(ref["dropped"])
    assert n_compared >= 6
    if "simulated" in table:  # features that vanish from conditions alias columns
        assert n_dropping >= 5


def test_dropped_columns_are_lme4s():
    data = read_msstats("msstats_simulated.csv.gz")
    spec = parse_formula("log2Intensity ~ Condition + Feature + (1 | BioReplicate)")
    data = data.dropna(subset=["log2Intensity"]).sort_values("PeptideSequence", kind="stable")
    table = TableDesign.build(spec, data)
    positions = data.groupby("PeptideSequence").indices
    checked = 0
    for ref in LME4["fits"]:
        if ref["table"] != "msstats_simulated.csv.gz" or not ref.get("dropped"):
            continue
        rows = positions[ref["key"]]
        design = table.group(rows[0], rows[-1] + 1)
        assert [r_name(n) for n in design.dropped_columns] == ref["dropped"]
        assert [r_name(n) for n in design.fixed_names] == ref["fixef_names"]
        checked += 1
    assert checked >= 5


def _same_design(a, b) -> bool:
    return (a.fixed_names == b.fixed_names and a.dropped_columns == b.dropped_columns
            and np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
            and len(a.terms) == len(b.terms) and all(
                s.coef_names == t.coef_names and list(s.levels) == list(t.levels)
                and np.array_equal(s.codes, t.codes) and np.array_equal(s.Z, t.Z)
                for s, t in zip(a.terms, b.terms)))


@pytest.mark.parametrize("formula", [
    "log2Intensity ~ Condition + Feature + (1 | BioReplicate)",
    "log2Intensity ~ Condition * Feature + (1 | BioReplicate)",       # interactions
    "log2Intensity ~ 0 + Condition + Feature + (1 | Run)",              # full coding
    "log2Intensity ~ Feature + Condition:Feature + (1 | BioReplicate)",  # nested coding
    "log2Intensity ~ Condition + (0 + Condition || BioReplicate)",      # factor in a random term
    "log2Intensity ~ Condition + log(z) + (1 + z | BioReplicate)",      # numeric and transform
    "log2Intensity ~ Condition + (1 | BioReplicate) + (1 | Run)",      # two grouping factors
])
def test_cut_design_equals_the_groups_own(formula):
    data = linkmix.datasets.simulate_msstats(60, seed=4, missing_rate=0.1, dropout_rate=0.25)
    data["z"] = np.random.default_rng(0).uniform(1, 2, len(data))
    data = data.dropna().sort_values("PeptideSequence", kind="stable")
    table = TableDesign.build(parse_formula(formula), data)
    assert table is not None
    compared = 0
    for rows in data.groupby("PeptideSequence").indices.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                alone = build_design(formula, data.iloc[rows])
            except LinkmixError as exc:
                with pytest.raises(type(exc)):
                    table.group(rows[0], rows[-1] + 1)
                continue
        assert _same_design(alone, table.group(rows[0], rows[-1] + 1))
        compared += 1
    assert compared >= 40


@pytest.mark.parametrize("formula", ["y ~ center(x) + (1 | g)", "y ~ C(a) + (1 | g)",
                                     "y ~ poly(x, 2) + (1 | g)", "y ~ C(a, Sum) + (1 | g)"])
def test_group_dependent_codings_are_built_group_by_group(formula):
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"y": rng.normal(size=40), "x": rng.normal(size=40),
                         "a": rng.choice(list("abc"), 40), "g": np.repeat(list("pqrst"), 8)})
    assert TableDesign.build(parse_formula(formula), data) is None
    # and the batch still fits each group as it would alone
    data["batch"] = np.repeat([1, 2], 20)
    results = linkmix.fit_groups(data, "batch", formula, n_jobs=1)
    single = linkmix.lmer(formula, data[data.batch == 2])
    assert results[results.batch == 2].loglik.iloc[0] == pytest.approx(single.loglik, rel=1e-9)


def test_compiled_cut_refuses_indices_outside_the_table():
    """The cut is compiled without bounds checks: it checks indices itself, and a refused
    call leaves the caller's scratch array as it was."""
    from linkmix import _groupcut

    codes = np.array([0, 2, 1, 2], dtype=np.int32)
    scratch = np.full(3, -1, dtype=np.int64)
    levels, local = _groupcut.local_codes(codes, 1, 4, scratch)
    np.testing.assert_array_equal(levels, [1, 2])
    np.testing.assert_array_equal(local, [1, 0, 1])
    assert (scratch == -1).all()
    with pytest.raises(ValueError, match="level code"):
        _groupcut.local_codes(np.array([0, 5], dtype=np.int32), 0, 2, scratch)
    assert (scratch == -1).all()
    with pytest.raises(IndexError):
        _groupcut.local_codes(codes, 2, 9, scratch)
    factor = np.array([[0, 1, 7]], dtype=np.int64)
    with pytest.raises(ValueError, match="level code"):
        _groupcut.present_columns(factor, np.array([2]), np.zeros((1, 1), dtype=np.int64),
                                  np.zeros((1, 1), dtype=np.uint8), 0, 3)
    indptr, indices = np.array([0, 1, 2]), np.array([0, 1])
    with pytest.raises(ValueError, match="column"):
        _groupcut.rows_dense(indptr, indices, np.ones(2), 0, 2, np.array([3]), 2)
    with pytest.raises(IndexError):
        _groupcut.rows_dense(indptr, indices, np.ones(2), 0, 3, np.array([0]), 2)
