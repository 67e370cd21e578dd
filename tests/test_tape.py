"""Exact derivatives of constraints and linked means (linkmix.tape) against differences."""

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import linkmix
from linkmix import _tape
from linkmix.constraints import Expression, MeanTerm, make_constraint
from linkmix.examples import (BINDING_CONSTRAINT, BINDING_FORMULA, M1_FORMULA, M1_MEAN,
                              M2_CONSTRAINT, M2_FORMULA)

from conftest import DATA

PARAMS = ["a", "b", "c"]


def differenced(expression, point, h=1e-6):
    """Central differences of the expression's gradient, and of its exact gradient (the
    Hessian), at ``point`` (values of ``parameters_used``)."""
    used = expression.parameters_used

    def value(x):  # one value per data row, as ``derivatives`` gives them
        return np.atleast_1d(np.asarray(expression(dict(zip(used, x))), dtype=float))

    def exact_gradient(x):
        return expression.derivatives(dict(zip(used, x)))[1]

    eye = np.eye(len(point))
    gradient = np.stack([(value(point + h * e) - value(point - h * e)) / (2 * h) for e in eye],
                        axis=-1)
    hessian = np.stack([(exact_gradient(point + 1e-5 * e) - exact_gradient(point - 1e-5 * e))
                        / 2e-5 for e in eye], axis=-1)
    return gradient, hessian


@pytest.mark.parametrize("text", [
    "a + b * c - a / b", "a ** 3 + 2 ** b + a ** b", "exp(a) * log(b) / sqrt(c)",
    "log2(a) + log10(b) + log1p(c) + expm1(a)", "sin(a) * cos(b) + tan(c) + tanh(a * b)",
    "arctan(a / c) + expit(b - a) + logit(c / 4)", "abs(a - 2) + minimum(a, b) + maximum(b, c)",
    "where(a > 1, a ** 2, b) + (b <= c) * c", "-a + +b - (c % 0.8)", "a % b",
])
def test_derivatives_match_differences(text):
    expression = Expression(text, PARAMS)
    point = np.array([1.3, 0.8, 2.1])[: len(expression.parameters_used)]
    value, gradient, hessian = expression.derivatives(dict(zip(expression.parameters_used, point)))
    assert value[0] == pytest.approx(float(expression(dict(zip(expression.parameters_used,
                                                                  point)))), rel=1e-14)
    fd_gradient, fd_hessian = differenced(expression, point)
    np.testing.assert_allclose(gradient, fd_gradient, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(hessian, fd_hessian, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(hessian[0], hessian[0].T, rtol=1e-12, atol=1e-14)


def at_a_kink(expression, x, h=1e-5) -> bool:
    """Whether one-sided differences disagree at ``x`` (maximum(a, b) at a = b)."""
    used = expression.parameters_used

    def value(point):
        return np.asarray(expression(dict(zip(used, point))), dtype=float)

    centre = value(x)
    for e in np.eye(len(x)):
        forward, backward = (value(x + h * e) - centre) / h, (centre - value(x - h * e)) / h
        if not np.allclose(forward, backward, rtol=1e-2, atol=1e-3):
            return True
    return False


LEAVES = st.sampled_from(["a", "b", "c", "0.5", "2", "1.5"])
UNARY = ["exp({})", "log(1 + ({}) ** 2)", "sqrt(2 + sin({}))", "tanh({})", "arctan({})",
         "expit({})", "-({})", "cos({})", "log1p(exp({}))"]
BINARY = ["({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / (1.5 + cos({}))",
          "exp(0.3 * ({})) ** ({})", "maximum({}, {})", "where({} > 0, {}, 0.25)"]


def expressions():
    return st.recursive(
        LEAVES,
        lambda inner: st.one_of(
            st.builds(lambda f, x: f.format(x), st.sampled_from(UNARY), inner),
            st.builds(lambda f, x, y: f.format(x, y), st.sampled_from(BINARY), inner, inner)),
        max_leaves=8)


@settings(max_examples=80, deadline=None)
@given(text=expressions(), point=st.lists(st.floats(0.3, 2.0), min_size=3, max_size=3))
def test_generated_expressions_match_differences(text, point):
    expression = Expression(text, PARAMS)
    assume(expression.parameters_used)
    used = expression.parameters_used
    x = np.array(point[: len(used)])
    value, gradient, hessian = expression.derivatives(dict(zip(used, x)))
    assume(np.all(np.isfinite(value)) and np.all(np.abs(hessian) < 1e6))
    fd_gradient, fd_hessian = differenced(expression, x)
    # a kink of maximum/where at or next to the point: nothing to compare
    assume(not at_a_kink(expression, x))
    assume(np.allclose(fd_hessian, np.swapaxes(fd_hessian, -1, -2), rtol=1e-4, atol=1e-5))
    np.testing.assert_allclose(gradient, fd_gradient, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(hessian, fd_hessian, rtol=1e-4, atol=1e-5)


def test_a_linked_mean_has_one_row_per_observation():
    data = linkmix.datasets.simulate_peptide(1)
    names = ["(Intercept)", "m2", "t2m1", "t2m2", "sd[treatment[1]|replicate]",
             "sd[treatment[2]|replicate]", "sigma"]
    mean = MeanTerm(M1_MEAN, names, data)
    values = dict(zip(names, [20.0, -0.8, 0.9, 1.6, 0.33, 0.53, 0.07]))
    value, gradient, hessian = mean.derivatives(values)
    assert value.shape == (16,) and gradient.shape == (16, 4) and hessian.shape == (16, 4, 4)
    np.testing.assert_array_equal(value, mean(values))
    untreated = (data["treatment"] == "1").to_numpy()
    assert np.all(gradient[untreated] == 0) and np.all(gradient[~untreated] != 0)
    fd_gradient, fd_hessian = differenced(mean._expr, np.array(
        [values[name] for name in mean.parameters_used]))
    np.testing.assert_allclose(gradient, fd_gradient, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hessian, fd_hessian, rtol=1e-5, atol=1e-8)


def test_a_callable_has_no_tape():
    data = linkmix.datasets.simulate_peptide(1)
    mean = MeanTerm(lambda params, data: params["a"] * np.ones(len(data)), ["a"], data)
    assert mean.derivatives({"a": 1.0}) is None


def test_the_kernel_refuses_a_malformed_tape():
    code = np.array([[1, 0, 0, 0], [3, 0, 5, 0]], dtype=np.int32)  # ADD reads a later node
    with pytest.raises(IndexError, match="later node"):
        _tape.evaluate(code, np.zeros(0), np.zeros((0, 1)), np.zeros(2, dtype=np.uint8),
                       np.ones(1), 1)
    with pytest.raises(ValueError, match="opcode"):
        _tape.evaluate(np.array([[99, 0, 0, 0]], dtype=np.int32), np.zeros(0),
                       np.zeros((0, 1)), np.zeros(1, dtype=np.uint8), np.ones(1), 1)


MANIFOLD = json.loads((DATA / "linked_manifold_se.json").read_text())


@pytest.mark.parametrize("case", sorted(MANIFOLD))
def test_linked_fits_report_the_standard_errors_they_did(case):
    """The SEs and df of linked fits on their manifold, from exact derivatives of the
    constraint and mean, are those computed before from differences."""
    model, seed = case.split("-")
    data = linkmix.datasets.simulate_peptide(int(seed))
    fit = {"M2": lambda: linkmix.lmer(M2_FORMULA, data, constraints=M2_CONSTRAINT),
           "M1": lambda: linkmix.lmer(M1_FORMULA, data, mean=M1_MEAN),
           "B": lambda: linkmix.lmer(BINDING_FORMULA, data, constraints=BINDING_CONSTRAINT)}[model]()
    expected = MANIFOLD[case]
    assert list(fit.params.index) == expected["names"]
    assert fit.objective == pytest.approx(expected["objective"], abs=1e-9)
    np.testing.assert_allclose(fit.params["estimate"], expected["estimate"], rtol=1e-8)
    np.testing.assert_allclose(fit.params["std_error"], expected["se"], rtol=1e-6)
    np.testing.assert_allclose(fit.coef_table()["df"], expected["df"], rtol=1e-6)
