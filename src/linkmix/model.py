"""The linear mixed model: formula + data → design → engine → deviance → fit.

Owns the pipeline's order and its public entry points (``lmer`` and
``LinearMixedModel``).  Each stage is reachable on its own: ``model.design``
(the numbers), ``model.engine`` (the factorisation), ``model.deviance`` (the
objective as a function of θ, or of (θ, β, σ) through ``deviance.full``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .design import build_design
from .deviance import Deviance
from .engine import make_engine
from .errors import ConvergenceWarning, FitError
from .optimize import minimize_bounded
from .results import LMMResults

__all__ = ["LinearMixedModel", "lmer"]


class LinearMixedModel:
    """A linear mixed model ``y = Xβ + ZΛ_θ u + ε``, ready to evaluate or fit.

    Parameters
    ----------
    formula : str
        lme4-style formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
    REML : bool, default True
        Fit by REML (lme4's default) or by maximum likelihood.
    engine : {"auto", "blocked", "cholmod"}
        Factorisation of Λ'Z'ZΛ + I (see ``linkmix.engine``).
    missing : {"drop", "raise"}
        Rows with missing values in used columns: drop and report, or raise.
    """

    def __init__(self, formula: str, data: pd.DataFrame, *, REML: bool = True,
                 engine: str = "auto", missing: str = "drop"):
        self.design = build_design(formula, data, missing=missing)
        self.engine = make_engine(self.design, engine)
        self.deviance = Deviance(self.engine, REML)
        self.REML = bool(REML)

    @property
    def formula(self) -> str:
        return self.design.formula.text

    def objective(self, theta) -> float:
        """Profiled deviance (ML) or REML criterion at θ."""
        return self.deviance(np.asarray(theta, dtype=float))

    def fit(self, *, optimizer: str = "bobyqa", theta_start=None, check_gradient: bool = True,
            **optimizer_options) -> LMMResults:
        """Optimise θ and return the fit.

        Parameters
        ----------
        optimizer : {"bobyqa", "cobyqa"}
            nlopt's LN_BOBYQA (lme4's default) or scipy's COBYQA.
        theta_start : array_like, optional
            Start for θ; lme4's (T = I) by default.
        check_gradient : bool
            Check a finite-difference gradient at the optimum (2·dim θ extra
            evaluations); part of the convergence verdict.
        **optimizer_options
            ``ftol_abs``, ``xtol_abs``, ``maxeval``, ``initial_step``.
        """
        design = self.design
        _, _, _, lower = design.theta_template()
        start = design.theta_start() if theta_start is None else np.asarray(theta_start, float)
        if start.shape != lower.shape:
            raise ValueError(f"theta_start has {start.size} entries; this model has "
                             f"{lower.size}")
        summary = minimize_bounded(self.deviance, start, lower, optimizer=optimizer,
                                   check_gradient=check_gradient, **optimizer_options)
        if not np.isfinite(summary.fun_final):
            raise FitError(f"the deviance is not finite at the optimum θ = {summary.x_final}; "
                           f"the design may be degenerate")
        if not summary.converged:
            warnings.warn(f"the fit did not converge: {summary.message}", ConvergenceWarning,
                          stacklevel=2)
        return LMMResults(self, summary)


def lmer(formula: str, data: pd.DataFrame, *, REML: bool = True, engine: str = "auto",
         missing: str = "drop", optimizer: str = "bobyqa", **fit_options) -> LMMResults:
    """Fit a linear mixed model, as lme4's ``lmer`` does.

    See ``LinearMixedModel`` for the parameters; ``fit_options`` go to
    ``LinearMixedModel.fit``.

    Examples
    --------
    >>> import linkmix
    >>> fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)  # doctest: +SKIP
    >>> fit.summary()  # doctest: +SKIP
    """
    model = LinearMixedModel(formula, data, REML=REML, engine=engine, missing=missing)
    return model.fit(optimizer=optimizer, **fit_options)
