"""Compiled kernels against dense numpy: the marginal likelihood with V = σ²(ZΛΛ'Z' + I)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import linkmix
from linkmix.design import build_design
from linkmix.deviance import Deviance
from linkmix.engine import make_engine
from conftest import load_dataset


def synthetic(seed=0, n=240):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "g1": rng.integers(0, 20, n).astype(str),
        "g2": rng.integers(0, 5, n).astype(str),
        "g3": rng.choice(["a", "b", "c"], n),
        "f": rng.choice(["lo", "mid", "hi"], n),
        "x": rng.normal(size=n),
        "w": rng.uniform(-1, 1, n),
    })
    frame["y"] = 1 + frame.x + rng.normal(size=n) + rng.normal(size=20)[frame.g1.astype(int)]
    return frame


DESIGNS = {
    "vector-first": ("Reaction ~ Days + (Days | Subject)", lambda: load_dataset("sleepstudy")),
    "crossed": ("diameter ~ 1 + (1 | plate) + (1 | sample)", lambda: load_dataset("Penicillin")),
    "vector-later": ("y ~ x + f + (1 | g1) + (1 + x | g2) + (1 | g1:g3)", synthetic),
    "three-coef-first": ("y ~ x + (1 + x + w | g1) + (1 | g2)", synthetic),
    "factor-split": ("y ~ x + (0 + f || g2) + (1 | g3)", synthetic),
    "nested": ("y ~ x + (1 | g3/g2)", synthetic),
    "vector-later-3": ("y ~ 1 + (1 | g1) + (1 + x + w | g2)", synthetic),
}


def dense_reference(design, theta, beta, sigma):
    """−2 log L, log|Λ'Z'ZΛ + I|, β̂ and ũ by dense linear algebra."""
    ZL = design.Z_sparse().toarray() @ design.Lambda_sparse(theta).toarray()
    A = ZL.T @ ZL + np.eye(design.q)
    logdet_A = np.linalg.slogdet(A)[1]
    V = sigma**2 * (ZL @ ZL.T + np.eye(design.n))
    resid = design.y - design.X @ beta
    neg2ll = (design.n * np.log(2 * np.pi) + np.linalg.slogdet(V)[1]
              + resid @ np.linalg.solve(V, resid))
    Vinv_X = np.linalg.solve(V, design.X)
    beta_gls = np.linalg.solve(design.X.T @ Vinv_X, Vinv_X.T @ design.y)
    u = np.linalg.solve(A, ZL.T @ resid)
    return neg2ll, logdet_A, beta_gls, u


@pytest.fixture(scope="module", params=sorted(DESIGNS))
def design(request):
    formula, data = DESIGNS[request.param]
    return build_design(formula, data())


@pytest.mark.parametrize("kind", ["blocked", "cholmod"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_engine_matches_dense_likelihood(design, kind, data):
    engine = make_engine(design, kind)
    _, _, _, lower = design.theta_template()
    theta = np.array([data.draw(st.floats(0.0 if np.isfinite(lo) else -2.0, 2.0))
                      for lo in lower])
    beta = np.array(data.draw(st.lists(st.floats(-3, 3), min_size=design.p,
                                       max_size=design.p)))
    sigma = data.draw(st.floats(0.2, 5.0))
    neg2ll, logdet_A, beta_gls, u = dense_reference(design, theta, beta, sigma)
    deviance = Deviance(engine, REML=False)
    assert deviance.full(theta, beta, sigma) == pytest.approx(neg2ll, rel=1e-9, abs=1e-8)
    assert engine.logdet_L == pytest.approx(logdet_A, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(engine.beta_hat(), beta_gls, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(engine.conditional_modes(beta), u, rtol=1e-7, atol=1e-8)


def test_profiled_deviances_match_dense(design):
    """ML: d(θ) = −2 log L at (β̂, σ̂); REML adds log|X'V⁻¹X| − p log σ̂² terms."""
    theta = design.theta_start() * 0.7
    engine = make_engine(design, "blocked")
    ml = Deviance(engine, REML=False)(theta)
    sigma_ml = np.sqrt(engine.prss() / design.n)
    neg2ll, *_ = dense_reference(design, theta, engine.beta_hat(), sigma_ml)
    assert ml == pytest.approx(neg2ll, rel=1e-10)

    reml = Deviance(engine, REML=True)(theta)
    n, p = design.n, design.p
    sigma2 = engine.prss() / (n - p)
    neg2ll_s, *_ = dense_reference(design, theta, engine.beta_hat(), np.sqrt(sigma2))
    ZL = design.Z_sparse().toarray() @ design.Lambda_sparse(theta).toarray()
    V = sigma2 * (ZL @ ZL.T + np.eye(n))
    XtVX = design.X.T @ np.linalg.solve(V, design.X)
    expected = neg2ll_s + np.linalg.slogdet(XtVX)[1] - p * np.log(2 * np.pi)
    assert reml == pytest.approx(expected, rel=1e-10)


def test_engines_agree_on_fits(design):
    fits = [linkmix.LinearMixedModel(design.formula.text, _data_for(design), engine=k).fit()
            for k in ("blocked", "cholmod")]
    assert fits[0].objective == pytest.approx(fits[1].objective, rel=1e-9)


def _data_for(design):
    for formula, data in DESIGNS.values():
        if formula == design.formula.text:
            return data()
    raise KeyError(design.formula.text)


@pytest.mark.parametrize("kind", ["blocked", "cholmod"])
def test_set_response_equals_a_fresh_engine(design, kind):
    """Replacing y (a linked mean's y − f(Π)) reuses the pattern and changes only the numbers."""
    rng = np.random.default_rng(3)
    y_new = design.y + rng.normal(size=design.n)
    theta = design.theta_start() * 0.8
    engine = make_engine(design, kind)
    engine.set_response(y_new)
    engine.update(theta)
    from dataclasses import replace
    fresh = make_engine(replace(design, y=y_new), kind)
    fresh.update(theta)
    np.testing.assert_allclose(engine.Lxy, fresh.Lxy, rtol=1e-10, atol=1e-10)
    assert engine.logdet_L == pytest.approx(fresh.logdet_L, rel=1e-12)
