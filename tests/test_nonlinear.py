"""Nonlinear mixed models (Laplace) against lme4's nlmer (tests/data/lme4_nlmer.json)."""

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest
import scipy.integrate

import linkmix
from linkmix import ModelFunctionError, datasets
from linkmix.cli import main as cli_main
from linkmix.nonlinear import NonlinearMixedModel
from linkmix.numdiff import rowwise_jacobian
from linkmix.ssmodels import SELF_STARTING

REFS = {r["name"]: r for r in
        json.loads((pathlib.Path(__file__).parent / "data" / "lme4_nlmer.json").read_text())}
CASES = {
    "Orange_logis_Asym": ("Orange", "circumference ~ SSlogis(age, Asym, xmid, scal) ~ Asym | Tree",
                          None),
    "Theoph_fol_diag3": ("Theoph", "conc ~ SSfol(Dose, Time, lKe, lKa, lCl)",
                         "lKe + lKa + lCl || Subject"),
}
_FITS = {}
ORANGE = "circumference ~ SSlogis(age, Asym, xmid, scal)"


def _logistic_jacobian(phi, cov):
    e = np.exp((phi["xmid"] - cov["age"]) / phi["scal"])
    d = 1 / (1 + e)
    g = phi["Asym"] * e * d * d / phi["scal"]
    return np.column_stack([d, -g, g * (phi["xmid"] - cov["age"]) / phi["scal"]])


#: SSlogis as a user model with its Jacobian (PNLS differences it for Newton steps).
LOGISTIC = linkmix.user_model(
    lambda phi, cov: phi["Asym"] / (1 + np.exp((phi["xmid"] - cov["age"]) / phi["scal"])),
    ["Asym", "xmid", "scal"], ["age"], jacobian=_logistic_jacobian, name="logistic")


def fitted(name):
    if name not in _FITS:
        stem, formula, random = CASES[name]
        _FITS[name] = linkmix.nlmer(formula, datasets.load(stem), random=random)
    return _FITS[name]


#: Relative tolerance of the SDs against nlmer's.  Theoph's optimum is not nlmer's: the
#: Laplace deviance is flat along sd[lKe], which nlmer leaves at 9.3e-4 and linkmix takes
#: to 0 at a deviance 3.5e-4 lower; sd[lKa] moves 3.6e-3 with it.
SD_RTOL = {"Orange_logis_Asym": 1e-3, "Theoph_fol_diag3": 5e-3}


@pytest.mark.parametrize("name", sorted(CASES))
def test_laplace_fit_matches_nlmer(name):
    ref, fit = REFS[name], fitted(name)
    assert fit.converged
    assert fit.objective <= ref["objective"] * (1 + 1e-7)  # nlmer's optimum or better
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-6)
    beta_ref = np.array([ref["beta"][k] for k in fit.beta.index])
    np.testing.assert_allclose(fit.beta.to_numpy(), beta_ref, rtol=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)
    # random-effect SDs σ·θ (all terms scalar here)
    sd = fit.params.estimate
    theta_ref = np.atleast_1d(ref["theta"])
    for term, theta in zip(fit.design.terms, theta_ref):
        expected = ref["sigma"] * theta
        got = sd[f"sd[{term.coef_names[0]}|{term.group}]"]
        if expected < 1e-2 * ref["sigma"]:  # nlmer near the boundary: at it or closer
            assert got <= expected
        else:
            assert got == pytest.approx(expected, rel=SD_RTOL[name]), term.coef_names


@pytest.mark.parametrize("name", sorted(CASES))
def test_laplace_deviance_at_nlmers_estimates(name):
    """No optimiser: the Laplace deviance and σ̂ at nlmer's own θ and β."""
    ref = REFS[name]
    stem, formula, random = CASES[name]
    model = NonlinearMixedModel(formula, datasets.load(stem), random)
    theta = np.atleast_1d(ref["theta"]).astype(float)
    beta = np.array([ref["beta"][k] for k in model.design.fixed_names])
    assert model.laplace(theta, beta) == pytest.approx(ref["objective"], rel=1e-6)
    r2 = model.pnls(theta, beta)[0].r2
    assert math.sqrt(r2 / model.n) == pytest.approx(ref["sigma"], rel=1e-9)


VCOV_REFS = json.loads((pathlib.Path(__file__).parent / "data" /
                        "lme4_nlmer_vcov.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_vcov_at_nlmers_estimates(name):
    """No optimiser: σ²(R_X'R_X)⁻¹ of the model linearised at nlmer's own θ and β against
    nlmer's vcov (make_lme4_nlmer_vcov.R); at linkmix's own optimum the SEs within 5e-3."""
    ref = VCOV_REFS[name]
    stem, formula, random = CASES[name]
    model = NonlinearMixedModel(formula, datasets.load(stem), random)
    theta = np.atleast_1d(ref["theta"]).astype(float)
    beta = np.array([ref["beta"][k] for k in model.design.fixed_names])
    at = model.results_at(theta, beta)
    np.testing.assert_allclose(at.vcov.to_numpy(), np.array(ref["vcov"]), rtol=3e-6)
    se = np.array([ref["se"][k] for k in model.design.fixed_names])
    np.testing.assert_allclose(fitted(name).se.to_numpy(), se, rtol=5e-3)


def test_start_is_on_the_problems_scale():
    """Two Lindstrom–Bates steps put θ and β near the optimum and size the first steps;
    a user's θ start (here lme4's, far off) reaches the same optimum."""
    fit = fitted("Orange_logis_Asym")
    model = fit.model
    begin = model.start()
    assert np.all(np.isfinite(begin.theta_steps)) and np.all(begin.theta_steps > 0)
    assert 0.5 < begin.theta[0] / fit.theta[0] < 2.0
    np.testing.assert_allclose(begin.beta, fit.beta.to_numpy(), rtol=0.05)
    # β's scale is its covariance in the linearised fit: about the fit's own
    cov = begin.beta_root @ begin.beta_root.T
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), fit.se.to_numpy(), rtol=0.5)
    other = model.fit(theta_start=[1.0])
    assert other.objective == pytest.approx(fit.objective, rel=1e-8)


def test_two_terms_on_one_parameter_add():
    """Asym varying by tree and by a crossed factor: PNLS's φ adds both terms' effects
    (SSlogis by hand as the reference)."""
    data = datasets.load("Orange")
    data["season"] = (data.age.rank(method="dense").astype(int) % 3).astype(str)
    model = NonlinearMixedModel("circumference ~ SSlogis(age, Asym, xmid, scal)", data,
                                ["Asym | Tree", "Asym | season"])
    theta, beta = np.array([2.0, 0.5]), np.array([190.0, 720.0, 350.0])
    u = np.random.default_rng(4).normal(size=model.design.q)
    mu = model.conditional_mean(theta, beta, u)
    b = model.design.Lambda_times(theta, u)
    asym = beta[0].copy()
    for term, b_t in zip(model.design.terms, model.design.by_term(b)):
        asym = asym + b_t[term.codes, 0]
    by_hand = asym / (1 + np.exp((beta[1] - data.age.to_numpy()) / beta[2]))
    np.testing.assert_allclose(mu, by_hand, rtol=1e-14)
    fit = model.fit()
    assert fit.converged and np.isfinite(fit.objective)


def test_three_part_formula_equals_random_argument():
    data = datasets.load("Orange")
    a = fitted("Orange_logis_Asym")
    b = linkmix.nlmer("circumference ~ SSlogis(age, Asym, xmid, scal)", data, random="Asym | Tree")
    assert a.objective == pytest.approx(b.objective, rel=1e-10)


def _orange_with_season():
    data = datasets.load("Orange")
    data["season"] = (data.age.rank(method="dense").astype(int) % 3).astype(str)
    return data


#: PNLS layouts: (data, formula, random, model options, θ, β).  Scalar terms on three
#: parameters; a correlated term; a second, crossed term on the same or another
#: parameter (later terms of the blocked engine); a user model (differenced Hessian).
PNLS_LAYOUTS = {
    "three scalar terms": (lambda: datasets.load("Theoph"), CASES["Theoph_fol_diag3"][1],
                           CASES["Theoph_fol_diag3"][2], {}, [0.1, 0.9, 0.25],
                           [-2.45, 0.45, -3.2]),
    "correlated": (lambda: datasets.load("Orange"), ORANGE, "Asym + xmid | Tree", {},
                   [4.6, 3.9, 3.3], [191.0, 717.0, 347.0]),
    "crossed, same parameter": (_orange_with_season, ORANGE, ["Asym | Tree", "Asym | season"],
                                {}, [6.2, 2.1], [188.0, 710.0, 339.0]),
    "crossed, other parameter": (_orange_with_season, ORANGE, ["Asym | Tree", "xmid | season"],
                                 {}, [5.9, 10.1], [195.0, 744.0, 363.0]),
    "user model": (lambda: datasets.load("Orange"), "circumference ~ logistic(age, Asym, xmid, scal)",
                   "Asym + xmid | Tree", {"model": LOGISTIC}, [4.6, 3.9, 3.3],
                   [191.0, 717.0, 347.0]),
}


@pytest.mark.parametrize("engine", ["blocked", "blocked-sparse", "cholmod"])
@pytest.mark.parametrize("newton", [True, False])
@pytest.mark.parametrize("layout", sorted(PNLS_LAYOUTS))
def test_pnls_matches_dense_algebra(layout, newton, engine):
    """At fixed (θ, β), the compiled PNLS's ũ, r² and log|L|² against dense numpy: ũ is
    stationary, U'(y − μ(ũ)) = ũ with U = ∂μ/∂u = Z̃Λ (to PNLS's tolerance on ũ); r² = ‖y − μ(ũ)‖² + ‖ũ‖²;
    log|L|² = log det(U'U + I); and the Laplace deviance is made of them."""
    data, formula, random, options, theta, beta = PNLS_LAYOUTS[layout]
    model = NonlinearMixedModel(formula, data(), random, engine=engine, **options)
    model.newton = newton
    theta, beta = np.array(theta), np.array(beta)
    state, u, converged = model.pnls(theta, beta)
    assert converged
    y, n, q = model.design.y, model.n, model.design.q
    mu, grad, _ = model._mean(theta, beta, u)
    Z = np.zeros((n, q))
    offset = 0
    for term, cols in zip(model.design.terms, model.design.term_params):
        for c in range(term.k):
            Z[np.arange(n), offset + term.codes * term.k + c] = grad[:, cols[c]]
        offset += term.q
    U = Z @ model.design.Lambda_sparse(theta).toarray()
    # stationary: the Gauss–Newton step from ũ, (U'U + I)⁻¹(U'(y − μ) − ũ), is negligible
    step = np.linalg.solve(U.T @ U + np.eye(q), U.T @ (y - mu) - u)
    assert np.abs(step).max() <= 1e-7 * max(1.0, np.abs(u).max())
    assert state.r2 == pytest.approx(np.sum((y - mu) ** 2) + u @ u, rel=1e-13)
    assert state.logdet_L == pytest.approx(np.linalg.slogdet(U.T @ U + np.eye(q))[1], rel=1e-10)
    model._u = np.zeros_like(u)  # the same PNLS path as above: the formula, not restart noise
    assert model.laplace(theta, beta) == pytest.approx(
        state.logdet_L + n * (1 + math.log(2 * math.pi * state.r2 / n)), rel=1e-14)


def test_model_errors_inside_pnls_reach_the_caller():
    """A user function that raises part-way through PNLS's compiled loop: the error
    comes out as a ModelFunctionError naming it."""
    calls = {"n": 0}

    def flaky(phi, cov):
        calls["n"] += 1
        if calls["n"] == 3:  # PNLS's second trial point
            raise RuntimeError("out of memory in the solver")
        return LOGISTIC.value(np.column_stack([phi["Asym"], phi["xmid"], phi["scal"]]),
                              (cov["age"],))

    model = NonlinearMixedModel("circumference ~ flaky(age, Asym, xmid, scal)",
                                datasets.load("Orange"), "Asym | Tree",
                                model=linkmix.user_model(flaky, ["Asym", "xmid", "scal"],
                                                         ["age"], jacobian=_logistic_jacobian))
    with pytest.raises(ModelFunctionError, match="flaky.*RuntimeError: out of memory"):
        model.pnls(np.array([5.0]), np.array([191.0, 717.0, 347.0]))


def test_pnls_minimum_by_a_general_optimiser():
    """ũ's r² is the minimum a general optimiser finds (no Newton system involved)."""
    import scipy.optimize

    model = NonlinearMixedModel(*CASES["Theoph_fol_diag3"][1:2], datasets.load("Theoph"),
                                CASES["Theoph_fol_diag3"][2])
    theta, beta = np.array([0.1, 0.9, 0.25]), np.array([-2.45, 0.45, -3.2])
    state, u, _ = model.pnls(theta, beta)
    y = model.design.y

    def prss(v):
        mu = model.conditional_mean(theta, beta, v)
        return np.sum((y - mu) ** 2) + v @ v

    ref = scipy.optimize.minimize(prss, np.zeros_like(u), method="BFGS", options={"gtol": 1e-10})
    assert state.r2 == pytest.approx(ref.fun, rel=1e-9)
    np.testing.assert_allclose(u, ref.x, atol=1e-5)


def test_newton_and_gauss_newton_pnls_agree():
    model = NonlinearMixedModel(*CASES["Theoph_fol_diag3"][1:2], datasets.load("Theoph"),
                                CASES["Theoph_fol_diag3"][2])
    theta, beta = np.array([0.2, 0.9, 0.25]), np.array([-2.45, 0.45, -3.2])
    newton = model.laplace(theta, beta)
    model.newton = False
    model._u[:] = 0
    assert model.laplace(theta, beta) == pytest.approx(newton, rel=1e-9)


#: Typical parameters of each self-starting model, on covariates in (0.05, 24] (SSlogis:
#: up to 1,500).
TYPICAL = {"SSlogis": [200, 700, 300], "SSfol": [-2.5, 0.5, -3.2], "SSasymp": [10, 2, -1],
           "SSmicmen": [200, 0.1], "SSbiexp": [3, 1, 0.6, -1.5], "SSasympOff": [30, -1.5, 0.5],
           "SSasympOrig": [40, -1.5], "SSgompertz": [50, 3, 0.7],
           "SSweibull": [100, 80, -3, 1.8], "SSfpl": [5, 60, 8, 1.5]}


def test_every_self_starting_model_has_typical_values():
    assert sorted(TYPICAL) == sorted(SELF_STARTING)


@pytest.mark.parametrize("name", sorted(SELF_STARTING))
def test_compiled_models_check_their_shapes(name):
    """The compiled kernels read φ and the covariates unchecked: wrong shapes are refused
    before they run."""
    model = SELF_STARTING[name]
    s, k = len(model.params), len(model.covariates)
    cov = tuple(np.ones(5) for _ in range(k))
    with pytest.raises(ModelFunctionError, match="columns"):
        model.evaluate(np.ones((5, s - 1)), cov)
    with pytest.raises(ModelFunctionError, match="one value per row"):
        model.evaluate(np.ones((5, s)), tuple(np.ones(4) for _ in range(k)))
    with pytest.raises(ValueError, match="covariate"):
        model.gradient(np.ones((5, s)), cov + (np.ones(5),))


@pytest.mark.parametrize("name", sorted(SELF_STARTING))
def test_self_starting_gradients_match_finite_differences(name):
    model = SELF_STARTING[name]
    rng = np.random.default_rng(1)
    centre = TYPICAL[name]
    phi = np.array(centre) + 0.2 * rng.normal(size=(20, len(centre)))
    cov = tuple(rng.uniform(0.1, 1000 if name == "SSlogis" else 10, 20)
                for _ in model.covariates)
    np.testing.assert_allclose(model.gradient(phi, cov),
                               rowwise_jacobian(lambda p: model.value(p, cov), phi,
                                                rel_step=6e-6),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(SELF_STARTING))
def test_self_start_recovers_pooled_parameters(name):
    """Data simulated from the model itself: the self-start finds the parameters."""
    model = SELF_STARTING[name]
    truth = TYPICAL[name]
    t = np.linspace(0.05, 1500 if name == "SSlogis" else 24, 40)
    cov = (np.full(40, 4.0), t) if name == "SSfol" else (t,)
    y = model.value(np.tile(truth, (40, 1)).astype(float), cov)
    np.testing.assert_allclose(model.start(y, cov), truth, rtol=1e-4, atol=1e-4)


def test_user_model_with_and_without_jacobian():
    data = datasets.load("Orange")

    def logistic(phi, cov):
        return phi["Asym"] / (1 + np.exp((phi["xmid"] - cov["age"]) / phi["scal"]))

    model = linkmix.user_model(logistic, ["Asym", "xmid", "scal"], ["age"])
    fit = linkmix.nlmer("circumference ~ logistic(age, Asym, xmid, scal)", data,
                        random="Asym | Tree", model=model,
                        start={"Asym": 190, "xmid": 700, "scal": 350})
    assert fit.objective == pytest.approx(REFS["Orange_logis_Asym"]["objective"], rel=1e-4)


def test_covariate_on_a_model_parameter():
    data = datasets.load("Theoph")
    fit = linkmix.nlmer("conc ~ SSfol(Dose, Time, lKe, lKa, lCl)", data,
                        random="lKa + lCl || Subject", fixed={"lCl": "1 + Wt"})
    assert list(fit.beta.index) == ["lKe", "lKa", "lCl:(Intercept)", "lCl:Wt"]
    assert fit.converged and np.isfinite(fit.se).all()
    # Wt far from zero makes lCl's intercept and slope almost collinear; the optimiser
    # works on β decorrelated by the start's covariance, which has the fit's correlation
    begin = fit.model.start()
    cov = begin.beta_root @ begin.beta_root.T
    corr = cov[2, 3] / np.sqrt(cov[2, 2] * cov[3, 3])
    assert corr < -0.9
    assert corr == pytest.approx(fit.vcov.iloc[2, 3] / fit.se.iloc[2] / fit.se.iloc[3], abs=0.02)


def test_results_prediction_and_summary():
    fit = fitted("Orange_logis_Asym")
    data = datasets.load("Orange")
    np.testing.assert_allclose(fit.predict(data), fit.fitted(), rtol=1e-10)
    # SSlogis by hand: Asym_tree / (1 + exp((xmid − age)/scal)), Asym_tree = Asym + b̃_tree
    beta, b = fit.beta, fit.ranef()["Tree"]["Asym"]
    asym = beta["Asym"] + b.loc[data.Tree.astype(str)].to_numpy()
    by_hand = asym / (1 + np.exp((beta["xmid"] - data.age.to_numpy()) / beta["scal"]))
    np.testing.assert_allclose(fit.fitted(), by_hand, rtol=1e-12)
    np.testing.assert_allclose(fit.residuals(), data.circumference.to_numpy() - by_hand,
                               rtol=1e-9, atol=1e-9)
    new = pd.DataFrame({"age": [1000.0, 1000.0], "Tree": ["1", "unseen"]})
    with pytest.raises(linkmix.DataError, match="allow_new_levels"):
        fit.predict(new)
    pred = fit.predict(new, allow_new_levels=True)
    pop = fit.predict(new, include_random=False)
    assert pred[1] == pytest.approx(pop[1]) and pred[0] != pytest.approx(pop[0])
    re = fit.ranef()["Tree"]
    assert re.shape == (5, 1) and list(re.columns) == ["Asym"]
    assert np.isfinite(fit.se).all() and (fit.se > 0).all()
    text = str(fit.summary())
    assert "Nonlinear mixed model" in text and "sd" not in text.split("Random effects")[0]
    record = fit.to_dict()
    assert record["model"] == "SSlogis" and set(record["params"]) >= {"Asym", "sigma",
                                                                        "sd[Asym|Tree]"}


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(formula="y ~ nosuch(age, a)", random="a | Tree"), linkmix.FormulaError,
     "unknown model function 'nosuch'"),
    (dict(formula="circumference ~ SSlogis(age, Asym, xmid)", random="Asym | Tree"),
     linkmix.FormulaError, "takes 1 covariate"),
    (dict(formula="circumference ~ SSlogis(age, Asym, xmid, scal)", random="K | Tree"),
     linkmix.FormulaError, "model parameters"),
    (dict(formula="circumference ~ SSlogis(agez, Asym, xmid, scal)", random="Asym | Tree"),
     linkmix.DataError, "unknown column 'agez'"),
])
def test_bad_specifications(kwargs, error, message):
    with pytest.raises(error, match=message):
        linkmix.nlmer(data=datasets.load("Orange"), **kwargs)


def test_model_returning_nan_or_wrong_shape():
    data = datasets.load("Orange")
    bad_shape = linkmix.user_model(lambda phi, cov: np.ones(3), ["a"], ["age"], name="short")
    with pytest.raises(ModelFunctionError, match="returned shape"):
        linkmix.nlmer("circumference ~ short(age, a)", data, random="a | Tree", model=bad_shape,
                      start={"a": 1.0})
    nan_model = linkmix.user_model(lambda phi, cov: phi["a"] * np.nan, ["a"], ["age"], name="nan")
    with pytest.raises(linkmix.FitError, match="cannot be evaluated"):
        linkmix.nlmer("circumference ~ nan(age, a)", data, random="a | Tree", model=nan_model,
                      start={"a": 1.0})


def test_cli_nlfit(tmp_path, capsys):
    out = tmp_path / "nl.json"
    code = cli_main(["nlfit", datasets.path("Orange"), "--formula",
                     "circumference ~ SSlogis(age, Asym, xmid, scal)", "--random", "Asym | Tree",
                     "--json", str(out)])
    assert code == 0
    assert "Nonlinear mixed model" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["objective"] == pytest.approx(REFS["Orange_logis_Asym"]["objective"], rel=1e-4)
    # every field of `linkmix fit --json`, and the model's own
    linear = tmp_path / "lm.json"
    assert cli_main(["fit", datasets.path("sleepstudy"), "-f", "Reaction ~ Days + (Days | Subject)",
                     "--ml", "--json", str(linear)]) == 0
    assert set(json.loads(linear.read_text())) <= set(record)
    assert {"model", "nAGQ", "pnls_converged"} <= set(record)


def test_prediction_with_a_covariate_on_a_parameter():
    """CO2 with Asym depending on Type (lme4's 'Asym:Mississippi'): new rows by hand."""
    data = pd.read_csv(pathlib.Path(__file__).parent / "data" / "nlmer_suite" /
                       "CO2_asympOff_Type.csv")
    fit = linkmix.nlmer("uptake ~ SSasympOff(conc, Asym, lrc, c0) ~ 0 + Asym + lrc + c0 + "
                        "Asym:Mississippi + (0 + Asym | Plant)", data)
    assert fit.design.fixed_names == ["Asym:(Intercept)", "Asym:Mississippi", "lrc", "c0"]
    new = pd.DataFrame({"conc": [500.0, 500.0, 500.0], "Mississippi": [0.0, 1.0, 1.0],
                        "Plant": ["Qn1", "Mn1", "unseen"]})
    b = fit.ranef()["Plant"]["Asym"]
    beta = fit.beta
    asym = beta["Asym:(Intercept)"] + beta["Asym:Mississippi"] * new.Mississippi.to_numpy()
    shape = 1 - np.exp(-np.exp(beta["lrc"]) * (500.0 - beta["c0"]))
    np.testing.assert_allclose(fit.predict(new, include_random=False), asym * shape, rtol=1e-12)
    with_b = asym + np.array([b["Qn1"], b["Mn1"], 0.0])
    np.testing.assert_allclose(fit.predict(new, allow_new_levels=True), with_b * shape,
                               rtol=1e-12)


def test_links_work_for_nonlinear_models():
    """The constraint language and namespace of linear models, on a Laplace fit."""
    data = datasets.load("Theoph")
    formula, random = "conc ~ SSfol(Dose, Time, lKe, lKa, lCl)", "lKa + lCl || Subject"
    plain = linkmix.nlmer(formula, data, random=random)
    redundant = linkmix.nlmer(formula, data, random=random, constraints="sigma >= 0.01")
    assert redundant.objective == pytest.approx(plain.objective, abs=1e-5)
    p_red = redundant.params.estimate
    for name, value in plain.params.estimate.items():
        assert p_red[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
    # a fixed effect tied to a variance component
    linked = linkmix.nlmer(formula, data, random=random,
                           constraints="lKa == 4 * `sd[lKa|Subject]`")
    est = linked.params.estimate
    assert est["lKa"] == pytest.approx(4 * est["sd[lKa|Subject]"], abs=1e-8)
    assert linked.converged and linked.objective > plain.objective
    assert linkmix.lrt(linked, plain).df == 1
    assert "nonlinear" in str(linked.summary())
    with pytest.raises(linkmix.ConstraintError, match="unknown parameter 'lKx'"):
        linkmix.nlmer(formula, data, random=random, constraints="lKx == 1")


@pytest.mark.parametrize("name", sorted(SELF_STARTING))
def test_analytic_hessians_match_differences_of_the_gradient(name):
    model = SELF_STARTING[name]
    assert model.hessian is not None  # every self-starting model steers Newton's PNLS
    rng = np.random.default_rng(2)
    centre = np.array(TYPICAL[name], dtype=float)
    phi = centre + 0.05 * np.maximum(np.abs(centre), 1) * rng.normal(size=(15, len(centre)))
    cov = tuple(rng.uniform(0.1, 1500 if name == "SSlogis" else 20, 15)
                for _ in model.covariates)
    H = model.hessian(phi, cov)
    np.testing.assert_allclose(H, H.transpose(0, 2, 1), rtol=1e-12, atol=1e-12)
    for j in range(len(centre)):
        h = 1e-6 * np.maximum(1.0, np.abs(phi[:, j]))
        up, down = phi.copy(), phi.copy()
        up[:, j] += h
        down[:, j] -= h
        fd = (model.gradient(up, cov) - model.gradient(down, cov)) / (2 * h[:, None])
        scale = np.max(np.abs(fd)) + 1e-300
        np.testing.assert_allclose(H[:, :, j] / scale, fd / scale, rtol=1e-5, atol=1e-7,
                                   err_msg=f"{name}, column {j}")


def test_adaptive_gauss_hermite_quadrature():
    data = datasets.load("Orange")
    formula = "circumference ~ SSlogis(age, Asym, xmid, scal)"
    # Asym enters the mean linearly: the integrand is Gaussian and Laplace is exact
    linear = NonlinearMixedModel(formula, data, "Asym | Tree")
    fit = linear.fit()
    at = (fit.theta, fit.beta.to_numpy(), fit.sigma)
    assert linear.agq(*at, 1) == pytest.approx(linear.full(*at), rel=1e-12)
    assert linear.agq(*at, 9) == pytest.approx(fit.objective, rel=1e-10)
    # xmid enters nonlinearly: more nodes change the deviance, and converge
    model = NonlinearMixedModel(formula, data, "xmid | Tree")
    lap = model.fit()
    at = (lap.theta, lap.beta.to_numpy(), lap.sigma)
    values = [model.agq(*at, k) for k in (1, 5, 15, 21)]
    # one node is the Laplace deviance: the same value, summed in another order
    assert values[0] == pytest.approx(lap.objective, rel=1e-11)
    assert values[0] - values[2] > 1e-3
    assert abs(values[2] - values[3]) < 1e-8
    # against integration with nothing shared: per tree, ∫ p(y_j | b) p(b) db by quadpack
    theta, beta, sigma = at
    y, age, tree = data.circumference.to_numpy(), data.age.to_numpy(), data.Tree.astype(str)
    neg2ll = 0.0
    for level in np.unique(tree):
        rows = (tree == level).to_numpy()
        sd_b = theta[0] * sigma

        def integrand(b):
            mu = beta[0] / (1 + np.exp((beta[1] + b - age[rows]) / beta[2]))
            return np.exp(-np.sum((y[rows] - mu) ** 2) / (2 * sigma**2) - b**2 / (2 * sd_b**2))

        integral = scipy.integrate.quad(integrand, -10 * sd_b, 10 * sd_b, epsabs=0,
                                        epsrel=1e-12, limit=200)[0]
        neg2ll -= 2 * (np.log(integral) - rows.sum() * np.log(np.sqrt(2 * np.pi) * sigma)
                       - np.log(np.sqrt(2 * np.pi) * sd_b))
    assert model.agq(*at, 21) == pytest.approx(neg2ll, rel=1e-9)
    agq = linkmix.nlmer(formula, data, random="xmid | Tree", nAGQ=11)
    assert agq.converged and agq.nAGQ == 11
    assert agq.objective <= model.agq(*at, 11) + 1e-9
    assert "quadrature, 11 nodes" in str(agq.summary())
    with pytest.raises(linkmix.FitError, match="single scalar random-effects term"):
        linkmix.nlmer("conc ~ SSfol(Dose, Time, lKe, lKa, lCl)", datasets.load("Theoph"),
                      random="lKa + lCl | Subject", nAGQ=5)


def test_missing_values_follow_the_linear_models_rule():
    """One missing-data rule (design.model_frame): the same count, warning and refusal
    for a nonlinear model as for a linear one."""
    data = datasets.load("Orange").copy()
    data.loc[[2, 7], "circumference"] = np.nan
    formula = "circumference ~ SSlogis(age, Asym, xmid, scal) ~ Asym | Tree"
    warning = r"dropped 2 of 35 rows .*\['circumference'\]"
    with pytest.warns(linkmix.MissingDataWarning, match=warning):
        fit = linkmix.nlmer(formula, data)
    with pytest.warns(linkmix.MissingDataWarning, match=warning):
        linear = linkmix.lmer("circumference ~ age + (1 | Tree)", data)
    assert fit.n_dropped == linear.n_dropped == 2 and fit.nobs == linear.nobs == 33
    refusal = r"2 row\(s\) have missing values in column\(s\) \['circumference'\]"
    for fitter, text in ((linkmix.nlmer, formula),
                         (linkmix.lmer, "circumference ~ age + (1 | Tree)")):
        with pytest.raises(linkmix.DataError, match=refusal):
            fitter(text, data, missing="raise")
        with pytest.raises(linkmix.ArgumentError, match="missing"):
            fitter(text, data, missing="ignore")
