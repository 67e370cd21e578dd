"""Optimiser choice, singular fits, and convergence reporting."""

import numpy as np
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
    assert opt.fun_final == min(value for _, value in opt.log) or opt.fun_final <= opt.log[-1][1]
    assert opt.x_initial.tolist() == [1.0]


def test_theta_start_is_used():
    ref = next(r for r in LME4_LMM if r["name"] == "sleepstudy_corr" and not r["REML"])
    model = linkmix.LinearMixedModel(ref["formula"], load_dataset("sleepstudy"), REML=False)
    fit = model.fit(theta_start=ref["theta"])
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-9)
    with pytest.raises(ValueError, match="theta_start has 2 entries"):
        model.fit(theta_start=[1.0, 0.0])
