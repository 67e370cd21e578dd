"""Confidence intervals of every parameter: Wald, profile likelihood, parametric bootstrap.

Owns ``confint`` for linear, nonlinear and linked fits, on each parameter's natural
scale (fixed effects, SDs, correlations, σ; ``linkmix.parameters`` names them):

* ``"profile"`` (lme4's ``confint(method="profile")``): the ends of
  {v : −2 log L_max(v) − (−2 log L̂) ≤ q²}, q the normal quantile of the level, where
  L_max(v) is the likelihood maximised with the parameter held at v — a refit of the
  model with the constraint ``parameter == v`` (``LinkedModel``), so linked fits are
  profiled on their constraint manifold.  Like lme4, a REML fit is profiled by maximum
  likelihood.  Each end is found by root-finding on the signed root
  ζ(v) = sign(v − v̂)·sqrt(−2Δlog L), not interpolated; an SD whose profile stays below
  the cut-off down to 0 has lower end 0, a correlation that stays below it up to ±1
  has no end (NaN).
* ``"boot"`` (lme4's ``bootMer`` with percentile intervals): ``nsim`` responses are
  simulated from the fitted model (new random effects and residuals), the model is
  refitted to each, and the interval is the ``(1 ∓ level)/2`` quantiles of the
  refitted estimates.  Every simulation draws from its own child of
  ``numpy.random.SeedSequence(seed)``, so results do not depend on ``n_jobs``.
* ``"wald"``: estimate ± q·SE where the fit has an SE (fixed effects; every parameter
  of a linked fit).

This is a function (``linkmix.confint(fit)``, as ``linkmix.lrt``): a profile refits the
model through ``LinkedModel``, which is built on the model modules that make the
results, so results cannot call it without an import cycle.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from statistics import NormalDist

import numpy as np
import pandas as pd

from . import arguments
from .batch import progress_bar
from .errors import ArgumentError, FitError
from .linked import LinkedModel
from .linked_results import LinkedResults
from .model import LinearMixedModel
from .optimize import minimize_bounded
from .responses import off_the_boundary
from .results import LMMResults, NLMMResults

__all__ = ["confint", "CONFINT_METHODS"]

CONFINT_METHODS = ("profile", "boot", "wald")
#: A correlation is profiled up to this close to ±1 (at ±1 the covariance is singular).
COR_LIMIT = 1.0 - 1e-9
#: Steps outward from the estimate before an end is given up (each step doubles).
MAX_STEPS = 30


def confint(fit, method: str = "profile", *, level: float = 0.95, parm=None,
            nsim: int = 1000, seed: int | None = None, n_jobs: int = 1,
            progress: bool | None = None) -> pd.DataFrame:
    """Confidence intervals of a fit's parameters.

    Parameters
    ----------
    fit : LMMResults, NLMMResults or LinkedResults
    method : {"profile", "boot", "wald"}
        See the module's description.
    level : float
        Coverage, in (0, 1).
    parm : str or list of str, optional
        Parameter names (``fit.params.index``); default all.
    nsim, seed, n_jobs, progress
        The bootstrap's simulations, seed, worker processes and progress bar (tqdm,
        default when stderr is a terminal).

    Returns
    -------
    pandas.DataFrame
        Indexed by parameter name: ``estimate`` (the fit's), ``lower``, ``upper``.
    """
    method = arguments.choice(method, "method", CONFINT_METHODS)
    level = arguments.fraction(level, "level")
    if not isinstance(fit, (LMMResults, LinkedResults)):
        raise ArgumentError(f"confint takes a linkmix fit, not {type(fit).__name__}")
    names, kinds, estimate, se = fit.natural_estimates()
    names = list(names)
    wanted = _wanted(parm, names)
    if method == "wald":
        q = NormalDist().inv_cdf(0.5 + level / 2)
        lower, upper = estimate - q * se, estimate + q * se
    elif method == "profile":
        lower, upper = _profile(fit, wanted, level)
    else:
        lower, upper = _bootstrap(fit, level, arguments.count(nsim, "nsim"), seed,
                                  arguments.count(n_jobs, "n_jobs"),
                                  arguments.optional_flag(progress, "progress"))
    table = pd.DataFrame({"estimate": estimate, "lower": lower, "upper": upper},
                         index=pd.Index(names, name="parameter"))
    return table.iloc[wanted]


def _wanted(parm, names) -> list[int]:
    if parm is None:
        return list(range(len(names)))
    parm = [parm] if isinstance(parm, str) else list(parm)
    unknown = [p for p in parm if p not in names]
    if unknown:
        raise ArgumentError(f"unknown parameter(s) {unknown}; the fit has {names}")
    return [names.index(p) for p in parm]


# ---- profile likelihood -----------------------------------------------------------------
def _current_model(fit):
    """A linked or nonlinear fit's own model, which must still hold the fit's data."""
    if fit.model.design is not fit.design:
        raise FitError("this fit's model has since been refitted with another response; "
                       "use the fit the model returned last")
    return fit.model


def _ml_linear_model(fit):
    """A plain linear fit's model fitted by maximum likelihood (a REML fit's design refitted
    by ML, as lme4's profile does); None for nonlinear and linked fits."""
    if isinstance(fit, (NLMMResults, LinkedResults)):
        return None
    return fit._model_at_fit() if not fit.REML else \
        LinearMixedModel.from_design(fit.design, REML=False, engine=fit.engine_request)


def _profile(fit, wanted, level):
    ml_model = _ml_linear_model(fit)
    if ml_model is not None:
        base_model = LinkedModel.from_model(ml_model)
    elif isinstance(fit, LinkedResults):
        base_model = _current_model(fit)
    else:
        base_model = LinkedModel.from_model(_current_model(fit))
    base = base_model.fit()          # the ML optimum, with SEs for the first steps
    names, kinds, values, se = base.natural_estimates()
    # a plain linear fit profiles β and σ without constraints (an offset, or σ held in
    # the criterion): faster than constrained refits, and the same optimum
    ml = None if ml_model is None else (ml_model, ml_model.fit(check_gradient=True))
    cutoff = NormalDist().inv_cdf(0.5 + level / 2)
    lower = np.full(len(names), np.nan)
    upper = np.full(len(names), np.nan)
    for k in wanted:
        kind = kinds[k]
        if ml is not None and kind == "fixef":
            profile = _FixedEffectProfile(ml, names[k])
        elif ml is not None and kind == "sigma":
            profile = _SigmaProfile(ml)
        else:
            profile = _ConstrainedProfile(base_model, base, names[k])
        # the first step: the SE, but not below a tenth of the parameter's own scale (an
        # SD at 0 has an SE of 0, and its profile is flat there)
        scale = {"fixef": 0.0, "cor": 0.05}.get(kind, 0.1 * base.sigma)
        step = max(se[k] if np.isfinite(se[k]) else 0.0, scale, 1e-8 * abs(values[k]))
        bounds = {"sd": (0.0, math.inf), "sigma": (0.0, math.inf),
                  "cor": (-COR_LIMIT, COR_LIMIT)}.get(kind, (-math.inf, math.inf))
        lower[k] = profile.end(-1, step, cutoff, bounds[0], kind)
        upper[k] = profile.end(1, step, cutoff, bounds[1], kind)
    return lower, upper


class _Profile:
    """ζ(v) = sign(v − v̂)·sqrt(D(v) − D̂) of one parameter and where it reaches a cut-off.
    Subclasses provide ``v_hat``, ``deviance`` (D̂) and ``minimum(v)`` (D(v))."""

    name = ""

    def zeta(self, v: float) -> float:
        change = self.minimum(v) - self.deviance
        if change < -1e-6:
            warnings.warn(f"profiling {self.name} found a lower deviance than the fit's "
                          f"(by {-change:.3g}): the fit was not at its optimum", stacklevel=4)
        return math.copysign(math.sqrt(max(change, 0.0)), v - self.v_hat)

    def end(self, sign: int, step: float, cutoff: float, bound: float, kind: str) -> float:
        """Where |ζ| reaches ``cutoff`` on one side (``sign``), by doubling steps out
        from the estimate and then Brent's method; ``bound`` when ζ stays below the
        cut-off up to it (an SD's 0), NaN for a correlation's ±1."""
        from scipy.optimize import brentq

        inside, v = self.v_hat, self.v_hat + sign * cutoff * step
        for _ in range(MAX_STEPS):
            if sign * (v - bound) >= 0:
                v = bound
            if abs(self.zeta(v)) >= cutoff:
                return brentq(lambda x: abs(self.zeta(x)) - cutoff, min(inside, v),
                              max(inside, v), xtol=1e-9 * max(1.0, abs(self.v_hat), step),
                              rtol=1e-10)
            if v == bound:
                return bound if kind in ("sd", "sigma") else math.nan
            inside, v = v, self.v_hat + 2.0 * (v - self.v_hat)
        return math.nan


class _FixedEffectProfile(_Profile):
    """β_j held at v: the ML fit of y − x_j·v on the other columns (an offset)."""

    def __init__(self, ml, name):
        model, fit = ml
        design = model.design
        j = design.fixed_names.index(name)
        keep = [i for i in range(design.p) if i != j]
        self.x, self.y = design.X[:, j].copy(), design.y
        self.model = LinearMixedModel.from_design(
            dataclasses.replace(design, X=np.ascontiguousarray(design.X[:, keep]),
                                fixed_names=[design.fixed_names[i] for i in keep]),
            REML=False, engine=fit.engine_request)
        self.name, self.v_hat, self.deviance = name, float(fit.beta[name]), fit.objective
        self.theta = off_the_boundary(design, fit.theta)

    def minimum(self, v: float) -> float:
        self.model.set_response(self.y - self.x * v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model.fit(check_gradient=False, theta_start=self.theta).objective


class _SigmaProfile(_Profile):
    """σ held at v: min over θ of −2 log L(θ, β̂(θ), v)."""

    name = "sigma"

    def __init__(self, ml):
        self.model, fit = ml
        self.v_hat, self.deviance = fit.sigma, fit.objective
        self.theta = off_the_boundary(self.model.design, fit.theta)

    def minimum(self, v: float) -> float:
        model = self.model
        summary = minimize_bounded(lambda t: model.variance_deviance(t, v), self.theta,
                                   model.design.theta_lower, check_gradient=False,
                                   equivalents=model.design.column_flips)
        return summary.fun_final


class _ConstrainedProfile(_Profile):
    """The parameter held at v by the constraint ``name == v``: refits of the model as a
    ``LinkedModel`` (any parameter, on a linked fit's manifold), each from the nearest
    refit."""

    def __init__(self, model, base, name):
        self.name, self.v_hat = name, float(base.params.loc[name, "estimate"])
        self.deviance = base.objective
        self.target = [self.v_hat]
        constraint = {"type": "eq", "fun": self._residual, "label": f"{name} == v"}
        self.model = LinkedModel.from_model(model, constraints=[constraint])
        self.starts = {self.v_hat: _start_of(base)}

    def _residual(self, params):
        return params[self.name] - self.target[0]

    def minimum(self, v: float) -> float:
        self.target[0] = v
        nearest = min(self.starts, key=lambda s: abs(s - v))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                refit = self.model.fit(derivatives=False, start=self.starts[nearest])
            except FitError:  # SLSQP gave up from there: the model's own starts
                refit = self.model.fit(derivatives=False, n_starts=3)
            # SLSQP stops where a variance reaches 0 and the criterion is flat in it (even
            # in θ), even where the criterion falls away from 0: look from the other side
            diagonal = np.isfinite(refit.space.theta_lower)
            at_zero = diagonal & (np.abs(refit.theta) < 1e-6)
            if at_zero.any():
                start = _start_of(refit)
                start[:len(refit.theta)][at_zero] = 0.5
                other = self.model.fit(derivatives=False, start=start)
                if other.objective < refit.objective:
                    refit = other
        self.starts[v] = _start_of(refit)
        return refit.objective


def _start_of(fit) -> np.ndarray:
    """A linked fit's optimum as a start (lme4's θ, β, log σ), with θ's diagonal moved off
    its bound 0: SLSQP started on the bound stays there even where the optimum of the
    next profile point has left it."""
    theta = off_the_boundary(fit.space, fit.theta)
    return np.concatenate([theta, fit._beta, [math.log(fit.sigma)]])


# ---- parametric bootstrap --------------------------------------------------------------
def _bootstrap(fit, level, nsim, seed, n_jobs, progress):
    if isinstance(fit, NLMMResults):
        raise ArgumentError("the parametric bootstrap refits the model to simulated responses; "
                            "nonlinear models cannot yet be refitted with another response: "
                            "use method='profile' or 'wald'")
    task = _BootTask.of(fit)
    children = np.random.SeedSequence(seed).spawn(nsim)
    workers = min(n_jobs, nsim)
    batches = np.array_split(np.arange(nsim), max(1, 4 * workers))
    batches = [b for b in batches if len(b)]
    bar = progress_bar(nsim, progress, unit="refit", desc="bootstrap")
    results = []
    try:
        if workers == 1:
            for batch in batches:
                results.append(task.run([children[i] for i in batch]))
                if bar is not None:
                    bar.update(len(batch))
        else:
            from concurrent.futures import ProcessPoolExecutor

            import pickle

            try:
                pickle.dumps(task)
            except Exception:
                raise ArgumentError("n_jobs > 1 sends the model to worker processes, and this "
                                    "fit's constraints or mean cannot be sent (a callable that "
                                    "pickle cannot copy): use n_jobs=1 or string constraints "
                                    "and means") from None
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for out in pool.map(task.run, [[children[i] for i in b] for b in batches]):
                    results.append(out)
                    if bar is not None:
                        bar.update(len(out))
    finally:
        if bar is not None:
            bar.close()
    estimates = np.vstack(results)
    ok = np.all(np.isfinite(estimates), axis=1)
    if not ok.any():
        raise FitError(f"no refit of the {nsim} simulated responses succeeded")
    if not ok.all():
        warnings.warn(f"{int((~ok).sum())} of {nsim} bootstrap refits failed and are left "
                      f"out", stacklevel=3)
    alpha = (1.0 - level) / 2.0
    lower, upper = np.quantile(estimates[ok], [alpha, 1.0 - alpha], axis=0)
    return lower, upper


class _BootTask:
    """Simulate from a fitted model and refit (picklable: it travels to workers, which
    build their own model from its recipe).

    y* = μ + Z·Λ(θ̂)·σ̂·u* + σ̂·ε with u*, ε standard normal; μ = Xβ̂ (+ a linked
    mean at the estimates), the marginal mean of the fit."""

    def __init__(self, recipe, mean, Z, Lambda, sigma, fit_options, width):
        self.recipe, self.mean, self.Z, self.Lambda = recipe, mean, Z, Lambda
        self.sigma, self.fit_options, self.width = sigma, fit_options, width
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    @classmethod
    def of(cls, fit):
        design = fit.design
        Z = design.Z_sparse()
        mean = fit.fitted() - Z @ fit._b()
        Lambda = design.Lambda_sparse(np.asarray(fit.theta, dtype=float))
        if isinstance(fit, LinkedResults):
            model = _current_model(fit)
            # parsed text travels as text (re-read in a worker), callables as they are
            constraints = [c.label if c.parameters_used is not None else c
                           for c in model.constraints]
            linked_mean = model.mean
            if linked_mean is not None and hasattr(linked_mean, "_expr"):
                linked_mean = linked_mean.label
            recipe = ("linked", design, model.data, constraints, linked_mean,
                      model.response.engine.kind)
            options = {"derivatives": False, "n_starts": len(fit.runs), "method": fit.method}
        else:
            recipe = ("linear", design, fit.REML, fit.engine_request)
            options = {"check_gradient": False}
        return cls(recipe, mean, Z, Lambda, fit.sigma, options, len(fit.natural_estimates()[0]))

    @property
    def model(self):
        if self._model is None:
            kind, design, *rest = self.recipe
            if kind == "linear":
                REML, engine = rest
                self._model = LinearMixedModel.from_design(design, REML=REML, engine=engine)
            else:
                data, constraints, mean, engine = rest
                self._model = LinkedModel.from_design(design, data, constraints=constraints,
                                                      mean=mean, engine=engine)
        return self._model

    def run(self, seeds) -> np.ndarray:
        """The natural estimates of one refit per seed (NaN rows where a refit failed)."""
        model = self.model
        out = []
        n, q = self.Z.shape
        for child in seeds:
            rng = np.random.default_rng(child)
            u = rng.standard_normal(q)
            y = self.mean + self.sigma * (self.Z @ (self.Lambda @ u) + rng.standard_normal(n))
            try:
                model.set_response(y)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    refit = model.fit(**self.fit_options)
                out.append(np.asarray(refit.natural_estimates()[2], dtype=float))
            except Exception:  # one failed refit is reported, not fatal
                out.append(None)
        return np.vstack([row if row is not None else np.full(self.width, np.nan)
                          for row in out])
