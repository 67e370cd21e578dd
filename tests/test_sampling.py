"""Posterior sampling (linkmix.sampling) against numerical integration on a grid."""

import math
import warnings

import numpy as np
import pytest

import linkmix
from linkmix.errors import ArgumentError
from linkmix.sampling import half_student_t, parse_prior

from conftest import load_dataset

arviz = pytest.importorskip("arviz")
pytest.importorskip("emcee")


@pytest.fixture(scope="module")
def dyestuff_draws():
    data = load_dataset("Dyestuff")
    fit = linkmix.lmer("Yield ~ 1 + (1 | Batch)", data, REML=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = fit.sample(draws=1500, tune=500, chains=2, seed=11, progress=False,
                           prior={"sd[(Intercept)|Batch]": "half_normal(100)",
                                  "sigma": "half_normal(100)"})
    return data, fit, idata


def grid_posterior(data):
    """p(σ_b, σ | y) on a grid, β (flat prior) integrated out analytically: the
    restricted likelihood exp(−D_REML(θ = σ_b/σ, σ)/2) times the half-normal priors."""
    model = linkmix.LinearMixedModel("Yield ~ 1 + (1 | Batch)", data, REML=True)
    sd_b = np.linspace(0.05, 220.0, 500)
    sigma = np.linspace(25.0, 110.0, 400)
    log_post = np.array([[model.variance_deviance([b / s], s) for s in sigma] for b in sd_b])
    log_post = -0.5 * log_post - 0.5 * (sd_b[:, None] / 100) ** 2 - 0.5 * (sigma / 100) ** 2
    weights = np.exp(log_post - log_post.max())
    return sd_b, sigma, weights / weights.sum()


def grid_summary(values, weights):
    order = np.argsort(values)
    cdf = np.cumsum(weights[order])
    quantile = [values[order][np.searchsorted(cdf, q)] for q in (0.025, 0.975)]
    return float(np.sum(values * weights)), quantile


def test_posterior_matches_numerical_integration(dyestuff_draws):
    """Means and 2.5/97.5% quantiles of σ_b and σ within 3 Monte Carlo standard errors
    (arviz.mcse) of the grid's (the issue's acceptance test)."""
    data, fit, idata = dyestuff_draws
    sd_b, sigma, weights = grid_posterior(data)
    marginals = {"sd[(Intercept)|Batch]": (sd_b, weights.sum(axis=1)),
                 "sigma": (sigma, weights.sum(axis=0))}
    for name, (values, w) in marginals.items():
        mean, (low, high) = grid_summary(values, w)
        draws = idata.posterior[name]
        assert float(draws.mean()) == pytest.approx(
            mean, abs=3 * float(arviz.mcse(draws, method="mean").to_array()[0]))
        for q, expected in ((0.025, low), (0.975, high)):
            mcse = float(arviz.mcse(draws, method="quantile", prob=q).to_array()[0])
            grid_step = values[1] - values[0]
            assert float(draws.quantile(q)) == pytest.approx(expected, abs=3 * mcse + grid_step)


def test_draws_are_named_reproducible_and_diagnosed(dyestuff_draws):
    data, fit, idata = dyestuff_draws
    assert list(idata.posterior.data_vars) == list(fit.params["name"])
    summary = arviz.summary(idata)
    assert summary["r_hat"].max() < 1.05 and summary["ess_bulk"].min() > 100
    rate = idata.sample_stats["acceptance_rate"]
    assert 0.05 < float(rate.mean()) < 0.9
    again = fit.sample(draws=20, tune=10, chains=1, seed=3, progress=False)
    same = fit.sample(draws=20, tune=10, chains=1, seed=3, progress=False)
    np.testing.assert_array_equal(again.posterior["sigma"], same.posterior["sigma"])


def test_priors_by_name():
    assert parse_prior("normal(0, 5)").std() == pytest.approx(5.0)
    assert parse_prior("uniform(-1, 1)").mean() == pytest.approx(0.0)
    assert parse_prior("exponential(2)").mean() == pytest.approx(0.5)
    half = parse_prior(" half_student_t(3, 2.5) ")
    assert half.logpdf(-0.1) == -math.inf
    assert half.logpdf(1.0) == pytest.approx(half_student_t(3, 2.5).logpdf(1.0))
    from scipy import integrate
    assert integrate.quad(lambda x: math.exp(half.logpdf(x)), 0, np.inf)[0] == \
        pytest.approx(1.0, rel=1e-6)
    for text, message in [("normal(0)", "takes 2 finite"), ("gauss(0, 1)", "cannot read"),
                          ("normal(0, -1)", "positive scale"), ("normal(a, 1)", "numbers only"),
                          ("__import__('os')", "cannot read"),
                          ("uniform(1, 0)", "upper > lower")]:
        with pytest.raises(ArgumentError, match=message):
            parse_prior(text)


def test_sampling_errors(sleepstudy):
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    with pytest.raises(ArgumentError, match="unknown parameter 'nope'"):
        fit.sample(prior={"nope": "normal(0, 1)"})
    with pytest.raises(ArgumentError, match="text or a frozen"):
        fit.sample(prior={"Days": 3.0})
    with pytest.raises(ArgumentError, match="at least"):
        fit.sample(walkers=4)


def test_correlated_term_far_in_the_tails(sleepstudy):
    """A correlation's coordinate far out (tanh rounds to ±1) has a finite log Jacobian,
    and a short run over a 2 × 2 term stays finite and inside [-1, 1]."""
    from linkmix.sampling import _Posterior, default_priors

    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, REML=False)
    space = fit.model.parameter_space
    posterior = _Posterior(fit.model, default_priors(space.names, space.kinds, fit.design.y))
    v = posterior.coordinates(fit.natural_estimates()[2])
    cor = space.kinds.index("cor")
    for far in (-25.0, 25.0, 400.0):
        v[cor] = far
        assert np.isfinite(posterior(v))
    v = posterior.coordinates(fit.natural_estimates()[2])
    np.testing.assert_allclose(posterior.user(posterior.natural(v))[0], fit.theta, rtol=1e-10)
    idata = fit.sample(draws=100, tune=100, chains=1, seed=2, progress=False)
    rho = idata.posterior["cor[(Intercept),Days|Subject]"]
    assert float(abs(rho).max()) <= 1.0 and np.isfinite(idata.sample_stats["lp"]).all()


def test_fast_log_densities_are_scipys():
    from scipy import stats

    from linkmix.sampling import _fast_logpdf

    priors = [parse_prior(t) for t in ("normal(1, 5)", "half_normal(2)", "student_t(3, 1, 2)",
                                       "half_student_t(4, 3)", "cauchy(0, 2)", "uniform(-1, 1)",
                                       "exponential(2)", "flat()")]
    priors += [stats.gamma(2.0, scale=3.0), stats.norm(loc=0.5)]
    for prior in priors:
        fast = _fast_logpdf(prior)
        for x in (-2.0, -0.3, 0.0, 0.7, 4.0):
            expected = float(prior.logpdf(x))
            assert fast(x) == pytest.approx(expected, rel=1e-12, abs=1e-12) or \
                (expected == -math.inf and fast(x) == -math.inf), (prior, x)
