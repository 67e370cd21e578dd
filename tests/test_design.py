"""Formula + data → design: terms, levels, missing values, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix import DataError, FormulaError, MissingDataWarning, RankDeficiencyWarning
from linkmix.design import build_design

from conftest import DATA


@pytest.fixture
def peptide():
    """Seed-model layout: treatment × modification × replicate, 16 observations."""
    rng = np.random.default_rng(1)
    grid = pd.DataFrame([(t, m, r) for t in (1, 2) for r in (1, 2, 3, 4) for m in (1, 2)],
                        columns=["treatment", "modification", "replicate"]).astype(str)
    grid["x"] = 20 + rng.normal(size=len(grid))
    return grid


def test_double_bar_splits_factor_into_independent_levels(peptide):
    design = build_design("x ~ treatment * modification + (0 + treatment || replicate)", peptide)
    assert [(t.group, t.coef_names) for t in design.terms] == [
        ("replicate", ("treatment[1]",)), ("replicate", ("treatment[2]",))]
    assert design.n_theta == 2
    fit = linkmix.lmer("x ~ treatment * modification + (0 + treatment || replicate)", peptide,
                       REML=False)
    names = set(fit.params.index)
    assert {"sd[treatment[1]|replicate]", "sd[treatment[2]|replicate]", "sigma"} <= names
    assert not any(name.startswith("cor[") for name in names)


def test_single_bar_factor_term_is_correlated(peptide):
    design = build_design("x ~ 1 + (0 + treatment | replicate)", peptide)
    assert len(design.terms) == 1 and design.terms[0].k == 2 and design.n_theta == 3


def test_nested_and_interaction_levels():
    frame = pd.DataFrame({"a": list("AABBCC") * 4, "b": list("xyxyxy") * 4,
                          "y": np.arange(24.0) % 7})
    design = build_design("y ~ 1 + (1 | a/b)", frame)
    levels = {t.group: list(t.levels) for t in design.terms}
    assert levels["a:b"] == ["A:x", "A:y", "B:x", "B:y", "C:x", "C:y"]
    assert design.terms[0].group == "a:b"  # more levels first, as lme4 orders them


def test_lme4_term_order_by_levels():
    frame = pd.DataFrame({"small": list("ab") * 10, "big": [str(i % 10) for i in range(20)],
                          "y": np.arange(20.0) % 3})
    design = build_design("y ~ 1 + (1 | small) + (1 | big)", frame)
    assert [t.group for t in design.terms] == ["big", "small"]


def test_missing_rows_are_dropped_counted_and_reported(sleepstudy):
    data = sleepstudy.copy()
    data.loc[[3, 50, 51], "Reaction"] = np.nan
    data.loc[7, "Days"] = np.nan
    with pytest.warns(MissingDataWarning, match="dropped 4 of 180"):
        fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", data)
    assert fit.n_dropped == 4 and fit.nobs == 176
    assert "Rows dropped for missing values: 4" in str(fit.summary())
    assert fit.to_dict()["n_dropped"] == 4
    with pytest.raises(DataError, match="missing values"):
        build_design("Reaction ~ Days + (Days | Subject)", data, missing="raise")


def test_rank_deficient_fixed_design_drops_columns(sleepstudy):
    data = sleepstudy.assign(Days2=2 * sleepstudy.Days)
    with pytest.warns(RankDeficiencyWarning, match="Days2"):
        fit = linkmix.lmer("Reaction ~ Days + Days2 + (1 | Subject)", data)
    assert list(fit.beta.index) == ["(Intercept)", "Days"]
    assert fit.design.dropped_columns == ["Days2"]


@pytest.mark.parametrize("formula, data_change, error, message", [
    ("Reaction ~ Dayz + (1 | Subject)", None, DataError, "unknown column 'Dayz'"),
    ("Reaction ~ Days + (1 | Subjekt)", None, DataError, "unknown column 'Subjekt'"),
    ("Reactio ~ Days + (1 | Subject)", None, DataError, "unknown column 'Reactio'"),
    ("Subject ~ Days + (1 | Days)", None, DataError, "response 'Subject' must be numeric"),
    ("Reaction ~ Days + (1 | one)", "one", DataError, "only 1 level"),
    ("Reaction ~ Days + (1 | row)", "row", DataError, "must be smaller than the number of obs"),
    ("Reaction ~ Days + (Days | Subject", None, FormulaError, "unbalanced"),
    ("Reaction ~ Days + ((Days | Subject)", None, FormulaError, "unbalanced"),
    ("Reaction ~ Days + inf_col + (1 | Subject)", "inf", DataError, "infinite"),
])
def test_bad_input_gets_a_specific_error(sleepstudy, formula, data_change, error, message):
    data = sleepstudy.copy()
    if data_change == "one":
        data["one"] = "A"
    elif data_change == "row":
        data["row"] = np.arange(len(data)).astype(str)
    elif data_change == "inf":
        data["inf_col"] = np.where(data.Days > 8, np.inf, 1.0)
    with pytest.raises(error, match=message):
        linkmix.lmer(formula, data)


def test_too_many_random_effects():
    """lme4's per-term check: a term with as many random effects as observations."""
    data = pd.DataFrame({"g": list("aabbcc"), "x": [0.0, 1, 0, 1, 0, 1], "y": np.arange(6.0)})
    with pytest.raises(DataError, match=r"the term \(1 \+ x \| g\) has 6 random effects"):
        linkmix.lmer("y ~ 1 + (1 + x | g)", data)


@pytest.mark.parametrize("case", json.loads((DATA / "lme4_identifiability.json").read_text()),
                         ids=lambda case: case["file"])
def test_models_with_more_random_effects_than_rows_that_lme4_fits(case):
    """Not refused for q ≥ n in all when every variance is identified (lme4 fits these,
    make_lme4_identifiability.R): the same REML criterion and θ."""
    data = pd.read_csv(DATA / "identifiability" / case["file"])
    fit = linkmix.lmer(case["formula"], data)
    assert sum(term.q for term in fit.design.terms) == case["n_random"] >= case["n"]
    assert fit.objective == pytest.approx(case["objective"], rel=1e-8)
    np.testing.assert_allclose(fit.theta, case["theta"], atol=1e-5)


def test_variances_that_cannot_be_told_apart_are_refused_by_name():
    """Two terms of the same grouping (a copy of g1) give the same covariance of y: with
    q ≥ n the check finds it and names both terms."""
    data = pd.read_csv(DATA / "identifiability" / "crossed_slopes_25_effects.csv")
    data["g3"] = data.g1
    with pytest.raises(DataError, match=r"\(Intercept\) in \(1 \| g3\) and the variance of "
                                        r"\(Intercept\) in \(1 \| g1\) cannot be told apart"):
        linkmix.lmer("y ~ 1 + (1|g1) + (1|g3) + (1|g2)", data)
    data["row"] = [f"r{i}" for i in range(len(data))]
    with pytest.raises(DataError, match=r"'row' of \(1 \| row\) has 20 levels for 20 obs"):
        linkmix.lmer("y ~ 1 + (1|row)", data)


def test_data_must_be_a_dataframe():
    with pytest.raises(DataError, match="DataFrame"):
        linkmix.lmer("y ~ 1 + (1 | g)", {"y": [1, 2]})


# ---- groups and columns lme4 handles -------------------------------------------------------

def _small_group(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"y": rng.normal(size=n), "Condition": [f"C{i % 5 + 1}" for i in range(n)],
                         "rep": [f"r{i % 2}" for i in range(n)]})


@pytest.mark.parametrize("n", [3, 5])
def test_no_more_rows_than_fixed_effects_is_a_clear_error(n):
    """Fewer rows than columns used to crash in drop_dependent_columns; as many rows gave
    infinite SEs and loglik -inf."""
    with pytest.raises(DataError, match=f"{n} observation\\(s\\) for {n} identifiable fixed"):
        linkmix.lmer("y ~ Condition + (1|rep)", _small_group(n))


def test_batch_rows_for_too_small_groups():
    table = pd.concat([_small_group(n, seed=n).assign(g=f"n{n}") for n in (3, 5, 6, 12)])
    results = linkmix.fit_groups(table, "g", "y ~ Condition + (1|rep)", n_jobs=1)
    rows = results.drop_duplicates("g").set_index("g")
    assert rows.loc[["n3", "n5"], "error"].str.contains("observation").all()
    assert rows.loc[["n6", "n12"], "error"].isna().all()
    assert np.isfinite(results[results.g == "n6"].std_error.iloc[:5]).all()


def test_drop_dependent_columns_with_fewer_rows_than_columns():
    from linkmix.design import drop_dependent_columns
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(3), rng.normal(size=(3, 5))])
    kept, names, dropped = drop_dependent_columns(X, list("abcdef"))
    assert names == ["a", "b", "c"] and dropped == ["d", "e", "f"]
    x = rng.normal(size=30)  # a dependent column must not disturb later ones; 1e300 is fine
    X = np.column_stack([np.ones(30), x, 2 * x + 1, 1e300 * rng.normal(size=30)])
    assert drop_dependent_columns(X, list("abcd"))[1] == ["a", "b", "d"]


def test_categorical_with_unused_levels_fits_like_text():
    """A level no row has must not become the reference level (as R drops unused levels)."""
    rng = np.random.default_rng(3)
    text = pd.DataFrame({"y": rng.normal(size=24), "Condition": np.tile(["2", "3"], 12),
                         "rep": np.repeat(list("abcd"), 6)})
    text["y"] += 1.3 * (text.Condition == "3")
    categorical = text.assign(Condition=pd.Categorical(text.Condition, ["1", "2", "3"]))
    a = linkmix.lmer("y ~ Condition + (1|rep)", categorical)
    b = linkmix.lmer("y ~ Condition + (1|rep)", text)
    assert list(a.beta.index) == list(b.beta.index) == ["(Intercept)", "Condition[T.3]"]
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    table = pd.concat([categorical.assign(g="A"), categorical.assign(g="B")])
    rows = linkmix.fit_groups(table, "g", "y ~ Condition + (1|rep)", n_jobs=1)
    assert set(rows.parameter.dropna()) >= {"Condition[T.3]"}
    assert "Condition[T.2]" not in set(rows.parameter)


def test_a_factor_with_one_level_is_left_out_and_said(sleepstudy):
    """lme4 refuses it ('contrasts can be applied only to factors with 2 or more
    levels'); one formula over many groups (a peptide in one fragment) meets it, so it
    is left out, and the warning, ``warnings``, the summary and the JSON say so."""
    data = sleepstudy.assign(site="A", flag=True)
    plain = linkmix.lmer("Reaction ~ Days + (1|Subject)", data)
    for formula, name, level in [("Reaction ~ Days + site + (1|Subject)", "site", "A"),
                                 ("Reaction ~ Days + flag + (1|Subject)", "flag", "True")]:
        said = f"the factor '{name}' has one level ('{level}') in the rows used"
        with pytest.warns(RankDeficiencyWarning, match=said.replace("(", "\\(").replace(")", "\\)")):
            fit = linkmix.lmer(formula, data)
        assert fit.objective == pytest.approx(plain.objective, rel=1e-12)
        assert any(w.startswith(said) for w in fit.warnings) and said in str(fit.summary())
        assert fit.to_dict()["single_level_factors"] == {name: level}


def test_dropped_columns_and_boundary_calls_are_named_everywhere(sleepstudy):
    """In ``warnings``, the summary and the JSON: an aliased column by name, and what is
    on the boundary (an SD, or a correlation of ±1) with the term it belongs to."""
    with pytest.warns(RankDeficiencyWarning, match="Days2"):
        fit = linkmix.lmer("Reaction ~ Days + Days2 + (1|Subject)",
                           sleepstudy.assign(Days2=2 * sleepstudy.Days))
    dropped = "fixed-effects column Days2 dropped: the design is rank deficient"
    assert any(w.startswith(dropped) for w in fit.warnings) and dropped in str(fit.summary())
    assert fit.to_dict()["dropped_columns"] == ["Days2"]
    assert fit.to_dict()["warnings"] == fit.warnings
    inference = DATA / "inference"
    for file, formula, factors, said in [
            ("Dyestuff2_singular.csv", "Yield ~ 1 + (1 | Batch)", ["Batch"],
             "sd[(Intercept)|Batch] estimated as 0 in (1 | Batch)"),
            ("Orthodont_unbalanced.csv", "distance ~ age * Sex + (age | Subject)",
             ["Sex", "Subject"], "cor[(Intercept),age|Subject] = +1 in (1 + age | Subject)")]:
        data = pd.read_csv(inference / file, dtype={c: str for c in factors})
        fit = linkmix.lmer(formula, data)
        boundary = f"boundary (singular) fit: {said}"
        assert fit.boundary == [boundary] and fit.singular and boundary in fit.warnings
        assert boundary in str(fit.summary()) and boundary in fit.to_dict()["warnings"]
