"""Optimiser choice, singular fits, and convergence reporting."""

import warnings

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix import ConvergenceWarning
from conftest import LME4_LMM, load_dataset


def test_cobyqa_reaches_the_same_optimum():
    data = load_dataset("Penicillin")
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    a = linkmix.lmer(formula, data, REML=False, optimizer="bobyqa")
    b = linkmix.lmer(formula, data, REML=False, optimizer="cobyqa")
    assert a.objective == pytest.approx(b.objective, rel=1e-8)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-3)


@pytest.mark.parametrize("ref", LME4_LMM, ids=lambda ref: ref["name"])
def test_exact_gradient_fit_reaches_the_same_optimum(ref):
    """L-BFGS-B on the exact gradient (from the moment start) against BOBYQA from lme4's:
    same optimum; the checks then cost 2d evaluations and the polish one (more only
    where a coordinate sits on its bound with a zero derivative and is probed)."""
    data = load_dataset(ref["dataset"])
    bobyqa = linkmix.lmer(ref["formula"], data, REML=ref["REML"], optimizer="bobyqa")
    model = linkmix.LinearMixedModel(ref["formula"], data, REML=ref["REML"])
    fit = model.fit(optimizer="lbfgs")
    assert fit.converged and fit.optsummary.optimizer == "lbfgs"
    assert fit.objective == pytest.approx(bobyqa.objective, rel=1e-9, abs=1e-9)
    assert fit.objective <= bobyqa.objective + 1e-9 * max(1.0, abs(bobyqa.objective))
    d = len(fit.optsummary.x_final)
    after = model.deviance.n_evaluations - fit.optsummary.n_evaluations
    on_bound = int(np.sum(fit.optsummary.x_final == model.design.theta_lower))
    assert after <= 2 * d + 1 + on_bound


@pytest.mark.parametrize("ref", LME4_LMM, ids=lambda ref: ref["name"])
def test_newton_fit_reaches_the_same_optimum(ref):
    """Newton's method on the dense kernel's exact Hessian (small models' default)
    against BOBYQA: the same optimum, not above it, in far fewer evaluations."""
    data = load_dataset(ref["dataset"])
    model = linkmix.LinearMixedModel(ref["formula"], data, REML=ref["REML"])
    if model._dense is None:   # larger than the dense kernel pays for (Orthodont, q = 54)
        with pytest.raises(linkmix.ArgumentError, match="newton"):
            model.fit(optimizer="newton")
        return
    bobyqa = model.fit(optimizer="bobyqa")
    fit = model.fit(optimizer="newton")
    assert fit.converged and fit.optsummary.optimizer == "newton"
    assert fit.objective == pytest.approx(bobyqa.objective, rel=1e-9, abs=1e-9)
    assert fit.objective <= bobyqa.objective + 1e-9 * max(1.0, abs(bobyqa.objective))
    assert fit.optsummary.n_evaluations < bobyqa.optsummary.n_evaluations
    assert model.fit().optsummary.optimizer == "newton"


def test_newton_falls_inward_from_a_bound_where_the_slope_vanishes():
    """f(x) = (x² − 1)², x ≥ 0, from x = 0: the gradient is zero at a maximum (as a
    scalar term's deviance at θ = 0); the negative curvature takes it to x = 1."""
    from linkmix.optimize import minimize_newton

    def fgh(x):
        v = x[0]
        return (v * v - 1) ** 2, np.array([4 * v * (v * v - 1)]), np.array([[12 * v * v - 4]])

    summary = minimize_newton(fgh, np.array([0.0]), np.array([0.0]))
    assert summary.converged and summary.x_final[0] == pytest.approx(1.0, abs=1e-8)
    assert summary.fun_final < 1e-14


def test_newton_needs_a_small_model():
    """``optimizer="newton"`` where the model is too large for the dense Hessian says so."""
    rng = np.random.default_rng(0)
    n = 3000
    data = pd.DataFrame({"g": rng.integers(0, 900, n).astype(str),
                         "h": rng.integers(0, 700, n).astype(str), "y": rng.normal(size=n)})
    model = linkmix.LinearMixedModel("y ~ 1 + (1 | g) + (1 | h)", data, REML=False)
    with pytest.raises(linkmix.ArgumentError, match="newton"):
        model.fit(optimizer="newton")
    assert model.fit().optsummary.optimizer != "newton"


def test_exact_gradient_fit_leaves_a_bound_it_stopped_on():
    """A scalar term's deviance is even in θ: at θ = 0 the derivative is zero at a
    maximum as at a minimum.  L-BFGS-B's first step lands there on this protein
    (MSstats DDASkyline 'rabbit', 157 fixed effects); the checks see f fall inward and
    the fit goes on to lme4's optimum (tests/data/lme4_msstats.json)."""
    from test_groupdesign import LME4, read_msstats

    formula = "log2Intensity ~ Condition + Feature + (1 | BioReplicate)"
    table = read_msstats("msstats_DDASkyline.csv.gz")
    protein = table[table.ProteinName == "rabbit"].dropna(subset=["log2Intensity"])
    ref = next(f for f in LME4["fits"] if f["key"] == "rabbit" and f["formula"] == formula
               and f["table"] == "msstats_DDASkyline.csv.gz")
    model = linkmix.LinearMixedModel(formula, protein, REML=False)
    fit = model.fit(optimizer="lbfgs", theta_start=[1.0])  # the start that lands on 0
    assert fit.converged and fit.theta[0] > 0.05 and fit.optsummary.restarts >= 1
    assert fit.loglik == pytest.approx(ref["loglik"], rel=3e-7)


def test_singular_fit_is_detected_like_lme4():
    fit = linkmix.lmer("Yield ~ 1 + (1 | Batch)", load_dataset("Dyestuff2"))
    assert fit.singular and fit.theta[0] == 0.0
    assert "singular" in str(fit.summary())


def test_non_convergence_is_reported_not_silent():
    data = load_dataset("sleepstudy")
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", data, maxeval=5)
    assert not fit.converged
    assert "did not converge" in str(fit.summary())
    assert fit.to_dict()["converged"] is False


def test_fit_record_keeps_history():
    fit = linkmix.lmer("Yield ~ 1 + (1 | Batch)", load_dataset("Dyestuff"), REML=False)
    opt = fit.optsummary
    assert opt.n_evaluations == len(opt.log) > 5
    # the best point it saw (Newton's last step is taken within the deviance's rounding)
    assert opt.fun_final == pytest.approx(min(value for _, value in opt.log), rel=1e-14)
    assert opt.x_initial.tolist() == [1.0]


def test_theta_start_is_used():
    ref = next(r for r in LME4_LMM if r["name"] == "sleepstudy_corr" and not r["REML"])
    model = linkmix.LinearMixedModel(ref["formula"], load_dataset("sleepstudy"), REML=False)
    fit = model.fit(theta_start=ref["theta"])
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-9)
    with pytest.raises(ValueError, match="theta_start must be a vector of 3 entries"):
        model.fit(theta_start=[1.0, 0.0])


# ---- lme4's derivative checks: flat criteria, vanishing σ, saddle points ----------------

@pytest.fixture(scope="module")
def degenerate_data():
    rng = np.random.default_rng(2)
    n, n_g = 120, 12
    g, x = rng.integers(0, n_g, n), rng.normal(size=n)
    frame = pd.DataFrame({"y": 1 + x + rng.normal(size=n_g)[g] + 0.5 * rng.normal(size=n),
                          "x": x, "g": [f"g{i}" for i in g], "h": [f"h{i}" for i in g],
                          "zero": 0.0})
    exact = frame.assign(y=1 + x + rng.normal(size=n_g)[g])  # no residual noise
    return frame, exact


@pytest.mark.parametrize("REML", [True, False])
@pytest.mark.parametrize("formula", ["y ~ x + (1|g) + (1|h)",        # h ≡ g: only θ₁²+θ₂² counts
                                     "y ~ x + (1|g) + (0 + zero|h)"])  # θ₂ changes nothing
def test_flat_criterion_is_flagged_degenerate(degenerate_data, formula, REML):
    """The flat direction is named by the parameters that move along it."""
    fit = linkmix.lmer(formula, degenerate_data[0], REML=REML)
    assert fit.converged and fit.degenerate
    flat = ("sd[(Intercept)|g] and sd[(Intercept)|h]" if "(1|h)" in formula
            else "sd[zero|h]")
    said = f"the criterion is flat along {flat}"
    assert any(w.startswith(said) and "not determined by the data" in w for w in fit.warnings)
    assert said in str(fit.summary())
    record = fit.to_dict()
    assert record["degenerate"] is True and any(said in w for w in record["warnings"])
    assert record["optimizer"]["flat_directions"]
    assert np.min(np.abs(fit.optsummary.hessian_eigenvalues)) < \
        1e-4 * np.max(fit.optsummary.hessian_eigenvalues)


def test_vanishing_sigma_is_said(degenerate_data):
    with pytest.warns(ConvergenceWarning):
        fit = linkmix.lmer("y ~ x + (1|g)", degenerate_data[1])
    assert fit.degenerate and not fit.converged
    assert any("residual SD is numerically zero" in w for w in fit.warnings)


def test_well_posed_fits_are_not_degenerate():
    for ref in LME4_LMM:
        fit = linkmix.lmer(ref["formula"], load_dataset(ref["dataset"]), REML=ref["REML"])
        assert not fit.degenerate, ref["name"]
        assert fit.warnings == fit.boundary, ref["name"]
        assert bool(fit.boundary) == ref["singular"], ref["name"]
        assert all(w.startswith("boundary (singular) fit: ") and " in (" in w
                   for w in fit.boundary), ref["name"]
        if not ref["singular"]:
            assert np.all(fit.optsummary.hessian_eigenvalues > 0)


def test_saddle_point_is_escaped():
    """BOBYQA stopped at θ₁ = 0.0039 with a zero gradient and negative curvature along θ₁
    (a maximum along that axis); the restart goes down the curvature to a minimum.
    (Peptide PEP00571 of ``simulate_experiment(1000, seed=11)``.)"""
    x = [20.435940530170566, 18.232494320555553, 21.10097014923385, 18.66895432824453,
         21.0221785581337, 18.82724988789851, 20.68128573173368, 18.19587907621227,
         22.8321048175143, 20.204907099372598, 22.91093016887397, 21.794257917671487,
         21.469348466287943, 20.18910821328059, 23.80492787904423, 21.1287063538476]
    layout = pd.DataFrame([(t, m, r) for t in "12" for r in "1234" for m in "12"],
                          columns=["treatment", "modification", "replicate"])
    peptide = linkmix.datasets.add_seed_columns(layout.assign(x=x))
    model = linkmix.LinearMixedModel("x ~ 1 + t2 + m2 + t2m1 + (0 + treatment || replicate)",
                                     peptide)
    fit = model.fit()
    assert fit.converged and not fit.degenerate
    assert np.all(fit.optsummary.hessian_eigenvalues > 0)
    assert fit.objective < model.objective([0.00392408, 1.65082707])


def test_batch_rows_say_what_single_fits_say(degenerate_data):
    frame, exact = degenerate_data
    table = pd.concat([frame.assign(batch="fine"), exact.assign(batch="exact"),
                       frame.assign(batch="aliased")], ignore_index=True)
    results = {}
    for name, formula in [("y ~ x + (1|g)", "plain"), ("y ~ x + (1|g) + (1|h)", "aliased")]:
        results[formula] = linkmix.fit_groups(table, "batch", name, n_jobs=1)
    for batch, data in [("fine", frame), ("exact", exact)]:
        row = results["plain"][results["plain"].batch == batch].iloc[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the exact fit's, expected
            single = linkmix.lmer("y ~ x + (1|g)", data)
        warning = None if pd.isna(row.warning) else row.warning
        assert (row.converged, row.singular, row.degenerate, warning) == \
            (single.converged, single.singular, single.degenerate, single.message)
    row = results["aliased"][results["aliased"].batch == "aliased"].iloc[0]
    assert row.degenerate and "the criterion is flat along sd[(Intercept)|g] and " \
        "sd[(Intercept)|h]" in row.warning


def test_a_reused_optimiser_takes_the_path_of_a_new_one():
    """Batches reuse one nlopt optimiser per shape: its path must not depend on the
    fits before it (the default first step is recomputed from each start)."""
    from linkmix import optimize

    def quartic(centre):
        return lambda x, grad=None: float(np.sum((x - centre) ** 4 + (x - centre) ** 2))

    runs = [(quartic(np.array([0.3, 2.0])), np.array([1.0, 0.0])),
            (quartic(np.array([5.0, -1.0])), np.array([40.0, 7.0])),
            (quartic(np.array([0.3, 2.0])), np.array([1.0, 0.0]))]
    lower = np.array([0.0, -np.inf])
    fresh = []
    for fun, start in runs:
        optimize._BOBYQA.__dict__.pop("by_key", None)
        fresh.append(optimize.minimize_bounded(fun, start, lower))
    reused = [optimize.minimize_bounded(fun, start, lower) for fun, start in runs]
    for a, b in zip(fresh, reused):
        assert len(a.log) == len(b.log)
        np.testing.assert_array_equal(np.array([x for x, _ in a.log]),
                                      np.array([x for x, _ in b.log]))
        assert a.fun_final == b.fun_final
    assert reused[0].converged and reused[1].converged


def test_newton_polish_reaches_the_minimum_and_respects_bounds():
    from linkmix.optimize import newton_polish

    centre = np.array([0.7, -1.3, 2.0])
    A = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])

    def fun(x):  # a smooth, non-quadratic bowl with its minimum at ``centre``
        d = x - centre
        return float(d @ A @ d + 0.1 * np.sum(d ** 4) + 7.0)

    lower = np.array([0.0, -np.inf, -np.inf])
    near = centre + np.array([3e-4, -2e-4, 1e-4])  # where ftol-stopped optimisers leave off
    x, value = newton_polish(fun, near, lower)
    assert np.max(np.abs(x - centre)) < 1e-7 and value == fun(x) < fun(near)
    # a coordinate on its bound stays there; the others still move to their optimum
    on_bound = np.array([0.0, -1.0, 2.2])
    x, _ = newton_polish(fun, on_bound, lower)
    assert x[0] == 0.0 and fun(x) < fun(on_bound)
    # at a saddle nothing moves
    saddle = lambda x: float(x[0] ** 2 - x[1] ** 2)  # noqa: E731
    x, value = newton_polish(saddle, np.array([1e-3, 1e-3]), np.array([-np.inf, -np.inf]))
    np.testing.assert_array_equal(x, [1e-3, 1e-3])


@pytest.mark.parametrize("rise, taken", [(0.5, True), (2.0, False)])
def test_a_newton_step_within_the_objectives_rounding_is_taken(rise, taken):
    """Next to the optimum a Newton step's value shows its rounding, not its decrease:
    a rise within ``ROUNDING`` of f is taken (the step's factor is the one at hand),
    one beyond it is not."""
    from linkmix.optimize import ROUNDING, newton_polish

    centre, base = np.array([0.3, 0.8]), 1e3
    start = centre + 1e-7  # f(start) − f(centre) = 1e-12, a tenth of the rounding

    def fun(x):
        d = x - centre
        value = base + 50.0 * float(d @ d)
        return value if np.array_equal(x, start) else value + rise * ROUNDING * base

    x, value = newton_polish(fun, start, np.full(2, -np.inf))
    assert (not np.array_equal(x, start)) == taken
    assert value == (fun(x) if taken else fun(start))


def test_lbfgs_stops_where_its_decreases_reach_the_deviances_rounding():
    """A deviance of 3e5 (100,000 ratings, three crossed factors): ftol_abs = 1e-8 is
    3e-14 of it, where L-BFGS-B's line searches meet rounding; asked for no less than
    ``LBFGS_FTOL_FLOOR`` it stops after 11 evaluations, not 25, at the same optimum."""
    data = linkmix.datasets.simulate_ratings(100_000, 3, seed=7)
    with pytest.warns(Warning, match="dropped 2994 of 100000 rows"):  # its missing ratings
        fit = linkmix.lmer("y ~ 1 + service + (1 | s) + (1 | d) + (1 | c)", data, REML=False)
    assert fit.optsummary.optimizer == "lbfgs" and fit.converged
    assert fit.optsummary.n_evaluations <= 15
    assert fit.optsummary.max_gradient < 1e-3


def _rounded_quadratic(dimension: int = 4, seed: int = 0):
    """(f, ∇f) of a quadratic at 2.4e5, InstEval's deviance, with that deviance's
    rounding: ±5e-10 (sd 3e-10) decided by the point's bytes, so a point evaluated twice
    gives the same value and points closer than the rounding can tell apart differ at
    random."""
    import hashlib

    rng = np.random.default_rng(seed)
    A = rng.normal(size=(dimension, dimension))
    H = A @ A.T + np.diag(10.0 ** -np.arange(-3.0, dimension - 3.0))
    centre = rng.uniform(0.1, 0.9, dimension)

    def value_and_gradient(x):
        d = x - centre
        digest = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=8).digest()
        rounding = 1e-9 * (int.from_bytes(digest, "little") / 2.0**64 - 0.5)
        return 2.4e5 + 0.5 * float(d @ H @ d) + rounding, H @ d

    return value_and_gradient, centre, rng


def test_lbfgs_stops_line_searches_that_f_cannot_resolve(monkeypatch):
    """Near the optimum a line search's trial steps can change f by less than its
    rounding; L-BFGS-B then shrinks them up to 40 times before it gives up.  Stopped once
    the predicted change |g'Δx| is within ``ROUNDING``: no start of 40 spends more than
    25 evaluations or more than it would without that stop, and some spend fewer, at the
    same optimum (within the distance f can resolve).  How many a search spends without
    the stop is scipy's line search: 30-odd at most before scipy 1.17, 22 with 1.17.1."""
    from linkmix import optimize

    value_and_gradient, centre, rng = _rounded_quadratic()
    starts = [np.maximum(centre + rng.normal(scale=0.3, size=4), 0.0) for _ in range(40)]

    def evaluations():
        counts = []
        for start in starts:
            summary = optimize.minimize_bounded(lambda x: value_and_gradient(x)[0], start,
                                                np.zeros(4), optimizer="lbfgs",
                                                gradient=value_and_gradient,
                                                check_gradient=False)
            assert np.abs(summary.x_final - centre).max() < 1e-4
            counts.append(summary.n_evaluations)
        return np.array(counts)

    guarded = evaluations()
    monkeypatch.setattr(optimize, "ROUNDING", 0.0)
    unguarded = evaluations()
    assert guarded.max() <= 25
    assert np.all(guarded <= unguarded) and guarded.sum() < unguarded.sum()


def test_the_quadratic_models_step_is_its_minimum_along_the_gradient():
    from linkmix.optimize import _quadratic_model_step

    h, g = np.array([4.0, 0.5, 30.0]), np.array([1.0, -2.0, 0.3])
    length = _quadratic_model_step(h, g)
    along = np.linspace(0.5, 1.5, 1001) * length
    slope, curvature = -np.linalg.norm(g), float(h @ g**2) / float(g @ g)
    model = [t * slope + 0.5 * t**2 * curvature for t in along]
    assert along[int(np.argmin(model))] == pytest.approx(length, rel=1e-3)
    assert np.isnan(_quadratic_model_step(np.array([4.0, np.nan, 1.0]), g))
    assert np.isnan(_quadratic_model_step(h, np.zeros(3)))


def test_lbfgs_takes_its_first_step_from_the_curvature_model():
    """With ``curvature`` the first trial lands at the minimum along −g of the diagonal
    model, below f(x0) (scipy's unit step would overshoot a curvature of 1e4: f rises
    by about 5e3); ``initial_step`` sets that length instead."""
    from linkmix.optimize import minimize_bounded

    h = np.array([1e4, 3e3])
    centre = np.array([0.3, 0.5])

    def value_and_gradient(x):
        return 1e5 + 0.5 * float(h @ (x - centre) ** 2), h * (x - centre)

    start = np.array([0.4, 0.45])
    runs = {name: minimize_bounded(lambda x: value_and_gradient(x)[0], start, np.zeros(2),
                                   optimizer="lbfgs", gradient=value_and_gradient,
                                   check_gradient=False, **options)
            for name, options in [("unit", {}), ("model", {"curvature": lambda x: h}),
                                  ("given", {"initial_step": 0.25})]}
    f0 = value_and_gradient(start)[0]
    assert runs["unit"].log[1][1] > f0 + 1e3
    assert runs["model"].log[1][1] < f0
    assert np.linalg.norm(runs["given"].log[1][0] - start) == pytest.approx(0.25)
    for summary in runs.values():
        np.testing.assert_allclose(summary.x_final, centre, atol=1e-6)


def test_the_curvature_model_follows_the_criterions_diagonal():
    """Scalar terms: within a factor of 1.5 of the diagonal of the differenced Hessian at
    the optimum of simulated crossed designs with 2 and 4 factors; NaN for a vector
    term's entries."""
    for n_factors, seed in [(2, 1), (4, 3)]:
        data = linkmix.datasets.simulate_ratings(10_000, n_factors, seed=seed, missing_rate=0)
        terms = " + ".join(f"(1 | {g})" for g in "sdct"[:n_factors])
        model = linkmix.LinearMixedModel(f"y ~ 1 + service + {terms}", data, REML=False)
        x = model.conditioning.theta_working(model.fit(optimizer="lbfgs").theta)
        differenced = np.empty(len(x))
        for i in range(len(x)):
            e = np.zeros(len(x))
            e[i] = 1e-5
            differenced[i] = (model.deviance.value_and_gradient(x + e)[1][i]
                              - model.deviance.value_and_gradient(x - e)[1][i]) / 2e-5
        ratio = model._curvature_model(x) / differenced
        assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), ratio
    sleep = load_dataset("sleepstudy")
    model = linkmix.LinearMixedModel("Reaction ~ Days + (Days | Subject) + (1 | Days)", sleep)
    h = model._curvature_model(model._moment_start())
    assert np.isnan(h[:3]).all() and h[3] > 0


def test_crossed_fits_accept_their_first_step():
    """On simulated crossed designs the first L-BFGS-B trial from the moment start is
    already lower than the start (scipy's unit step overshoots θ ≈ 0.3)."""
    for n_factors, seed in [(2, 4), (3, 5), (4, 6)]:
        data = linkmix.datasets.simulate_ratings(20_000, n_factors, seed=seed, missing_rate=0)
        terms = " + ".join(f"(1 | {g})" for g in "sdct"[:n_factors])
        fit = linkmix.LinearMixedModel(f"y ~ 1 + service + {terms}", data,
                                       REML=False).fit(optimizer="lbfgs")
        log = fit.optsummary.log
        assert fit.converged and log[1][1] < log[0][1]
