"""InstEval (73,421 observations, q = 4,128): the large crossed model against lme4.

Reference: tests/data/lme4_insteval.json, made by make_lme4_insteval.R with lme4 1.1-31.
A blocked fit takes a few seconds; the CHOLMOD engine is checked at one θ only.
"""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

import linkmix

DATA = pathlib.Path(__file__).parent / "data"
REF = json.loads((DATA / "lme4_insteval.json").read_text())


@pytest.fixture(scope="module")
def insteval():
    return pd.read_csv(DATA / "InstEval.csv.gz",
                       dtype={c: str for c in ("s", "d", "studage", "lectage", "service", "dept")})


@pytest.fixture(scope="module")
def fit(insteval):
    return linkmix.lmer(REF["formula"], insteval, REML=False)


def test_insteval_matches_lme4(fit):
    assert fit.engine_kind == "blocked"
    assert fit.converged
    assert fit.objective <= REF["objective"] * (1 + 1e-6)
    assert fit.objective == pytest.approx(REF["objective"], rel=1e-6)
    np.testing.assert_allclose(fit.theta, REF["theta"], atol=1e-3)
    np.testing.assert_allclose(fit.beta.to_numpy(), REF["beta"], rtol=1e-4)
    np.testing.assert_allclose(fit.se.to_numpy(), REF["se_beta"], rtol=1e-3)
    assert fit.sigma == pytest.approx(REF["sigma"], rel=1e-4)
    assert fit.ngroups == {"s": 2972, "d": 1128, "dept:service": 28}


def test_cholmod_engine_agrees_at_lme4_theta(insteval):
    blocked = linkmix.LinearMixedModel(REF["formula"], insteval, REML=False, engine="blocked")
    sparse = linkmix.LinearMixedModel(REF["formula"], insteval, REML=False, engine="cholmod")
    theta = np.array(REF["theta"])
    assert sparse.objective(theta) == pytest.approx(REF["objective"], rel=1e-10)
    assert blocked.objective(theta) == pytest.approx(REF["objective"], rel=1e-10)
