"""Nonlinear mixed models by the Laplace approximation (nlmer's method).

Owns the model over its design (``linkmix.nonlinear_design``): penalised nonlinear
least squares (PNLS) for the conditional modes, the Laplace deviance, adaptive
Gauss–Hermite quadrature, the linear mixed model that approximates it (the
Lindstrom–Bates start, the vcov of the estimates), the fit and its estimates, and
predictions.  Notation (docs/model.md, nonlinear models):

* per-observation model parameters ``φ_i = (X_j β_j)_i + b_ij`` for each model
  parameter j, with ``b = Λ_θ u`` (random effects are per-group shifts of φ);
* mean ``μ = m(φ; covariates)``, ``y | u ~ N(μ, σ²I)``, ``u ~ N(0, σ²I)``;
* PNLS: ``ũ = argmin ‖y − μ(u)‖² + ‖u‖²`` by Newton (or Gauss–Newton) steps with
  step halving.  Each step is a linear PLS problem with design U = ∂μ/∂u = Z̃Λ,
  ``Z̃[i, (t, c)] = ∂m/∂φ_{i, j(t,c)}``, over the LMM engine's factorisation; the
  loop is compiled (``linkmix._pnls``), this module sets it up;
* Laplace deviance, σ profiled: ``d = log|L|² + n[1 + log(2π r²/n)]`` with
  ``LL' = U'U + I`` at ũ and ``r² = ‖y − μ(ũ)‖² + ‖ũ‖²``; nothing profiled:
  ``D = n log(2πσ²) + r²/σ² + log|L|²``.  β is optimised with θ, not profiled, in
  coordinates decorrelated by the start's covariance of β (``Start``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import arguments
from .design import INTERCEPT, LMMDesign, materialize, require_columns, required_variables
from .deviance import LOG_2PI, PLSState
from ._pnls import PNLS
from .engine import BlockedEngine, make_engine
from .errors import ArgumentError, ConvergenceWarning, DataError, FitError, LinkmixError
from .nonlinear_design import build_nlmm_design
from .numdiff import rowwise_jacobian
from .optimize import OptSummary, minimize_bounded
from .parameters import ParameterSpace
from .model import LinearMixedModel
from .results import LMMResults, NLMMEstimates, NLMMResults, factor_cov_root
from .ssmodels import NonlinearFunction

__all__ = ["NonlinearMixedModel", "PNLS_TOL"]

#: PNLS stops when the relative decrease of the penalised residual sum of squares is below this.
PNLS_TOL = 1e-11
#: … and the conditional modes change by less than this (relative to max(1, |ũ|)).
PNLS_U_TOL = 1e-8
PNLS_MAXITER = 100


class Start(NamedTuple):
    """Where the optimiser starts: θ, β₀, θ's first steps, and β's scale A, a root of
    β's covariance AA' in the linearised model there.  The optimiser works on z,
    β = β₀ + Az, so that strongly correlated fixed effects (a covariate far from
    zero: intercept and slope nearly collinear) do not leave it a narrow valley."""

    theta: np.ndarray
    beta: np.ndarray
    theta_steps: np.ndarray
    beta_root: np.ndarray


class NonlinearMixedModel:
    """A nonlinear mixed model ready to evaluate its Laplace deviance or be fitted.

    Parameters are those of ``build_nlmm_design``, plus ``engine`` (``"auto"``,
    ``"blocked"``, ``"cholmod"``) for the factorisation of U'U + I.
    """

    def __init__(self, formula: str, data: pd.DataFrame, random=None, *, fixed=None,
                 model: NonlinearFunction | None = None, engine: str = "auto",
                 missing: str = "drop"):
        self.design = design = build_nlmm_design(formula, data, random, fixed, model, missing)
        self.data = data
        pls = LMMDesign(formula=design.formula, y=design.y.copy(), X=np.zeros((design.n, 0)),
                        fixed_names=[], terms=design.terms, fixed_spec=None)
        self.engine = make_engine(pls, engine)
        self._u = np.zeros(design.q)
        self.n = design.n
        self.pnls_iterations = 0
        #: Newton steps in PNLS (quadratic convergence) where the engine and the model
        #: function allow; Gauss–Newton otherwise.
        self.newton = True

    @functools.cached_property
    def parameter_space(self) -> ParameterSpace:
        """The parameter names and natural-scale map."""
        return ParameterSpace(self.design)

    # -- PNLS -------------------------------------------------------------------
    def conditional_mean(self, theta, beta, u) -> np.ndarray | None:
        """E[y | u] = m(Xβ + Λ_θu; covariates), or None where the model cannot be
        evaluated (a pure function of the design: no engine state is read)."""
        return self._mean(theta, beta, u, with_gradient=False)[0]

    def _mean(self, theta, beta, u, with_gradient=True):
        """μ, ∂μ/∂φ (None without ``with_gradient``) and φ at (θ, β, u); (None, None,
        None) where the model cannot be evaluated."""
        design = self.design
        phi = self._pnls.phi(np.asarray(theta, dtype=float), design.phi(beta),
                             np.asarray(u, dtype=float))
        mu, grad = design.model.evaluate(phi, design.covariates, with_gradient)
        if not (np.all(np.isfinite(mu)) and (grad is None or np.all(np.isfinite(grad)))):
            return None, None, None
        return mu, grad, phi

    def _term_Zs(self, grad) -> list[np.ndarray]:
        """Z̃ of each term from ∂μ/∂φ: coefficient c of term t takes column j(t, c)."""
        return [grad[:, cols] for cols in self.design.term_params]

    def pnls(self, theta, beta, u_start=None):
        """Conditional modes ũ(θ, β) by Newton steps (Gauss–Newton where the curvature
        is not available or not positive definite) with step halving (compiled:
        ``linkmix._pnls``).

        Returns
        -------
        state : PLSState
            r² = ‖y − μ(ũ)‖² + ‖ũ‖² (``inf`` if the model cannot be evaluated) and
            log|L|², LL' = U'U + I at ũ.
        u : ndarray
        converged : bool
        """
        u = np.array(self._u if u_start is None else u_start, dtype=float)
        newton = self.newton and self.engine.supports_curvature \
            and self.design.model.gradient is not None
        before = self._pnls.iterations
        ok, r2, logdet, converged = self._pnls.run(
            np.ascontiguousarray(theta, dtype=float), self.design.phi(beta), u, newton,
            PNLS_TOL, PNLS_U_TOL, PNLS_MAXITER)
        self.pnls_iterations += self._pnls.iterations - before
        if not ok:
            return PLSState(math.inf, math.nan, self.n), u, False
        self._u = u
        return PLSState(r2, logdet, self.n), u, converged

    @functools.cached_property
    def _pnls(self) -> PNLS:
        """The compiled PNLS over this model's design, engine and model function."""
        design, engine = self.design, self.engine
        slots = np.concatenate(design.term_params).astype(np.int64)
        columns, offset = [], 0  # term t's coefficient c of level l is b[offset_t + l·k_t + c]
        for term in design.terms:
            columns.append(offset + term.codes[:, None] * term.k + np.arange(term.k))
            offset += term.q
        slot_index = np.ascontiguousarray(np.hstack(columns), dtype=np.int64)
        tmpl, tmpl_off, term_k, _ = design.theta_template()
        levels = np.array([term.n_levels for term in design.terms], dtype=np.int32)
        value, gradient, hessian = design.model.bound(design.covariates)
        if hessian is None and design.model.gradient is not None:
            hessian = functools.partial(self._differenced_hessian, slots=slots)
        blocked = isinstance(engine, BlockedEngine)

        def engine_step(grad, working, theta):
            engine.set_Z(self._term_Zs(grad), response=working)
            return engine.conditional_modes(np.zeros(0)) if engine.update(theta) else None

        def engine_logdet(grad, theta):
            engine.set_Z(self._term_Zs(grad))
            return engine.logdet_L if engine.update(theta) else math.nan

        return PNLS(design.y, slot_index, slots, len(design.params), tmpl, tmpl_off, term_k,
                    levels, engine.system if blocked else None, engine_step, engine_logdet,
                    value, gradient, hessian)

    def _differenced_hessian(self, phi, slots) -> np.ndarray:
        """∂²m/∂φ_a∂φ_b (n × s × s) by central differences of the model's gradient in
        the directions of the random-effect slots only (the entries PNLS reads; it only
        steers Newton steps, never the deviance)."""
        model, cov = self.design.model, self.design.covariates
        J = rowwise_jacobian(lambda p: model.gradient(p, cov), phi, rel_step=6e-6,
                             indices=slots)
        H = np.zeros((phi.shape[0], phi.shape[1], phi.shape[1]))
        H[:, :, slots] = J
        return np.ascontiguousarray(0.5 * (H + H.transpose(0, 2, 1)))

    # -- deviances ---------------------------------------------------------------
    def laplace(self, theta, beta) -> float:
        """Laplace deviance with σ profiled: log|L|² + n[1 + log(2π r²/n)]."""
        state = self.pnls(np.asarray(theta, float), np.asarray(beta, float))[0]
        if not math.isfinite(state.r2) or state.r2 <= 0:
            return math.inf
        return state.profiled()

    def full(self, theta, beta, sigma) -> float:
        """Laplace approximation to −2 log L at (θ, β, σ): n log(2πσ²) + r²/σ² + log|L|²."""
        state = self.pnls(np.asarray(theta, float), np.asarray(beta, float))[0]
        if not math.isfinite(state.r2):
            return math.inf
        return state.full(sigma)

    def agq(self, theta, beta, sigma, n_agq: int) -> float:
        """−2 log L by adaptive Gauss–Hermite quadrature (one scalar random-effects term).

        The likelihood factorises over the levels j of the grouping factor:
        ``L_j = (2πσ²)^{−(n_j+1)/2} ∫ exp(−h_j(u)/2σ²) du``, ``h_j = ‖y_j − μ_j(u)‖² + u²``.
        Nodes are centred at the conditional mode ũ_j and scaled by
        ``s_j = √2·σ/L_jj`` (``L_jj² = 1 + θ²Σ_{i∈j}(∂μ_i/∂φ)²``, the Laplace curvature),
        so one node reproduces the Laplace approximation exactly.
        """
        design = self.design
        if len(design.terms) != 1 or design.terms[0].k != 1:
            raise FitError("nAGQ > 1 needs a single scalar random-effects term, e.g. "
                           "random='Asym | Tree'")
        theta, beta = np.asarray(theta, float), np.asarray(beta, float)
        state, u, _ = self.pnls(theta, beta)
        if not math.isfinite(state.r2):
            return math.inf
        term, col = design.terms[0], design.term_params[0][0]
        mu, grad, _ = self._mean(theta, beta, u)
        codes, n_levels = term.codes, term.n_levels
        curvature = 1.0 + theta[0] ** 2 * np.bincount(codes, grad[:, col] ** 2, minlength=n_levels)
        scale = math.sqrt(2.0) * sigma / np.sqrt(curvature)
        nodes, weights = np.polynomial.hermite.hermgauss(int(n_agq))
        terms = np.empty((len(nodes), n_levels))
        y = design.y
        for k, (x, w) in enumerate(zip(nodes, weights)):
            u_k = u + scale * x
            mu_k, _, _ = self._mean(theta, beta, u_k, with_gradient=False)
            if mu_k is None:
                return math.inf
            h = np.bincount(codes, (y - mu_k) ** 2, minlength=n_levels) + u_k**2
            terms[k] = math.log(w) + x * x - h / (2.0 * sigma**2)
        top = terms.max(axis=0)
        log_integral = top + np.log(np.exp(terms - top).sum(axis=0))
        n_j = np.bincount(codes, minlength=n_levels)
        log_lik = np.sum(-(n_j + 1) / 2.0 * (LOG_2PI + 2.0 * math.log(sigma))
                         + np.log(scale) + log_integral)
        return -2.0 * float(log_lik)

    # -- fitting -----------------------------------------------------------------
    def beta_start(self, start=None) -> np.ndarray:
        """β start: the model's self-start (pooled nonlinear least squares) for each
        parameter's intercept, 0 for covariate coefficients; ``start`` overrides by name
        (a model parameter name sets its intercept)."""
        design = self.design
        beta = np.zeros(design.p)
        values = {}
        if design.model.start is not None:
            with np.errstate(all="ignore"):
                values = dict(zip(design.params, design.model.start(design.y, design.covariates)))
        for k, v in (start or {}).items():
            values[k] = v
        for j, sl in zip(design.params, design.beta_slices):
            names = design.fixed_names[sl]
            key = names[0] if names[0] in values else j
            if key not in values and f"{j}:{INTERCEPT}" not in values:
                raise FitError(f"no start value for model parameter {j!r}: the model has no "
                               f"self-start, so pass start={{'{j}': value, …}}")
            beta[sl.start] = values.get(key, values.get(f"{j}:{INTERCEPT}"))
        unknown = [k for k in (start or {}) if k not in design.params and
                   k not in design.fixed_names]
        if unknown:
            raise FitError(f"start values for unknown parameters {unknown}; the fixed effects are "
                           f"{design.fixed_names}")
        for k, v in (start or {}).items():
            if k in design.fixed_names:
                beta[design.fixed_names.index(k)] = v
        return beta

    # -- the linear mixed model that approximates this one ----------------------------
    def _linearisation(self, theta, beta, u):
        """μ, the fixed design V = ∂μ/∂β and each term's random design Z̃ = ∂μ/∂φ at
        (θ, β, u)."""
        design = self.design
        mu, grad, _ = self._mean(theta, beta, u)
        if mu is None:
            raise FitError(f"the model cannot be evaluated at β = "
                           f"{dict(zip(design.fixed_names, beta))}")
        V = np.column_stack([grad[:, [j]] * block for j, block in enumerate(design.fixed_blocks)])
        return mu, V, [np.ascontiguousarray(Z) for Z in self._term_Zs(grad)]

    def linearised_precision(self, theta, beta, u) -> np.ndarray:
        """R_X'R_X = V'V₀⁻¹V of the linear mixed model that approximates this one at
        (θ, β, ũ): fixed design V = ∂μ/∂β, random design Z̃ = ∂μ/∂b, V₀ = I + Z̃ΛΛ'Z̃'
        (nlmer's vcov is σ² times its inverse).  Leaves the engine factored at ũ, as
        PNLS does."""
        design = self.design
        _, V, Zs = self._linearisation(theta, beta, u)
        self.engine.set_Z(Zs)
        if not self.engine.update(theta):
            raise FitError(f"the linearised system is not positive definite at θ = {theta}")
        B = design.Lambda_times(theta, design.Z_sparse(Zs).T @ V, transpose=True)
        return self.engine.marginal_gram(V, B)

    def lme_step(self, theta, beta, u) -> LMMResults:
        """One linear-mixed-model step of Lindstrom and Bates: the ML fit of the model
        linearised at (θ, β, u), ``w = Vβ + Z̃b + ε`` with working response
        w = y − μ + Vβ + Z̃b (b = Λ_θu).  Its θ̂, β̂ and SEs are on this model's scale."""
        design = self.design
        mu, V, Zs = self._linearisation(theta, beta, u)
        w = design.y - mu + V @ beta + design.Z_sparse(Zs) @ design.Lambda_times(theta, u)
        linear = LMMDesign(formula=design.formula, y=w, X=V, fixed_names=list(design.fixed_names),
                           terms=[dataclasses.replace(term, Z=Z)
                                  for term, Z in zip(design.terms, Zs)], fixed_spec=None)
        return LinearMixedModel.from_design(linear, REML=False,
                                            engine=self.engine.kind).fit(check_gradient=False)

    def start(self, start=None, theta_start=None) -> Start:
        """The optimiser's start (θ, β), θ's first steps and β's scale, from the problem
        itself.

        β starts at the pooled self-start (or ``start``), θ at ``theta_start`` or, by
        default, where two Lindstrom–Bates steps take it (the ML fit of the model
        linearised at u = 0, then at the conditional modes there).  θ's first steps are
        a quarter of each θ (at least 0.05: 5% of σ); β's scale is a root A of its
        covariance AA' in the last linearised fit (with ``theta_start``: the model
        linearised at the start).  Where no linearisation can be fitted, the plain
        start, with a tenth of each β as its scale; a ``FitError`` where the model
        cannot be evaluated there either.
        """
        design = self.design
        plain_theta = design.theta_start() if theta_start is None else \
            np.asarray(theta_start, dtype=float)
        plain_beta = self.beta_start(start)
        theta, beta, root = plain_theta, plain_beta, None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if theta_start is None:
                    u = np.zeros(design.q)
                    for _ in range(2):
                        step = self.lme_step(theta, beta, u)
                        theta, beta = step.theta.copy(), step.beta.to_numpy().copy()
                        root = step.sigma * step.estimates.beta_cov_root
                        u = self.pnls(theta, beta)[1]
                else:
                    state, u, _ = self.pnls(theta, beta)
                    L = np.linalg.cholesky(self.linearised_precision(theta, beta, u))
                    root = state.sigma_hat() * factor_cov_root(L)
        except (LinkmixError, np.linalg.LinAlgError, FloatingPointError):
            root = None
        with np.errstate(all="ignore"):
            if root is None or not np.all(np.isfinite(root)) or \
                    not np.all(np.abs(np.diagonal(root)) > 0) or \
                    not math.isfinite(self.laplace(theta, beta)):
                # no usable linearisation: the plain start, a tenth of each β as its scale
                theta, beta = plain_theta, plain_beta
                root = np.diag(0.1 * np.maximum(np.abs(beta), 1e-3))
                if not math.isfinite(self.laplace(theta, beta)):
                    raise FitError(f"the model cannot be evaluated at the start β = "
                                   f"{dict(zip(design.fixed_names, beta))}; give start values")
        return Start(theta, beta, np.maximum(0.25 * np.abs(theta), 0.05), root)

    def estimates(self, x, objective: float, nAGQ: int = 1) -> NLMMEstimates:
        """What a fit reports at the optimiser's x = (θ, β[, log σ]): ũ by PNLS, σ̂ (profiled,
        sqrt(r²/n), for the Laplace fit; x's last coordinate for quadrature), b̃ = Λũ and
        the factor of vcov from the model linearised at ũ."""
        design = self.design
        nt, p = design.n_theta, design.p
        x = np.asarray(x, dtype=float)
        theta, beta = x[:nt].copy(), x[nt:nt + p].copy()
        state, u, converged = self.pnls(theta, beta)
        sigma = state.sigma_hat() if nAGQ == 1 else math.exp(x[-1])
        root = factor_cov_root(np.linalg.cholesky(self.linearised_precision(theta, beta, u)))
        return NLMMEstimates(theta=theta, beta=beta, sigma=sigma, objective=float(objective),
                             ml_deviance=float(objective), b=design.Lambda_times(theta, u),
                             beta_cov_root=root, u=u, pnls_converged=converged)

    def results_at(self, theta, beta) -> NLMMResults:
        """The Laplace fit's report at given θ and β (no optimisation), e.g. at another
        program's estimates."""
        theta, beta = np.asarray(theta, dtype=float), np.asarray(beta, dtype=float)
        if theta.shape != self.design.theta_lower.shape or beta.shape != (self.design.p,):
            raise ArgumentError(f"θ needs {self.design.n_theta} and β {self.design.p} entries "
                                f"({self.design.fixed_names}), not {theta.size} and {beta.size}")
        x = np.concatenate([theta, beta])
        objective = self.laplace(theta, beta)
        summary = OptSummary("none (θ and β given)", x, x_final=x, fun_final=objective,
                             converged=True)
        return NLMMResults(self, summary, self.estimates(x, objective))

    def predict(self, newdata: pd.DataFrame, beta, b_terms=None,
                allow_new_levels: bool = False) -> np.ndarray:
        """m(φ) at the rows of ``newdata``: φ = Xβ from each parameter's fixed formula,
        plus each term's random effects (``b_terms``, one levels × k array per term) where
        the row's level was seen in the fit (0 elsewhere where ``allow_new_levels``, else
        a DataError; 0 when ``b_terms`` is None)."""
        design = self.design
        if not isinstance(newdata, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
        missing = [c for c in design.covariate_names if c not in newdata.columns]
        if missing:
            raise DataError(f"newdata lacks covariate column(s) {missing}")
        for j in design.params:
            if design.fixed_specs[j].strip() != "1":
                require_columns(newdata, sorted(required_variables(
                    design.fixed_specs[j], f"the fixed effects of {j}")),
                    f"newdata (the fixed effects of {j} read it)")
        covariates = tuple(newdata[c].to_numpy(dtype=float) for c in design.covariate_names)
        columns = []
        for j, sl in zip(design.params, design.beta_slices):
            rhs = design.fixed_specs[j]
            if rhs.strip() == "1":
                columns.append(np.full(len(newdata), beta[sl][0]))
            else:
                block = np.asarray(materialize(rhs, newdata, f"the fixed effects of {j}"), float)
                columns.append(block @ beta[sl])
        phi = np.column_stack(columns)
        if b_terms is not None:
            for term, cols, b in zip(design.terms, design.term_params, b_terms):
                idx = term.level_index(newdata, allow_new_levels)
                phi[:, cols] += np.where(idx[:, None] >= 0, b[np.maximum(idx, 0)], 0.0)
        return design.model.evaluate(phi, covariates, False)[0]

    def fit(self, *, start=None, theta_start=None, check_gradient: bool = True, nAGQ: int = 1,
            **optimizer_options):
        """Maximise the Laplace likelihood over (θ, β) with BOBYQA.

        The optimiser works on (θ, z) with β = β₀ + Az from ``start`` (the optimiser
        summary's x are these coordinates), so that its first steps in z are one
        standard error along uncorrelated directions.

        Parameters
        ----------
        start : dict, optional
            Start values of fixed effects by name (needed for models without self-start).
        theta_start : array_like, optional
            Start for θ (default: where two Lindstrom–Bates steps take it, see ``start``).
        nAGQ : int
            1: the Laplace approximation (σ profiled).  More: adaptive Gauss–Hermite
            quadrature with that many nodes (one scalar random-effects term), maximised
            over (θ, β, log σ) from the Laplace fit.
        """
        nAGQ = arguments.count(nAGQ, "nAGQ")
        arguments.flag(check_gradient, "check_gradient")
        if nAGQ > 1:
            return self._fit_agq(int(nAGQ), start=start, theta_start=theta_start,
                                 check_gradient=check_gradient, **optimizer_options)
        design = self.design
        begin = self.start(start, theta_start)
        nt, p = design.n_theta, design.p
        lower = np.concatenate([design.theta_lower, np.full(p, -np.inf)])

        def objective(x):  # x = (θ, z), β = β₀ + Az
            return self.laplace(x[:nt], begin.beta + begin.beta_root @ x[nt:])

        def flips(x):  # θ's other representations, z unchanged
            return [(np.concatenate([theta, x[nt:]]), k)
                    for theta, k in design.column_flips(x[:nt])]

        x0 = np.concatenate([begin.theta, np.zeros(p)])
        with np.errstate(all="ignore"):
            summary = minimize_bounded(objective, x0, lower,
                                       initial_step=np.concatenate([begin.theta_steps,
                                                                    np.ones(p)]),
                                       check_gradient=check_gradient, equivalents=flips,
                                       **optimizer_options)
        if not math.isfinite(summary.fun_final):
            raise FitError("the Laplace deviance is not finite at the optimum")
        if not summary.converged:
            warnings.warn(f"the fit did not converge: {summary.message}", ConvergenceWarning,
                          stacklevel=2)
        x = summary.x_final
        natural = np.concatenate([x[:nt], begin.beta + begin.beta_root @ x[nt:]])
        return NLMMResults(self, summary, self.estimates(natural, summary.fun_final))

    def _fit_agq(self, n_agq, *, check_gradient=True, **options):
        if len(self.design.terms) != 1 or self.design.terms[0].k != 1:
            raise FitError("nAGQ > 1 needs a single scalar random-effects term, e.g. "
                           "random='Asym | Tree'")
        laplace = self.fit(check_gradient=False, **options)
        nt = self.design.n_theta
        x0 = np.concatenate([laplace.theta, laplace.beta.to_numpy(), [math.log(laplace.sigma)]])
        lower_theta = self.design.theta_lower
        lower = np.concatenate([lower_theta, np.full(len(x0) - nt, -np.inf)])
        steps = np.concatenate([np.full(nt, 0.05),
                                0.02 * np.maximum(np.abs(laplace.beta.to_numpy()), 0.1), [0.05]])
        with np.errstate(all="ignore"):
            summary = minimize_bounded(
                lambda x: self.agq(x[:nt], x[nt:-1], math.exp(x[-1]), n_agq), x0, lower,
                initial_step=steps, check_gradient=check_gradient)
        if not summary.converged:
            warnings.warn(f"the fit did not converge: {summary.message}", ConvergenceWarning,
                          stacklevel=3)
        return NLMMResults(self, summary,
                           self.estimates(summary.x_final, summary.fun_final, n_agq), n_agq)

