"""The response side of a linked model: r² and log|L|² at z = (θ, β, log σ).

Owns how a linked model's likelihood comes about from the shared engine, for
either kind of model (``linkmix.linked.LinkedModel`` works over both):

* ``LinearResponse``: the response y − Xβ − f(Π) (f the optional linked mean) of
  an engine without fixed-effects columns, so a rank-deficient X is kept and is
  harmless; z is in working coordinates (``linkmix.conditioning.LinkedCoordinates``).
  By the envelope theorem ∂D/∂β = −2X'r̃/σ² and ∂D/∂log σ = 2n − 2r²/σ² (r̃ the
  conditional residual), plus the chain rule through f; ∂D/∂θ exactly where the engine
  gives it (blocked engines), else by central differences; the Hessian's θ columns are
  differences of that gradient.  Its unconstrained start is the plain ML fit (Newton's
  method on the dense kernel where the model is small).
* ``NonlinearResponse``: PNLS at (θ, β) (``linkmix.nonlinear``), the Laplace
  approximation with nothing profiled; ∂D/∂log σ exactly, θ and β by central
  differences (each perturbed PNLS starts from the same ũ, so they are smooth).

Both give D = n log(2πσ²) + r²/σ² + log|L|² from their ``deviance.PLSState``.
A response is bound to its model's parameter space and mean (``bind``) before use.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import numdiff
from .conditioning import LinkedCoordinates
from .design import drop_dependent_columns
from .deviance import PLSState
from .engine import make_engine
from .errors import FitError
from .model import LinearMixedModel
from .optimize import minimize_bounded, newton_polish

__all__ = ["LinearResponse", "NonlinearResponse"]


def off_the_boundary(space, theta):
    """θ with diagonal entries below 1e-3 moved to 0.1: a start off the boundary, from
    which an optimiser can leave the bound 0 (``space``: anything with ``theta_lower``,
    a ParameterSpace or a design)."""
    theta = np.array(theta, dtype=float)
    diag = np.isfinite(space.theta_lower)
    theta[diag & (theta < 1e-3)] = 0.1
    return theta


class LinearResponse:
    """y − Xβ − f(Π) of a linear mixed model's design, over its own engine.

    Parameters
    ----------
    design : LMMDesign
        The user's numbers (all fixed-effects columns kept).
    engine : {"auto", "blocked", "blocked-sparse", "cholmod", "cholmod-supernodal"}
    """

    title = "Linked linear mixed model fit by maximum likelihood"

    def __init__(self, design, engine: str = "auto"):
        self.design = design
        self.coordinates = LinkedCoordinates(design)
        self.working = self.coordinates.working
        random_only = dataclasses.replace(self.working, X=np.zeros((design.n, 0)),
                                          fixed_names=[])
        self.engine = make_engine(random_only, engine)
        self.Z = self.working.Z_sparse()
        self.n = design.n
        self._state_z = None
        self._engine_response = None
        self._base = None

    def bind(self, space, mean_at, mean_jacobian=None) -> None:
        """The model's parameter space (z's meaning), its mean f(Π) at z and, with a
        linked mean, ∂f/∂z (n × dim z; None without one)."""
        self.space, self._mean_at, self._mean_jacobian = space, mean_at, mean_jacobian
        self.has_mean = mean_jacobian is not None

    # ---- the full deviance and its gradient ----------------------------------
    def deviance(self, z) -> float:
        """D(θ, β, σ) = −2 log L at ``z = (θ, β, log σ)``."""
        z = np.asarray(z, dtype=float)
        theta, beta, sigma = self.space.split(z)
        response = self.design.y - self.working.X @ beta - self._mean_at(z)
        if not np.all(np.isfinite(response)):
            self._state_z = None
            return math.inf
        if self._engine_response is None or not np.array_equal(response, self._engine_response):
            self.engine.set_response(response)
            self._engine_response = response
        if not self.engine.update(theta):
            self._state_z = None
            return math.inf
        state = PLSState.of(self.engine)
        self._state_z, self._state_response, self._state_r2 = z.copy(), response, state.r2
        return state.full(sigma)

    def _ensure_state(self, z):
        if self._state_z is None or not np.array_equal(self._state_z, z):
            self.deviance(z)

    def conditional_residual(self, z) -> np.ndarray:
        """r̃ = y − Xβ − f(Π) − ZΛũ at ``z``."""
        z = np.asarray(z, dtype=float)
        self._ensure_state(z)
        theta = self.space.split(z)[0]
        u = self.engine.conditional_modes(np.zeros(0))
        return self._state_response - self.Z @ self.working.Lambda_times(theta, u)

    def random_effects(self, z) -> np.ndarray:
        """b̃ at ``z`` (user units, flat in θ's term order)."""
        z = np.asarray(z, dtype=float)
        self._ensure_state(z)
        u = self.engine.conditional_modes(np.zeros(0))
        b_w = self.working.Lambda_times(self.space.split(z)[0], u)
        return self.coordinates.effects(b_w)

    def gradient(self, z, step: float = 1e-5) -> np.ndarray:
        """∇D at ``z``: exact in β and log σ; in θ exact where the engine gives
        ∂log|L|²/∂θ and ∂r²/∂θ (blocked engines; r² is the penalised residual sum of
        squares of the response at z's β, so by the envelope theorem), plus the chain
        rule through f(Π); else central differences in θ."""
        z = np.asarray(z, dtype=float)
        self._ensure_state(z)
        nt, p = self.space.n_theta, self.space.p
        sigma = self.space.split(z)[2]
        r2 = self._state_r2
        w = -2.0 * self.conditional_residual(z) / sigma**2      # ∂D/∂(mean_i)
        grad = np.empty(len(z))
        grad[nt:nt + p] = self.working.X.T @ w
        grad[-1] = 2.0 * self.n - 2.0 * r2 / sigma**2
        exact = getattr(self.engine, "supports_gradient", False)
        if exact:
            grad[:nt] = self.engine.logdet_gradient() + self.engine.prss_gradient() / sigma**2
        if self.has_mean:  # the chain rule through f(Π): w'∂f/∂z
            first = 0 if exact else nt
            grad[first:] += (w @ self._mean_jacobian(z))[first:]
        if not exact:
            grad[:nt] = numdiff.jacobian(self.deviance, z, lower=self.space.z_lower(),
                                         rel_step=step, indices=range(nt))[0]
        return grad

    def hessian(self, z, grad=None, step: float = 1e-4, beta_block=None):
        """(∇²D, ∇D) at ``z``: the β block exact, ∂²D/∂β∂β' = 2X'V₀⁻¹X/σ²
        (V₀ = I + ZΛΛ'Z') or, with a linked mean, ``beta_block`` (the caller's, who
        knows the mean's curvature; None without it); without a linked mean also
        ∂²D/∂β∂log σ = −2·∂D/∂β and ∂²D/∂(log σ)² = 4r²/σ²; the other columns (θ, and
        log σ where a linked mean may read σ) by differences of the exact gradient with
        one Richardson step.
        ``grad`` is ∇D at ``z`` where the caller has it."""
        if self.has_mean and beta_block is None:
            return None
        z = np.asarray(z, dtype=float)
        nt, p = self.space.n_theta, self.space.p
        sigma = self.space.split(z)[2]
        if grad is None:
            grad = self.gradient(z)
        self._ensure_state(z)
        r2 = self._state_r2
        H = np.empty((len(z), len(z)))
        differenced = list(range(nt)) + ([len(z) - 1] if self.has_mean else [])
        # fourth order in the step: the polish and Satterthwaite's df read this Hessian
        H[:, differenced] = numdiff.richardson_jacobian(
            lambda points: [self.gradient(x) for x in points], z, lower=self.space.z_lower(),
            rel_step=step, indices=differenced)
        H[differenced, :] = H[:, differenced].T
        H[nt:nt + p, nt:nt + p] = self.beta_hessian(z) if beta_block is None else beta_block
        if not self.has_mean:
            H[nt:nt + p, -1] = H[-1, nt:nt + p] = -2.0 * grad[nt:nt + p]
            H[-1, -1] = 4.0 * r2 / sigma**2
        return H, grad

    def beta_hessian(self, z) -> np.ndarray | None:
        """∂²D/∂β∂β' = 2X'V₀⁻¹X/σ² at ``z`` (V₀ = I + ZΛΛ'Z'), exact; None with a linked
        mean (then D is not quadratic in β: ``gram`` gives its first part)."""
        if self.has_mean:
            return None
        return self.gram(z, self.working.X)

    def gram(self, z, C) -> np.ndarray:
        """2C'V₀⁻¹C/σ² at ``z`` for columns C (n × m)."""
        z = np.asarray(z, dtype=float)
        theta, _, sigma = self.space.split(z)
        self._ensure_state(z)  # the factor at z's θ
        B = self.working.Lambda_times(theta, self.Z.T @ C, transpose=True)
        return 2.0 * self.engine.marginal_gram(C, B) / sigma**2

    # ---- starts and scales ------------------------------------------------------
    def base_start(self) -> np.ndarray:
        """z at the unconstrained ML fit (rank-deficient columns at 0), ignoring any mean."""
        if self._base is None:  # built once; batch fits swap y only
            X, names, _ = drop_dependent_columns(self.design.X, self.space.fixed_names)
            index = {name: i for i, name in enumerate(self.space.fixed_names)}
            self._base = (LinearMixedModel.from_design(
                dataclasses.replace(self.design, X=X, fixed_names=names), REML=False),
                [index[name] for name in names])
        model, kept = self._base
        model.set_response(self.design.y)
        fit = model.fit_by_newton()   # a small model: its optimum to the deviance's rounding
        if fit is not None:
            estimates = fit.estimates
        else:
            lower = model.design.theta_lower
            opt = minimize_bounded(model.deviance, model.design.theta_start(), lower,
                                   check_gradient=False, equivalents=model.design.column_flips)
            # the start's gradient is what decides whether a projected start is already the
            # constrained optimum (START_KKT_TOL): polish BOBYQA's answer first
            theta_w, _ = newton_polish(model.deviance, opt.x_final, lower, f0=opt.fun_final)
            estimates = model.estimates(theta_w)
        beta = np.zeros(self.space.p)
        beta[kept] = estimates.beta
        z = self.space.from_user(estimates.theta, beta, estimates.sigma)
        # off the boundary in working θ, where 1e-3 is small whatever the columns' scales
        # (lme4's θ for a slope on x + 1e3 is 4.8e-4 at this fit's optimum)
        z[:self.space.n_theta] = off_the_boundary(self.space, z[:self.space.n_theta])
        return z

    def beta_scales(self, z) -> np.ndarray:
        """σ/sqrt(2·(X'X)_jj): the typical step of each β (SLSQP's scaling)."""
        sigma = self.space.split(z)[2]
        return sigma / np.sqrt(np.maximum(2.0 * np.sum(self.working.X**2, axis=0), 1e-12))

    def set_response(self, y, row_index=None) -> None:
        """Refit-ready for another response of the same layout (batch fits)."""
        self.design = dataclasses.replace(self.design, y=np.asarray(y, dtype=float),
                                          row_index=row_index)
        self.coordinates.set_response(self.design.y)
        self.working = dataclasses.replace(self.coordinates.working, row_index=row_index)
        self.space.rebind(self.design)
        self._state_z = self._engine_response = None


class NonlinearResponse:
    """PNLS of a nonlinear mixed model at (θ, β): the Laplace approximation to −2 log L
    with nothing profiled, ``D = n log(2πσ²) + r²(θ, β)/σ² + log|L|²``.

    Parameters
    ----------
    nlmm : NonlinearMixedModel
    """

    title = "Linked nonlinear mixed model fit by maximum likelihood (Laplace approximation)"
    coordinates = None

    def __init__(self, nlmm):
        self.nlmm = nlmm
        self.design = self.working = nlmm.design
        self.engine = nlmm.engine
        self.n = nlmm.design.n
        self._state = None

    def bind(self, space, mean_at, mean_jacobian=None) -> None:
        self.space = space

    def _deviance_from(self, z, u_start) -> float:
        theta, beta, sigma = self.space.split(np.asarray(z, dtype=float))
        state, u, _ = self.nlmm.pnls(theta, beta, u_start)
        if not math.isfinite(state.r2) or not math.isfinite(state.logdet_L):
            return math.inf
        self._state = (np.array(z, dtype=float), state.r2, u)
        return state.full(sigma)

    def deviance(self, z) -> float:
        """Laplace −2 log L at ``z = (θ, β, log σ)``."""
        return self._deviance_from(z, None)

    def _at(self, z):
        z = np.asarray(z, dtype=float)
        if self._state is None or not np.array_equal(self._state[0], z):
            self.deviance(z)
        return self._state

    def gradient(self, z, step: float = 1e-6) -> np.ndarray:
        """∇D at ``z``: exact in log σ, central differences in θ and β from one ũ."""
        z = np.asarray(z, dtype=float)
        state = self._at(z)
        _, r2, u = state
        nt, p = self.space.n_theta, self.space.p
        grad = np.empty(len(z))
        grad[:nt + p] = numdiff.jacobian(lambda x: self._deviance_from(x, u), z,
                                         lower=self.space.z_lower(), rel_step=step,
                                         indices=range(nt + p))[0]
        sigma = self.space.split(z)[2]
        grad[-1] = 2.0 * self.n - 2.0 * r2 / sigma**2
        self._state = state  # the differences moved it; z's own r² and ũ are known
        return grad

    def hessian(self, z, grad=None, step: float = 1e-4, beta_block=None):
        return None  # no exact block: the model differences its gradient

    def beta_hessian(self, z):
        return None  # nor an exact β block

    def base_start(self) -> np.ndarray:
        """z at the unconstrained Laplace fit."""
        fit = self.nlmm.fit(check_gradient=False)
        return self.space.join(off_the_boundary(self.space, fit.theta), fit.beta.to_numpy(),
                               fit.sigma)

    def beta_scales(self, z):
        return None  # like θ, from second differences of D

    def set_response(self, y, row_index=None) -> None:
        raise FitError("a linked nonlinear model is not refitted with another response")

    def random_effects(self, z) -> np.ndarray:
        """b̃ = Λũ at ``z`` (flat in θ's term order)."""
        return self.design.Lambda_times(self.space.split(z)[0], self._at(z)[2])

    def conditional_residual(self, z) -> np.ndarray:
        theta, beta, _ = self.space.split(np.asarray(z, dtype=float))
        mu = self.nlmm.conditional_mean(theta, beta, self._at(z)[2])
        return self.design.y - mu
