"""Compiled kernels against dense numpy: the marginal likelihood with V = σ²(ZΛΛ'Z' + I)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import linkmix
from linkmix.design import build_design
from linkmix.deviance import Deviance
from linkmix.engine import dense_curvature, make_engine
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


def many_levels(seed=3, n=240):
    """``synthetic`` with two more factors of 150 and 100 levels: the Schur complement
    of the second is wider than the compiled inverse's leaf blocks (64)."""
    frame = synthetic(n=n)
    rng = np.random.default_rng(seed)
    frame["g4"] = rng.integers(0, 150, n).astype(str)
    frame["g5"] = rng.integers(0, 100, n).astype(str)
    frame["y"] += rng.normal(size=150)[frame.g4.astype(int)] + rng.normal(size=100)[
        frame.g5.astype(int)]
    return frame


DESIGNS = {
    "vector-first": ("Reaction ~ Days + (Days | Subject)", lambda: load_dataset("sleepstudy")),
    "crossed": ("diameter ~ 1 + (1 | plate) + (1 | sample)", lambda: load_dataset("Penicillin")),
    "vector-later": ("y ~ x + f + (1 | g1) + (1 + x | g2) + (1 | g1:g3)", synthetic),
    "three-coef-first": ("y ~ x + (1 + x + w | g1) + (1 | g2)", synthetic),
    "factor-split": ("y ~ x + (0 + f || g2) + (1 | g3)", synthetic),
    "nested": ("y ~ x + (1 | g3/g2)", synthetic),
    "vector-later-3": ("y ~ 1 + (1 | g1) + (1 + x + w | g2)", synthetic),
    "wide-schur": ("y ~ x + (1 | g4) + (1 | g5) + (1 | g2)", many_levels),
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


@pytest.mark.parametrize("kind", ["blocked", "blocked-sparse", "cholmod"])
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


@pytest.mark.parametrize("kind", ["blocked", "blocked-sparse", "cholmod"])
def test_solve_matches_dense_and_keeps_the_response(design, kind):
    """engine.solve(b) = (Λ'Z'ZΛ + I)⁻¹b for one and several right-hand sides, and the
    factor's own quantities (β̂, r², ũ) are what they were."""
    theta = design.theta_start() * 0.8
    engine = make_engine(design, kind)
    assert engine.update(theta)
    before = (engine.beta_hat(), engine.prss(), engine.conditional_modes(engine.beta_hat()))
    ZL = design.Z_sparse().toarray() @ design.Lambda_sparse(theta).toarray()
    A = ZL.T @ ZL + np.eye(design.q)
    B = np.random.default_rng(5).normal(size=(design.q, 3))
    np.testing.assert_allclose(engine.solve(B), np.linalg.solve(A, B), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(engine.solve(B[:, 0]), np.linalg.solve(A, B[:, 0]),
                               rtol=1e-9, atol=1e-12)
    after = (engine.beta_hat(), engine.prss(), engine.conditional_modes(engine.beta_hat()))
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)


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


@pytest.mark.parametrize("kind", ["blocked", "blocked-sparse", "cholmod"])
def test_set_response_equals_a_fresh_engine(design, kind):
    """Replacing y (a linked mean's y − f(Π)) reuses the pattern and changes only the
    numbers; a factor at the same θ made before is not taken for the new one."""
    rng = np.random.default_rng(3)
    y_new = design.y + rng.normal(size=design.n)
    theta = design.theta_start() * 0.8
    engine = make_engine(design, kind)
    engine.update(theta)
    engine.set_response(y_new)
    engine.update(theta)
    from dataclasses import replace
    fresh = make_engine(replace(design, y=y_new), kind)
    fresh.update(theta)
    np.testing.assert_allclose(engine.Lxy, fresh.Lxy, rtol=1e-10, atol=1e-10)
    assert engine.logdet_L == pytest.approx(fresh.logdet_L, rel=1e-12)


@pytest.mark.parametrize("kind", ["blocked", "blocked-sparse", "cholmod"])
def test_a_factor_is_reused_only_at_its_own_theta(design, kind, monkeypatch):
    """update(θ) at the current factor's θ refactors nothing; a θ buffer the caller
    changes in place afterwards (as optimisers do) is a new θ."""
    theta = design.theta_start() * 0.8
    engine = make_engine(design, kind)
    assert engine.update(theta)
    logdet = engine.logdet_L
    calls = []
    # the first step of a factorisation: the blocked engines' BLAS wrapper, CHOLMOD's Λ'Z'
    target, name = ((engine, "_blas") if kind != "cholmod"
                    else (linkmix.engine._pls, "lambdat_zt_values"))
    first_step = getattr(target, name)
    monkeypatch.setattr(target, name, lambda *a: calls.append(1) or first_step(*a))
    assert engine.update(theta.copy()) and not calls and engine.logdet_L == logdet
    theta *= 0.5
    assert engine.update(theta) and calls
    fresh = make_engine(design, kind)
    fresh.update(theta)
    assert engine.logdet_L == pytest.approx(fresh.logdet_L, rel=1e-13)


# ---- small dense linear algebra (linkmix.linalg) against numpy and scipy ----------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), p=st.integers(0, 6), seed=st.integers(0, 2**31 - 1),
       exponent=st.integers(-300, 300), order=st.sampled_from("CF"))
def test_scaled_qr_matches_numpy(n, p, seed, exponent, order):
    from linkmix.linalg import pow2_column_scales, scaled_qr

    rng = np.random.default_rng(seed)
    M = np.array(rng.normal(size=(n, p)) * 10.0 ** exponent, order=order)
    if p:
        M[:, rng.integers(p)] = 0.0  # a zero column: scale 2, norm 0
    top = np.max(np.abs(M), axis=0, initial=0.0)
    D_ref = np.ldexp(1.0, np.frexp(np.where(top > 0, top, 1.0))[1])
    np.testing.assert_array_equal(pow2_column_scales(M), D_ref)
    if n < p:
        with pytest.raises(ValueError):
            scaled_qr(M, True)
        return
    Q, R, D, norms = scaled_qr(M, True)
    np.testing.assert_array_equal(D, D_ref)
    scaled = M / D_ref
    np.testing.assert_allclose(norms, np.linalg.norm(scaled, axis=0), rtol=1e-14)
    np.testing.assert_allclose(Q @ R, scaled, atol=1e-14)
    np.testing.assert_allclose(Q.T @ Q, np.eye(p), atol=1e-13)
    assert np.all(np.diag(R) >= 0) and np.array_equal(R, np.triu(R))
    R_ref = np.linalg.qr(scaled, mode="r")
    np.testing.assert_allclose(np.abs(np.diag(R)), np.abs(np.diag(R_ref)), rtol=1e-12, atol=1e-14)
    assert scaled_qr(M, False)[0] is None


@pytest.mark.parametrize("order", ["C", "F", "block"])
@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [True, False])
def test_solve_triangular_matches_scipy(order, lower, trans):
    import scipy.linalg
    from linkmix.linalg import solve_triangular

    rng = np.random.default_rng(1)
    full = rng.normal(size=(9, 9)) + 6 * np.eye(9)
    full = np.tril(full) if lower else np.triu(full)
    A = (np.asfortranarray(np.pad(full, 2))[2:11, 2:11] if order == "block"
         else np.array(full, order=order))
    for b in (rng.normal(size=9), rng.normal(size=(9, 3))):
        np.testing.assert_allclose(solve_triangular(A, b, lower=lower, trans=trans),
                                   scipy.linalg.solve_triangular(full, b, lower=lower,
                                                                 trans=int(trans)),
                                   rtol=1e-12)
    singular = np.array(A)
    singular[4, 4] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match="diagonal entry 5"):
        solve_triangular(singular, np.ones(9), lower=lower)


@pytest.mark.parametrize("n", [0, 1, 7, 64, 65, 130, 300, 517])
def test_inverse_from_factor_matches_numpy(n):
    """(LL')⁻¹ from the Cholesky factor L, as the selected inverse takes each
    supernode's diagonal block: LAPACK's dpotri up to 64, by halves above."""
    from linkmix._pls import inverse_from_factor

    rng = np.random.default_rng(n)
    M = rng.normal(size=(n, n + 3))
    A = M @ M.T / n + np.eye(n) if n else np.zeros((0, 0))
    L = np.asfortranarray(np.linalg.cholesky(A))
    upper = np.triu(np.full((n, n), 7.0), 1)  # the strict upper triangle is not touched
    work = np.asfortranarray(np.tril(L) + upper)
    inverse_from_factor(work)
    np.testing.assert_allclose(np.tril(work), np.tril(np.linalg.inv(A)), rtol=1e-10,
                               atol=1e-13)
    np.testing.assert_array_equal(np.triu(work, 1), upper)
    with pytest.raises(ValueError, match="square"):
        inverse_from_factor(np.zeros((3, 2), order="F"))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 40), seed=st.integers(0, 2**31 - 1), exponent=st.integers(-300, 300),
       special=st.sampled_from([None, 0.0, np.inf, -np.inf, np.nan]))
def test_magnitudes_match_numpy(n, seed, exponent, special):
    from linkmix.linalg import magnitudes

    v = np.random.default_rng(seed).normal(size=n) * 10.0 ** exponent
    if special is not None and n:
        v[n // 2] = special
    size, largest = magnitudes(v)
    if not n:
        assert (size, largest) == (0.0, 0.0)
        return
    expected_largest = np.max(np.abs(v))
    if np.isnan(expected_largest):
        assert np.isnan(largest) and size == np.inf
        return
    assert largest == expected_largest
    if not np.isfinite(largest):
        assert size == np.inf
        return
    top = expected_largest if expected_largest > 0 else 1.0
    expected = top * np.sqrt(np.mean((v / top) ** 2))  # scaled: cannot overflow
    assert size == pytest.approx(expected, rel=1e-14, abs=0.0)


def test_newton_system_matches_dense(design):
    """A Newton step of PNLS: per-observation curvature E_i over its random-effect slots
    and a shift s_i of their right-hand side (``BlockedSystem.slot_products``, the
    compiled assembly PNLS uses) against Λ'(Z'Z + Σ P_i'E_iP_i)Λ + I and
    Λ'(Z'r + Σ P_i's_i) assembled densely."""
    rng = np.random.default_rng(7)
    n, q = design.n, design.q
    slot_columns, offset = [], 0
    for term in design.terms:
        slot_columns.append(offset + term.codes[:, None] * term.k + np.arange(term.k))
        offset += term.q
    P = np.hstack(slot_columns)                  # observation i's slots → columns of u
    K = P.shape[1]
    half = 0.1 * rng.normal(size=(n, K, K))
    E = half @ half.transpose(0, 2, 1)            # positive semi-definite per observation
    shift = rng.normal(size=(n, K))
    response = design.y + rng.normal(size=n)
    engine = make_engine(design, "blocked")
    engine.set_Z([term.Z for term in design.terms], response=response)
    engine.system.slot_products(E, shift)
    theta = design.theta_start() * 0.8
    assert engine.update(theta)
    Z = design.Z_sparse().toarray()
    Lam = design.Lambda_sparse(theta).toarray()
    gram, rhs_shift = Z.T @ Z, np.zeros(q)
    for i in range(n):
        gram[np.ix_(P[i], P[i])] += E[i]
        rhs_shift[P[i]] += shift[i]
    A = Lam.T @ gram @ Lam + np.eye(q)
    beta = rng.normal(size=design.p)
    expected = np.linalg.solve(A, Lam.T @ (Z.T @ (response - design.X @ beta) + rhs_shift))
    assert engine.logdet_L == pytest.approx(np.linalg.slogdet(A)[1], rel=1e-10)
    np.testing.assert_allclose(engine.conditional_modes(beta), expected, rtol=1e-8, atol=1e-10)
    # the curvature and the shift may come in separate passes
    engine.set_Z([term.Z for term in design.terms], response=response)
    engine.system.slot_products(E, None)
    engine.system.slot_products(None, shift)
    assert engine.update(theta)
    np.testing.assert_allclose(engine.conditional_modes(beta), expected, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="n × K × K"):
        engine.system.slot_products(np.ascontiguousarray(E[:, :-1]), None)


@pytest.mark.parametrize("REML", [False, True])
@pytest.mark.parametrize("kind", ["blocked", "blocked-sparse"])
def test_exact_gradient_matches_differences(design, kind, REML):
    """∇d(θ) from the selected inverse and the envelope theorem against central
    differences of d, at a θ with every coefficient of T free (ML and REML)."""
    rng = np.random.default_rng(11)
    lower = design.theta_lower
    theta = np.where(np.isfinite(lower), rng.uniform(0.2, 1.5, len(lower)),
                     rng.uniform(-0.8, 0.8, len(lower)))
    deviance = Deviance(make_engine(design, kind), REML=REML)
    assert deviance.has_gradient
    value, gradient = deviance.value_and_gradient(theta)
    assert value == deviance(theta)
    h = 1e-5
    steps = h * np.eye(len(theta))
    central = np.array([(deviance(theta + e) - deviance(theta - e)) / (2 * h) for e in steps])
    np.testing.assert_allclose(gradient, central, rtol=1e-5, atol=1e-5 * max(1.0, abs(value)) * h)


@pytest.mark.parametrize("kind", ["blocked", "blocked-sparse"])
def test_xvx_gradient_matches_dense(design, kind):
    """∂(X'V₀⁻¹X)/∂θ_i by the envelope theorem (``xvx_gradient``) against the dense
    −X'V₀⁻¹(∂V₀/∂θ_i)V₀⁻¹X, V₀ = I + ZΛΛ'Z' and ∂Λ/∂θ_i = Λ(e_i) (Λ is linear in θ)."""
    rng = np.random.default_rng(5)
    lower = design.theta_lower
    theta = np.where(np.isfinite(lower), rng.uniform(0.2, 1.5, len(lower)),
                     rng.uniform(-0.8, 0.8, len(lower)))
    engine = make_engine(design, kind)
    assert engine.update(theta)
    Z = design.Z_sparse().toarray()
    Lam = design.Lambda_sparse(theta).toarray()
    V = np.eye(design.n) + Z @ Lam @ Lam.T @ Z.T
    VX = np.linalg.solve(V, design.X)
    expected = []
    for e in np.eye(len(theta)):
        D = design.Lambda_sparse(e).toarray()
        dV = Z @ (D @ Lam.T + Lam @ D.T) @ Z.T
        expected.append(-VX.T @ dV @ VX)
    got = engine.xvx_gradient()
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-9, atol=1e-11 * scale)


@pytest.mark.parametrize("REML", [False, True])
@pytest.mark.parametrize("kind", ["blocked", "blocked-sparse"])
@pytest.mark.parametrize("small", [False, True])
def test_logdet_gradient_matches_dense(design, kind, REML, small):
    """∂(log|A| [+ log|X'V₀⁻¹X|])/∂θ_i from the selected inverse against dense numpy:
    tr(A⁻¹∂A/∂θ_i) [− tr((X'V₀⁻¹X)⁻¹X'V₀⁻¹(∂V₀/∂θ_i)V₀⁻¹X)].  With scalar terms only
    the diagonal of A⁻¹ serves; a θ below SCALAR_TRACE_MIN (``small``) takes the
    general contraction."""
    rng = np.random.default_rng(17)
    lower = design.theta_lower
    theta = np.where(np.isfinite(lower), rng.uniform(0.2, 1.5, len(lower)),
                     rng.uniform(-0.8, 0.8, len(lower)))
    if small:
        theta[0] = 0.005
    engine = make_engine(design, kind)
    assert engine.update(theta)
    Z = design.Z_sparse().toarray()
    Lam = design.Lambda_sparse(theta).toarray()
    A = Lam.T @ Z.T @ Z @ Lam + np.eye(design.q)
    V = np.eye(design.n) + Z @ Lam @ Lam.T @ Z.T
    VX = np.linalg.solve(V, design.X)
    expected = []
    for e in np.eye(len(theta)):
        D = design.Lambda_sparse(e).toarray()
        dA = D.T @ Z.T @ Z @ Lam + Lam.T @ Z.T @ Z @ D
        value = np.trace(np.linalg.solve(A, dA))
        if REML:
            dV = Z @ (D @ Lam.T + Lam @ D.T) @ Z.T
            value -= np.trace(np.linalg.solve(design.X.T @ VX, VX.T @ dV @ VX))
        expected.append(value)
    np.testing.assert_allclose(engine.logdet_gradient(REML), expected, rtol=1e-9,
                               atol=1e-10 * np.max(np.abs(expected)))


@pytest.mark.parametrize("REML", [False, True])
def test_dense_curvature_matches_the_engine_numpy_and_differences(design, REML):
    """The dense kernel's parts at a θ with every coefficient of T free: values and
    gradients as the engine's, M = (X'V₀⁻¹X)⁻¹ as numpy's, and the Hessians of ℓ and r²
    and ∂M/∂θ as central differences of its own exact gradients and M."""
    rng = np.random.default_rng(5)
    lower = design.theta_lower
    theta = np.where(np.isfinite(lower), rng.uniform(0.2, 1.5, len(lower)),
                     rng.uniform(-0.8, 0.8, len(lower)))
    kernel = dense_curvature(design, REML, always=True)
    engine = make_engine(design, "blocked")
    assert kernel.evaluate(theta, 2) and engine.update(theta)
    np.testing.assert_allclose([kernel.logdet_A, kernel.logdet_RX, kernel.r2],
                               [engine.logdet_L, engine.logdet_RX(), engine.prss()], rtol=1e-10)
    np.testing.assert_allclose(kernel.beta, engine.beta_hat(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(kernel.grad_ell, engine.logdet_gradient(REML), rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(kernel.grad_r2, engine.prss_gradient(), rtol=1e-8,
                               atol=1e-10 * kernel.r2)
    ZL = design.Z_sparse().toarray() @ design.Lambda_sparse(theta).toarray()
    V = ZL @ ZL.T + np.eye(design.n)
    np.testing.assert_allclose(kernel.M, np.linalg.inv(design.X.T @ np.linalg.solve(V, design.X)),
                               rtol=1e-8)
    ell_h, r2_h, M_h = kernel.hess_ell, kernel.hess_r2, kernel.dM
    h = 1e-5
    for i, e in enumerate(h * np.eye(len(theta))):
        parts = []
        for point in (theta + e, theta - e):
            assert kernel.evaluate(point, 2)
            parts.append((kernel.grad_ell, kernel.grad_r2, kernel.M))
        (ell_a, r2_a, M_a), (ell_b, r2_b, M_b) = parts
        np.testing.assert_allclose(ell_h[:, i], (ell_a - ell_b) / (2 * h), rtol=1e-5,
                                   atol=1e-6 * np.abs(ell_h).max())
        np.testing.assert_allclose(r2_h[:, i], (r2_a - r2_b) / (2 * h), rtol=1e-5,
                                   atol=1e-6 * np.abs(r2_h).max())
        np.testing.assert_allclose(M_h[i], (M_a - M_b) / (2 * h), rtol=1e-5,
                                   atol=1e-6 * np.abs(M_h).max())


def test_dense_curvature_is_kept_for_small_models_only(design):
    """The kernel is made where it costs less than differencing the engine's gradient:
    for sleepstudy's and Penicillin's designs (q ≤ 40), not the one with 250 levels."""
    kernel = dense_curvature(design, False)
    if design.q <= 40:
        assert kernel is not None
    if design.q > 200:
        assert kernel is None


@pytest.mark.parametrize("d", [1, 3, 6])
def test_scaled_pinv_and_satterthwaite_test_match_numpy(d):
    """The compiled scaled pseudo-inverse is the inverse of a nonsingular H and leaves a
    flat direction out (whatever the coordinates' units); the compiled t-test parts are
    λ'Φλ and 2v²/g'Ag by numpy."""
    from linkmix import _dense

    rng = np.random.default_rng(d)
    B = rng.normal(size=(d, d))
    units = np.diag(10.0 ** rng.uniform(-4, 4, d))
    H = units @ (B @ B.T + d * np.eye(d)) @ units
    inverse, values = _dense.scaled_pinv(H, 1e-10)
    np.testing.assert_allclose(inverse @ H, np.eye(d), atol=1e-8)
    assert np.all(np.diff(values) >= 0)
    if d > 1:
        v = rng.normal(size=d)
        flat = units @ np.outer(v, v) @ units    # rank one: d − 1 directions are flat
        pinv, values = _dense.scaled_pinv(flat, 1e-10)
        assert np.sum(values > 1e-10 * values.max()) == 1
        np.testing.assert_allclose(flat @ pinv @ flat, flat, rtol=1e-8, atol=1e-12)
    p, m, r = 3, d + 1, 4
    C = rng.normal(size=(p, p))
    vcov = C @ C.T + np.eye(p)
    J = rng.normal(size=(m, p, p))
    J = J + J.transpose(0, 2, 1)
    A_root = rng.normal(size=(m, m))
    A = A_root @ A_root.T
    L = rng.normal(size=(r, p))
    variance, df = _dense.satterthwaite_test(L, vcov, A, J)
    expected_v = np.einsum("ra,ab,rb->r", L, vcov, L)
    g = np.einsum("ra,kab,rb->rk", L, J, L)
    np.testing.assert_allclose(variance, expected_v, rtol=1e-12)
    np.testing.assert_allclose(df, 2 * expected_v**2 / np.einsum("rk,kl,rl->r", g, A, g),
                               rtol=1e-10)
