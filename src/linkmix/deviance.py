"""The likelihood of a mixed model: one PLS state, and the criteria it gives.

Owns the formulas of docs/model.md, written once for every model.  A factorisation at θ
(and, for a nonlinear model, PNLS at ũ) leaves a ``PLSState``: n observations, p
profiled fixed effects, r² the penalised residual sum of squares, log|L|² and
log|R_X|².  From it:

* ML profiled deviance   d(θ)   = log|L_θ|² + n[1 + log(2π r²(θ)/n)]   (nlmer's Laplace
  deviance when r² and L are PNLS's)
* REML criterion         d_R(θ) = log|L_θ|² + log|R_X|² + (n−p)[1 + log(2π r²(θ)/(n−p))]
* full deviance          D(θ, β, σ) = n log(2πσ²) + r²(θ, β)/σ² + log|L_θ|²  (Laplace
  when r² and L are PNLS's); the REML one at β̂(θ) adds log|R_X|² − p log(2πσ²)
* σ̂ = sqrt(r²/n) (ML) or sqrt(r²/(n − p)) (REML)

``Deviance`` evaluates them over a linear model's engine; linked responses and the
nonlinear model make their own states (``PLSState.of`` an engine, or PNLS's r²).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["Deviance", "LOG_2PI", "PLSState"]

LOG_2PI = math.log(2.0 * math.pi)


class PLSState(NamedTuple):
    """What one penalised least-squares solution leaves, and every criterion of it.

    A tuple (cheap to make once per evaluation) of r², log|L|², n, p and log|R_X|²
    (p = 0 and log|R_X|² = 0 where no fixed effect is profiled).
    """

    r2: float
    logdet_L: float
    n: int
    p: int = 0
    logdet_RX: float = 0.0

    @classmethod
    def of(cls, engine, beta=None) -> "PLSState":
        """The state of ``engine``'s current factor; r² at ``beta`` (β̂ when omitted)."""
        return cls(engine.prss(beta), engine.logdet_L, engine.design.n, engine.p,
                   engine.logdet_RX() if engine.p else 0.0)

    def profiled(self, REML: bool = False) -> float:
        """ML deviance log|L|² + n[1 + log(2π r²/n)] with σ profiled (the Laplace deviance
        of a PNLS state), or (``REML``) log|L|² + log|R_X|² + (n−p)[1 + log(2π r²/(n−p))]."""
        if REML:
            dof = self.n - self.p
            return self.logdet_L + self.logdet_RX + dof * (1.0 + math.log(2.0 * math.pi
                                                                          * self.r2 / dof))
        return self.logdet_L + self.n * (1.0 + math.log(2.0 * math.pi * self.r2 / self.n))

    def profiled_gradient(self, REML: bool, ell_gradient, r2_gradient):
        """∇ of ``profiled`` from its parts' gradients over θ, ℓ = log|L|² (+ log|R_X|²
        for REML) and r²: ∇ℓ + m∇r²/r², m = n (ML) or n − p (REML).  (The Hessian, for
        the dense kernel's Newton steps, is compiled: ``_dense``.)"""
        m = self.n - (self.p if REML else 0)
        return ell_gradient + (m / self.r2) * r2_gradient

    def full(self, sigma: float, REML: bool = False) -> float:
        """−2 log L = n log(2πσ²) + r²/σ² + log|L|², nothing profiled; with ``REML``,
        −2 log of the restricted likelihood at σ: that plus log|R_X|² − p log(2πσ²)."""
        value = self.n * (LOG_2PI + 2.0 * math.log(sigma)) + self.r2 / sigma**2 + self.logdet_L
        if REML:
            value += self.logdet_RX - self.p * (LOG_2PI + 2.0 * math.log(sigma))
        return value

    def sigma_hat(self, REML: bool = False) -> float:
        """The σ that maximises the (restricted) likelihood: sqrt(r²/(n − p)) for REML,
        sqrt(r²/n) for ML."""
        return math.sqrt(self.r2 / (self.n - self.p if REML else self.n))


class Deviance:
    """Callable deviance of one model: ``dev(theta)`` is profiled ML or REML.

    Parameters
    ----------
    engine : BlockedEngine or CholmodEngine
        Factorisation of the model's augmented PLS system.
    REML : bool
        Whether ``__call__`` returns the REML criterion instead of the ML deviance.
    """

    def __init__(self, engine, REML: bool):
        self.engine = engine
        self.REML = bool(REML)
        self.n_evaluations = 0

    def __call__(self, theta) -> float:
        """Profiled objective at θ (``inf`` where the system is not positive definite)."""
        self.n_evaluations += 1
        if not self.engine.update(theta):
            return math.inf
        state = PLSState.of(self.engine)
        if state.r2 <= 0.0:
            return -math.inf
        return state.profiled(self.REML)

    @property
    def has_gradient(self) -> bool:
        """Whether ``value_and_gradient`` is exact (the engine gives ∂log|L|²/∂θ)."""
        return getattr(self.engine, "supports_gradient", False)

    def value_and_gradient(self, theta, helper=None):
        """(d(θ), ∇d(θ)) exactly, d the profiled ML deviance or REML criterion::

            ∂d/∂θ_i = ∂log|Ã|/∂θ_i + (n − p_R) ∂r²/∂θ_i / r²

        (log|Ã| = log|L|², + log|R_X|² and p_R = p for REML; p_R = 0 for ML).  Where the
        system is not positive definite, (inf, NaN).  ``helper`` (an executor) computes
        ∂r²/∂θ on its thread while this one takes the traces (both release the GIL)."""
        value = self(theta)
        if not math.isfinite(value):
            return value, None
        engine = self.engine
        later = helper.submit(engine.prss_gradient) if helper is not None else None
        logdets = engine.logdet_gradient(self.REML)
        prss = later.result() if later is not None else engine.prss_gradient()
        return value, PLSState.of(engine).profiled_gradient(self.REML, logdets, prss)

    def full(self, theta, beta, sigma) -> float:
        """−2 log L at (θ, β, σ), nothing profiled."""
        self.n_evaluations += 1
        if not self.engine.update(theta):
            return math.inf
        return PLSState.of(self.engine, beta).full(sigma)

    def state(self) -> PLSState:
        """The PLS state at the current factor (β = β̂)."""
        return PLSState.of(self.engine)
