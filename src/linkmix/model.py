"""The linear mixed model: formula + data → design → engine → deviance → fit.

Owns the pipeline's order (``LinearMixedModel``; the entry point ``lmer`` is in
``linkmix.fitting``).  Each stage is reachable on its own: ``model.design``
(the numbers, as the user gave them), ``model.conditioning`` (the well-conditioned
working parametrisation, see ``linkmix.conditioning``), ``model.engine`` (the
factorisation of the working design), ``model.deviance`` (the working objective
of θ_w, which the optimiser sees) and ``model.objective`` (lme4's objective of
lme4's θ).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import arguments
from .conditioning import Conditioning
from .design import build_design, design_from_arrays
from .deviance import Deviance, PLSState
from .engine import ENGINES, dense_curvature, make_engine
from .errors import ArgumentError, ConvergenceWarning, DataError, FitError
from .linalg import solve_triangular
from .optimize import (OPTIMIZER_OPTIONS, OPTIMIZERS, OptSummary, minimize_bounded,
                       minimize_newton)
from .parameters import ParameterSpace
from .results import SIGMA_VANISHES, LMMEstimates, LMMResults
from .threads import evaluation_workers, one_blas_thread

#: ``fit(optimizer="auto")`` takes L-BFGS-B with the exact gradient when one
#: evaluation's θ-dependent work exceeds this many multiply-adds (about a millisecond);
#: below it an evaluation costs microseconds and BOBYQA, whose loop runs in C and
#: needs no gradient, spends less.
GRADIENT_ABOVE = 1e6
#: Smallest θ² (a scalar term's variance over σ²) the first-step curvature model
#: takes: at θ = 0 a term carries no information and the model no curvature.
VARIANCE_FLOOR = 1e-4

__all__ = ["LinearMixedModel", "Curvature"]


class Curvature(NamedTuple):
    """Exact derivatives over the working θ_w at one point (``working_curvature``):
    of ℓ (log|L|², + log|R_X|² for REML) and of r² (user units), r² itself, and
    M = (X'V₀⁻¹X)⁻¹ with ∂M/∂θ_w,i (user units; shape d × p × p)."""

    ell_gradient: np.ndarray
    r2_gradient: np.ndarray
    ell_hessian: np.ndarray
    r2_hessian: np.ndarray
    r2: float
    M: np.ndarray
    M_gradient: np.ndarray


class LinearMixedModel:
    """A linear mixed model ``y = Xβ + ZΛ_θ u + ε``, ready to evaluate or fit.

    Besides ``fit``, it is a backend for other optimisers and programs (lme4's
    ``devFunOnly``, MixedModels.jl's ``objective!``): ``objective(theta)`` is the
    profiled criterion at lme4's θ (bounded below by ``theta_lower``, started at
    ``theta_start``), ``full_deviance(theta, beta, sigma)`` the −2 log-likelihood with
    nothing profiled and ``full_deviance_gradient`` its exact β and σ derivatives;
    ``results_at(theta)`` reports a fit at any θ.  Build one from a formula, or from
    arrays with ``from_arrays``.

    Parameters
    ----------
    formula : str
        lme4-style formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
    REML : bool, default True
        Fit by REML (lme4's default) or by maximum likelihood.
    engine : {"auto", "blocked", "blocked-sparse", "cholmod", "cholmod-supernodal"}
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
        self.REML = arguments.flag(REML, "REML")
        self.conditioning = Conditioning(design)
        self._check_response()
        self._engine_kind = engine
        if engine not in ENGINES:
            make_engine(self.conditioning.working, engine)  # its error names the choices

    @functools.cached_property
    def engine(self):
        """The factorisation of the working design (``linkmix.engine``), made on first
        use: a small model fitted by its dense kernel (``_dense``) needs none."""
        return make_engine(self.conditioning.working, self._engine_kind)

    @functools.cached_property
    def deviance(self) -> Deviance:
        """The working criterion of θ_w over ``engine``."""
        return Deviance(self.engine, self.REML)

    @property
    def limits_blas_threads(self) -> bool:
        """Whether the model's evaluations run with BLAS on one thread
        (``engine.limits_blas_threads``); a model small enough for the dense kernel is
        below that size."""
        return self._dense is None and self.engine.limits_blas_threads

    def _check_response(self) -> None:
        if self.conditioning.exact_fit:
            raise DataError(f"the fixed effects reproduce the response "
                            f"{self.design.formula.response!r} exactly (to rounding): nothing is "
                            f"left for the random effects and the residual variance")

    @classmethod
    def from_design(cls, design, *, REML: bool = True, engine: str = "auto"):
        """A model over an already built ``LMMDesign`` (no formula parsing)."""
        model = cls.__new__(cls)
        model.data = None
        model._setup(design, REML, engine)
        return model

    @classmethod
    def from_arrays(cls, y, X, random, *, fixed_names=None, response: str = "y",
                    REML: bool = True, engine: str = "auto"):
        """A model from arrays, without a formula (see ``linkmix.design.design_from_arrays``).

        Examples
        --------
        >>> model = LinearMixedModel.from_arrays(
        ...     reaction, np.column_stack([np.ones(n), days]),
        ...     [("Subject", subject, np.column_stack([np.ones(n), days]))])  # doctest: +SKIP
        """
        return cls.from_design(design_from_arrays(y, X, random, fixed_names=fixed_names,
                                                  response=response), REML=REML, engine=engine)

    @property
    def formula(self) -> str:
        return self.design.formula.text

    @property
    def theta_lower(self) -> np.ndarray:
        """Lower bounds of lme4's θ: 0 on the diagonal of each T, -inf elsewhere."""
        return self.design.theta_lower

    @property
    def theta_start(self) -> np.ndarray:
        """lme4's start for θ: T = I for every term."""
        return self.design.theta_start()

    @functools.cached_property
    def parameter_space(self) -> ParameterSpace:
        """The parameter names and natural-scale map (fixed per layout: batch fits share it)."""
        return ParameterSpace(self.design)

    def set_response(self, y, row_index=None) -> None:
        """Refit-ready for another response of the same layout (batch fits): only the
        numbers of y change; design, pattern and symbolic factorisation are kept."""
        self.design = dataclasses.replace(self.design, y=np.asarray(y, dtype=float),
                                          row_index=row_index)
        y_w = self.conditioning.set_response(self.design.y)
        if "engine" in self.__dict__:
            self.engine.set_response(y_w)
        if self.__dict__.get("_dense") is not None:
            self._dense.set_response(y_w)
        self._check_response()

    def _checked(self, theta, beta=None, sigma=None, name: str = "theta"):
        """θ (and β, σ) as float arrays of this model's sizes, or an ArgumentError."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape != self.design.theta_lower.shape:
            raise ArgumentError(f"{name} must be a vector of {self.design.theta_lower.size} "
                                f"entries (this model's θ), not shape {theta.shape}")
        if beta is not None:
            beta = np.asarray(beta, dtype=float)
            if beta.shape != (self.design.p,):
                raise ArgumentError(f"beta has shape {beta.shape}; this model has "
                                    f"{self.design.p} fixed effects {self.design.fixed_names}")
        if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
            raise ArgumentError(f"sigma must be a positive number, not {sigma!r}")
        return theta, beta

    def objective(self, theta) -> float:
        """Profiled deviance (ML) or REML criterion at lme4's θ (``inf`` where the
        system is not positive definite)."""
        theta, _ = self._checked(theta)
        theta_w = self.conditioning.theta_working(theta)
        return self.deviance(theta_w) + self.conditioning.offset(self.REML)

    def full_deviance(self, theta, beta, sigma) -> float:
        """−2 log L at lme4's θ, β and σ, nothing profiled."""
        theta, beta = self._checked(theta, beta, sigma)
        c = self.conditioning
        return (self.deviance.full(c.theta_working(theta), c.beta_working(beta), sigma / c.scale)
                + c.offset(REML=False))

    def full_deviance_gradient(self, theta, beta, sigma) -> tuple[np.ndarray, float]:
        """(∂D/∂β, ∂D/∂σ) of the full deviance at lme4's θ, β and σ, exact (by the
        envelope theorem over u): −2X'r̃/σ² and 2n/σ − 2r²/σ³, with r̃ = y − Xβ − Zb̃ the
        conditional residual and r² the penalised residual sum of squares at (θ, β)."""
        theta, beta = self._checked(theta, beta, sigma)
        c, engine, design = self.conditioning, self.engine, self.design
        theta_w = c.theta_working(theta)
        beta_w = c.beta_working(beta)
        if not engine.update(theta_w):
            raise FitError(f"the model's system is not positive definite at θ = {theta}")
        r2 = c.scale**2 * engine.prss(beta_w)
        b = c.effects(c.working.Lambda_times(theta_w, engine.conditional_modes(beta_w)))
        resid = design.y - design.X @ beta - self._Z @ b
        return -2.0 * design.X.T @ resid / sigma**2, 2.0 * design.n / sigma - 2.0 * r2 / sigma**3

    def state(self, theta) -> PLSState:
        """The PLS state at lme4's θ and β̂(θ), in the user's units (r² of y as given,
        log|R_X|² of X as given)."""
        return self.working_state(self.conditioning.theta_working(self._checked(theta)[0]))

    def working_state(self, theta_w) -> PLSState:
        """``state`` at the working θ_w (``linkmix.conditioning``)."""
        c = self.conditioning
        state = PLSState.of(self._factored_at(theta_w))
        return state._replace(r2=c.scale**2 * state.r2,
                              logdet_RX=state.logdet_RX - 2.0 * c.log_det_A)

    def _moment_start(self) -> np.ndarray:
        """A start for θ_w nearer the optimum than T = I, for a gradient optimiser on a
        large model: per scalar term with a constant covariate z (an intercept), the
        variance of its level means of the least-squares residuals less their sampling
        variance, σ_t² = max(0, var(means) − s²/n̄)/z² (n̄ the harmonic mean level size,
        s² the residual variance), and θ_t = max(σ_t/σ, 0.1) with σ² = s² − Σ z²σ_t²
        (at least s²/10); every other entry as T = I.  Crossed terms leak into each
        other's means, so this is a start, not an estimate."""
        w = self.conditioning.working
        theta = w.theta_start()
        beta = np.linalg.lstsq(w.X, w.y, rcond=None)[0] if w.p else np.zeros(0)
        resid = w.y - w.X @ beta if w.p else w.y.copy()
        s2 = float(resid @ resid) / max(1, w.n - w.p)
        components, offset = {}, 0
        for term in w.terms:
            z = term.Z[:, 0]
            if term.k == 1 and z.size and np.all(z == z[0]) and z[0] != 0:
                sizes = np.bincount(term.codes, minlength=term.n_levels).astype(float)
                used = sizes > 0
                means = np.bincount(term.codes, resid, minlength=term.n_levels)[used] / sizes[used]
                harmonic = used.sum() / np.sum(1.0 / sizes[used])
                spread = float(np.var(means)) - s2 / harmonic if used.sum() > 1 else 0.0
                components[offset] = (max(spread, 0.0), z[0] ** 2)
            offset += len(term.theta_positions())
        sigma2 = max(s2 - sum(v * z2 for v, z2 in components.values()), 0.1 * s2)
        for index, (variance, z2) in components.items():
            theta[index] = max(np.sqrt(variance / z2 / sigma2), 0.1)
        return theta

    def _curvature_model(self, theta_w) -> np.ndarray:
        """An estimate of the diagonal of the criterion's Hessian over θ_w, which sets the
        length of L-BFGS-B's first step.  For a scalar term alone with σ known, per level
        j with s_j = Σ_{i∈j} z_i² and w_j = θ²s_j/(1 + θ²s_j), the expected information
        of the one-way model gives ∂²/∂θ² ≈ 4 Σ_j w_j²/θ² (θ² at least
        ``VARIANCE_FLOOR``).  Crossed terms and σ's profiling are ignored: on simulated
        crossed designs it is within a factor 1.5 of the differenced diagonal at the
        optimum and 0.7-7 at the moment start, well inside what L-BFGS-B's line search
        accepts at its first trial.  NaN for the entries of vector terms, which it does
        not describe (the first step is then scipy's)."""
        w = self.conditioning.working
        out = np.full(len(theta_w), np.nan)
        offset = 0
        for term, T in zip(w.terms, w.T_blocks(theta_w)):
            if term.k == 1:
                variance = max(float(T[0, 0]) ** 2, VARIANCE_FLOOR)
                sizes = np.bincount(term.codes, term.Z[:, 0] ** 2, minlength=term.n_levels)
                weights = variance * sizes / (1.0 + variance * sizes)
                out[offset] = 4.0 * float(weights @ weights) / variance
            offset += len(term.theta_positions())
        return out

    def working_gradients(self, theta_w):
        """(∂ℓ/∂θ_w, ∂r²/∂θ_w) at the working θ_w and β̂, exactly, r² in the user's units
        (ℓ = log|L|², + log|R_X|² for REML); None where the engine gives no gradient."""
        if not self.deviance.has_gradient:
            return None
        engine = self._factored_at(theta_w)
        return (engine.logdet_gradient(self.REML),
                self.conditioning.scale ** 2 * engine.prss_gradient())

    def working_unscaled_vcov_gradient(self, theta_w):
        """∂M/∂θ_w,j, M = (X'V₀⁻¹X)⁻¹ in the user's units (``unscaled_vcov``), at the
        working θ_w, exactly, shape (n_theta, p, p); None where the engine gives no
        gradient.

        With G_j = ∂(X_w'V₀⁻¹X_w)/∂θ_w,j from the engine, L_w its factor's X block and
        M = KK' (K = A L_w⁻ᵀ, ``Conditioning.beta_cov_root``), ∂M/∂θ_w,j = −P G_j P'
        with P = K L_w⁻¹."""
        if not self.deviance.has_gradient:
            return None
        engine = self._factored_at(theta_w)
        p = self.design.p
        L_w = engine.Lxy[:p, :p]
        P = solve_triangular(L_w, self.conditioning.beta_cov_root(L_w).T, lower=True,
                             trans=True).T
        # two matrix products per θ_j (BLAS): a three-operand einsum loops over all four
        # indices in C, O(n_theta·p⁴) — 160 ms for p = 160, against 1 ms
        return -(P @ engine.xvx_gradient() @ P.T)

    @functools.cached_property
    def _dense(self):
        """The exact curvature's kernel over the working design, or None where
        differencing the engine's gradient costs less (``engine.dense_curvature``)."""
        return dense_curvature(self.conditioning.working, self.REML)

    def working_curvature(self, theta_w) -> Curvature | None:
        """The exact first and second derivatives over the working θ_w of the criterion's
        parts, r² in the user's units, and M = (X'V₀⁻¹X)⁻¹ (``unscaled_vcov``) with its
        derivatives; None where the model has no dense kernel (a large model) or the
        system is not positive definite at θ_w."""
        kernel = self._dense
        if kernel is None or not kernel.evaluate(np.asarray(theta_w, dtype=float), 2):
            return None
        c = self.conditioning
        s2 = c.scale ** 2
        B = c.beta_jacobian() / c.scale  # β = β₀ + s·B β_w
        return Curvature(kernel.grad_ell, s2 * kernel.grad_r2, kernel.hess_ell,
                         s2 * kernel.hess_r2, s2 * kernel.r2, B @ kernel.M @ B.T,
                         B @ kernel.dM @ B.T)

    def variance_deviance(self, theta, sigma) -> float:
        """−2 log L (ML) or −2 log of the restricted likelihood (REML) at lme4's θ, σ and
        β̂(θ): the criterion as a function of the variance parameters alone (lmerTest's
        ``devfun_vp``), whose Hessian gives their covariance."""
        return self.state(theta).full(sigma, REML=self.REML)

    def unscaled_vcov(self, theta) -> np.ndarray:
        """(X'V₀⁻¹X)⁻¹ at lme4's θ, V₀ = I + ZΛΛ'Z': cov(β̂) = σ² times this."""
        return self.working_unscaled_vcov(self.conditioning.theta_working(
            self._checked(theta)[0]))

    def working_unscaled_vcov(self, theta_w) -> np.ndarray:
        """``unscaled_vcov`` at the working θ_w."""
        engine = self._factored_at(theta_w)
        K = self.conditioning.beta_cov_root(engine.Lxy[:self.design.p, :self.design.p])
        return K @ K.T

    def _factored_at(self, theta_w):
        """The engine factored at the working θ_w (a FitError where it is not positive
        definite)."""
        if not self.engine.update(np.asarray(theta_w, dtype=float)):
            raise FitError(f"the model's system is not positive definite at θ = "
                           f"{self.conditioning.theta(theta_w)}")
        return self.engine

    @functools.cached_property
    def _Z(self):
        return self.design.Z_sparse()

    def gradient_stencil(self, workers: int | None = None):
        """points (working θ_w) → their (d, ∇d) of the profiled criterion, for a stencil of
        differences: on two threads (``_on_two_threads``) where an evaluation is costly
        (above ``GRADIENT_ABOVE``), ``workers`` (default ``threads.evaluation_workers``)
        allow two and BLAS runs on one thread (the caller keeps it so), else one after
        another; None where the engine gives no gradient."""
        if not self.deviance.has_gradient:
            return None
        if self._two_threads(evaluation_workers() if workers is None else workers):
            return self._on_two_threads()
        return lambda points: [self.deviance.value_and_gradient(x) for x in points]

    def _two_threads(self, workers: int) -> bool:
        """Whether stencils of gradient evaluations run on two threads: an evaluation is
        costly, ``workers`` allow two, and BLAS runs on one thread anyway (switching a
        threaded pool to one thread and back costs more than the second core gives)."""
        return (workers > 1 and self.deviance.has_gradient and self.engine.prefers_one_thread
                and self.engine.evaluation_work() > GRADIENT_ABOVE)

    def _on_two_threads(self):
        """points → their (d(θ), ∇d(θ)): the engine takes every other point on this
        thread, a twin of it (``BlockedEngine.twin``) the rest on another (the caller
        keeps BLAS on one thread); their kernels release the GIL.  The twin is made
        here, for one fit: it is valid while the engine's values stay."""
        twin = Deviance(self.engine.twin(), self.REML)

        def evaluate(points):
            with ThreadPoolExecutor(1) as pool:
                theirs = pool.submit(lambda: [twin.value_and_gradient(x) for x in points[1::2]])
                mine = [self.deviance.value_and_gradient(x) for x in points[0::2]]
                out = [None] * len(points)
                out[0::2], out[1::2] = mine, theirs.result()
            self.deviance.n_evaluations += len(points) - len(mine)
            return out
        return evaluate

    def estimates(self, theta_w) -> LMMEstimates:
        """Everything the fit reports at the working θ_w, in the user's units: θ, β̂(θ),
        σ̂(θ), the objective, the conditional modes b̃ and the factor of cov(β̂)."""
        c = self.conditioning
        theta_w = np.asarray(theta_w, dtype=float)
        p = self.design.p
        kernel = self._dense
        if kernel is not None and kernel.evaluate(theta_w, 0):  # no engine needed
            state = self._kernel_state(kernel)
            objective = state.profiled(self.REML) + c.offset(self.REML)
            beta_w, u, RX_factor = kernel.beta, kernel.u, kernel.RX_factor()
        else:
            engine = self.engine
            objective = self.deviance(theta_w) + c.offset(self.REML)
            state = self.deviance.state()
            beta_w = engine.beta_hat()
            u, RX_factor = engine.conditional_modes(beta_w), engine.Lxy[:p, :p]
        b_w = c.working.Lambda_times(theta_w, u)
        sigma_w = state.sigma_hat(self.REML)
        ml_deviance = state.profiled() + c.offset(REML=False) if self.REML else objective
        return LMMEstimates(theta=c.theta(theta_w), beta=c.beta(beta_w), sigma=c.scale * sigma_w,
                            objective=objective, b=c.effects(b_w),
                            beta_cov_root=c.beta_cov_root(RX_factor),
                            sigma_relative=sigma_w / c.working_rms, ml_deviance=ml_deviance,
                            theta_working=theta_w.copy())

    def results_at(self, theta) -> LMMResults:
        """The fit's report at a given lme4 θ (no optimisation), e.g. at another
        program's estimate."""
        theta_w = self.conditioning.theta_working(self._checked(theta)[0])
        summary = OptSummary("none (θ given)", theta_w, x_final=theta_w,
                             fun_final=self.deviance(theta_w), converged=True)
        return LMMResults(self, summary, self.estimates(summary.x_final))

    @functools.cached_property
    def _newton_objective(self):
        """The working criterion as the dense kernel's compiled ``Objective`` (None
        without a kernel)."""
        kernel = self._dense
        return None if kernel is None else kernel.profiled_objective(self.design.n)

    def _kernel_state(self, kernel) -> PLSState:
        return PLSState(kernel.r2, kernel.logdet_A, self.design.n, self.design.p,
                        kernel.logdet_RX)

    def fit_by_newton(self) -> LMMResults | None:
        """The fit by Newton's method on the dense kernel's exact Hessian (``fit``'s way
        for a small model), or None where the model has no kernel or the method did
        not settle it (``fit`` then takes BOBYQA)."""
        if self._dense is None:
            return None
        summary = self._newton_summary(None)
        return self._results(summary, stacklevel=3) if self._settled(summary) else None

    def _newton_summary(self, theta_start) -> OptSummary:
        """``minimize_newton`` on the exact Hessian from T = I (or ``theta_start``)."""
        design = self.design
        start = (design.theta_start() if theta_start is None else
                 self.conditioning.theta_working(self._checked(theta_start,
                                                               name="theta_start")[0]))
        return minimize_newton(self._newton_objective, start, design.theta_lower)

    def _settled(self, summary) -> bool:
        """Whether a Newton run is the fit: converged, and no vector term's column on its
        bound (the other sign may fall inward, which the general path's
        ``equivalents`` look at)."""
        return summary.converged and not self.design.column_flips(summary.x_final)

    def fit(self, *, optimizer: str = "auto", theta_start=None, check_gradient: bool = True,
            workers: int | None = None, **optimizer_options) -> LMMResults:
        """Optimise θ and return the fit.

        The optimiser works on the working θ_w (``linkmix.conditioning``), starting
        from T_w = I (each random coefficient's SD equal to σ over its column's scale),
        or from ``theta_start``.

        Parameters
        ----------
        optimizer : {"auto", "newton", "bobyqa", "cobyqa", "lbfgs"}
            Newton's method on the exact Hessian of a small model's dense kernel
            (``optimize.minimize_newton``), nlopt's LN_BOBYQA (lme4's default), scipy's
            COBYQA, or scipy's L-BFGS-B with the exact gradient of the profiled deviance
            (blocked engines).  "auto": Newton where the model has a dense kernel
            (``engine.dense_curvature``) and no options are given, falling back to
            the rest where it does not settle the fit; then L-BFGS-B where an
            evaluation is costly (its θ-dependent work above ``GRADIENT_ABOVE``), else
            BOBYQA.
        theta_start : array_like, optional
            Start for lme4's θ.
        check_gradient : bool
            Check the gradient and Hessian at the optimum (lme4's convergence checks);
            part of the convergence verdict.  With the exact gradient (blocked
            engines) the Hessian is differenced from it, 2d evaluations for
            d = dim θ; else both are differenced, d(d + 1) evaluations.
        workers : int, optional
            Threads for the 2d gradient evaluations of the checks where an evaluation
            is costly (above ``GRADIENT_ABOVE``) and BLAS runs on one thread (a model
            under ``SMALL_PROBLEM``): 2 or more use a second factor
            (``BlockedEngine.twin``) on another thread.  Default: 2 where the process
            may use two cores and is not inside a batch's or sampler's one-thread
            block (``threads.evaluation_workers``).  The fit is the same either way.
        **optimizer_options
            ``ftol_abs``, ``xtol_abs``, ``maxeval``, ``initial_step``.
        """
        arguments.choice(optimizer, "optimizer", ("auto", "newton", *OPTIMIZERS))
        arguments.flag(check_gradient, "check_gradient")
        workers = evaluation_workers() if workers is None else arguments.count(workers,
                                                                                "workers")
        if optimizer == "newton" and self._dense is None:
            raise ArgumentError("optimizer 'newton' needs the exact Hessian, which this model "
                                "is too large to compute densely; use 'auto'")
        if optimizer in ("auto", "newton") and self._dense is not None \
                and not optimizer_options:
            summary = self._newton_summary(theta_start)
            if optimizer == "newton" or self._settled(summary):
                return self._results(summary, stacklevel=3)
        exact = self.deviance.has_gradient
        costly = exact and self.engine.evaluation_work() > GRADIENT_ABOVE
        if optimizer in ("auto", "newton"):
            optimizer = "lbfgs" if costly else "bobyqa"
        if optimizer == "lbfgs" and not exact:
            raise ArgumentError(f"optimizer 'lbfgs' needs the exact gradient, which the "
                                f"{self.engine.kind!r} engine does not give; use "
                                f"engine='blocked' or 'blocked-sparse'")
        unknown = sorted(set(optimizer_options) - set(OPTIMIZER_OPTIONS))
        if unknown:
            raise ArgumentError(f"unknown option(s) {unknown}; the optimiser takes "
                                f"{list(OPTIMIZER_OPTIONS)}")
        design = self.design
        lower = design.theta_lower
        if theta_start is None:
            start = self._moment_start() if optimizer == "lbfgs" else design.theta_start()
        else:
            start = self.conditioning.theta_working(self._checked(theta_start,
                                                                  name="theta_start")[0])
        # ∂r²/∂θ alongside the traces within one evaluation where stencils take two threads
        two = self._two_threads(workers)
        helper = ThreadPoolExecutor(1) if two else contextlib.nullcontext()
        with one_blas_thread(self.engine.limits_blas_threads), helper as pool:
            gradient = (functools.partial(self.deviance.value_and_gradient, helper=pool)
                        if exact else None)
            summary = minimize_bounded(self.deviance, start, lower, optimizer=optimizer,
                                       check_gradient=check_gradient, polish=True,
                                       gradient=gradient,
                                       gradients=self._on_two_threads() if two else None,
                                       curvature=self._curvature_model,
                                       equivalents=design.column_flips, **optimizer_options)
            return self._results(summary, stacklevel=3)

    def _results(self, summary, stacklevel: int) -> LMMResults:
        """The fit at the optimiser's answer, with its convergence verdict (a warning
        ``stacklevel`` frames up where it did not converge)."""
        if not np.isfinite(summary.fun_final):
            raise FitError(f"the deviance is not finite at the optimum θ = "
                           f"{self.conditioning.theta(summary.x_final)}; the design may "
                           f"be degenerate")
        estimates = self.estimates(summary.x_final)
        if estimates.sigma_relative < SIGMA_VANISHES:
            # An exact fit: the deviance falls without bound as σ → 0, so wherever the
            # optimiser stopped (its gradient there may be tiny) is not an optimum.
            summary.converged = False
            summary.message += "; the deviance decreases without bound as σ → 0"
        if not summary.converged:
            warnings.warn(f"the fit did not converge: {summary.message}", ConvergenceWarning,
                          stacklevel=stacklevel)
        return LMMResults(self, summary, estimates)

