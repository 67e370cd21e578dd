"""lme4's digits at any location and scale: fits of shifted and scaled data equal the
fit of the centred data (linear, linked and nonlinear models; REML and ML; both engines)."""

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest

import linkmix
from linkmix.conditioning import Conditioning, RandomBases
from linkmix.design import build_design
from linkmix.examples import M1_FORMULA, M1_MEAN, M2_CONSTRAINT, M2_FORMULA
from conftest import LME4_LMM, load_dataset

MODELS = ["y ~ x + (1|g)", "y ~ x + (1|g) + (1|h)", "y ~ x + (1 + x|g)"]
DATA = pathlib.Path(__file__).parent / "data"
#: lme4 1.1-31 on conditioning.csv as it is and moved (make_lme4_conditioning.R)
LME4 = json.loads((DATA / "lme4_conditioning.json").read_text())["fits"]
MOVES = {"centred": {}, "y+1e5": {"y": 1e5}, "y+1e8": {"y": 1e8}, "x+1e3": {"x": 1e3},
         "x+1e6": {"x": 1e6}}


@pytest.fixture(scope="module")
def centred():
    """Unbalanced crossed data, x and y near zero, not tuned to any model (600 rows, 30
    and 12 levels; written by numpy's default_rng(7), see make_lme4_conditioning.R)."""
    return pd.read_csv(DATA / "conditioning.csv")


_REFS = {}


def reference(centred, formula, REML, engine):
    key = (formula, REML, engine)
    if key not in _REFS:
        _REFS[key] = linkmix.lmer(formula, centred, REML=REML, engine=engine)
    return _REFS[key]


@pytest.mark.parametrize("engine", ["blocked", "blocked-sparse", "cholmod"])
@pytest.mark.parametrize("REML", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("formula", MODELS)
@pytest.mark.parametrize("shift", [1e3, 1e5, 1e8])
def test_response_far_from_zero(centred, formula, REML, engine, shift):
    ref = reference(centred, formula, REML, engine)
    fit = linkmix.lmer(formula, centred.assign(y=centred.y + shift), REML=REML, engine=engine)
    assert fit.converged
    assert fit.objective == pytest.approx(ref.objective, rel=1e-8)
    np.testing.assert_allclose(fit.theta, ref.theta, atol=1e-6)
    # β shifted exactly: the intercept by the shift (to a few ulps of it), the slope not at all
    ulp = np.spacing(shift)
    assert abs(fit.beta["(Intercept)"] - shift - ref.beta["(Intercept)"]) <= \
        1e-6 * ref.se["(Intercept)"] + 8 * ulp
    assert fit.beta["x"] == pytest.approx(ref.beta["x"], abs=1e-6 * ref.se["x"] + 8 * ulp)
    np.testing.assert_allclose(fit.se, ref.se, rtol=1e-6)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-7)


@pytest.mark.parametrize("engine", ["blocked", "blocked-sparse", "cholmod"])
@pytest.mark.parametrize("REML", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("formula", MODELS)
@pytest.mark.parametrize("shift", [1e3, 1e6])
def test_covariate_far_from_zero(centred, formula, REML, engine, shift):
    """Shifting x changes the intercept's meaning only: the same family, the same optimum
    (for the random slope too, where lme4 stops ~2% above it)."""
    ref = reference(centred, formula, REML, engine)
    fit = linkmix.lmer(formula, centred.assign(x=centred.x + shift), REML=REML, engine=engine)
    assert fit.converged
    assert fit.objective == pytest.approx(ref.objective, rel=1e-8)
    assert fit.beta["x"] == pytest.approx(ref.beta["x"], rel=1e-7)
    at_zero = fit.beta["(Intercept)"] + shift * fit.beta["x"]
    assert at_zero == pytest.approx(ref.beta["(Intercept)"], abs=1e-6 * ref.se["(Intercept)"])
    ours, theirs = fit.params.estimate, ref.params.estimate
    for name in ["sigma"] + [k for k in theirs.index if k.startswith("sd[x|")]:
        assert ours[name] == pytest.approx(theirs[name], rel=1e-6), name


@pytest.mark.parametrize("engine", ["blocked", "blocked-sparse", "cholmod"])
@pytest.mark.parametrize("REML", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("formula", MODELS)
def test_extreme_scales(centred, formula, REML, engine):
    """y scaled by 1e±200 (r² would overflow or underflow) and a covariate times 1e300
    (it used to overflow and be dropped as 'rank deficient')."""
    ref = reference(centred, formula, REML, engine)
    n, p = len(centred), 2
    for s in (1e-150, 1e200):
        fit = linkmix.lmer(formula, centred.assign(y=centred.y * s), REML=REML, engine=engine)
        offset = (n - p if REML else n) * 2 * math.log(s)
        assert fit.objective - offset == pytest.approx(ref.objective, rel=1e-10)
        np.testing.assert_allclose(fit.beta / s, ref.beta, rtol=1e-7)
        assert fit.sigma / s == pytest.approx(ref.sigma, rel=1e-7)
    big = formula.replace("y ~ x", "y ~ xx")
    fit = linkmix.lmer(big, centred.assign(xx=centred.x * 1e300), REML=REML, engine=engine)
    assert fit.design.dropped_columns == []
    offset = 2 * math.log(1e300) if REML else 0.0  # REML's log|R_X|² follows X's scale
    assert fit.objective - offset == pytest.approx(ref.objective, rel=1e-10)
    assert fit.beta["xx"] * 1e300 == pytest.approx(ref.beta["x"], rel=1e-7)
    assert fit.se["xx"] * 1e300 == pytest.approx(ref.se["x"], rel=1e-6)


@pytest.mark.parametrize("ref", [r for r in LME4 if r["data"] != "centred"],
                         ids=lambda r: f"{r['formula']}-{'REML' if r['REML'] else 'ML'}-{r['data']}")
def test_lme4_optimum_of_the_centred_data_wherever_the_data_are(centred, ref):
    """lme4 itself stops up to 173 above its centred optimum on these moves (random slope,
    x + 1e6) and fails its gradient check at x + 1e6; linkmix reaches the centred optimum."""
    target = next(r for r in LME4 if r["data"] == "centred" and r["formula"] == ref["formula"]
                  and r["REML"] == ref["REML"])
    moved = centred.assign(**{col: centred[col] + by for col, by in MOVES[ref["data"]].items()})
    fit = linkmix.lmer(ref["formula"], moved, REML=ref["REML"])
    assert fit.converged
    assert fit.objective == pytest.approx(target["objective"], rel=1e-8)
    if ref["objective"] > target["objective"] * (1 + 1e-6):  # lme4 stopped short here
        assert fit.objective < ref["objective"] - 1e-6 * abs(ref["objective"])


def test_lme4_objective_at_any_location():
    """sleepstudy with Reaction + 1e8 and Days + 1e3 reaches lme4's own optimum."""
    data = load_dataset("sleepstudy")
    for ref in (r for r in LME4_LMM if r["name"] == "sleepstudy_corr"):
        fit = linkmix.lmer(ref["formula"], data.assign(Reaction=data.Reaction + 1e8,
                                                       Days=data.Days + 1e3), REML=ref["REML"])
        assert fit.objective == pytest.approx(ref["objective"], rel=1e-8)
        assert fit.objective <= ref["objective"] + 1e-7 * abs(ref["objective"])
        assert fit.beta["Days"] == pytest.approx(ref["beta"]["Days"], rel=1e-6)


def test_objective_at_lme4_theta_survives_the_shift():
    """The deviance function itself (no optimiser) at lme4's θ, on data moved far away."""
    data = load_dataset("sleepstudy")
    ref = next(r for r in LME4_LMM if r["name"] == "sleepstudy_corr" and not r["REML"])
    model = linkmix.LinearMixedModel(ref["formula"], data.assign(Reaction=data.Reaction + 1e8),
                                     REML=False)
    assert model.objective(ref["theta"]) == pytest.approx(ref["objective"], rel=1e-10)


def test_theta_maps_are_inverse(centred):
    design = build_design("y ~ x + (1 + x|g) + (1|h)", centred.assign(x=centred.x + 1e3))
    bases = RandomBases(design)
    rng = np.random.default_rng(1)
    for _ in range(5):
        theta = np.abs(rng.normal(size=design.n_theta))
        np.testing.assert_allclose(bases.theta(bases.theta_working(theta)), theta, rtol=1e-10)
        T = design.T_blocks(theta)[0]
        T_w = design.T_blocks(bases.theta_working(theta))[0]
        B = bases.bases[0]
        np.testing.assert_allclose(B @ T_w @ T_w.T @ B.T, T @ T.T, rtol=1e-9, atol=1e-12)
    c = Conditioning(design)
    beta = rng.normal(size=design.p)
    np.testing.assert_allclose(c.beta(c.beta_working(beta)), beta, atol=1e-11 * np.max(np.abs(beta)))


def test_exactly_fitted_response_is_refused(centred):
    with pytest.raises(linkmix.DataError, match="reproduce the response"):
        linkmix.lmer("y ~ x + (1|g)", centred.assign(y=3 + 2 * centred.x))


# ---- linked models ------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [1e3, 1e8])
def test_linked_fits_at_any_location(shift):
    data = linkmix.datasets.simulate_peptide(seed=3)
    moved = data.assign(x=data.x + shift)
    for kwargs in (dict(formula=M2_FORMULA, constraints=M2_CONSTRAINT),
                   dict(formula=M1_FORMULA, mean=M1_MEAN)):
        formula = kwargs.pop("formula")
        ref, fit = linkmix.lmer(formula, data, **kwargs), linkmix.lmer(formula, moved, **kwargs)
        assert fit.converged
        assert fit.objective == pytest.approx(ref.objective, rel=1e-8)
        assert fit.beta["(Intercept)"] - shift == pytest.approx(ref.beta["(Intercept)"],
                                                                abs=1e-6)


@pytest.mark.parametrize("shift", [0.0, 1e3, 1e6])
def test_linked_random_slope_far_from_zero(centred, shift):
    """A constraint that does not bind: the linked fit must reach the plain ML optimum
    (before, SLSQP stopped short for x + 1e3 and failed for x + 1e6)."""
    data = centred.iloc[:300].assign(x=centred.x.iloc[:300] + shift)
    plain = linkmix.lmer("y ~ x + (1 + x | g)", data, REML=False)
    linked = linkmix.lmer("y ~ x + (1 + x | g)", data, constraints="sigma >= 0.01")
    assert linked.converged
    assert linked.objective == pytest.approx(plain.objective, rel=1e-9)
    got, want = linked.params.estimate, plain.params.estimate
    assert got["sd[x|g]"] == pytest.approx(want["sd[x|g]"], rel=1e-3)


def test_linked_start_is_moved_off_the_boundary_in_working_theta(centred):
    """The linked fit starts at the unconstrained optimum, with θ's diagonal entries
    near 0 moved off the boundary; judged in working θ, the start is the same whatever
    x's offset (in lme4's θ the slope's 4.8e-4 at x + 1e3 once looked like a boundary
    and was moved to 0.1: the fit then started 280 deviance units away)."""
    starts = []
    for shift in (0.0, 1e3):
        data = centred.iloc[:300].assign(x=centred.x.iloc[:300] + shift)
        model = linkmix.LinkedModel("y ~ x + (1 + x | g)", data, constraints="sigma >= 0.01")
        starts.append(model.base_start()[:model.space.n_theta])
        plain = linkmix.lmer("y ~ x + (1 + x | g)", data, REML=False)
        assert model.deviance(model.base_start()) == pytest.approx(plain.objective, rel=1e-9)
    np.testing.assert_allclose(starts[1], starts[0], rtol=1e-6)


# ---- nonlinear models ---------------------------------------------------------------------

def test_nonlinear_fit_at_any_scale_and_time_origin():
    orange = linkmix.datasets.load("Orange")
    formula = "circumference ~ SSlogis(age, Asym, xmid, scal)"
    ref = linkmix.nlmer(formula, orange, random="Asym | Tree")
    n = len(orange)
    scaled = linkmix.nlmer(formula, orange.assign(circumference=orange.circumference * 1e6),
                           random="Asym | Tree")
    assert scaled.objective - 2 * n * math.log(1e6) == pytest.approx(ref.objective, rel=1e-8)
    assert scaled.beta["Asym"] / 1e6 == pytest.approx(ref.beta["Asym"], rel=1e-4)
    later = linkmix.nlmer(formula, orange.assign(age=orange.age + 1e3), random="Asym | Tree")
    assert later.objective == pytest.approx(ref.objective, rel=1e-8)
    assert later.beta["xmid"] - 1e3 == pytest.approx(ref.beta["xmid"], rel=1e-4)
