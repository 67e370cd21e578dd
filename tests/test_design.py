"""Formula + data → design: terms, levels, missing values, bad input."""

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix import DataError, FormulaError, MissingDataWarning, RankDeficiencyWarning
from linkmix.design import build_design


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
    names = set(fit.params.name)
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
    data = pd.DataFrame({"g": list("aabbcc"), "x": [0.0, 1, 0, 1, 0, 1], "y": np.arange(6.0)})
    with pytest.raises(DataError, match="6 random effects for 6 observations"):
        linkmix.lmer("y ~ 1 + (1 + x | g)", data)


def test_data_must_be_a_dataframe():
    with pytest.raises(DataError, match="DataFrame"):
        linkmix.lmer("y ~ 1 + (1 | g)", {"y": [1, 2]})
