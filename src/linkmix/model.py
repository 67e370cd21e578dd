"""The linear mixed model: formula + data → design → engine → deviance → fit.

Owns the pipeline's order and its public entry points (``lmer`` and
``LinearMixedModel``).  Each stage is reachable on its own: ``model.design``
(the numbers), ``model.engine`` (the factorisation), ``model.deviance`` (the
objective as a function of θ, or of (θ, β, σ) through ``deviance.full``).
"""

from __future__ import annotations

import dataclasses
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
        self.data = data
        self._setup(build_design(formula, data, missing=missing), REML, engine)

    def _setup(self, design, REML, engine):
        self.design = design
        self.engine = make_engine(design, engine)
        self.deviance = Deviance(self.engine, REML)
        self.REML = bool(REML)

    @classmethod
    def from_design(cls, design, *, REML: bool = True, engine: str = "auto"):
        """A model over an already built ``LMMDesign`` (no formula parsing)."""
        model = cls.__new__(cls)
        model.data = None
        model._setup(design, REML, engine)
        return model

    @property
    def formula(self) -> str:
        return self.design.formula.text

    def set_response(self, y, row_index=None) -> None:
        """Refit-ready for another response of the same layout (batch fits): only the
        numbers of y change; design, pattern and symbolic factorisation are kept."""
        self.design = dataclasses.replace(self.design, y=np.asarray(y, dtype=float),
                                          row_index=row_index)
        self.engine.set_response(self.design.y)

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


def lmer(formula: str, data: pd.DataFrame, *, REML: bool | None = None, constraints=None,
         mean=None, n_starts: int = 1, method: str = "SLSQP", seed: int = 0, start=None,
         engine: str = "auto", missing: str = "drop", optimizer: str = "bobyqa",
         **fit_options):
    """Fit a linear mixed model, as lme4's ``lmer`` does, optionally with links.

    Parameters
    ----------
    formula, data, engine, missing
        See ``LinearMixedModel``.
    REML : bool, optional
        REML (the default for plain models) or maximum likelihood (the only
        choice, and the default, with ``constraints`` or ``mean``).
    constraints, mean
        Links between parameters (see ``LinkedModel``); either makes this a
        maximum-likelihood fit of the full deviance, returning ``LinkedResults``.
    n_starts, method, seed, start
        Linked fits: number of starts, ``"SLSQP"`` or ``"trust-constr"``, the
        seed of the spread starts, and start values (a name → value mapping).
    optimizer, **fit_options
        Plain fits: see ``LinearMixedModel.fit``.

    Examples
    --------
    >>> import linkmix
    >>> fit = linkmix.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)  # doctest: +SKIP
    >>> fit.summary()  # doctest: +SKIP
    """
    if constraints is not None or mean is not None:
        from .linked import LinkedModel

        if REML:
            raise FitError("models with constraints or a linked mean are fitted by maximum "
                           "likelihood (the full deviance); drop REML=True")
        if fit_options or optimizer != "bobyqa":
            raise TypeError(f"options {sorted(fit_options) or ['optimizer']} apply to plain "
                            f"fits only; linked fits take n_starts, method, seed, start")
        model = LinkedModel(formula, data, constraints=constraints, mean=mean, engine=engine,
                            missing=missing)
        return model.fit(n_starts=n_starts, method=method, seed=seed, start=start)
    model = LinearMixedModel(formula, data, REML=True if REML is None else REML, engine=engine,
                             missing=missing)
    return model.fit(optimizer=optimizer, **fit_options)
