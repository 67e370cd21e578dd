"""The nonlinear reference suite (tests/data/make_nlmer_suite.R): its cases as linkmix models.

Shared by tests/test_nlmer_suite.py and benchmarks/nlmer_suite.py.  A case is fitted
as a user would: its formula as nlmer's, linkmix's defaults, and start values only for
the user model (which has no self-start; nlmer was given the same).
"""

import json
import pathlib

import numpy as np
import pandas as pd

import linkmix
from linkmix.nonlinear import NonlinearMixedModel

DATA = pathlib.Path(__file__).parent / "data"
SUITE = json.loads((DATA / "nlmer_suite.json").read_text())
CASES = {case["name"]: case for case in SUITE["cases"]}


def _exp_decay_value(phi, cov):
    return phi["A"] * np.exp(-np.exp(phi["lk"]) * cov["x"])


def _exp_decay_jacobian(phi, cov):
    decay = np.exp(-np.exp(phi["lk"]) * cov["x"])
    return np.column_stack([decay, -phi["A"] * decay * np.exp(phi["lk"]) * cov["x"]])


#: The suite's user model, as make_nlmer_suite.R's deriv(): A·exp(−e^{lk}·x).
EXP_DECAY = linkmix.user_model(_exp_decay_value, ["A", "lk"], ["x"],
                               jacobian=_exp_decay_jacobian, name="expDecay")


def is_user_model(case) -> bool:
    return "expDecay(" in case["formula"]


def data_of(case) -> pd.DataFrame:
    return pd.read_csv(DATA / case["data"])


def model_of(case, data=None) -> NonlinearMixedModel:
    """The case's model (rows with a missing response are dropped, as nlmer's na.omit)."""
    extra = {"model": EXP_DECAY} if is_user_model(case) else {}
    return NonlinearMixedModel(case["formula"], data_of(case) if data is None else data, **extra)


def fit_case(model, case):
    """linkmix's fit with defaults; the user model gets nlmer's start values."""
    return model.fit(start=case["start"] if is_user_model(case) else None)


def nlmer_point(model, case) -> tuple[np.ndarray, np.ndarray]:
    """nlmer's θ and β in linkmix's order (lme4 names a covariate's intercept 'Asym',
    linkmix 'Asym:(Intercept)')."""
    beta = [case["beta"][name if name in case["beta"] else name.replace(":(Intercept)", "")]
            for name in model.design.fixed_names]
    return np.atleast_1d(case["theta"]).astype(float), np.array(beta, dtype=float)
