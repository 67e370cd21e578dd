"""Posterior sampling of a linear mixed model on its exact marginal likelihood.

Owns the Bayesian side of a linear fit (issue 13's first part): priors by parameter
name, the sampling coordinates, the sampler and its output.

* **Likelihood**: −2 log L(θ, β, σ) with the random effects integrated out exactly
  (``LinearMixedModel.full_deviance``, the compiled engine): the likelihood the fit
  maximises, nothing approximated.
* **Coordinates**: every named parameter (``linkmix.parameters``) maps to one real
  coordinate — fixed effects as they are, SDs and σ by log, correlations by atanh —
  so the Jacobian of the map is diagonal: log|J| = Σ log sd + log σ + Σ log(1 − ρ²).
  A term's relative covariance is rebuilt from its SDs and correlation (T = chol(Σ)/σ),
  which is every positive-definite covariance exactly once; terms of one or two
  coefficients (``||`` splits any term into scalar ones).
* **Priors**: a dict by name, each a string ``"normal(0, 5)"`` (read by a whitelist
  grammar, nothing evaluated) or a frozen ``scipy.stats`` distribution.  Defaults,
  weakly informative as brms's: flat on fixed effects; half Student-t(3, 0, s) on SDs
  and σ with s = max(2.5, MAD(y)); uniform on correlations (LKJ(1) for a 2 × 2 term).
* **Sampler**: emcee's affine-invariant ensemble with differential-evolution moves
  (80% ``DEMove``, 20% ``DESnookerMove``): gradient-free, so it needs nothing but the
  likelihood, and its proposals built from differences of walkers jump between
  separated modes, which a linked model's posterior may have (the three-optima
  peptide).  Each of ``chains`` ensembles starts in a ball around the maximum-likelihood
  estimate from its own ``SeedSequence`` child.
* **Output**: an ArviZ ``InferenceData``; every walker of every ensemble is a chain (as
  ``arviz.from_emcee``), so R-hat and ESS compare walkers; ``sample_stats`` holds each
  walker's acceptance fraction and the log posterior.
"""

from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np

from . import arguments
from .errors import ArgumentError, FitError, LinkmixError

__all__ = ["sample", "parse_prior", "default_priors", "PRIOR_FAMILIES"]

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
    if name == "t" and "df" in kwds:
        df = float(kwds["df"])
        const = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
                 - 0.5 * math.log(df * math.pi) - log_scale)
        return lambda x: const - (df + 1) / 2 * math.log1p(((x - loc) / scale) ** 2 / df)
    return prior.logpdf


class _Posterior:
    """log p(v | y) in the sampling coordinates v of one linear mixed model."""

    def __init__(self, model, priors: dict):
        space = model.parameter_space
        self.model = model
        self.names, self.kinds = list(space.names), list(space.kinds)
        design = model.design
        for term in design.terms:
            if term.k > 2:
                raise ArgumentError(f"sampling supports random-effects terms of one or two "
                                    f"coefficients; ({' + '.join(term.coef_names)} | "
                                    f"{term.group}) has {term.k} (split it with ||)")
        self.terms = design.terms
        self.p = design.p
        self.priors = [priors[name] for name in self.names]
        self._logpdfs = [_fast_logpdf(prior) for prior in self.priors]
        self._log_scale = [i for i, kind in enumerate(self.kinds) if kind in ("sd", "sigma")]

    # natural ↔ v
    def natural(self, v) -> np.ndarray:
        nat = np.array(v, dtype=float)
        kinds = self.kinds
        for i, kind in enumerate(kinds):
            if kind in ("sd", "sigma"):
                nat[i] = math.exp(v[i])
            elif kind == "cor":
                nat[i] = math.tanh(v[i])
        return nat

    def coordinates(self, natural) -> np.ndarray:
        v = np.array(natural, dtype=float)
        for i, kind in enumerate(self.kinds):
            if kind in ("sd", "sigma"):
                v[i] = math.log(max(natural[i], 1e-300))
            elif kind == "cor":
                v[i] = math.atanh(min(max(natural[i], -1 + 1e-12), 1 - 1e-12))
        return v

    def user(self, natural):
        """(θ, β, σ) from the natural vector (fixed effects, per term SDs then
        correlations, σ)."""
        beta = natural[:self.p]
        sigma = natural[-1]
        theta, k = [], self.p
        for term in self.terms:
            if term.k == 1:
                theta.append(natural[k] / sigma)
                k += 1
            else:
                sd1, sd2, rho = natural[k], natural[k + 1], natural[k + 2]
                theta += [sd1 / sigma, rho * sd2 / sigma,
                          sd2 * math.sqrt(max(1.0 - rho * rho, 0.0)) / sigma]
                k += 3
        return np.array(theta), beta, sigma

    def __call__(self, v) -> float:
        v = np.asarray(v, dtype=float)
        # a log-scale coordinate beyond ±300 is e^±300 (its square would overflow a float):
        # no posterior has mass there
        if not np.all(np.isfinite(v)) or np.any(np.abs(v[self._log_scale]) > 300):
            return -math.inf
        nat = self.natural(v)
        log_prior = 0.0
        for coordinate, value, logpdf, kind in zip(v.tolist(), nat.tolist(), self._logpdfs,
                                                   self.kinds):
            log_prior += float(logpdf(value))
            if kind in ("sd", "sigma"):
                log_prior += coordinate                   # d(sd)/dv = sd = e^v
            elif kind == "cor":
                # d(tanh v)/dv = 1 − tanh²v = sech²v, in logs without tanh's rounding to ±1
                a = abs(coordinate)
                log_prior += 2.0 * (math.log(2.0) - a - math.log1p(math.exp(-2.0 * a)))
        if not math.isfinite(log_prior):
            return -math.inf
        theta, beta, sigma = self.user(nat)
        try:
            deviance = self.model.full_deviance(theta, beta, sigma)
        except FitError:
            return -math.inf
        return log_prior - 0.5 * deviance if math.isfinite(deviance) else -math.inf


def sample(fit, *, draws: int = 1000, chains: int = 4, prior: dict | None = None,
           seed: int | None = None, tune: int | None = None, walkers: int | None = None,
           progress: bool | None = None):
    """Draws from the posterior of a linear mixed model's parameters (module description).

    Parameters
    ----------
    fit : LMMResults
        A linear fit; its model must still hold the fit's data.
    draws : int
        Kept draws per walker, after ``tune`` (default ``draws``) discarded ones.
    chains : int
        Independent ensembles.
    prior : dict, optional
        Name → prior (text or frozen scipy.stats distribution); the rest default.
    seed : int, optional
    walkers : int, optional
        Walkers per ensemble (default max(16, 4 × dimension), even).
    progress : bool, optional
        emcee's progress bar (default: when stderr is a terminal).

    Returns
    -------
    arviz.InferenceData
        ``posterior`` by parameter name (dims chain × draw, a chain per walker) and
        ``sample_stats`` (``lp``, ``acceptance_rate``).
    """
    draws = arguments.count(draws, "draws")
    chains = arguments.count(chains, "chains")
    tune = draws if tune is None else arguments.count(tune, "tune", minimum=0)
    progress = arguments.optional_flag(progress, "progress")
    model = fit._model_at_fit()
    space = model.parameter_space
    names, kinds = list(space.names), list(space.kinds)
    priors = default_priors(names, kinds, fit.design.y)
    for name, spec in (prior or {}).items():
        if name not in names:
            raise ArgumentError(f"a prior for unknown parameter {name!r}; parameters: {names}")
        priors[name] = parse_prior(spec) if isinstance(spec, str) else spec
        if not hasattr(priors[name], "logpdf"):
            raise ArgumentError(f"the prior of {name!r} must be text or a frozen "
                                f"scipy.stats distribution")
    posterior = _Posterior(model, priors)
    dim = len(names)
    walkers = max(16, 4 * dim) if walkers is None else arguments.count(walkers, "walkers")
    walkers += walkers % 2
    if walkers < 2 * dim:
        raise ArgumentError(f"emcee needs at least {2 * dim} walkers for {dim} parameters")
    _, _, estimate, se = fit.natural_estimates()
    start_natural = np.array(estimate, dtype=float)
    # an SD at 0 (a singular fit) starts at a tenth of σ: log 0 is not a coordinate
    for i, kind in enumerate(kinds):
        if kind == "sd":
            start_natural[i] = max(start_natural[i], 0.1 * fit.sigma)
    centre = posterior.coordinates(start_natural)
    spread = np.where(np.array(kinds) == "fixef", np.nan_to_num(se, nan=1.0), 0.1)
    return _run(posterior, centre, spread, walkers, chains, tune, draws, seed,
                progress if progress is not None else os.isatty(2))


def _run(posterior, centre, spread, walkers, chains, tune, draws, seed, progress):
    try:
        import emcee
        with warnings.catch_warnings():  # ArviZ announces its refactor on import
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError:
        raise LinkmixError("sampling needs emcee and arviz: pip install 'linkmix[bayes]'") \
            from None

    children = np.random.SeedSequence(seed).spawn(chains)
    samples, lps, acceptance = [], [], []
    for child in children:
        rng = np.random.default_rng(child)
        start = centre + 0.1 * spread * rng.standard_normal((walkers, len(centre)))
        moves = [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)]
        sampler = emcee.EnsembleSampler(walkers, len(centre), posterior, moves=moves)
        # emcee draws its moves from a RandomState: seeded from this chain's child
        sampler.random_state = np.random.RandomState(int(rng.integers(2**32))).get_state()
        sampler.run_mcmc(start, tune + draws, progress=progress)
        chain = sampler.get_chain(discard=tune)                    # draw × walker × dim
        samples.append(np.swapaxes(chain, 0, 1))
        lps.append(np.swapaxes(sampler.get_log_prob(discard=tune), 0, 1))
        acceptance.append(np.repeat(sampler.acceptance_fraction[:, None], draws, axis=1))
    values = np.concatenate(samples)                               # chain × draw × dim
    natural = np.vectorize(posterior.natural, signature="(n)->(n)")(values)
    return arviz.from_dict(
        posterior={name: natural[..., i] for i, name in enumerate(posterior.names)},
        sample_stats={"lp": np.concatenate(lps), "acceptance_rate": np.concatenate(acceptance)},
        attrs={"sampler": f"emcee {emcee.__version__} (DEMove 0.8, DESnookerMove 0.2)",
               "walkers_per_chain": walkers, "chains": len(children), "tune": tune,
               "priors": "; ".join(f"{name}: {_describe(prior)}"
                                   for name, prior in zip(posterior.names, posterior.priors))})


def _describe(prior) -> str:
    """A prior as text: its scipy name and arguments."""
    dist = getattr(prior, "dist", None)
    if dist is None or not hasattr(prior, "args"):
        return repr(prior)
    args = [f"{a:g}" for a in prior.args] + [f"{k}={v:g}" for k, v in prior.kwds.items()]
    return f"{dist.name}({', '.join(args)})"
