"""The model as a backend: its objective, full deviance and gradient for a user's own
optimiser, from a formula or from arrays (lme4's devFunOnly)."""

import json
import pathlib

import numpy as np
import pytest
import scipy.optimize

from linkmix import ArgumentError, DataError, LinearMixedModel
from conftest import load_dataset

LME4 = {(r["name"], r["REML"]): r for r in json.loads(
    (pathlib.Path(__file__).parent / "data" / "lme4_lmm.json").read_text())}
FORMULA = "Reaction ~ Days + (Days | Subject)"


def sleepstudy_arrays(REML=True):
    data = load_dataset("sleepstudy")
    n = len(data)
    X = np.column_stack([np.ones(n), data.Days.to_numpy(float)])
    return LinearMixedModel.from_arrays(
        data.Reaction.to_numpy(), X, [("Subject", data.Subject.to_numpy(), X,
                                       ["(Intercept)", "Days"])],
        fixed_names=["(Intercept)", "Days"], response="Reaction", REML=REML)


def reference(REML):
    return LME4[("sleepstudy_corr", REML)]


@pytest.mark.parametrize("REML", [True, False])
def test_arrays_and_formula_give_the_same_objective(REML):
    from_formula = LinearMixedModel(FORMULA, load_dataset("sleepstudy"), REML=REML)
    from_arrays = sleepstudy_arrays(REML)
    ref = reference(REML)
    theta_ref = np.asarray(ref["theta"], float)
    for theta in (theta_ref, from_arrays.theta_start, np.array([0.5, -0.2, 0.1])):
        assert from_arrays.objective(theta) == pytest.approx(from_formula.objective(theta),
                                                             rel=1e-12)
    assert from_arrays.objective(theta_ref) == pytest.approx(ref["objective"], rel=1e-9)


@pytest.mark.parametrize("REML", [True, False])
def test_a_users_optimiser_reaches_lme4s_fit(REML):
    model, ref = sleepstudy_arrays(REML), reference(REML)
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in model.theta_lower]
    opt = scipy.optimize.minimize(model.objective, model.theta_start, method="L-BFGS-B",
                                  bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-9})
    assert opt.fun == pytest.approx(ref["objective"], rel=1e-8)
    fit = model.results_at(opt.x)
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-8)
    np.testing.assert_allclose(fit.beta.to_numpy(), list(ref["beta"].values()), rtol=1e-5)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    assert list(fit.params.index[:2]) == ["(Intercept)", "Days"]


def test_full_deviance_gradient_is_exact():
    """Against the closed form by dense algebra, ∂D/∂β = −2X'V₀⁻¹(y − Xβ)/σ² and
    ∂D/∂σ = 2n/σ − 2(y − Xβ)'V₀⁻¹(y − Xβ)/σ³, V₀ = I + ZΛΛ'Z'; on a model with a
    far-off covariate, so the working coordinates are not the identity."""
    data = load_dataset("sleepstudy").assign(Days=lambda d: d.Days + 1e4)
    model = LinearMixedModel(FORMULA, data, REML=False)
    design = model.design
    rng = np.random.default_rng(2)
    for _ in range(3):
        theta = np.array([0.9, 0.05, 0.2]) * rng.uniform(0.5, 1.5, 3)
        beta = np.array([-1e5, 10.0]) + rng.normal(0, 5, 2)
        sigma = rng.uniform(15, 40)
        ZL = design.Z_sparse().toarray() @ design.Lambda_sparse(theta).toarray()
        r = design.y - design.X @ beta
        w = np.linalg.solve(np.eye(design.n) + ZL @ ZL.T, r)
        grad_beta, grad_sigma = model.full_deviance_gradient(theta, beta, sigma)
        np.testing.assert_allclose(grad_beta, -2 * design.X.T @ w / sigma**2, rtol=1e-6)
        assert grad_sigma == pytest.approx(2 * design.n / sigma - 2 * r @ w / sigma**3,
                                           rel=1e-6)


def test_bad_arrays_and_parameters_fail_clearly():
    data = load_dataset("sleepstudy")
    y, X = data.Reaction.to_numpy(), np.ones((len(data), 1))
    groups = [("Subject", data.Subject.to_numpy())]
    with pytest.raises(DataError, match="X has 179 rows"):
        LinearMixedModel.from_arrays(y, X[1:], groups)
    with pytest.raises(DataError, match="y has 1 missing"):
        LinearMixedModel.from_arrays(np.where(np.arange(len(y)) == 3, np.nan, y), X, groups)
    with pytest.raises(DataError, match="only 1 level"):
        LinearMixedModel.from_arrays(y, X, [("g", np.zeros(len(y)))])
    with pytest.raises(DataError, match="non-empty list"):
        LinearMixedModel.from_arrays(y, X, ("Subject", data.Subject.to_numpy()))
    model = LinearMixedModel.from_arrays(y, X, groups)
    with pytest.raises(ArgumentError, match="1 entries"):
        model.objective([1.0, 2.0])
    with pytest.raises(ArgumentError, match="positive"):
        model.full_deviance([1.0], [250.0], -1.0)
    with pytest.raises(DataError, match="built from arrays"):
        model.fit().predict(data)
