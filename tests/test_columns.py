"""The compiled model matrix of plain formulas against formulaic's, column for column."""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import linkmix.design
from linkmix.columns import layout_of, plain_columns
from linkmix.design import build_design, materialize, model_columns
from linkmix.formula import check_terms

from conftest import load_dataset


def table(seed: int = 0, n: int = 40) -> pd.DataFrame:
    """Every column kind formulaic encodes: numbers, integers, booleans, text (object and
    pandas' str), categories in an order that is not sorted, integer categories."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.normal(size=n) * 1e3,
        "x1": rng.normal(size=n),
        "x2": rng.uniform(1, 5, size=n),
        "i": rng.integers(0, 4, size=n),
        "b": rng.integers(0, 2, size=n).astype(bool),
        "a": pd.Series(rng.choice(["lo", "mid", "hi"], size=n), dtype=object),
        "s": pd.Series(rng.choice(["p", "q"], size=n), dtype="str"),
        "c": pd.Categorical(rng.choice(["z", "y", "x", "w"], size=n),
                            categories=["z", "y", "x", "w"]),
        "k": pd.Categorical(rng.choice([3, 1, 2], size=n)),
        "g": rng.choice([f"g{j}" for j in range(6)], size=n),
    })


def formulaic_columns(rhs, data):
    matrix = materialize(rhs, data, "test")
    return np.asarray(matrix, dtype=float), list(matrix.columns), matrix.model_spec


def assert_same_columns(rhs, data):
    plain = plain_columns(rhs, check_terms(rhs, "test"), data)
    assert plain is not None, rhs
    X, names, spec = plain
    X_ref, names_ref, spec_ref = formulaic_columns(rhs, data)
    assert names == names_ref, rhs
    np.testing.assert_array_equal(X, X_ref, err_msg=rhs)
    # rebuilt for new rows (a prediction) as formulaic's spec rebuilds them
    new = data.iloc[::3]
    np.testing.assert_array_equal(spec.get_model_matrix(new).to_numpy(),
                                  np.asarray(spec_ref.get_model_matrix(new), dtype=float))


PLAIN = ["1", "0 + a", "x1 + a", "a * c", "a:c", "0 + a:c", "1 + x1 + a:c", "a:x1",
         "0 + a:x1", "x1 * x2", "a * x1 * c", "-1 + c + a", "s + b + i", "k + x2:k",
         "c * s", "1 + g", "x1:x2:a", "a + c + a:c + x1", "0 + c + a + s", "b:a"]


@pytest.mark.parametrize("rhs", PLAIN)
def test_plain_formulas_match_formulaic(rhs):
    assert_same_columns(rhs, table())


@pytest.mark.parametrize("rhs", ["log(x2)", "C(a, Sum)", "poly(x1, 2)", "center(x1)",
                                 "I(x1 ** 2)", "x1 + scale(x2)"])
def test_other_terms_go_to_formulaic(rhs):
    assert plain_columns(rhs, check_terms(rhs, "test"), table()) is None
    X, names, _ = model_columns(rhs, table(), "test")
    X_ref, names_ref, _ = formulaic_columns(rhs, table())
    assert names == names_ref
    np.testing.assert_array_equal(X, X_ref)


def test_new_rows_with_an_unseen_level_are_refused_by_name():
    data = table()
    _, _, spec = plain_columns("a", {"a"}, data)
    with pytest.raises(ValueError, match="'a' has level.*'new'.*not seen"):
        spec.get_model_matrix(data.assign(a="new"))


def test_layout_is_cached_per_text_and_kinds():
    data = table()
    assert layout_of("x1 + a", {"x1", "a"}, data) is layout_of("x1 + a", {"x1", "a"}, table(1))
    # the same names as another kind: another layout
    assert layout_of("x1 + a", {"x1", "a"}, data.assign(a=1.0)).terms != \
        layout_of("x1 + a", {"x1", "a"}, data).terms


def designs_both_ways(formula, data, monkeypatch):
    with warnings.catch_warnings(record=True) as fast_warnings:
        warnings.simplefilter("always")
        fast = build_design(formula, data)
    with monkeypatch.context() as patch:
        patch.setattr(linkmix.design, "plain_columns", lambda *args: None)
        with warnings.catch_warnings(record=True) as slow_warnings:
            warnings.simplefilter("always")
            slow = build_design(formula, data)
    assert [str(w.message) for w in fast_warnings] == [str(w.message) for w in slow_warnings]
    return fast, slow


def assert_same_design(fast, slow):
    assert fast.fixed_names == slow.fixed_names
    assert fast.dropped_columns == slow.dropped_columns
    assert fast.single_level_factors == slow.single_level_factors
    np.testing.assert_array_equal(fast.X, slow.X)
    np.testing.assert_array_equal(fast.y, slow.y)
    assert [(t.group, t.coef_names, t.expr_columns) for t in fast.terms] == \
        [(t.group, t.coef_names, t.expr_columns) for t in slow.terms]
    for a, b in zip(fast.terms, slow.terms):
        np.testing.assert_array_equal(a.Z, b.Z)
        np.testing.assert_array_equal(a.codes, b.codes)


@pytest.mark.parametrize("name, formula", [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)"),
    ("sleepstudy", "Reaction ~ 0 + Days + (1 | Subject) + (0 + Days | Subject)"),
    ("Orthodont", "distance ~ age * Sex + (age | Subject)"),
    ("Orthodont", "distance ~ Sex + age:Sex + (0 + Sex || Subject)"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
])
def test_designs_of_the_datasets_are_the_same_both_ways(name, formula, monkeypatch):
    assert_same_design(*designs_both_ways(formula, load_dataset(name), monkeypatch))


def test_dropped_columns_and_single_levels_are_reported_the_same(monkeypatch):
    data = table()
    data["x3"] = 2.0 * data["x1"]          # aliased: dropped by name
    data["one"] = "only"                   # one level: left out with a warning
    data.loc[3, "x1"] = np.nan             # a missing value: the row is dropped
    fast, slow = designs_both_ways("y ~ x1 + x3 + a * c + one + (1 | g)", data, monkeypatch)
    assert "x3" in fast.dropped_columns and fast.n_dropped == 1
    assert fast.single_level_factors == {"one": "only"}
    assert_same_design(fast, slow)


FACTORS = ["x1", "x2", "i", "b", "a", "s", "c", "k"]


@st.composite
def plain_formulas(draw):
    """lme4-grammar right-hand sides: main effects and interactions of plain columns,
    with or without an intercept, in any order, with a random intercept or slope."""
    terms = draw(st.lists(
        st.lists(st.sampled_from(FACTORS), min_size=1, max_size=3, unique=True)
        .map(lambda fs: (":" if len(fs) < 3 else "*").join(fs)),
        min_size=1, max_size=4, unique=True))
    intercept = draw(st.sampled_from(["", "1 + ", "0 + ", "-1 + "]))
    slope = draw(st.sampled_from(["1", "x1", "0 + a", "c", "0 + x2"]))
    bars = draw(st.sampled_from(["|", "||"]))
    return f"y ~ {intercept}{' + '.join(terms)} + ({slope} {bars} g)"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(formula=plain_formulas(), seed=st.integers(0, 3))
def test_generated_formulas_give_the_same_design_both_ways(formula, seed, monkeypatch):
    data = table(seed, n=60)
    fixed = formula.split("~")[1].rsplit("+ (", 1)[0].strip()
    assert_same_columns(fixed, data)
    try:
        fast, slow = designs_both_ways(formula, data, monkeypatch)
    except linkmix.DataError:
        with monkeypatch.context() as patch:
            patch.setattr(linkmix.design, "plain_columns", lambda *args: None)
            with pytest.raises(linkmix.DataError):
                build_design(formula, data)
        return
    assert_same_design(fast, slow)
