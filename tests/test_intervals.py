"""Confidence intervals: profile likelihood against lme4 (tests/data/lme4_confint.json,
from make_lme4_confint.R), Wald, and the parametric bootstrap."""

import json
import re
import warnings

import numpy as np
import pytest

import linkmix
from linkmix.errors import ArgumentError

from conftest import DATA, load_dataset

LME4_CONFINT = json.loads((DATA / "lme4_confint.json").read_text())["cases"]


def linkmix_name(r_name: str) -> str:
    """lme4's confint names (oldNames = FALSE) in linkmix's spelling."""
    if match := re.fullmatch(r"sd_(.+)\|(.+)", r_name):
        return f"sd[{match[1]}|{match[2]}]"
    if match := re.fullmatch(r"cor_(.+)\.(.+)\|(.+)", r_name):
        return f"cor[{match[2]},{match[1]}|{match[3]}]"
    return {"SexFemale": "Sex[T.Female]"}.get(r_name, r_name)


@pytest.mark.parametrize("case", LME4_CONFINT, ids=lambda c: c["name"])
def test_profile_intervals_match_lme4(case):
    """lme4 interpolates its profile with splines; linkmix finds the ends by root-finding,
    so the two agree to lme4's interpolation error (the issue's bar: 1e-3)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = linkmix.lmer(case["formula"], load_dataset(case["name"]))   # REML, as lme4
        table = linkmix.confint(fit, "profile")
    names = [linkmix_name(n) for n in case["names"]]
    np.testing.assert_allclose(table.loc[names, "lower"], case["lower"], rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(table.loc[names, "upper"], case["upper"], rtol=1e-3)
    fixef = [n for n in names if n in fit.design.fixed_names]
    wald = linkmix.confint(fit, "wald", parm=fixef)
    rows = [names.index(n) for n in fixef]
    # Wald: the SEs at lme4's default optimum and at linkmix's differ by up to 2e-6
    np.testing.assert_allclose(wald["lower"], np.array(case["wald_lower"], dtype=float)[rows],
                               rtol=1e-5)
    np.testing.assert_allclose(wald["upper"], np.array(case["wald_upper"], dtype=float)[rows],
                               rtol=1e-5)


def test_profile_ends_are_where_the_statistic_is_the_cutoff(sleepstudy):
    """On the constraint manifold of a linked fit: refitting with the parameter held at an
    end raises −2 log L by the χ²₁ 95% point, exactly (the definition, not lme4)."""
    constraint = "`sd[Days|Subject]` == 0.25 * `sd[(Intercept)|Subject]`"
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy,
                       constraints=constraint)
    table = linkmix.confint(fit, parm=["Days", "sigma"])
    for name in ("Days", "sigma"):
        lower, upper = table.loc[name, ["lower", "upper"]]
        assert lower < fit.params.loc[name, "estimate"] < upper
        for end in (lower, upper):
            quoted = name if name.isidentifier() else f"`{name}`"
            refit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy,
                                 constraints=[constraint, f"{quoted} == {end!r}"])
            assert refit.objective - fit.objective == pytest.approx(3.841458820694124,
                                                                     abs=1e-5)


def test_unconstrained_linked_profile_is_the_ml_profile(sleepstudy):
    ml = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, REML=False)
    linked = linkmix.LinkedModel("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    parm = ["Days", "cor[(Intercept),Days|Subject]"]
    a, b = linkmix.confint(ml, parm=parm), linkmix.confint(linked, parm=parm)
    np.testing.assert_allclose(a[["lower", "upper"]], b[["lower", "upper"]], rtol=1e-5)


def test_profile_of_a_nonlinear_fit():
    orange = load_dataset("Orange")
    fit = linkmix.nlmer("circumference ~ SSlogis(age, Asym, xmid, scal)", orange,
                        random="Asym | Tree")
    table = linkmix.confint(fit, parm=["xmid", "sigma"])
    wald = linkmix.confint(fit, "wald", parm=["xmid"])
    assert table.loc["xmid", "lower"] < fit.beta["xmid"] < table.loc["xmid", "upper"]
    # nearly quadratic here: the profile interval is the Wald one within 10%
    width = table.loc["xmid", "upper"] - table.loc["xmid", "lower"]
    assert width == pytest.approx(wald.loc["xmid", "upper"] - wald.loc["xmid", "lower"],
                                  rel=0.1)
    assert 0 < table.loc["sigma", "lower"] < fit.sigma < table.loc["sigma", "upper"]


def test_bootstrap(sleepstudy):
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    one = linkmix.confint(fit, "boot", nsim=60, seed=7, progress=False)
    again = linkmix.confint(fit, "boot", nsim=60, seed=7, n_jobs=2, progress=False)
    np.testing.assert_allclose(one[["lower", "upper"]], again[["lower", "upper"]], rtol=1e-12)
    other = linkmix.confint(fit, "boot", nsim=60, seed=8, progress=False)
    assert not np.allclose(one[["lower", "upper"]], other[["lower", "upper"]])
    assert np.all(one["lower"] < one["estimate"]) and np.all(one["estimate"] < one["upper"])
    # with more simulations the fixed effects' intervals are the profile ones within 25%
    boot = linkmix.confint(fit, "boot", nsim=300, seed=1, parm=["Days"], progress=False)
    profile = linkmix.confint(fit, parm=["Days"])
    assert (boot["upper"] - boot["lower"]).iloc[0] == pytest.approx(
        (profile["upper"] - profile["lower"]).iloc[0], rel=0.25)


def test_bootstrap_of_a_linked_fit(sleepstudy):
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy,
                       constraints="`sd[Days|Subject]` == 0.25 * `sd[(Intercept)|Subject]`")
    table = linkmix.confint(fit, "boot", nsim=20, seed=3, progress=False)
    # workers re-read the constraint's text: the same refits
    pooled = linkmix.confint(fit, "boot", nsim=20, seed=3, n_jobs=2, progress=False)
    np.testing.assert_allclose(table[["lower", "upper"]], pooled[["lower", "upper"]],
                               rtol=1e-9)
    sds = table.loc[["sd[(Intercept)|Subject]", "sd[Days|Subject]"]]
    # the constraint holds in every refit, so it holds at the quantiles too
    np.testing.assert_allclose(sds.iloc[1, 1:], 0.25 * sds.iloc[0, 1:], rtol=1e-5)


def test_confint_errors(sleepstudy):
    fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    with pytest.raises(ArgumentError, match="method must be one of"):
        linkmix.confint(fit, "bogus")
    with pytest.raises(ArgumentError, match="unknown parameter"):
        linkmix.confint(fit, parm="nope")
    with pytest.raises(ArgumentError, match="level"):
        linkmix.confint(fit, level=1.5)
    with pytest.raises(ArgumentError, match="takes a linkmix fit"):
        linkmix.confint("fit")
    orange = load_dataset("Orange")
    nl = linkmix.nlmer("circumference ~ SSlogis(age, Asym, xmid, scal)", orange,
                       random="Asym | Tree")
    with pytest.raises(ArgumentError, match="nonlinear models cannot yet be refitted"):
        linkmix.confint(nl, "boot", nsim=5)
