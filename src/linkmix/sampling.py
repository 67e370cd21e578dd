"""Posterior sampling of linear, linked and nonlinear mixed models on the likelihood
each fit maximises.

Owns the Bayesian side of a fit: priors by parameter name, the sampling coordinates,
the constraint manifold, the samplers, the evidence and the output.

* **Likelihood**: the fit's own −2 log L(θ, β, σ) with nothing profiled (``Target``,
  made by each results class): the random effects integrated out exactly by the
  compiled engine for linear and linked linear models, by the Laplace approximation
  (or AGQ) for nonlinear ones.
* **Coordinates**: every free named parameter (``linkmix.parameters``) is one real
  coordinate: fixed effects as they are, SDs and σ by log, correlations by atanh, so
  the Jacobian is diagonal.  ``ParameterSpace.from_natural`` rebuilds θ (T = chol(Σ)/σ
  per term); a correlation matrix that is not positive definite has zero density, so
  uniform correlations are LKJ(1) for terms of any size.
* **Constraints**: equalities are solved for dependent parameters (``_Manifold``): the
  posterior on {c = 0} is the one of the linked-mean form, the free parameters carrying
  the priors.  Inequalities truncate.
* **Priors**: a dict by name, each a string ``"normal(0, 5)"`` (read by a whitelist
  grammar, nothing evaluated) or a frozen ``scipy.stats`` distribution.  Defaults,
  weakly informative as brms's: flat on fixed effects; half Student-t(3, 0, s) on SDs
  and σ with s = max(2.5, MAD(y)); uniform on correlations.
* **Samplers**: NUTS (mici's dynamic multinomial HMC with a dense metric), with exact
  deviance derivatives for linear models (``linear_deviance_gradient``), for one-mode
  posteriors, curved ones included; emcee's ensemble with DE-MC moves, whose whole
  differences jump between modes, when the fit found several equally likely optima or
  has inequality constraints.  Every chain starts near an optimum from its own
  ``SeedSequence`` child.
* **Evidence**: ``bridge_log_evidence`` (bridge sampling) and ``bayes_factor``.
* **Output**: an ArviZ ``InferenceData`` by parameter name, with the random effects'
  conditional draws on request; ``posterior_summary`` reports the diagnostics.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings

import numpy as np
import pandas as pd
import scipy.linalg

from . import arguments, numdiff, threads
from .constraints import ConstraintError
from .engine import dense_curvature
from .errors import ArgumentError, FitError, LinkmixError

__all__ = ["sample", "posterior_summary", "PosteriorSummary", "bayes_factor", "BayesFactor",
           "bridge_log_evidence", "Target", "parse_prior", "default_priors", "PRIOR_FAMILIES"]

#: Prior families by name: (scipy.stats name, its parameters in the text's order).
PRIOR_FAMILIES = {
    "normal": ("norm", ("loc", "scale")),
    "student_t": ("t", ("df", "loc", "scale")),
    "cauchy": ("cauchy", ("loc", "scale")),
    "half_normal": ("halfnorm", ("scale",)),
    "half_student_t": ("t", ("df", "scale")),
    "half_cauchy": ("halfcauchy", ("scale",)),
    "exponential": ("expon", ("scale",)),
    "uniform": ("uniform", ("lower", "upper")),
    "flat": (None, ()),
}
_PRIOR = re.compile(r"\s*([a-z_]+)\s*\(([^()]*)\)\s*$")


class _Half:
    """A zero-centred symmetric distribution folded onto [0, ∞): density 2f(x)."""

    def __init__(self, dist, label: str):
        self.dist, self.label = dist, label

    def logpdf(self, x):
        return math.log(2.0) + float(self.dist.logpdf(x)) if x >= 0 else -math.inf

    def __repr__(self):
        return self.label


def half_student_t(df: float, scale: float) -> _Half:
    """Student's t with ``df`` degrees of freedom and ``scale``, folded at 0."""
    from scipy import stats

    return _Half(stats.t(df=df, scale=scale), f"half_student_t({df:g}, {scale:g})")


class _Flat:
    """An improper flat prior (log density 0)."""

    def logpdf(self, x):
        return 0.0

    def __repr__(self):
        return "flat()"


def parse_prior(text: str):
    """A frozen scipy.stats distribution from ``"family(a, b)"`` (``PRIOR_FAMILIES``);
    ``uniform(lower, upper)`` and ``exponential(rate)`` read as written."""
    from scipy import stats

    match = _PRIOR.match(text) if isinstance(text, str) else None
    if not match or match[1] not in PRIOR_FAMILIES:
        raise ArgumentError(f"cannot read the prior {text!r}: write family(numbers), one of "
                            f"{sorted(PRIOR_FAMILIES)}, e.g. 'normal(0, 5)'")
    family, args = match[1], [a.strip() for a in match[2].split(",") if a.strip()]
    scipy_name, params = PRIOR_FAMILIES[family]
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ArgumentError(f"the prior {text!r} takes numbers only") from None
    if len(values) != len(params) or not all(map(math.isfinite, values)):
        raise ArgumentError(f"{family} takes {len(params)} finite number(s) "
                            f"({', '.join(params) or 'none'}), not {args}")
    if family == "flat":
        return _Flat()
    if family == "uniform":
        lower, upper = values
        if not upper > lower:
            raise ArgumentError(f"uniform(lower, upper) needs upper > lower: {text!r}")
        return stats.uniform(loc=lower, scale=upper - lower)
    if family == "exponential":
        (rate,) = values
        values = [1.0 / rate] if rate > 0 else [-1.0]
    kwargs = dict(zip(params, values))
    if kwargs.get("scale", 1.0) <= 0 or kwargs.get("df", 1.0) <= 0:
        raise ArgumentError(f"the prior {text!r} needs a positive scale and df")
    if family == "half_student_t":
        return half_student_t(**kwargs)
    return getattr(stats, scipy_name)(**kwargs)


def default_priors(names, kinds, y) -> dict:
    """The weakly informative defaults (module description), by name."""
    from scipy import stats

    y = np.asarray(y, dtype=float)
    mad = 1.4826 * float(np.median(np.abs(y - np.median(y))))
    scale = max(2.5, mad)
    out = {}
    for name, kind in zip(names, kinds):
        if kind in ("sd", "sigma"):
            out[name] = half_student_t(3, scale)
        elif kind == "cor":
            out[name] = stats.uniform(loc=-1.0, scale=2.0)
        else:
            out[name] = _Flat()
    return out


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _fast_logpdf(prior):
    """``prior.logpdf`` as a plain function of one float where the family is known
    (scipy's frozen ``logpdf`` spends ~50 µs checking arguments: most of a posterior
    evaluation); any other distribution keeps its own ``logpdf``."""
    if isinstance(prior, _Flat):
        return lambda x: 0.0
    if isinstance(prior, _Half):
        inner = _fast_logpdf(prior.dist)
        return lambda x: math.log(2.0) + inner(x) if x >= 0 else -math.inf
    dist = getattr(prior, "dist", None)
    if dist is None or getattr(prior, "args", ()):   # positional arguments: its own logpdf
        return prior.logpdf
    name, kwds = dist.name, prior.kwds
    loc, scale = float(kwds.get("loc", 0.0)), float(kwds.get("scale", 1.0))
    log_scale = math.log(scale)
    if name == "norm":
        return lambda x: -0.5 * ((x - loc) / scale) ** 2 - _LOG_SQRT_2PI - log_scale
    if name == "halfnorm":
        return lambda x: (-0.5 * ((x - loc) / scale) ** 2 - _LOG_SQRT_2PI - log_scale
                          + math.log(2.0)) if x >= loc else -math.inf
    if name == "uniform":
        upper = loc + scale
        return lambda x: -log_scale if loc <= x <= upper else -math.inf
    if name == "t" and "df" in kwds:
        df = float(kwds["df"])
        const = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
                 - 0.5 * math.log(df * math.pi) - log_scale)
        return lambda x: const - (df + 1) / 2 * math.log1p(((x - loc) / scale) ** 2 / df)
    return prior.logpdf


class Target:
    """What a fit hands the sampler: its likelihood over the natural parameters.

    Parameters
    ----------
    space : ParameterSpace
        Names, kinds and the natural ↔ (θ, β, σ) maps.
    neg2ll : callable
        ``neg2ll(theta, beta, sigma, natural)``: −2 log L, the fit's own criterion with
        nothing profiled.
    y : ndarray
        The response (for the default priors' scale).
    modes : list of ndarray
        Natural vectors of the fit's equally likely optima (the first is the best).
    se : ndarray
        Standard errors of the natural parameters (NaN where unknown): the start's spread.
    likelihood : str
        How −2 log L is computed (recorded in the output).
    equalities, inequalities : callable, optional
        Constraint values at a natural vector (``== 0`` and ``>= 0``).
    conditional : callable, optional
        ``conditional(theta, beta, sigma, natural)`` → (ũ, Λ, L): the conditional mode
        of the spherical random effects, Λ_θ and the lower Cholesky factor L of the
        precision A (u | y ~ N(ũ, σ²A⁻¹)), dense; for the random effects' draws.
    deviance_gradient : callable, optional
        ``deviance_gradient(theta, beta, sigma, natural)`` → (∂D/∂θ, ∂D/∂β, ∂D/∂σ,
        ∂D/∂Π through a linked mean, D): exact derivatives for NUTS (else differenced),
        and D itself from the same factorisation.
    """

    def __init__(self, space, neg2ll, y, modes, se, likelihood, *, equalities=None,
                 inequalities=None, conditional=None, deviance_gradient=None):
        self.space, self.neg2ll, self.y = space, neg2ll, np.asarray(y, dtype=float)
        self.modes = [np.asarray(m, dtype=float) for m in modes]
        self.se, self.likelihood = np.asarray(se, dtype=float), likelihood
        self.equalities, self.inequalities = equalities, inequalities
        self.conditional = conditional
        self.deviance_gradient = deviance_gradient


#: Largest number of random effects whose conditional draws are made (dense q × q).
MAX_Q_FOR_DRAWS = 3000
#: Largest number of random effects whose deviance gradient is computed densely (beyond
#: it NUTS differences the log posterior).
MAX_Q_FOR_GRADIENT = 400
#: How many times a NUTS chain that could not adapt its step size, or stuck (every
#: draw divergent), runs again from another start.
CHAIN_RESTARTS = 3


class _LinearKernel:
    """The dense kernel (``_dense.DenseCurvature``) over Z alone, at the response
    y − m, m = ``fixed_mean(beta, natural)`` the mean without random effects: A =
    Λ'Z'ZΛ + I, its factor, ũ = A⁻¹Λ'Z'(y − m), r² and log|A| with their exact θ
    derivatives.  Shared by the random effects' draws and the deviance gradient."""

    def __init__(self, design, fixed_mean):
        self.design, self.fixed_mean = design, fixed_mean
        random_only = dataclasses.replace(design, X=np.zeros((design.n, 0)), fixed_names=[])
        self.kernel = dense_curvature(random_only, REML=False, always=True)
        self.Z = design.Z_sparse()

    def at(self, theta, beta, natural, order: int) -> np.ndarray:
        """Factor at (θ, β, Π) with derivatives up to ``order``; y − m.  A ValueError
        where the mean is not finite."""
        residual = self.design.y - self.fixed_mean(beta, natural)
        if not np.all(np.isfinite(residual)):
            raise ValueError("the mean is not finite")
        self.kernel.set_response(residual)
        if not self.kernel.evaluate(np.asarray(theta, dtype=float), order):
            raise ValueError("the residual lies in the random effects' span")
        return residual


def linear_conditional(design, fixed_mean):
    """``Target.conditional`` of a linear model (``_LinearKernel``)."""
    dense = _LinearKernel(design, fixed_mean)

    def conditional(theta, beta, sigma, natural):
        dense.at(theta, beta, natural, 0)
        return dense.kernel.u, design.Lambda_sparse(theta).toarray(), dense.kernel.A_factor()
    return conditional


def linear_deviance_gradient(design, fixed_mean, mean_jacobian=None):
    """``Target.deviance_gradient`` of a linear model, D = n log(2πσ²) + r²/σ² + log|A|
    with A = Λ'Z'ZΛ + I and r² = ‖y − m − ZΛũ‖² + ‖ũ‖² (m = ``fixed_mean``), from the
    dense kernel (``_LinearKernel``):

    * ∂D/∂θ = ∂log|A|/∂θ + (∂r²/∂θ)/σ², the kernel's exact derivatives;
    * ∂D/∂β = −2X'r̃/σ²,  ∂D/∂σ = 2n/σ − 2r²/σ³ (r̃ = y − m − ZΛũ);
    * ∂D/∂Π = −2 (∂f/∂Π)'r̃/σ² through a linked mean f, ``mean_jacobian(natural)`` → ∂f/∂Π.

    None when q exceeds ``MAX_Q_FOR_GRADIENT``."""
    if design.q > MAX_Q_FOR_GRADIENT:
        return None
    dense = _LinearKernel(design, fixed_mean)
    kernel, X, n = dense.kernel, design.X, design.n

    def gradient(theta, beta, sigma, natural):
        residual = dense.at(theta, beta, natural, 1)
        r = residual - dense.Z @ design.Lambda_times(theta, kernel.u)
        s2 = sigma * sigma
        g_mean = (np.zeros(len(natural)) if mean_jacobian is None
                  else -2.0 * (mean_jacobian(natural).T @ r) / s2)
        deviance = n * math.log(2 * math.pi * s2) + kernel.r2 / s2 + kernel.logdet_A
        return (kernel.grad_ell + kernel.grad_r2 / s2, -2.0 * (X.T @ r) / s2,
                2.0 * n / sigma - 2.0 * kernel.r2 / sigma**3, g_mean, deviance)
    return gradient


def nonlinear_conditional(nlmm):
    """``Target.conditional`` of a nonlinear model by the Laplace approximation: ũ from
    PNLS and A = U'U + I with U = ∂μ/∂u at ũ."""
    design = nlmm.design

    def conditional(theta, beta, sigma, natural):
        _, u, _ = nlmm.pnls(np.asarray(theta, float), np.asarray(beta, float))
        _, _, Zs = nlmm._linearisation(theta, beta, u)
        Lambda = design.Lambda_sparse(theta)
        U = (design.Z_sparse(Zs) @ Lambda).toarray()
        factor = scipy.linalg.cholesky(U.T @ U + np.eye(U.shape[1]), lower=True)
        return u, Lambda.toarray(), factor
    return conditional


class _Manifold:
    """The equality constraints solved for some parameters (the dependent ones) given
    the rest: the posterior lives on {c(Π) = 0} parametrised by the free parameters,
    which is the linked-mean form of the same model (the dependent parameters become
    functions of the free ones, as c₂ = g(σ₁, σ₂, b₂₁, b₂₂) does in the seed model).

    The dependent parameters are ``solve_for`` if given, else fixed effects the
    constraints are affine in (so every free point has exactly one solution), chosen by
    a pivoted QR of ∂c/∂Π at the estimate; failing that, any parameters by the same
    QR.  Solving is a chord iteration from the estimate's values (exact in one step
    for an affine constraint)."""

    def __init__(self, equalities, names, kinds, estimate, solve_for=None):
        self.equalities, self.estimate = equalities, np.asarray(estimate, dtype=float)
        values = self._values(self.estimate)
        m = len(values)
        self.m = m
        if m == 0:
            self.dependent = []
            return
        J = self.jacobian(self.estimate)
        if solve_for is not None:
            solve_for = [solve_for] if isinstance(solve_for, str) else list(solve_for)
            unknown = [name for name in solve_for if name not in names]
            if unknown:
                raise ArgumentError(f"solve_for names unknown parameters {unknown}; "
                                    f"parameters: {list(names)}")
            if len(solve_for) != m:
                raise ArgumentError(f"solve_for needs {m} name(s), one per equality "
                                    f"constraint, not {len(solve_for)}")
            dependent = [list(names).index(name) for name in solve_for]
            if np.linalg.matrix_rank(J[:, dependent]) < m:
                raise ArgumentError(f"the equality constraints cannot be solved for "
                                    f"{solve_for}: their Jacobian in them is singular at "
                                    f"the estimate")
        else:
            fixed = [j for j, kind in enumerate(kinds) if kind == "fixef"]
            affine = [j for j in fixed if np.any(J[:, j] != 0) and self._affine_in(j)]
            dependent = None
            for pool in (affine, fixed, list(range(len(names)))):
                dependent = self._pivoted(J, pool, m)
                if dependent is not None:
                    break
            if dependent is None:
                raise ArgumentError("the equality constraints' Jacobian has rank below their "
                                    "number at the estimate: no parameters can be solved "
                                    "for; give solve_for=")
        self.dependent = sorted(dependent)
        self.J0 = J[:, self.dependent]
        self.names = [names[j] for j in self.dependent]

    def _values(self, natural):
        return np.atleast_1d(np.asarray(self.equalities(natural), dtype=float))

    def jacobian(self, natural, columns=None):
        """∂c/∂Π over ``columns`` (default: all), by linkmix's difference rule."""
        return numdiff.jacobian(self._values, natural, rel_step=1e-6, indices=columns)

    def _affine_in(self, j) -> bool:
        """Whether every constraint is affine in parameter j (second and third
        differences over a wide step vanish)."""
        x, h = self.estimate, 0.5 * max(1.0, abs(self.estimate[j]))
        try:
            points = []
            for step in (-h, 0.0, h, 2 * h):
                shifted = x.copy()
                shifted[j] += step
                points.append(self._values(shifted))
        except LinkmixError:
            return False
        a, b, c, d = points
        scale = 1.0 + np.abs(a) + np.abs(b) + np.abs(c) + np.abs(d)
        return bool(np.all(np.abs(a - 2 * b + c) <= 1e-9 * scale)
                    and np.all(np.abs(b - 2 * c + d) <= 1e-9 * scale))

    @staticmethod
    def _pivoted(J, pool, m):
        if len(pool) < m:
            return None
        _, R, order = scipy.linalg.qr(J[:, pool], mode="economic", pivoting=True)
        chosen = [pool[i] for i in order[:m]]
        return chosen if np.linalg.matrix_rank(J[:, chosen]) == m else None

    def complete(self, natural):
        """``natural`` with its dependent entries solved for; None where no solution is
        found (the point is off the model)."""
        if not self.m:
            return natural
        dep = self.dependent
        natural[dep] = self.estimate[dep]
        J = self.J0
        for iteration in range(60):
            c = self._values(natural)
            if not np.all(np.isfinite(c)):
                return None
            step = np.linalg.solve(J, c)
            if np.all(np.abs(step) <= 1e-11 * (1.0 + np.abs(natural[dep]))):
                return natural
            natural[dep] -= step
            if iteration == 20:            # slow chord: Newton with the current Jacobian
                J = self.jacobian(natural, dep)
                if np.linalg.matrix_rank(J) < self.m:
                    return None
        return None


class _Posterior:
    """log p(v | y) in the sampling coordinates v of the free parameters: fixed effects
    as they are, SDs and σ by log, correlations by atanh (a diagonal Jacobian)."""

    def __init__(self, target: Target, priors: dict, given=(), solve_for=None):
        space = target.space
        self.target, self.space = target, space
        self.names, self.kinds = list(space.names), list(space.kinds)
        equalities = target.equalities
        self.manifold = _Manifold(equalities if equalities is not None else (lambda x: []),
                                  self.names, self.kinds, target.modes[0], solve_for)
        dependent = set(self.manifold.dependent)
        self.free = [i for i in range(len(self.names)) if i not in dependent]
        given = [self.names[i] for i in sorted(dependent) if self.names[i] in given]
        if given:
            raise ArgumentError(f"{given} are determined by the equality constraints (the "
                                f"posterior lives on the constraint manifold); give priors "
                                f"to the free parameters only, or choose others with "
                                f"solve_for=")
        self.priors = {self.names[i]: priors[self.names[i]] for i in self.free}
        self._logpdfs = [_fast_logpdf(self.priors[self.names[i]]) for i in self.free]
        self._free_kinds = [self.kinds[i] for i in self.free]
        self._log_scale = np.array([k in ("sd", "sigma") for k in self._free_kinds])
        self.rejected_by_user_code = 0

    # natural ↔ v over the free parameters
    def natural(self, v):
        """The full natural vector at v (dependent parameters solved), or None."""
        nat = self.target.modes[0].copy()
        for position, (i, kind) in enumerate(zip(self.free, self._free_kinds)):
            value = v[position]
            if kind in ("sd", "sigma") and abs(value) > 300:
                return None          # e^±300: no posterior has mass there
            nat[i] = (math.exp(value) if kind in ("sd", "sigma")
                      else math.tanh(value) if kind == "cor" else value)
        try:
            return self.manifold.complete(nat)
        except ConstraintError:
            self.rejected_by_user_code += 1
            return None

    def coordinates(self, natural) -> np.ndarray:
        v = np.empty(len(self.free))
        for position, (i, kind) in enumerate(zip(self.free, self._free_kinds)):
            value = natural[i]
            v[position] = (math.log(max(value, 1e-300)) if kind in ("sd", "sigma")
                           else math.atanh(min(max(value, -1 + 1e-12), 1 - 1e-12))
                           if kind == "cor" else value)
        return v

    def log_prior(self, v, nat) -> float:
        total = 0.0
        for coordinate, i, logpdf, kind in zip(v.tolist(), self.free, self._logpdfs,
                                               self._free_kinds):
            total += float(logpdf(nat[i]))
            if kind in ("sd", "sigma"):
                total += coordinate                   # d(sd)/dv = sd = e^v
            elif kind == "cor":
                # d(tanh v)/dv = sech²v, in logs without tanh's rounding to ±1
                a = abs(coordinate)
                total += 2.0 * (math.log(2.0) - a - math.log1p(math.exp(-2.0 * a)))
        return total

    def __call__(self, v) -> float:
        v = np.asarray(v, dtype=float)
        # a log-scale coordinate beyond ±300 is e^±300 (its square would overflow a float):
        # no posterior has mass there
        if not np.all(np.isfinite(v)) or np.any(np.abs(v[self._log_scale]) > 300):
            return -math.inf
        nat = self.natural(v)
        if nat is None:
            return -math.inf
        log_prior = self.log_prior(v, nat)
        if not math.isfinite(log_prior):
            return -math.inf
        user = self.space.from_natural(nat)
        if user is None:
            return -math.inf
        target = self.target
        try:
            if target.inequalities is not None and np.any(target.inequalities(nat) < 0):
                return -math.inf
            deviance = target.neg2ll(*user, nat)
        except ConstraintError:      # a mean or constraint not finite here: no density
            self.rejected_by_user_code += 1
            return -math.inf
        except FitError:
            return -math.inf
        return log_prior - 0.5 * deviance if math.isfinite(deviance) else -math.inf

    def gradient(self, v):
        """(∇_v log p(v | y), log p(v | y)) with the deviance and its derivatives from the
        target (exact) and the cheap maps around it differenced: the priors,
        Π → (θ, β, σ), and the constraints that move the dependent parameters with the
        free ones (∂Π_dep/∂Π_free = −J_dep⁻¹J_free).  None where the target has no
        derivatives or the log posterior is not finite at v."""
        nat = self.natural(v)
        user = None if nat is None else self.space.from_natural(nat)
        if user is None or self.target.deviance_gradient is None:
            return None
        target = self.target
        try:
            if target.inequalities is not None and np.any(target.inequalities(nat) < 0):
                return None
            g_theta, g_beta, g_sigma, g_mean, deviance = target.deviance_gradient(*user, nat)
        except (ValueError, np.linalg.LinAlgError, LinkmixError):
            return None          # not finite here (an overflowing mean): difference instead
        g_user = np.concatenate([g_theta, g_beta, [g_sigma]])
        value = self.log_prior(v, nat) - 0.5 * deviance
        if not (math.isfinite(value) and np.all(np.isfinite(g_user))
                and np.all(np.isfinite(g_mean))):
            return None
        d_deviance = self.space.from_natural_jacobian(nat, user[0]).T @ g_user + g_mean
        free = d_deviance[self.free]
        if self.manifold.m:
            Jc = self.manifold.jacobian(nat)
            dep = self.manifold.dependent
            free = free - np.linalg.solve(Jc[:, dep], Jc[:, self.free]).T @ d_deviance[dep]
        out = -0.5 * free
        for position, (i, kind, logpdf) in enumerate(zip(self.free, self._free_kinds,
                                                         self._logpdfs)):
            out[position] += _log_density_slope(logpdf, float(nat[i]))
            if kind in ("sd", "sigma"):             # Π = e^v, log|J| = v
                out[position] = out[position] * nat[i] + 1.0
            elif kind == "cor":                     # Π = tanh v, log|J| = log sech²v
                out[position] = out[position] * (1.0 - nat[i] ** 2) - 2.0 * nat[i]
        return out, value

    def explain_start(self, v) -> str:
        """Why the log posterior is not finite at v (for the error at a bad start)."""
        nat = self.natural(v)
        if nat is None:
            return "the equality constraints have no solution there"
        user = self.space.from_natural(nat)
        if user is None:
            return "a correlation matrix is not positive definite there"
        try:
            if self.target.inequalities is not None:
                values = self.target.inequalities(nat)
                if np.any(values < 0):
                    return f"an inequality constraint is violated ({values.tolist()})"
            return f"−2 log L = {self.target.neg2ll(*user, nat)}"
        except LinkmixError as exc:
            return str(exc)


def _log_density_slope(logpdf, x: float, relative_step: float = 1e-6) -> float:
    """d logpdf/dx by central differences, one-sided at the edge of the support."""
    h = relative_step * max(1.0, abs(x))
    up, down = float(logpdf(x + h)), float(logpdf(x - h))
    if math.isfinite(up) and math.isfinite(down):
        return (up - down) / (2 * h)
    centre = float(logpdf(x))
    return ((up - centre) / h if math.isfinite(up) else
            (centre - down) / h if math.isfinite(down) else 0.0)


def sample(fit, *, draws: int = 1000, chains: int = 4, prior: dict | None = None,
           seed: int | None = None, tune: int | None = None, walkers: int | None = None,
           progress: bool | None = None, random_effects: bool = False, solve_for=None,
           evidence: bool = False, sampler: str = "auto", target_accept: float = 0.95):
    """Draws from the posterior of a fit's parameters (module description).

    Parameters
    ----------
    fit : LMMResults, NLMMResults or LinkedResults
        Its model must still hold the fit's data.
    draws : int
        Kept draws per walker, after ``tune`` (default ``draws``) discarded ones.
    chains : int
        Independent chains (NUTS) or ensembles.
    prior : dict, optional
        Name → prior (text or frozen scipy.stats distribution); the rest default.
    seed : int, optional
    walkers : int, optional
        The ensemble's walkers per chain (default max(16, 4 × free parameters), even).
    sampler : {"auto", "nuts", "ensemble"}
        NUTS, or emcee's ensemble with mode-jumping moves; "auto" takes the ensemble
        when the fit found several equally likely optima or has inequality constraints,
        else NUTS.
    target_accept : float
        NUTS's target acceptance statistic for the step size (Stan's ``adapt_delta``).
        The default 0.95 is above Stan's 0.8: a linked mean's curved ridges made 0.8
        diverge; raise it (0.99) when the summary reports divergent transitions.
    progress : bool, optional
        The sampler's progress bar (default: when stderr is a terminal).
    random_effects : bool
        Also draw the random effects from their conditional distribution at every draw
        (exact for linear models, the Laplace approximation's Gaussian for nonlinear
        ones), as one variable ``b[<coefficients>|<group>]`` per term (level × coefficient).
    solve_for : str or list of str, optional
        The parameters the equality constraints are solved for (module description);
        by default chosen as ``_Manifold`` says.
    evidence : bool
        Also estimate the log marginal likelihood log p(y) by bridge sampling
        (``bridge_log_evidence``), for ``bayes_factor``; needs proper priors on every
        free parameter.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` by parameter name (dims chain × draw; with the ensemble a chain per
        walker) and ``sample_stats`` (``lp``, ``acceptance_rate``; NUTS adds
        ``diverging``, ``tree_depth``, ``n_steps``, ``step_size``).
    """
    draws = arguments.count(draws, "draws")
    chains = arguments.count(chains, "chains")
    tune = draws if tune is None else arguments.count(tune, "tune", minimum=0)
    progress = arguments.optional_flag(progress, "progress")
    random_effects = arguments.flag(random_effects, "random_effects")
    evidence = arguments.flag(evidence, "evidence")
    sampler = arguments.choice(sampler, "sampler", ("auto", "nuts", "ensemble"))
    target_accept = arguments.fraction(target_accept, "target_accept")
    target = fit._sampling_target()
    space = target.space
    names, kinds = list(space.names), list(space.kinds)
    priors = default_priors(names, kinds, target.y)
    given = set()
    for name, spec in (prior or {}).items():
        if name not in names:
            raise ArgumentError(f"a prior for unknown parameter {name!r}; parameters: {names}")
        priors[name] = parse_prior(spec) if isinstance(spec, str) else spec
        if not hasattr(priors[name], "logpdf"):
            raise ArgumentError(f"the prior of {name!r} must be text or a frozen "
                                f"scipy.stats distribution")
        given.add(name)
    posterior = _Posterior(target, priors, given, solve_for)
    if sampler == "auto":
        # NUTS follows curved ridges (the seed model's) that defeat the ensemble; the
        # ensemble jumps between separated modes and needs no gradient at the hard edges
        # an inequality constraint cuts, where HMC's trajectories break down
        sampler = ("ensemble" if len(target.modes) > 1 or target.inequalities is not None
                   else "nuts")
    dim = len(posterior.free)
    walkers = max(16, 4 * dim) if walkers is None else arguments.count(walkers, "walkers")
    walkers += walkers % 2
    if sampler == "ensemble" and walkers < 2 * dim:
        raise ArgumentError(f"emcee needs at least {2 * dim} walkers for {dim} parameters")
    if random_effects:
        if target.conditional is None:
            raise ArgumentError("this fit has no random effects to draw")
        q = space.design.q
        if q > MAX_Q_FOR_DRAWS:
            raise ArgumentError(f"conditional draws of {q} random effects are made densely; "
                                f"at most {MAX_Q_FOR_DRAWS}")
    if evidence:
        improper = [name for name, prior in posterior.priors.items()
                    if isinstance(prior, _Flat)]
        if improper:
            raise ArgumentError(f"the evidence (and a Bayes factor) needs proper priors; "
                                f"{improper} have flat ones: give them proper priors")
    centres, spread = _starts(posterior, target)
    return _run(posterior, centres, spread, sampler, walkers, chains, tune, draws, seed,
                progress if progress is not None else os.isatty(2), random_effects, evidence,
                target_accept)


def _starts(posterior, target):
    """Centres of the chains' starting balls (one per equally likely optimum) and the
    balls' spread, in the sampling coordinates."""
    centres = []
    for mode in target.modes:
        start = mode.copy()
        # an SD at 0 (a singular fit) starts at a tenth of σ: log 0 is not a coordinate
        for i, kind in enumerate(posterior.kinds):
            if kind == "sd":
                start[i] = max(start[i], 0.1 * start[-1])
        v = posterior.coordinates(start)
        if not math.isfinite(posterior(v)):
            raise FitError(f"the log posterior is not finite at the fit's estimate: "
                           f"{posterior.explain_start(v)}")
        centres.append(v)
    se = target.se[posterior.free]
    kinds = np.array(posterior._free_kinds)
    # a parameter held by an active constraint has SE 0: spread it a little all the same
    fallback = 1e-2 * np.maximum(1.0, np.abs(centres[0]))
    se = np.where(np.isfinite(se) & (se > 0), se, fallback)
    spread = np.where(kinds == "fixef", se, 0.1)
    return centres, spread


def _start(posterior, centre, spread, rng, tries: int = 60):
    """A walker's start near ``centre`` with a finite log posterior (a centre on an
    inequality's boundary has infeasible points all around it: draw again, closer)."""
    for attempt in range(tries):
        v = centre + 0.1 * spread * 0.8 ** attempt * rng.standard_normal(len(centre))
        if math.isfinite(posterior(v)):
            return v
    raise FitError("no start with a finite log posterior was found near the estimate")


def _run(posterior, centres, spread, method, walkers, chains, tune, draws, seed, progress,
         random_effects, evidence, target_accept):
    arviz = _arviz()
    seeds = np.random.SeedSequence(seed).spawn(chains + 2)
    runner = _nuts if method == "nuts" else _ensemble
    # the posterior's matrices are small: BLAS threads would only wait on hand-offs
    with np.errstate(all="ignore"), warnings.catch_warnings(), threads.one_blas_thread():
        # far proposals overflow in the engine or in user code: zero density there
        warnings.simplefilter("ignore", RuntimeWarning)
        values, stats, attrs = runner(posterior, centres, spread, walkers, seeds[:chains],
                                      tune, draws, progress, target_accept)
    natural = np.vectorize(posterior.natural, signature="(n)->(m)")(values)
    out = {name: natural[..., i] for i, name in enumerate(posterior.names)}
    dims, coords = {}, {}
    if random_effects:
        _draw_random_effects(posterior, natural, np.random.default_rng(seeds[-2]), out, dims,
                             coords)
    if evidence:
        log_z, error = bridge_log_evidence(posterior, values, stats["lp"],
                                           np.random.default_rng(seeds[-1]))
        attrs.update(log_evidence=log_z, log_evidence_error=error)
    return arviz.from_dict(
        posterior=out, dims=dims, coords=coords, sample_stats=stats,
        attrs={**attrs, "likelihood": posterior.target.likelihood, "tune": tune,
               # proposals whose constraint or mean was not finite (zero density there)
               "non_finite_user_code": posterior.rejected_by_user_code,
               "determined_by_constraints": ", ".join(posterior.manifold.names
                                                      if posterior.manifold.m else []),
               "priors": "; ".join(f"{name}: {_describe(prior)}"
                                   for name, prior in posterior.priors.items())})


def _nuts(posterior, centres, spread, walkers, seeds, tune, draws, progress, target_accept):
    """No-U-turn sampling (mici's dynamic multinomial HMC) of ``len(seeds)`` chains, the
    step size adapted by dual averaging and a dense metric from the warm-up draws, the
    gradient by central differences (the leapfrog map stays volume-preserving and
    reversible for any force, so the chain targets the exact posterior whatever the
    differences' error).  Returns draws (chain × draw × dim), sample stats, attrs."""
    try:
        import mici
    except ImportError:
        raise LinkmixError("NUTS needs mici: pip install 'linkmix[bayes]'") from None
    dim = len(centres[0])

    def neg_log_density(v):
        value = posterior(v)
        return -value if math.isfinite(value) else math.inf

    def gradient(v):
        exact = posterior.gradient(v)
        if exact is not None:       # with the value: mici caches it for the Hamiltonian
            return -exact[0], -exact[1]
        def along(i):
            def log_density(x):
                moved = v.copy()
                moved[i] = x
                return posterior(moved)
            return log_density
        return -np.array([_log_density_slope(along(i), float(v[i]), 1e-5)
                          for i in range(dim)])

    system = mici.systems.EuclideanMetricSystem(neg_log_density, grad_neg_log_dens=gradient)

    def run(starts, rng):
        """mici's chains from ``starts``: (positions, stats) per chain, or None where
        a chain could not adapt its step size (mici then stops every chain)."""
        sampler = mici.samplers.DynamicMultinomialHMC(
            system, mici.integrators.LeapfrogIntegrator(system), rng)
        adapters = [mici.adapters.DualAveragingStepSizeAdapter(target_accept),
                    mici.adapters.OnlineCovarianceMetricAdapter()]
        try:
            output = sampler.sample_chains(
                tune, draws, starts, adapters=adapters, n_worker=1,
                display_progress=progress,
                trace_funcs=[lambda state: {"pos": state.pos,
                                            "lp": -system.neg_log_dens(state)}])
        except (mici.errors.Error, ValueError):
            return None
        traced, statistics = output.traces, output.statistics
        if len(traced["pos"]) != len(starts):
            return None
        stats = {"lp": traced["lp"], "acceptance_rate": statistics["accept_stat"],
                 "diverging": statistics["diverging"], "tree_depth": statistics["tree_depth"],
                 "n_steps": statistics["n_step"], "step_size": statistics["step_size"]}
        return [(np.asarray(traced["pos"][c]), {k: np.asarray(v[c]) for k, v in stats.items()})
                for c in range(len(starts))]

    def failed(chain) -> bool:  # could not start, or every kept draw divergent and rejected
        return chain is None or (bool(np.all(chain[1]["diverging"]))
                                 and not np.any(np.ptp(chain[0], axis=0) > 0))

    starts = [_start(posterior, centres[c % len(centres)], spread,
                     np.random.default_rng(child)) for c, child in enumerate(seeds)]
    chains = run(starts, np.random.default_rng(seeds[0])) or [None] * len(seeds)
    restarted = 0
    for c, child in enumerate(seeds):
        # a chain that could not start, or that stuck (every kept draw divergent, as
        # after a step size adapted where the posterior curves far more than elsewhere:
        # seen on the seed model's manifold), runs again alone from another start
        for _ in range(CHAIN_RESTARTS):
            if not failed(chains[c]):
                break
            restarted += 1
            start_seed, sampler_seed = child.spawn(2)
            start = _start(posterior, centres[c % len(centres)], spread,
                           np.random.default_rng(start_seed))
            chains[c] = (run([start], np.random.default_rng(sampler_seed)) or [None])[0]
        if failed(chains[c]):
            raise FitError(f"NUTS chain {c} could not adapt its step size, or stuck with "
                           f"every draw divergent, from {CHAIN_RESTARTS + 1} starts; try "
                           f"target_accept=0.99 or sampler='ensemble'")
    stats = {key: np.stack([chain[1][key] for chain in chains]) for key in chains[0][1]}
    from importlib.metadata import version
    attrs = {"sampler": f"NUTS (mici {version('mici')}: dynamic multinomial HMC, dense "
                        f"metric, target acceptance {target_accept:g})",
             "chains": len(seeds), "restarted_chains": restarted}
    return np.stack([chain[0] for chain in chains]), stats, attrs


def _ensemble(posterior, centres, spread, walkers, seeds, tune, draws, progress,
              target_accept=None):
    """emcee's ensemble of ``walkers`` per seed with ter Braak's DE-MC moves: mostly small
    differential steps, one in ten a whole difference (γ = 1) that carries a walker to the
    mode another walker is in.  Every walker is a chain in the output."""
    try:
        import emcee
    except ImportError:
        raise LinkmixError("the ensemble sampler needs emcee: pip install 'linkmix[bayes]'") \
            from None
    samples, lps, acceptance = [], [], []
    for child in seeds:
        rng = np.random.default_rng(child)
        start = np.array([_start(posterior, centres[w % len(centres)], spread, rng)
                          for w in range(walkers)])
        moves = [(emcee.moves.DEMove(), 0.7), (emcee.moves.DEMove(gamma0=1.0), 0.1),
                 (emcee.moves.DESnookerMove(), 0.2)]
        sampler = emcee.EnsembleSampler(walkers, len(posterior.free), posterior, moves=moves)
        # emcee draws its moves from a RandomState: seeded from this chain's child
        sampler.random_state = np.random.RandomState(int(rng.integers(2**32))).get_state()
        sampler.run_mcmc(start, tune + draws, progress=progress)
        samples.append(np.swapaxes(sampler.get_chain(discard=tune), 0, 1))
        lps.append(np.swapaxes(sampler.get_log_prob(discard=tune), 0, 1))
        acceptance.append(np.repeat(sampler.acceptance_fraction[:, None], draws, axis=1))
    stats = {"lp": np.concatenate(lps), "acceptance_rate": np.concatenate(acceptance)}
    attrs = {"sampler": f"emcee {emcee.__version__} ensemble (DEMove 0.7, DEMove γ=1 0.1, "
                        f"DESnookerMove 0.2)", "walkers_per_chain": walkers,
             "chains": len(seeds)}
    return np.concatenate(samples), stats, attrs


#: Posterior draws (and as many proposal draws) bridge sampling uses at most.
BRIDGE_DRAWS = 8000


def bridge_log_evidence(log_posterior, values, log_values, rng, max_iter: int = 1000):
    """log p(y) = log ∫ q(v) dv for an unnormalised log posterior q by bridge sampling
    (Meng and Wong 1996, the optimal bridge, as Gronau et al. 2017): a normal proposal g
    fitted to the first half of the draws, the second half and as many draws from g.

    Parameters
    ----------
    log_posterior : callable
        log q(v).
    values, log_values : ndarray
        Draws v (chain × draw × dim) and log q at them.
    rng : numpy.random.Generator

    Returns
    -------
    (float, float)
        log p(y) and the approximate relative standard error of p(y) (Frühwirth-Schnatter
        2004, with the posterior draws' effective sample size).
    """
    chains, draws, dim = values.shape
    half = draws // 2
    fit_on = values[:, :half].reshape(-1, dim)
    mean, cov = fit_on.mean(axis=0), np.atleast_2d(np.cov(fit_on, rowvar=False))
    factor = scipy.linalg.cholesky(cov + 1e-12 * np.diag(np.diag(cov)), lower=True)
    log_det = 2.0 * np.log(np.diag(factor)).sum()

    def log_g(x):
        z = scipy.linalg.solve_triangular(factor, (x - mean).T, lower=True)
        return -0.5 * (z * z).sum(axis=0) - 0.5 * dim * math.log(2 * math.pi) - 0.5 * log_det

    post = values[:, half:].reshape(-1, dim)
    log_q_post = log_values[:, half:].reshape(-1)
    keep = np.linspace(0, len(post) - 1, min(len(post), BRIDGE_DRAWS)).astype(int)
    post, log_q_post = post[keep], log_q_post[keep]
    proposal = mean + rng.standard_normal((len(post), dim)) @ factor.T
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        log_q_prop = np.array([log_posterior(x) for x in proposal])
    l1 = log_q_post - log_g(post)          # posterior draws
    l2 = log_q_prop - log_g(proposal)      # proposal draws
    n1 = _effective_size(values[:, half:], len(post))
    n2 = len(proposal)
    s1, s2 = n1 / (n1 + n2), n2 / (n1 + n2)
    shift = float(np.median(l1))
    e1, e2 = np.exp(l1 - shift), np.exp(l2 - shift)   # exp(-inf) = 0 off the support
    r = 1.0
    for _ in range(max_iter):
        updated = np.mean(e2 / (s1 * e2 + s2 * r)) / np.mean(1.0 / (s1 * e1 + s2 * r))
        if abs(updated - r) <= 1e-10 * r:
            r = updated
            break
        r = updated
    f_prop = e2 / r / (s1 * e2 / r + s2)
    f_post = 1.0 / (s1 * e1 / r + s2)
    error = math.sqrt(np.var(f_prop) / np.mean(f_prop) ** 2 / n2
                      + np.var(f_post) / np.mean(f_post) ** 2 / n1)
    return float(math.log(r) + shift), float(error)


def _effective_size(values, n_used):
    """The posterior draws' effective sample size for bridge sampling: the smallest bulk
    ESS over the coordinates, at most the number of draws used."""
    arviz = _arviz()
    ess = min(float(arviz.ess(values[..., i])) for i in range(values.shape[-1]))
    return max(2.0, min(ess, float(n_used)))


class BayesFactor:
    """The Bayes factor of model A against model B from their bridge-sampled evidences:
    BF = p(y | A) / p(y | B), with an approximate relative error."""

    def __init__(self, log_evidence_a, log_evidence_b, error_a, error_b):
        self.log_bf = float(log_evidence_a - log_evidence_b)
        self.bf = math.exp(self.log_bf)
        # relative errors of the two evidences add in quadrature in their ratio
        self.relative_error = math.hypot(error_a, error_b)

    def __str__(self):
        return (f"Bayes factor (A against B) = {self.bf:.4g} (log {self.log_bf:.4f}; "
                f"relative error about {100 * self.relative_error:.1f}%, bridge sampling)")

    __repr__ = __str__


def bayes_factor(a, b) -> BayesFactor:
    """The Bayes factor p(y | A)/p(y | B) of two sets of draws made with
    ``sample(..., evidence=True)`` on the same data."""
    for name, idata in (("the first", a), ("the second", b)):
        if "log_evidence" not in idata.attrs:
            raise ArgumentError(f"{name} draws carry no evidence: sample with evidence=True")
    return BayesFactor(a.attrs["log_evidence"], b.attrs["log_evidence"],
                       a.attrs["log_evidence_error"], b.attrs["log_evidence_error"])


def _draw_random_effects(posterior, natural, rng, out, dims, coords):
    """One conditional draw of b = Λu, u ~ N(ũ, σ²A⁻¹), per posterior draw, stored as
    ``b[<coefficients>|<group>]`` (chain × draw × level × coefficient) in ``out``."""
    space, target = posterior.space, posterior.target
    terms = space.design.terms
    flat = natural.reshape(-1, natural.shape[-1])
    b = np.empty((len(flat), space.design.q))
    for row, nat in enumerate(flat):
        theta, beta, sigma = space.from_natural(nat)
        u, Lambda, factor = target.conditional(theta, beta, sigma, nat)
        noise = scipy.linalg.solve_triangular(factor.T, rng.standard_normal(len(u)))
        b[row] = Lambda @ (u + sigma * noise)
    offset = 0
    for term in terms:
        block = b[:, offset:offset + term.q].reshape(natural.shape[:2] + (term.n_levels, term.k))
        offset += term.q
        label = f"{'+'.join(term.coef_names)}|{term.group}"
        out[f"b[{label}]"] = block
        dims[f"b[{label}]"] = [term.group, f"coef[{label}]"]
        coords[term.group] = [str(level) for level in term.levels]
        coords[f"coef[{label}]"] = list(term.coef_names)


def _describe(prior) -> str:
    """A prior as text: in the prior grammar for its families, else scipy's name and
    arguments."""
    dist = getattr(prior, "dist", None)
    if dist is None or not hasattr(prior, "args"):
        return repr(prior)
    kwds = dict(prior.kwds)
    loc, scale = kwds.get("loc", 0.0), kwds.get("scale", 1.0)
    if not prior.args and set(kwds) <= {"loc", "scale", "df"}:
        if dist.name == "norm":
            return f"normal({loc:g}, {scale:g})"
        if dist.name == "t" and "df" in kwds:
            return f"student_t({kwds['df']:g}, {loc:g}, {scale:g})"
        if dist.name == "cauchy":
            return f"cauchy({loc:g}, {scale:g})"
        if dist.name in ("halfnorm", "halfcauchy") and loc == 0:
            return f"half_{'normal' if dist.name == 'halfnorm' else 'cauchy'}({scale:g})"
        if dist.name == "expon" and loc == 0:
            return f"exponential({1 / scale:g})"
        if dist.name == "uniform":
            return f"uniform({loc:g}, {loc + scale:g})"
    args = [f"{a:g}" for a in prior.args] + [f"{k}={v:g}" for k, v in kwds.items()]
    return f"{dist.name}({', '.join(args)})"


def _arviz():
    try:
        with warnings.catch_warnings():  # ArviZ announces its refactor on import
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError:
        raise LinkmixError("sampling needs emcee and arviz: pip install 'linkmix[bayes]'") \
            from None
    return arviz


class PosteriorSummary:
    """The named parameters' posterior (mean, SD, 2.5/50/97.5% quantiles, Monte Carlo SE
    of the mean, bulk and tail ESS, R-hat) and the sampler's diagnostics; prints as a
    report with a warning for R-hat > 1.01 or bulk ESS < 400 (Vehtari et al. 2021)."""

    def __init__(self, idata):
        arviz = _arviz()
        posterior = idata.posterior
        names = [name for name in posterior.data_vars if posterior[name].ndim == 2]
        rows = {}
        diagnostics = arviz.summary(idata, var_names=names, kind="diagnostics")
        for name in names:
            values = np.asarray(posterior[name]).ravel()
            q = np.quantile(values, [0.025, 0.5, 0.975])
            rows[name] = {"mean": values.mean(), "sd": values.std(ddof=1), "q2.5": q[0],
                          "median": q[1], "q97.5": q[2],
                          "mcse_mean": diagnostics.loc[name, "mcse_mean"],
                          "ess_bulk": diagnostics.loc[name, "ess_bulk"],
                          "ess_tail": diagnostics.loc[name, "ess_tail"],
                          "r_hat": diagnostics.loc[name, "r_hat"]}
        self.table = pd.DataFrame.from_dict(rows, orient="index")
        self.attrs = dict(idata.attrs)
        stats = idata.sample_stats
        rate = np.asarray(stats["acceptance_rate"]).mean(axis=1)       # per chain
        self.acceptance = (float(rate.mean()), float(rate.min()), float(rate.max()))
        self.divergences = (int(np.asarray(stats["diverging"]).sum())
                            if "diverging" in stats else None)
        self.shape = (posterior.sizes["chain"], posterior.sizes["draw"])

    @property
    def warnings(self) -> list[str]:
        out = []
        high = list(self.table.index[self.table["r_hat"] > 1.01])
        low = list(self.table.index[self.table["ess_bulk"] < 400])
        if self.divergences:
            out.append(f"{self.divergences} divergent transitions: the draws may miss part "
                       f"of the posterior")
        if high:
            out.append(f"R-hat above 1.01 for {high}: draw longer")
        if low:
            out.append(f"bulk ESS below 400 for {low}: draw longer")
        return out

    def __str__(self) -> str:
        attrs = self.attrs
        chains, draws = self.shape
        walkers = " (walkers as chains)" if "walkers_per_chain" in attrs else ""
        lines = [f"Posterior draws: {chains} chains{walkers} × {draws} draws after "
                 f"{attrs.get('tune', '?')} tuning; {attrs.get('sampler', '')}",
                 f"Likelihood: {attrs.get('likelihood', '')}",
                 "Acceptance: mean {:.2f} (chains {:.2f}–{:.2f})".format(*self.acceptance)
                 + ("" if self.divergences is None else
                    f"; divergent transitions: {self.divergences}")]
        if attrs.get("determined_by_constraints"):
            lines.append(f"Determined by the equality constraints: "
                         f"{attrs['determined_by_constraints']}")
        if attrs.get("non_finite_user_code"):
            lines.append(f"Proposals where a constraint or mean was not finite (zero "
                         f"density): {attrs['non_finite_user_code']}")
        lines.append(f"Priors: {attrs.get('priors', '')}")
        lines += ["", self.table.to_string(float_format=lambda x: f"{x:.5g}")]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def posterior_summary(idata) -> PosteriorSummary:
    """A short report of posterior draws made by ``sample`` (``PosteriorSummary``)."""
    return PosteriorSummary(idata)
