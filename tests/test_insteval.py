"""InstEval (73,421 observations, q = 4,128): the large crossed model against lme4.

Reference: tests/data/lme4_insteval.json, made by make_lme4_insteval.R with lme4 1.1-31.
A fit takes about a second; the other engines are checked at lme4's θ only.
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
    assert fit.engine_kind == "blocked-sparse"  # the automatic choice: 4× less work
    assert fit.converged
    assert fit.objective <= REF["objective"] * (1 + 1e-6)
    assert fit.objective == pytest.approx(REF["objective"], rel=1e-6)
    np.testing.assert_allclose(fit.theta, REF["theta"], atol=1e-3)
    np.testing.assert_allclose(fit.beta.to_numpy(), REF["beta"], rtol=1e-4)
    np.testing.assert_allclose(fit.se.to_numpy(), REF["se_beta"], rtol=1e-3)
    assert fit.sigma == pytest.approx(REF["sigma"], rel=1e-4)
    assert fit.ngroups == {"s": 2972, "d": 1128, "dept:service": 28}


@pytest.mark.parametrize("engine", ["blocked", "blocked-sparse", "cholmod",
                                    "cholmod-supernodal"])
def test_engines_agree_at_lme4_theta(insteval, engine):
    model = linkmix.LinearMixedModel(REF["formula"], insteval, REML=False, engine=engine)
    assert model.engine.kind == engine
    assert model.objective(np.array(REF["theta"])) == pytest.approx(REF["objective"],
                                                                    rel=1e-10)
