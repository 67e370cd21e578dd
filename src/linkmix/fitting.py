"""The entry points ``lmer`` and ``nlmer``: which model class a call fits.

Owns the dispatch only: a plain call fits ``LinearMixedModel`` (REML by default) or
``NonlinearMixedModel``; ``constraints`` or ``mean`` make it a maximum-likelihood fit of
a linked model (``linkmix.linked``).  The model modules do not know this one, so
the imports run one way: fitting → linked → model, nonlinear → results; the linked and
nonlinear modules are imported by the calls that fit them (a plain ``lmer``, the
``linkmix fit`` command's usual case, does not load them).
"""

from __future__ import annotations

import pandas as pd

from . import arguments
from .errors import ArgumentError, FitError
from .model import LinearMixedModel

__all__ = ["lmer", "nlmer"]


def lmer(formula: str, data: pd.DataFrame, *, REML: bool | None = None, constraints=None,
         mean=None, n_starts: int = 1, method: str = "SLSQP", seed: int = 0, start=None,
         engine: str = "auto", missing: str = "drop", optimizer: str = "auto",
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
    REML = arguments.optional_flag(REML, "REML")
    if constraints is not None or mean is not None:
        if REML:
            raise FitError("models with constraints or a linked mean are fitted by maximum "
                           "likelihood (the full deviance); drop REML=True")
        if fit_options or optimizer != "auto":
            raise ArgumentError(f"options {sorted(fit_options) or ['optimizer']} apply to plain "
                                f"fits only; linked fits take n_starts, method, seed, start")
        from .linked import LinkedModel
        model = LinkedModel(formula, data, constraints=constraints, mean=mean, engine=engine,
                            missing=missing)
        return model.fit(n_starts=n_starts, method=method, seed=seed, start=start)
    model = LinearMixedModel(formula, data, REML=True if REML is None else REML, engine=engine,
                             missing=missing)
    return model.fit(optimizer=optimizer, **fit_options)


def nlmer(formula: str, data: pd.DataFrame, random=None, *, fixed=None, model=None,
          start=None, engine: str = "auto", missing: str = "drop", constraints=None,
          n_starts: int = 1, method: str = "SLSQP", seed: int = 0, **fit_options):
    """Fit a nonlinear mixed model by the Laplace approximation, as lme4's ``nlmer``.

    Parameters
    ----------
    formula : str
        ``"conc ~ SSfol(Dose, Time, lKe, lKa, lCl)"`` (covariates first, then the
        names of the model parameters), or with lme4's third part
        ``"circumference ~ SSlogis(age, Asym, xmid, scal) ~ Asym | Tree"``.
    data : pandas.DataFrame
    random : str or list of str
        ``"Asym | Tree"``, ``"lKa + lCl | Subject"``, ``"lKe + lKa + lCl || Subject"``.
    fixed : dict, optional
        Covariates of model parameters: ``{"lCl": "1 + Wt"}``.
    model : NonlinearFunction, optional
        A user model (``linkmix.user_model``) named in the formula.
    start : dict, optional
        Start values of fixed effects (needed for models without self-start).
    constraints
        Links between parameters (names as in ``params``): the fit is then by
        maximum likelihood on the full Laplace deviance, as for linear models.

    Examples
    --------
    >>> fit = linkmix.nlmer("conc ~ SSfol(Dose, Time, lKe, lKa, lCl)", Theoph,
    ...                     random="lKe + lKa + lCl || Subject")  # doctest: +SKIP
    """
    if constraints is not None:
        from .linked import LinkedModel
        linked = LinkedModel.nonlinear(formula, data, random, fixed=fixed, model=model,
                                       engine=engine, missing=missing, constraints=constraints)
        return linked.fit(n_starts=n_starts, method=method, seed=seed, start=start)
    from .nonlinear import NonlinearMixedModel
    model_ = NonlinearMixedModel(formula, data, random, fixed=fixed, model=model, engine=engine,
                                 missing=missing)
    return model_.fit(start=start, **fit_options)
