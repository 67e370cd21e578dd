"""Results of a linear or nonlinear mixed-model fit: estimates, inference, summaries.

Owns meaning at the optimum: fixed effects with standard errors, variance
components, conditional modes, fitted values, prediction, information criteria,
the printed summary, JSON; and what every report shares (``Report``, ``Printable``,
``json_text``).  Linked fits report in ``linkmix.linked_results``, comparisons of
fits in ``linkmix.comparison``; parameter names are owned by ``linkmix.parameters``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from formulaic.errors import FormulaicError

from . import sampling
from .design import (INTERCEPT, require_columns, required_variables, single_level_sentence,
                     term_label)
from .errors import ArgumentError, DataError
from .formula import EVALUATION_CONTEXT
from .inference import FixedEffectTests, KenwardRoger, Satterthwaite, check_ddf
from .io import atomic_output
from .linalg import solve_triangular
from .optimize import SINGULAR_HESSIAN
from .parameters import cor_name, sd_name, variance_components
from .threads import evaluation_workers, one_blas_thread

__all__ = ["Report", "Printable", "LMMEstimates", "LMMResults", "NLMMResults", "json_text",
           "Summary", "fixed_effects_table", "format_table", "format_p", "BOUNDARY_PREFIX",
           "boundary_report", "params_table"]

#: lme4's isSingular tolerance, here on a term's smallest SD relative to σ (``singular``).
SINGULAR_TOL = 1e-4
#: σ̂ below this fraction of the spread the fixed effects leave in y: the random effects
#: fit the data (almost) exactly, and σ and their SDs are not determined.
SIGMA_VANISHES = 1e-4
#: How the warning of a fit with a variance component on its boundary (lme4's
#: isSingular) begins; ``boundary_report`` says what is there.
BOUNDARY_PREFIX = "boundary (singular) fit:"


class Report:
    """What every fit offers: sizes, conditional modes, ``summary()`` printing, JSON.

    Subclasses provide ``design``, ``theta``, ``objective``, ``summary()``, ``to_dict()``
    and ``_b()`` (b̃ = Λũ, flat, in θ's term order).
    """

    @property
    def loglik(self) -> float:
        """log-likelihood (ML fits) or the REML log-likelihood (REML fits), as lme4's logLik."""
        return -0.5 * self.objective

    @property
    def nobs(self) -> int:
        return self.design.n

    @property
    def n_dropped(self) -> int:
        """Rows dropped for missing values before fitting."""
        return self.design.n_dropped

    @cached_property
    def boundary(self) -> list[str]:
        """What is on the boundary, one sentence per term whose covariance is singular
        (``boundary_report``); empty for an interior fit."""
        return boundary_report(self.design, self.theta)

    @property
    def singular(self) -> bool:
        """Whether some term's covariance is (numerically) singular, as lme4's isSingular
        (``boundary_report`` says which, and how it is measured)."""
        return bool(self.boundary)

    @property
    def message(self) -> str | None:
        """The fit's warnings in one line (None when there are none): batch rows show it."""
        return "; ".join(self.warnings) or None

    def _b_by_term(self) -> list[np.ndarray]:
        """b̃ for each term, as (levels × k) arrays."""
        return self.design.by_term(self._b())

    def ranef(self) -> dict:
        """Conditional modes of the random effects: ``{group: DataFrame(levels × coefs)}``."""
        tables: dict = {}
        for term, b in zip(self.design.terms, self._b_by_term()):
            frame = pd.DataFrame(b, index=term.levels, columns=list(term.coef_names))
            tables[term.group] = (frame if term.group not in tables
                                  else tables[term.group].join(frame))
        return tables

    def __repr__(self) -> str:
        return str(self.summary())

    def to_json(self, path=None) -> str:
        """The fit as strict JSON text (``null`` for NaN); written to ``path`` as well."""
        text = json_text(self.to_dict())
        if path is not None:
            with atomic_output(path) as temporary, open(temporary, "w") as fh:
                fh.write(text + "\n")
        return text


def params_table(space, estimate, se, statistic) -> pd.DataFrame:
    """``params``: one row per parameter of ``space``, indexed by name."""
    return pd.DataFrame({"kind": space.kinds, "group": space.groups, "term": space.terms,
                         "estimate": estimate, "std_error": se, "statistic": statistic},
                        index=pd.Index(space.names, name="name"))


def dropped_columns_report(design) -> list[str]:
    """Sentences naming what the fixed effects left out: factors with one level, and
    columns dropped as aliased with others."""
    out = [single_level_sentence(name, level)
           for name, level in getattr(design, "single_level_factors", {}).items()]
    dropped = list(getattr(design, "dropped_columns", []) or [])
    if dropped:
        out.append(f"fixed-effects column{'s' if len(dropped) > 1 else ''} "
                   f"{', '.join(dropped)} dropped: the design is rank deficient (a linear "
                   f"combination of the others)")
    return out


def _json_ready(value):
    """``value`` with numpy scalars and arrays as Python values and NaN/±inf as None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def json_text(record: dict) -> str:
    """Strict JSON (RFC 8259: no NaN or Infinity; they become ``null``) of a record."""
    return json.dumps(_json_ready(record), indent=2, allow_nan=False)


def boundary_report(design, theta) -> list[str]:
    """A sentence for each term whose covariance is (numerically) singular, naming what
    is at zero: in some direction of its coefficients the random effects' SD is below
    ``SINGULAR_TOL``·σ, measured with the term's covariates orthonormalised
    (Z_t = √n·Q_tR_t: the smallest singular value of R_tT_t).  lme4's isSingular reads
    T's diagonal in the covariates' own units, so a slope's call changes when its
    covariate is rescaled or moved; these singular values do not.

    The sentence names an SD that is zero (relative to σ and its covariate's RMS), else
    a correlation of ±1, else the term's rank."""
    out = []
    for term, T in zip(design.terms, design.T_blocks(theta)):
        R = term.covariate_factor
        smallest = abs(R[0, 0] * T[0, 0]) if term.k == 1 else \
            np.linalg.svd(R @ T, compute_uv=False).min(initial=np.inf)
        if not smallest < SINGULAR_TOL:
            continue
        label = term_label(term)
        size = np.sqrt(np.mean(term.Z**2, axis=0))   # each covariate's RMS
        sd = np.sqrt(np.diag(T @ T.T)) * size         # relative to σ, in its units
        zero = [sd_name(coef, term.group) for coef, value in zip(term.coef_names, sd)
                if value < SINGULAR_TOL]
        if zero:
            out.append(f"{BOUNDARY_PREFIX} {' and '.join(zero)} estimated as 0 in {label}")
            continue
        cov = T @ T.T
        corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        ones = [f"{cor_name(term.coef_names[j], term.coef_names[i], term.group)} = "
                f"{corr[i, j]:+.0f}" for j in range(term.k) for i in range(j + 1, term.k)
                if abs(corr[i, j]) > 1 - 1e-6]
        if ones:
            out.append(f"{BOUNDARY_PREFIX} {' and '.join(ones)} in {label}")
            continue
        rank = int(np.sum(np.linalg.svd(R @ T, compute_uv=False) >= SINGULAR_TOL))
        out.append(f"{BOUNDARY_PREFIX} the covariance of {label} has rank {rank} of {term.k}")
    return out


class Printable:
    """A summary: ``str`` is the report; notebooks show it preformatted."""

    def __init__(self, fit):
        self.fit = fit

    def _repr_html_(self) -> str:
        return "<pre>" + str(self) + "</pre>"


@dataclass(frozen=True)
class LMMEstimates:
    """A linear mixed model's estimates at one θ, in the user's units (a snapshot:
    nothing here depends on the engine's later state).

    Attributes
    ----------
    theta : ndarray
        lme4's θ.
    beta : ndarray
        β̂(θ).
    sigma : float
        σ̂(θ).
    objective : float
        REML criterion or ML deviance at θ.
    b : ndarray
        Conditional modes b̃ = Λũ, flat in θ's term order.
    beta_cov_root : ndarray
        K with cov(β̂) = σ²KK'.
    sigma_relative : float
        σ̂ relative to the spread the fixed effects leave in y (NaN where not defined).
    ml_deviance : float
        −2 log L at θ, β̂(θ) and σ at its ML scaling sqrt(r²/n): a REML fit's ``deviance``.
    theta_working : ndarray or None
        The working θ_w the estimates were made at (``linkmix.conditioning``), where known.
    """

    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    objective: float
    b: np.ndarray
    beta_cov_root: np.ndarray
    sigma_relative: float = math.nan
    ml_deviance: float = math.nan
    theta_working: np.ndarray | None = None


@dataclass(frozen=True)
class NLMMEstimates(LMMEstimates):
    """``LMMEstimates`` of a nonlinear fit, with the conditional modes ũ (spherical) at
    which PNLS stopped and whether it converged there."""

    u: np.ndarray | None = None
    pnls_converged: bool = True


def _row_norms(K: np.ndarray) -> np.ndarray:
    """Euclidean norms of K's rows without under- or overflow in the squares (hypot)."""
    return np.hypot.reduce(K, axis=1) if K.shape[1] else np.zeros(K.shape[0])


def factor_cov_root(L: np.ndarray) -> np.ndarray:
    """K = L⁻ᵀ, so that (LL')⁻¹ = KK' (L lower triangular)."""
    p = L.shape[0]
    return solve_triangular(L, np.eye(p), lower=True, trans=True)


class LMMResults(FixedEffectTests, Report):
    """A fitted linear mixed model.

    Attributes
    ----------
    theta : ndarray
        Relative covariance parameters, lme4's order.
    beta : pandas.Series
        Fixed effects.
    sigma : float
        Residual standard deviation.
    objective : float
        REML criterion (REML fits) or ML deviance −2 log L (ML fits).
    optsummary : OptSummary
        How the optimiser got here (in its own, well-conditioned coordinates θ_w).
    """

    def __init__(self, model, optsummary, estimates: LMMEstimates):
        self.model = model
        self.design = model.design
        self.parameter_space = model.parameter_space  # names only: shared by a layout's fits
        self.optsummary = optsummary
        self.REML = model.REML
        self.estimates = est = estimates
        self.theta = est.theta
        self.objective = float(est.objective)
        self.sigma = float(est.sigma)

    @property
    def engine_kind(self) -> str:
        """What factored the model: ``"dense"`` for a fit by Newton's method on the dense
        kernel (``linkmix._dense``, no engine made), else the engine's kind
        (``linkmix.engine``)."""
        return "dense" if self.optsummary.optimizer == "newton" else self.model.engine.kind

    @property
    def engine_request(self) -> str:
        """The ``engine`` argument that makes this fit's model again (``"auto"`` unless
        one was named)."""
        return getattr(self.model, "_engine_kind", None) or self.model.engine.kind

    @cached_property
    def beta(self) -> pd.Series:
        """Fixed effects by design column."""
        return pd.Series(self.estimates.beta, index=self.design.fixed_names, name="estimate")

    title = property(lambda self: "Linear mixed model fit by "
                     + ("REML" if self.REML else "maximum likelihood"))
    criterion = property(lambda self: "REML criterion at convergence" if self.REML
                         else "deviance")

    # ---- basic quantities -------------------------------------------------
    @property
    def converged(self) -> bool:
        """The optimiser succeeded and lme4's gradient and Hessian checks passed."""
        return bool(self.optsummary.converged)

    @property
    def sigma_vanishes(self) -> bool:
        """σ̂ is (numerically) zero next to the random effects (``SIGMA_VANISHES``)."""
        return bool(self.estimates.sigma_relative < SIGMA_VANISHES)

    @property
    def degenerate(self) -> bool:
        """The estimates are not uniquely determined: the criterion is flat in some
        direction of θ (a singular Hessian), or σ̂ vanishes."""
        return bool(self.optsummary.degenerate or self.sigma_vanishes)

    @property
    def warnings(self) -> list[str]:
        """Everything a user should know about this fit's reliability, one sentence each."""
        out = dropped_columns_report(self.design)
        if not self.converged:
            out.append(f"did not converge: {self.optsummary.message}")
        elif self.optsummary.degenerate:
            out += self.flat_report()
        if self.sigma_vanishes:
            out.append(f"the residual SD is numerically zero ({self.sigma:.3g}, "
                       f"{self.estimates.sigma_relative:.1e} of the spread the fixed effects "
                       f"leave): the random effects fit the data exactly, so σ and their SDs "
                       f"are not determined")
        return out + self.boundary

    def flat_report(self) -> list[str]:
        """A sentence for each direction along which the criterion is flat at the
        optimum (``OptSummary.flat_directions``), naming the parameters that move along
        it: they are not determined by the data."""
        out = []
        x = np.asarray(self.optsummary.x_final, dtype=float)
        space, beta = self.parameter_space, self.estimates.beta
        at = space.natural(self._theta_of(x), beta, self.sigma)
        for direction in self.optsummary.flat_directions:
            step = 1e-3 * max(1.0, float(np.max(np.abs(x))))
            moved = space.natural(self._theta_of(np.maximum(x + step * direction,
                                                            self._x_lower())), beta, self.sigma)
            change = np.abs(moved - at)
            if not np.isfinite(change).all() or not change.max() > 0:
                continue
            names = [name for name, value in zip(space.names, change)
                     if value > 0.01 * change.max()]
            out.append(f"the criterion is flat along {' and '.join(names)} (a zero "
                       f"eigenvalue of its Hessian): {'it is' if len(names) == 1 else 'they are'}"
                       f" not determined by the data")
        return out or [SINGULAR_HESSIAN]

    def _theta_of(self, x) -> np.ndarray:
        """lme4's θ at a point of the optimiser's coordinates (the working θ_w)."""
        return self.model.conditioning.theta(x)

    def _x_lower(self) -> np.ndarray:
        return self.design.theta_lower

    @property
    def deviance(self) -> float:
        """−2 log L at the ML fit; for a REML fit, the ML deviance at the REML estimates."""
        return self.estimates.ml_deviance if self.REML else self.objective

    @property
    def sigma_ml_at_fit(self) -> float:
        return self.sigma * math.sqrt((self.nobs - self.design.p) / self.nobs)

    @property
    def df_model(self) -> int:
        """Number of estimated parameters: p + dim θ + 1."""
        return self.design.p + len(self.theta) + 1

    @property
    def n_free(self) -> int:
        """Free parameters, for likelihood-ratio tests: ``df_model``."""
        return self.df_model

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.df_model

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + math.log(self.nobs) * self.df_model

    @property
    def ngroups(self) -> dict:
        """Number of levels of each grouping factor."""
        return {term.group: term.n_levels for term in self.design.terms}

    # ---- fixed effects ----------------------------------------------------
    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of β̂: σ² (R_X'R_X)⁻¹ = σ²KK'."""
        K = self.estimates.beta_cov_root
        names = self.design.fixed_names
        return pd.DataFrame(self.sigma**2 * (K @ K.T), index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        """σ times the row norms of K (computed without squaring overflow or underflow)."""
        return pd.Series(self._se(), index=self.beta.index, name="std_error")

    def _se(self) -> np.ndarray:
        return self.sigma * _row_norms(self.estimates.beta_cov_root)

    @property
    def tvalues(self) -> pd.Series:
        return (self.beta / self.se).rename("t_value")

    # ---- tests of fixed effects (coef_table, contrast: FixedEffectTests) -----
    @property
    def _fixed_names(self) -> list[str]:
        return self.design.fixed_names

    @property
    def _fixed_estimates(self) -> np.ndarray:
        return self.estimates.beta

    def _variance_df(self, L, method: str):
        if method == "wald":
            K = L @ self.estimates.beta_cov_root
            return (self.sigma * _row_norms(K)) ** 2, np.full(len(L), np.inf)
        return self._ddf_method(method).test(L)

    def sample(self, *, draws: int = 1000, chains: int = 4, prior: dict | None = None,
               seed: int | None = None, **options):
        """Posterior draws of every parameter on the likelihood the fit maximises, as an
        ArviZ ``InferenceData`` (``linkmix.sampling.sample``: priors by name, NUTS or
        emcee's ensemble; ``random_effects=True`` adds the random effects' conditional
        draws)."""
        return sampling.sample(self, draws=draws, chains=chains, prior=prior, seed=seed,
                               **options)

    def _sampling_target(self) -> sampling.Target:
        """The exact marginal likelihood over the natural parameters."""
        model = self._model_at_fit()
        design = model.design
        _, _, estimate, se = self.natural_estimates()

        def fixed_mean(beta, _):
            return design.X @ beta
        return sampling.Target(
            model.parameter_space, lambda theta, beta, sigma, _: model.full_deviance(
                theta, beta, sigma),
            design.y, [estimate], se, "exact marginal likelihood (random effects integrated "
            "out)", conditional=sampling.linear_conditional(design, fixed_mean),
            deviance_gradient=sampling.linear_deviance_gradient(design, fixed_mean))

    def _ddf_method(self, method: str):
        """The contrast-free parts of a ddf method, computed once per fit."""
        if method not in self._ddf_parts:
            if method == "kenward-roger" and not self.REML:
                raise ArgumentError("Kenward-Roger's method needs a REML fit (as in pbkrtest "
                                    "and lmerTest); refit with REML=True or use "
                                    "ddf='satterthwaite'")
            model = self._model_at_fit()
            theta_w = self.estimates.theta_working
            if theta_w is None:
                theta_w = model.conditioning.theta_working(self.theta)
            if method == "kenward-roger":
                part = KenwardRoger.of(model, theta_w, self.sigma)
            else:
                # on the fit's BLAS threads: after a one-thread fit, OpenBLAS's pool
                # restarted for a factorisation and a trace took 60-100 ms, not 15 (InstEval)
                workers = evaluation_workers()  # as the fit had them, before the limit
                with one_blas_thread(model.limits_blas_threads):
                    part = Satterthwaite.of(model, theta_w, self.sigma, workers)
            self._ddf_parts[method] = part
        return self._ddf_parts[method]

    @cached_property
    def _ddf_parts(self) -> dict:
        return {}

    def _model_at_fit(self):
        """The model with this fit's data: its own, unless it has since been given another
        response (batch fits reuse models), then a new one over this fit's design."""
        if self.model.design is self.design:
            return self.model
        return type(self.model).from_design(self.design, REML=self.REML,
                                            engine=self.engine_request)

    # ---- variance components ---------------------------------------------
    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(fit))``.

        Columns ``grp, var1, var2, vcov, sdcor``: a variance and SD where
        ``var2`` is missing, a covariance and correlation otherwise.
        """
        rows = []
        for group, names, sd, corr in variance_components(
                self.design.terms, self.design.T_blocks(self.theta), self.sigma):
            rows += [(group, name, None, sd[i] ** 2, sd[i]) for i, name in enumerate(names)]
            rows += [(group, names[j], names[i], corr[i, j] * sd[i] * sd[j], corr[i, j])
                     for j in range(len(names)) for i in range(j + 1, len(names))]
        rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def natural_estimates(self):
        """(names, kinds, estimates, standard errors) of every parameter on its natural
        scale, as arrays (SEs for fixed effects only): what ``params`` and batch rows show."""
        space = self.parameter_space
        estimate = space.natural(self.theta, self.estimates.beta, self.sigma)
        se = np.full(len(estimate), np.nan)
        se[: self.design.p] = self._se()
        return space.names, space.kinds, estimate, se

    @cached_property
    def params(self) -> pd.DataFrame:
        """Every parameter on its natural scale, indexed by its stable name
        (``linkmix.parameters``: ``fit.params.loc["sd[Days|Subject]", "estimate"]``).

        Columns: ``kind (fixef|sd|cor|sigma), group, term, estimate, std_error,
        statistic`` (the last two for fixed effects only).
        """
        _, _, estimate, se = self.natural_estimates()
        with np.errstate(invalid="ignore", divide="ignore"):
            statistic = estimate / se
        return params_table(self.parameter_space, estimate, se, statistic)

    # ---- random effects, fitted values, prediction --------------------------
    def _b(self) -> np.ndarray:
        return self.estimates.b

    def fitted(self) -> np.ndarray:
        """Xβ̂ + Zb̃ at the observations used in the fit."""
        mu = self.design.X @ self.beta.to_numpy()
        for term, b in zip(self.design.terms, self._b_by_term()):
            mu = mu + np.einsum("ik,ik->i", term.Z, b[term.codes])
        return mu

    def residuals(self) -> np.ndarray:
        """y − fitted (conditional residuals)."""
        return self.design.y - self.fitted()

    def predict(self, newdata: pd.DataFrame | None = None, *, include_random: bool = True,
                allow_new_levels: bool = False) -> np.ndarray:
        """Predictions ``Xβ̂ (+ Zb̃)`` for ``newdata`` (default: the fitted data).

        A grouping level not seen in the fit is refused unless ``allow_new_levels``, when
        its random effects are 0 (the population level), as lme4's ``allow.new.levels``.
        """
        if newdata is None:
            return self.fitted() if include_random else self.design.X @ self.beta.to_numpy()
        if not isinstance(newdata, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
        if self.design.fixed_spec is None:
            raise DataError("this model was built from arrays, not a formula: it predicts its "
                            "own rows only (predict() without newdata)")
        spec = self.design.formula
        needed = set(required_variables(spec.fixed, "the fixed-effects part"))
        for term in spec.random if include_random else ():
            needed |= set(required_variables(term.expr, "a random-effects expression"))
            needed |= set(term.group)
        require_columns(newdata, sorted(needed), "newdata (the formula reads it)")
        X = self._new_matrix(self.design.fixed_spec, newdata, "fixed-effects part")
        X = X[[c if c != INTERCEPT else "Intercept" for c in self.design.fixed_names]]
        mu = X.to_numpy(dtype=float) @ self.beta.to_numpy()
        if include_random:
            for term, b in zip(self.design.terms, self._b_by_term()):
                Z = self._new_matrix(term.expr_spec, newdata, "random-effects expression")
                Z = Z.to_numpy(dtype=float)[:, list(term.expr_columns)]
                idx = term.level_index(newdata, allow_new_levels)
                contrib = np.einsum("ik,ik->i", Z, b[np.maximum(idx, 0)])
                mu = mu + np.where(idx >= 0, contrib, 0.0)
        return mu

    @staticmethod
    def _new_matrix(spec, newdata, where):
        try:
            return spec.get_model_matrix(newdata, na_action="raise", context=EVALUATION_CONTEXT)
        except (FormulaicError, ValueError, KeyError, NameError) as exc:
            raise DataError(f"cannot build the {where} for newdata: {exc}") from None

    # ---- reporting ----------------------------------------------------------
    def summary(self, ddf: str | None = None) -> "Summary":
        """lme4's summary, with t tests of the fixed effects by ``ddf`` (see
        ``coef_table``)."""
        return Summary(self, ddf)

    def to_dict(self) -> dict:
        """A JSON-ready record of the fit."""
        params = {name: float(value) for name, value in self.params["estimate"].items()}
        return {
            "formula": self.design.formula.text,
            "REML": self.REML,
            "objective": self.objective,
            "loglik": self.loglik,
            "aic": self.aic,
            "bic": self.bic,
            "nobs": self.nobs,
            "n_dropped": self.n_dropped,
            "ngroups": self.ngroups,
            "theta": self.theta.tolist(),
            "fixef": {k: float(v) for k, v in self.beta.items()},
            "se_fixef": {k: float(v) for k, v in self.se.items()},
            "fixef_tests": self.tests_record(),
            "sigma": self.sigma,
            "params": params,
            "varcorr": json.loads(self.varcorr.to_json(orient="records")),
            "converged": self.converged,
            "singular": self.singular,
            "degenerate": self.degenerate,
            "warnings": self.warnings,
            "dropped_columns": self.design.dropped_columns,
            "single_level_factors": getattr(self.design, "single_level_factors", {}),
            "engine": self.engine_kind,
            "optimizer": self.optsummary.as_dict(),
        }



class NLMMResults(LMMResults):
    """A nonlinear mixed model fitted by the Laplace approximation (maximum likelihood).

    Everything of ``LMMResults`` holds with the model linearised at the optimum:
    ``vcov`` is σ²(R_X'R_X)⁻¹ for the fixed-effects design V = ∂μ/∂β, as nlmer's.
    """

    criterion = "deviance"
    #: Satterthwaite and Kenward–Roger are methods for linear models; nlmer reports z
    default_ddf = "wald"

    def _sampling_target(self) -> sampling.Target:
        """The fit's likelihood (Laplace, or AGQ with its nodes) over the natural
        parameters."""
        nlmm = self.model
        if nlmm.design is not self.design:
            raise ArgumentError("this fit's model has since been given another response")
        _, _, estimate, se = self.natural_estimates()
        if self.nAGQ > 1:
            def neg2ll(theta, beta, sigma, _):
                return nlmm.agq(theta, beta, sigma, self.nAGQ)
            how = f"adaptive Gauss-Hermite quadrature, {self.nAGQ} nodes"
        else:
            def neg2ll(theta, beta, sigma, _):
                return nlmm.full(theta, beta, sigma)
            how = "Laplace approximation"
        return sampling.Target(nlmm.parameter_space, neg2ll, self.design.y, [estimate], se,
                               how, conditional=sampling.nonlinear_conditional(nlmm))

    def _ddf_method(self, method: str):
        raise ArgumentError(f"ddf={method!r} is a method for linear mixed models; a nonlinear "
                            f"fit's tests are Wald z tests (ddf='wald'), as nlmer's")

    @property
    def title(self) -> str:
        method = ("Laplace approximation" if self.nAGQ == 1 else
                  f"adaptive Gauss-Hermite quadrature, {self.nAGQ} nodes")
        return f"Nonlinear mixed model fit by maximum likelihood ({method})"

    @property
    def df_model(self) -> int:
        return self.design.p + len(self.theta) + 1

    def __init__(self, model, optsummary, estimates: NLMMEstimates, nAGQ: int = 1):
        self.model = model
        self.design = design = model.design
        self.parameter_space = model.parameter_space
        self.optsummary = optsummary
        self.REML = False
        self.nAGQ = nAGQ
        self.estimates = estimates
        self.theta, self.sigma = estimates.theta, estimates.sigma
        self.objective = float(estimates.objective)
        self.beta = pd.Series(estimates.beta, index=design.fixed_names, name="estimate")
        self._u, self.pnls_converged = estimates.u, estimates.pnls_converged

    @property
    def deviance(self) -> float:
        return self.objective

    def _theta_of(self, x) -> np.ndarray:
        """lme4's θ at a point of the optimiser's (θ, z) coordinates."""
        return x[:len(self.theta)]

    def _x_lower(self) -> np.ndarray:
        return np.concatenate([self.design.theta_lower,
                               np.full(len(self.optsummary.x_final) - len(self.theta), -np.inf)])

    def fitted(self) -> np.ndarray:
        """μ(φ̂) with the conditional modes: m(Xβ̂ + b̃)."""
        return self.model.conditional_mean(self.theta, self.beta.to_numpy(), self._u)

    def predict(self, newdata: pd.DataFrame | None = None, *, include_random: bool = True,
                allow_new_levels: bool = False) -> np.ndarray:
        """Predictions m(φ) for ``newdata`` (default: the fitted data); ``include_random=
        False`` uses the population parameters (b = 0), as do levels not seen in the fit
        where ``allow_new_levels`` (else they are refused, as lme4's)."""
        design = self.design
        if newdata is None:
            if include_random:
                return self.fitted()
            phi = design.phi(self.beta.to_numpy())
            return design.model.evaluate(phi, design.covariates, False)[0]
        return self.model.predict(newdata, self.beta.to_numpy(),
                                  self._b_by_term() if include_random else None,
                                  allow_new_levels)

    def to_dict(self) -> dict:
        record = super().to_dict()
        record["model"] = self.design.model.name
        record["nAGQ"] = self.nAGQ
        record["pnls_converged"] = bool(self.pnls_converged)
        return record


class Summary(Printable):
    """Printable summary of a fit, laid out as lme4's ``summary(merMod)``, with
    lmerTest's columns of t tests."""

    def __init__(self, fit, ddf: str | None = None):
        super().__init__(fit)
        self.ddf = check_ddf(fit.default_ddf if ddf is None else ddf)

    def _random_table(self) -> list[str]:
        fit = self.fit
        rows = [("Groups", "Name", "Variance", "Std.Dev.", "Corr")]
        for group, names, sd, corr in variance_components(
                fit.design.terms, fit.design.T_blocks(fit.theta), fit.sigma):
            for i, name in enumerate(names):
                cells = " ".join(f"{corr[i, j]:5.2f}" for j in range(i))
                rows.append((group if i == 0 else "", name, f"{sd[i] ** 2:.5g}", f"{sd[i]:.5g}",
                             cells))
        rows.append(("Residual", "", f"{fit.sigma**2:.5g}", f"{fit.sigma:.5g}", ""))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        return [" " + " ".join(r[c].ljust(widths[c]) if c < 2 else r[c].rjust(widths[c])
                               if c < 4 else r[c] for c in range(5)).rstrip() for r in rows]

    def __str__(self) -> str:
        fit = self.fit
        lines = [f"{fit.title} [linkmix]",
                 f"Formula: {fit.design.formula.text}"]
        if fit.n_dropped:
            lines.append(f"Rows dropped for missing values: {fit.n_dropped}")
        lines.append("")
        crit = fit.criterion
        lines.append(f"     AIC      BIC   logLik  {crit}")
        lines.append(f"{fit.aic:8.1f} {fit.bic:8.1f} {fit.loglik:8.1f}  {fit.objective:.4f}")
        lines.append("")
        res = fit.residuals() / fit.sigma
        q = np.quantile(res, [0, 0.25, 0.5, 0.75, 1])
        lines += ["Scaled residuals:",
                  "     Min       1Q   Median       3Q      Max",
                  " ".join(f"{v:8.4f}" for v in q), ""]
        lines.append("Random effects:")
        lines += self._random_table()
        groups = ", ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
        lines.append(f"Number of obs: {fit.nobs}, groups:  {groups}")
        lines.append("")
        lines += fixed_effects_table(fit, self.ddf)
        opt = fit.optsummary
        lines.append("")
        lines.append(f"optimizer: {opt.optimizer}, {opt.n_evaluations} evaluations, "
                     f"engine: {fit.engine_kind}")
        lines += [warning if warning.startswith(BOUNDARY_PREFIX) else f"WARNING: {warning}"
                  for warning in fit.warnings]
        return "\n".join(lines)


def fixed_effects_table(fit, ddf: str, where: str = "") -> list[str]:
    """The printed t tests of a fit's fixed effects (lmerTest's columns); a z test (Wald)
    has no df column."""
    table = fit.coef_table(ddf)
    wald = ddf == "wald"
    shown = pd.DataFrame({"Estimate": table["estimate"], "Std. Error": table["std_error"]})
    if not wald:
        shown["df"] = table["df"]
    shown["z value" if wald else "t value"] = table["t_value"]
    shown["Pr(>|z|)" if wald else "Pr(>|t|)"] = [format_p(p) for p in table["p_value"]]
    method = {"wald": "Wald z tests",
              "satterthwaite": "t tests use Satterthwaite's method",
              "kenward-roger": "t tests and SEs use Kenward-Roger's method"}[ddf]
    return [f"Fixed effects ({method}{' ' + where if where else ''}):", format_table(shown)]


#: Below this a p value is printed as a bound, as R's format.pval does: double precision
#: does not resolve the tail beyond it (0 is printed for a t of 40).
P_FLOOR = 2.2e-16


def format_p(p: float) -> str:
    """A p value as a summary prints it: 3 significant digits, ``< 2.2e-16`` below
    ``P_FLOOR``, empty where it is missing."""
    if not np.isfinite(p):
        return ""
    return f"< {P_FLOOR:g}" if p < P_FLOOR else f"{p:.3g}"


def format_table(frame: pd.DataFrame) -> str:
    return frame.to_string(float_format=lambda v: f"{v:.6g}", na_rep="")
